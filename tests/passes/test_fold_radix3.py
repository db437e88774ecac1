"""fold-radix3 and quantize-activations, the FPGA pipeline's rewrites of what the matrix unit cannot take as it is:
float linear layers become five balanced-ternary planes, float activations of ternary layers become int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritc.frontend.onnx import load_model
from tritc.ir import interpreter
from tritc.passes.fold_radix3 import DIGITS, LEVELS, radix3_planes
from tritc.passes.pass_manager import PassManager
from tritc.passes.pipelines import parse_pass_list, pipeline

from .test_golden import check_compiled

DIGITS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "digits"


def test_planes_write_each_quantised_weight_in_balanced_ternary():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 40)).astype(np.float32)
    w[:, 3] = 0  # an all-zero column keeps a usable scale
    t = radix3_planes(w)
    assert t.trits.shape == (DIGITS * 96, 40) and t.group_size == 96 and t.scale.shape == (DIGITS, 40)
    assert set(np.unique(t.trits)) <= {-1, 0, 1}
    s = t.scale[0]
    q = np.clip(np.rint(w / s), -LEVELS, LEVELS)
    digits = t.trits.reshape(DIGITS, 96, 40).astype(np.int64)
    np.testing.assert_array_equal((digits * (3 ** np.arange(DIGITS))[:, None, None]).sum(0), q)
    np.testing.assert_array_equal(t.scale, s[None, :] * np.float32(3) ** np.arange(DIGITS, dtype=np.float32)[:, None])
    err = np.abs(t.dequantize().reshape(DIGITS, 96, 40).sum(0) - w).max() / np.abs(w).max()
    assert err <= 0.5 / LEVELS + 1e-6   # half a level of the largest column at most


def test_float_mlp_runs_as_planes_and_keeps_its_accuracy():
    g = load_model(str(DIGITS_DIR / "float_mlp.onnx"))
    pm = PassManager(pipeline("fpga"))
    pm.run(g)
    assert [n.op for n in g if n.op not in ("weight", "constant")].count("ternary_matmul") == 3
    assert all(n.attrs["act"] == "int8" for n in g if n.op == "ternary_matmul")
    lines = pm.result_of("fold-radix3").comment_lines()
    assert lines[0].startswith("// fold-radix3: 3 float linear layer(s)")
    held = np.load(DIGITS_DIR / "heldout.npz")
    x = held["images"].astype(np.float32)
    (logits,) = interpreter.run(g, {"x": x}).values()
    assert (logits.argmax(-1) == held["labels"]).mean() >= 0.96
    # what the pass made compiles for the CPU too and computes the same
    small = {"x": x[:3]}
    check_compiled(g, small, interpreter.run(g, small), "float_mlp after the fpga pipeline")


def test_quantize_activations_makes_float_ternary_layers_int8():
    g = load_model(str(DIGITS_DIR / "ternary_mlp.onnx"))
    PassManager(parse_pass_list("infer-shapes,canonicalize,fold-constants,fold-ternary")).run(g)
    assert {n.attrs["act"] for n in g if n.op == "ternary_matmul"} == {"float"}
    pm = PassManager(parse_pass_list("quantize-activations"))
    pm.run(g)
    nodes = [n for n in g if n.op == "ternary_matmul"]
    assert nodes and all(n.attrs["act"] == "int8" and n.attrs["act_max"] == 127.0 for n in nodes)
    assert pm.result_of("quantize-activations").comment_lines()[0].startswith("// quantize-activations: 3")
    x = np.load(DIGITS_DIR / "heldout.npz")["images"][:2].astype(np.float32)
    check_compiled(g, {"x": x}, interpreter.run(g, {"x": x}), "ternary_mlp with int8 activations")


def test_a_zero_weight_gives_zero_planes_and_tiny_ones_keep_their_levels():
    t = radix3_planes(np.zeros((64, 2), np.float32))
    assert not t.trits.any() and np.isfinite(t.scale).all()
    tiny = radix3_planes(np.full((64, 2), 1e-30, np.float32))
    assert np.isfinite(tiny.scale).all() and np.allclose(tiny.dequantize().reshape(DIGITS, 64, 2).sum(0), 1e-30)

"""Ternary weights stored as ONNX's low-bit integers: INT2 (and INT4 whose values are in {-1, 0, 1}) codes behind
DequantizeLinear fold into ternary_matmul exactly, per axis and blocked. The fixture tests/fixtures/int2 (written by
make_int2_fixture.py) is imported, checked against onnxruntime, folded and compiled.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest

import tritc
from tritc.frontend.onnx import load_model
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run
from tritc.ir.ops.quant import dequantize_linear
from tritc.ir.ternary import TernaryWeight
from tritc.ir.types import DType, TensorType
from tritc.passes.fold_ternary import fold_report
from tritc.passes.ternary_report import TernaryReport

from .ternary_helpers import run_pipeline

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "int2" / "ternary_int2_mlp.onnx"
RNG = np.random.default_rng(3)
X = RNG.standard_normal((5, 64)).astype(np.float32)


def fold_cpu(g: Graph, include: tuple[str, ...] = ()) -> TernaryReport:
    """The cpu pipeline with exact fold-ternary (fold-constants evaluates the DequantizeLinear of constants before
    it); the report of its fold-ternary step."""
    return run_pipeline(g, mode="exact", include=include)


def fold_alone(g: Graph) -> TernaryReport:
    """fold-ternary by itself (exact, every layer): it reads the DequantizeLinear of integer codes."""
    return fold_report(g, include=("*",))


# ---- the fixture ------------------------------------------------------------------------------


def test_fixture_is_what_the_script_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_int2_fixture", FIXTURE.parents[1] / "make_int2_fixture.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.build().SerializeToString() == FIXTURE.read_bytes()


def test_fixture_imports_with_int2_codes():
    g = load_model(FIXTURE)
    dqs = [n for n in g.nodes if n.op == "dequantize_linear"]
    assert len(dqs) == 2 and all(n.inputs[0].type.dtype is DType.I2 for n in dqs)
    assert dqs[0].attrs["axis"] == 1 and dqs[0].attrs.get("block_size", 0) == 0
    assert (dqs[1].attrs["axis"], dqs[1].attrs["block_size"]) == (0, 16)
    codes = g.weights["fc1.weight_q"]
    assert codes.dtype == np.dtype(ml_dtypes.int2) and codes.shape == (64, 32)
    assert set(np.unique(codes.astype(np.int64)).tolist()) == {-1, 0, 1}


def test_fixture_matches_onnxruntime():
    """onnxruntime 1.32 runs INT2 DequantizeLinear (opset 25). Its full optimisation level fuses DequantizeLinear +
    MatMul into a kernel that quantises the activations to int8 (off by ~0.1 here), so the reference is the session
    at ORT_ENABLE_BASIC, which computes the model as written."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    (want,) = ort.InferenceSession(str(FIXTURE), opts, providers=["CPUExecutionProvider"]).run(None, {"x": X})
    got = run(load_model(FIXTURE), {"x": X})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fixture_folds_exactly_and_compiles():
    g = load_model(FIXTURE)
    before = run(g, {"x": X})["y"]
    report = fold_cpu(g, include=("fc2*",))  # fc2 is the output head (folds in exact mode; included anyway)
    layers = {lay.name: lay for lay in report.layers}
    assert set(layers) == {"fc1.weight", "fc2.weight"}
    assert all(lay.folded and lay.exact for lay in layers.values())
    assert layers["fc1.weight"].granularity == "per_channel" and layers["fc2.weight"].granularity == "per_group/16"
    assert [n.op for n in g.nodes if n.op in ("matmul", "ternary_matmul", "dequantize_linear")] == ["ternary_matmul"] * 2
    tw = [g.const_value(n.inputs[1]) for n in g.nodes if n.op == "ternary_matmul"]
    assert isinstance(tw[1], TernaryWeight) and tw[1].group_size == 16
    after = run(g, {"x": X})["y"]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)

    model = tritc.compile(FIXTURE, ternary_include=["fc2*"], threads=1)
    assert model.ir_text.count("ternary_matmul(") == 2 and "dequantize_linear" not in model.ir_text
    (y,) = model.run(None, {"x": X})
    assert model.specializations and all(s.object for s in model.specializations)  # compiled code, for the input x
    np.testing.assert_allclose(y, after, rtol=1e-5, atol=1e-6)


# ---- INT4 and INT2 codes, per axis and blocked -------------------------------------------------------


def dq_graph(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block_size: int) -> Graph:
    """x -> matmul(x, dequantize_linear(codes, scale, zero)) -> relu -> y (the matmul named fc, not a head)."""
    k, n = codes.shape
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.F32, ("b", k)))
    args = [g.add_weight("w.q", codes, TensorType(DType.from_numpy(codes.dtype), codes.shape)),
            g.add_weight("w.scale", scale, TensorType(DType.F32, scale.shape))]
    if zero is not None:
        args.append(g.add_weight("w.zero", zero, TensorType(DType.from_numpy(zero.dtype), zero.shape)))
    w = g.add("dequantize_linear", args, [TensorType(DType.F32, (k, n))], {"axis": axis, "block_size": block_size}, "dq")
    mm = g.add("matmul", [x, w.output], [TensorType(DType.F32, ("b", n))], {}, "fc")
    g.outputs = [g.add("relu", [mm.output], [TensorType(DType.F32, ("b", n))], {}, "act", output_names=["y"]).output]
    return g


def trit_codes(k: int, n: int, dtype) -> np.ndarray:
    return RNG.choice(np.array([-1, 0, 1]), size=(k, n), p=[0.3, 0.4, 0.3]).astype(dtype)


@pytest.mark.parametrize("dtype", [ml_dtypes.int4, ml_dtypes.int2], ids=["int4", "int2"])
@pytest.mark.parametrize("layout", ["per_axis", "blocked", "per_tensor_zero_point"])
def test_low_bit_dequantize_linear_folds_exactly(dtype, layout):
    k, n = 64, 8
    codes = trit_codes(k, n, dtype)
    zero = None
    if layout == "per_axis":
        scale, axis, block, want = RNG.uniform(0.1, 1, n).astype(np.float32), 1, 0, "per_channel"
    elif layout == "blocked":
        scale, axis, block, want = RNG.uniform(0.1, 1, (k // 32, n)).astype(np.float32), 0, 32, "per_group/32"
    else:  # codes stored shifted by a zero point: code - zero is the trit
        scale, axis, block, want = np.array(0.25, np.float32), 1, 0, "per_tensor"
        zero = np.array(1 if dtype is ml_dtypes.int4 else -1, dtype)  # int2 stores trit - 1, in [-2, 0]
        codes = (codes.astype(np.int64) + int(zero)).astype(dtype)
    g = dq_graph(codes, scale, zero, axis, block)
    x = RNG.standard_normal((3, k)).astype(np.float32)
    before = run(g, {"x": x})["y"]
    (lay,) = fold_alone(g).layers
    assert lay.folded and lay.exact and lay.granularity == want and lay.source == "dequantize_linear", lay
    assert [n.op for n in g.nodes if n.op in ("matmul", "ternary_matmul")] == ["ternary_matmul"]
    (tm,) = [nd for nd in g.nodes if nd.op == "ternary_matmul"]
    tw = g.const_value(tm.inputs[1])
    if block:
        assert tw.group_size == block
    # the trits times the scales are exactly the values DequantizeLinear gives
    np.testing.assert_array_equal(tw.dequantize(), dequantize_linear(codes, scale, zero, axis=axis, block_size=block,
                                                                     output_dtype=None))
    np.testing.assert_allclose(run(g, {"x": x})["y"], before, rtol=1e-5, atol=1e-6)


def test_int4_codes_beyond_trits_are_left_alone():
    codes = trit_codes(32, 8, ml_dtypes.int4)
    codes[5, 3] = np.array(-5, ml_dtypes.int4)
    g = dq_graph(codes, RNG.uniform(0.1, 1, 8).astype(np.float32), None, 1, 0)
    (lay,) = fold_alone(g).layers
    assert not lay.folded and "[-5]" in lay.note and "not ternary" in lay.note
    assert "ternary_matmul" not in [n.op for n in g.nodes]

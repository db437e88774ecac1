"""fold-ternary on the BitNet fixtures (tests/fixtures/transformers): every linear layer folds exactly,
and the folded graph computes what the float graph computes (interpreter, within 1e-5 relative)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritc.frontend.onnx import load_model
from tritc.ir.interpreter import run
from tritc.passes import PassManager
from tritc.passes.pipelines import pipeline

FIXTURES = Path(__file__).parents[1] / "fixtures" / "transformers"
BITNET = sorted(p.stem for p in FIXTURES.glob("bitnet*.onnx"))


def feeds(seq: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    return {"input_ids": rng.integers(0, 256, (2, seq)).astype(np.int64), "attention_mask": np.ones((2, seq), np.int64)}


@pytest.mark.parametrize("name", BITNET)
def test_every_linear_layer_folds_exactly(name):
    g = load_model(FIXTURES / f"{name}.onnx")
    want = run(g.copy(), feeds())["logits"]
    pm = PassManager(pipeline("cpu", ternary_include=("*",)))  # every layer, the head too: ternary in these fixtures
    pm.run(g)
    report = pm.result_of("fold-ternary")
    assert len(report.layers) == 15
    assert all(lay.folded and lay.exact for lay in report.layers), report.table()
    assert not any(n.op == "matmul" and g.const_value(n.inputs[1]) is not None for n in g)
    got = run(g, feeds())["logits"]
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert rel <= 1e-5, f"{name}: relative error {rel:.2e}"


@pytest.mark.parametrize("name", [n for n in BITNET if "actquant" in n])
def test_activation_quantisation_becomes_int8_ternary_matmul(name):
    g = load_model(FIXTURES / f"{name}.onnx")
    PassManager(pipeline("cpu")).run(g)
    modes = [n.attrs.get("act") for n in g if n.op == "ternary_matmul"]
    assert modes == ["int8"] * 14

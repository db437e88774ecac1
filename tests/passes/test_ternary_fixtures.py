"""fold-ternary on the BitNet fixtures (tests/fixtures/transformers): every linear layer folds exactly (the head
too: exact mode protects nothing), and the folded graph computes what the float graph computes (interpreter, within
1e-5 relative); in absmean mode only the vocabulary projection stays float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritc.frontend.onnx import load_model
from tritc.ir.interpreter import run
from tritc.passes import PassManager
from tritc.passes.pipelines import pipeline

from .ternary_helpers import run_pipeline

FIXTURES = Path(__file__).parents[1] / "fixtures" / "transformers"
BITNET = sorted(p.stem for p in FIXTURES.glob("bitnet*.onnx"))


def feeds(seq: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    return {"input_ids": rng.integers(0, 256, (2, seq)).astype(np.int64), "attention_mask": np.ones((2, seq), np.int64)}


@pytest.mark.parametrize("name", BITNET)
def test_every_linear_layer_folds_exactly(name):
    g = load_model(FIXTURES / f"{name}.onnx")
    want = run(g.copy(), feeds())["logits"]
    report = run_pipeline(g)  # exact mode, the default: every layer, the head too (it is ternary in these fixtures)
    assert len(report.layers) == 15
    assert all(lay.folded and lay.exact and lay.note.startswith("exact: ") for lay in report.layers), report.table()
    assert not any(n.op == "matmul" and g.const_value(n.inputs[1]) is not None for n in g)
    got = run(g, feeds())["logits"]
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert rel <= 1e-5, f"{name}: relative error {rel:.2e}"


@pytest.mark.parametrize("name", ["bitnet_legacy17", "bitnet_dynamo18", "llama_legacy17"])
def test_absmean_keeps_only_the_vocabulary_projection_in_float(name):
    # o_proj and down_proj write into the residual stream, and k_proj / v_proj also reach the `present` outputs:
    # none of them is the head. Only lm_head (after the last residual add) stays float.
    g = load_model(FIXTURES / f"{name}.onnx")
    report = run_pipeline(g, mode="absmean")
    kept = [lay for lay in report.layers if not lay.folded]
    assert len(report.layers) == 15 and len(kept) == 1, report.table()
    assert kept == [report.layers[-1]], report.table()  # the last layer in graph order, lm_head
    assert "lm_head" in kept[0].name or "dynamo" in name  # (the dynamo export names it val_<n>)
    assert kept[0].note.startswith("output head: kept in float in absmean mode")


@pytest.mark.parametrize("name", [n for n in BITNET if "actquant" in n])
def test_activation_quantisation_becomes_int8_ternary_matmul(name):
    g = load_model(FIXTURES / f"{name}.onnx")
    PassManager(pipeline("cpu")).run(g)
    modes = [n.attrs.get("act") for n in g if n.op == "ternary_matmul"]
    assert modes == ["int8"] * 15  # the head folds too (exact mode), and the model quantises its input as well

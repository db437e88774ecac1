"""fold-ternary on a real ternary-trained CNN: tests/fixtures/digits/ternary_cnn.onnx (make_digits_cnn.py).

Exact mode folds both convolutions and the head, all in int8 mode (the model quantises every layer's input), and
the held-out predictions through the interpreter and through compiled code are the float export's, image for image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import tritc
from tritc.frontend.onnx import load_model
from tritc.ir.interpreter import run

from .ternary_helpers import run_pipeline

DIGITS = Path(__file__).resolve().parents[1] / "fixtures" / "digits"
MODEL = DIGITS / "ternary_cnn.onnx"
RECORD = json.loads((DIGITS / "cnn_accuracy.json").read_text())["model"]


@pytest.fixture(scope="module")
def heldout() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(DIGITS / "heldout.npz")
    return d["images"].reshape(-1, 1, 8, 8), d["labels"]


@pytest.fixture(scope="module")
def float_logits(heldout) -> np.ndarray:
    """The unfolded graph through the interpreter (= onnxruntime's predictions, checked below)."""
    return run(load_model(MODEL), {"x": heldout[0]})["logits"]


def test_fixture_is_what_the_script_says(heldout, float_logits):
    images, labels = heldout
    assert MODEL.stat().st_size < 200_000
    assert set(RECORD["weights_trits_times_scale"].values()) <= {"per_tensor", "per_channel"}
    ort_logits = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"x": images})[0]
    np.testing.assert_allclose(float_logits, ort_logits, rtol=1e-4, atol=1e-4)
    assert np.array_equal(float_logits.argmax(axis=1), ort_logits.argmax(axis=1))
    assert float(np.mean(float_logits.argmax(axis=1) == labels)) == pytest.approx(RECORD["heldout_accuracy"], abs=1e-12)
    assert RECORD["heldout_accuracy"] == RECORD["onnxruntime_heldout_accuracy"] > 0.95


def test_exact_folds_every_layer_and_keeps_every_prediction(heldout, float_logits):
    images, labels = heldout
    g = load_model(MODEL)
    report = run_pipeline(g)  # exact, the default
    assert [lay.op for lay in report.layers] == ["conv", "conv", "matmul"]
    assert all(lay.folded and lay.exact for lay in report.layers), report.table()
    assert [lay.granularity for lay in report.layers] == [RECORD["granularity"][k] for k in ("conv1", "conv2", "head")]
    layers = [n for n in g if n.op in ("ternary_conv", "ternary_matmul", "conv", "matmul", "gemm")]
    assert [n.op for n in layers] == ["ternary_conv", "ternary_conv", "ternary_matmul"]
    assert all(n.attrs["act"] == "int8" for n in layers)  # the model's own activation quantisers, fused
    got = run(g, {"x": images})["logits"]
    np.testing.assert_allclose(got, float_logits, rtol=1e-4, atol=1e-4)  # the same codes; the rescale's order differs
    assert np.array_equal(got.argmax(axis=1), float_logits.argmax(axis=1))

    model = tritc.compile(str(MODEL), shapes={"batch": len(images)})
    assert [lay.folded for lay in model.ternary_report.layers] == [True] * 3
    (spec,) = model.specializations
    assert [n.op for n in spec.graph if n.op.startswith("ternary")] == ["ternary_conv", "ternary_conv", "ternary_matmul"]
    compiled = model.run(None, {"x": images})[0]
    np.testing.assert_allclose(compiled, got, rtol=1e-5, atol=1e-5)  # int8 paths: the interpreter's sums, bit for bit
    assert np.array_equal(compiled.argmax(axis=1), float_logits.argmax(axis=1))
    assert float(np.mean(compiled.argmax(axis=1) == labels)) == pytest.approx(RECORD["heldout_accuracy"], abs=1e-12)

"""Whole models through the compiled path: the transformer fixtures against onnxruntime, in float mode
(fold-ternary off) and with the default ternary folding, at two sequence lengths each."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import tritc
from tritc.ir.interpreter import run as interpret

FIXTURES = Path(__file__).parents[1] / "fixtures" / "transformers"
MODELS = sorted(p.stem for p in FIXTURES.glob("*.onnx"))
SEQS = (5, 11)


def feeds(seq: int, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    mask = np.ones((batch, seq), np.int64)
    mask[1, -2:] = 0  # a right-padded row: the mask really matters
    return {"input_ids": rng.integers(0, 256, (batch, seq)).astype(np.int64), "attention_mask": mask}


@pytest.fixture(scope="module")
def ort_outputs():
    cache: dict = {}

    def get(name: str, seq: int) -> np.ndarray:
        if (name, seq) not in cache:
            sess = ort.InferenceSession(str(FIXTURES / f"{name}.onnx"), providers=["CPUExecutionProvider"])
            cache[(name, seq)] = sess.run(None, feeds(seq))[0]
        return cache[(name, seq)]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_float_mode_matches_onnxruntime(name, ort_outputs):
    t = time.perf_counter()
    model = tritc.compile(str(FIXTURES / f"{name}.onnx"), ternary="off", shapes={"batch": 2, "seq": SEQS[0]})
    compile_s = time.perf_counter() - t
    # Compile time is measured by benchmarks/bench_models.py (under 10 s each on a quiet machine);
    # this only catches a blow-up, with room for a loaded CI machine.
    assert compile_s < 60, f"{name} took {compile_s:.1f} s to compile"
    for seq in SEQS:
        got = model.run(None, feeds(seq))[0]
        diff = float(np.abs(got - ort_outputs(name, seq)).max())
        assert diff <= 1e-4, f"{name} seq={seq}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith("bitnet")])
def test_ternary_mode_matches_interpreter_and_onnxruntime(name, ort_outputs):
    model = tritc.compile(str(FIXTURES / f"{name}.onnx"), shapes={"batch": 2, "seq": SEQS[0]})
    report = model.ternary_report
    assert len(report.folded()) == 15 and all(lay.exact for lay in report.folded())  # exact mode folds the head too
    for seq in SEQS:
        f = feeds(seq)
        got = model.run(None, f)[0]
        ref = interpret(model.graph, f)["logits"]
        # the int8 activation path is integer inside: compiled and interpreter agree to float rounding
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        diff = float(np.abs(got - ort_outputs(name, seq)).max())
        assert diff <= 1e-4, f"{name} seq={seq}: max abs diff {diff:.2e} against onnxruntime"

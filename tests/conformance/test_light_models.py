"""ONNX's bundled "light" model zoo (alexnet, densenet121, inception v1/v2, resnet50, shufflenet,
squeezenet, vgg19, zfnet512) through the reference interpreter.

Done the way ONNX's backend runner does it: each non-initializer input gets
`Runner.generate_dummy_data(x, seed=0, name=..., random=False)` and the outputs are compared with
the stored `light_<name>_output_<i>.pb` at the case's tolerances. The same inputs also go through
onnxruntime (given the model as-is, ir_version 3), which must agree as well.
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

from tritc.onnx_backend import InterpreterBackend

pytestmark = pytest.mark.conformance

# The site-packages folder that model URLs like onnx/backend/test/data/light/... are relative to.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(onnx.__file__)))
# A guard against pathologically slow kernels (each model takes seconds at batch 1, 224x224): the
# interpreter is the reference every backend is run against, so it must stay usable.
TIME_LIMIT_S = 60.0


def _cases() -> list:
    return sorted(load_model_tests(kind="real"), key=lambda c: c.name)


def _feeds(model: onnx.ModelProto, model_name: str) -> dict[str, np.ndarray]:
    initialized = {t.name for t in model.graph.initializer}
    return {x.name: Runner.generate_dummy_data(x, seed=0, name=model_name, random=False)
            for x in model.graph.input if x.name not in initialized}


def _expected(path: str, model: onnx.ModelProto) -> list[np.ndarray]:
    prefix = os.path.splitext(path)[0]
    out = []
    for i in range(len(model.graph.output)):
        t = onnx.TensorProto()
        with open(f"{prefix}_output_{i}.pb", "rb") as f:
            t.ParseFromString(f.read())
        out.append(numpy_helper.to_array(t))
    return out


def _assert_close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float, atol: float, what: str) -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype, f"{what}: output {i} has dtype {a.dtype}, expected {e.dtype}"
        assert a.shape == e.shape, f"{what}: output {i} has shape {a.shape}, expected {e.shape}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{what}: output {i}")


def test_all_light_models_are_listed():
    names = {c.model_name for c in _cases()}
    assert names == {"bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                     "squeezenet", "vgg19", "zfnet512"}


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_light_model(case):
    assert case.url.startswith("onnx/backend/test/data/light/")
    path = os.path.join(_ROOT, case.url)
    model = onnx.load(path)
    feeds = _feeds(model, case.model_name)
    expected = _expected(path, model)

    start = time.perf_counter()
    rep = InterpreterBackend.prepare(model)
    ours = list(rep.run(feeds))
    elapsed = time.perf_counter() - start
    _assert_close(ours, expected, case.rtol, case.atol, f"{case.name} (stored outputs)")

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)
    _assert_close(ours, theirs, case.rtol, case.atol, f"{case.name} (onnxruntime)")
    assert elapsed < TIME_LIMIT_S, f"{case.name} took {elapsed:.1f}s in the interpreter (limit {TIME_LIMIT_S}s)"

"""Every ONNX backend node test of every supported op, run through the reference interpreter."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.backend.base import Backend

from tritc.ir.casts import convert, int_range
from tritc.ir.types import DType
from tritc.onnx_backend import InterpreterBackend

from .cases import supported_cases
from .expected_failures import EXPECTED_FAILURES, FLOAT_TO_INT_OUT_OF_RANGE

pytestmark = pytest.mark.conformance


def node_params(every: int = 1):
    """Every `every`-th supported node test as a pytest param, strict xfail where an expected failure is listed."""
    for k, case in enumerate(supported_cases()):
        if k % every:
            continue
        marks = []
        if case.name in EXPECTED_FAILURES:
            marks.append(pytest.mark.xfail(reason=EXPECTED_FAILURES[case.name], strict=True))
        yield pytest.param(case, id=case.name, marks=marks)


def assert_outputs_match(actual, expected, rtol: float, atol: float) -> None:
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        e = np.asarray(e)
        a = np.asarray(a)
        assert a.dtype == e.dtype, f"output {i}: dtype {a.dtype}, expected {e.dtype}"
        assert a.shape == e.shape, f"output {i}: shape {a.shape}, expected {e.shape}"
        if e.dtype.kind in "fc" or e.dtype.name == "bfloat16":
            np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol,
                                       equal_nan=True, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(a, e, err_msg=f"output {i}")


def as_array(tensor) -> np.ndarray:
    """Node test data may hold TensorProtos (types numpy lacks, e.g. bfloat16); ONNX's runner converts them too."""
    return onnx.numpy_helper.to_array(tensor) if isinstance(tensor, onnx.TensorProto) else tensor


def undefined_elements_by_tritc_rule(x: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """The expected result of casting floats x to expected's integer dtype, where x is out of range or NaN (ONNX:
    undefined) replaced by tritc's rule, written out here: truncate, saturate, NaN -> 0."""
    to = DType.from_numpy(expected.dtype)
    lo, hi = int_range(to)
    t = np.trunc(x.astype(np.float64))
    undefined = np.isnan(t) | (t < lo) | (t > hi)
    saturated = np.where(np.isnan(t), 0, np.clip(np.nan_to_num(t), lo, hi)).astype(np.int64)
    assert undefined.any(), "no element is out of range: drop the test from FLOAT_TO_INT_OUT_OF_RANGE"
    return convert(np.where(undefined, saturated, convert(expected, DType.I64)), to)


def check_node_case(backend: type[Backend], case) -> None:
    """Run every data set of one node test through `backend` and compare with ONNX's expected outputs."""
    check_rep(backend.prepare(case.model), case)


def check_rep(rep, case) -> None:
    """Run every data set of one node test through a prepared backend and compare with ONNX's expected outputs."""
    for inputs, expected in case.data_sets:
        inputs, expected = [as_array(t) for t in inputs], [as_array(t) for t in expected]
        if case.name in FLOAT_TO_INT_OUT_OF_RANGE:
            expected = [undefined_elements_by_tritc_rule(inputs[0], expected[0])]
        with np.errstate(all="ignore"):
            outputs = rep.run(inputs)
        assert_outputs_match(outputs, expected, case.rtol, case.atol)


@pytest.mark.parametrize("case", list(node_params()))
def test_node(case):
    check_node_case(InterpreterBackend, case)

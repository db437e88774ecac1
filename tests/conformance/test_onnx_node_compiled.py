"""The ONNX backend node tests through the compiled path (LLVM), same cases and expected failures.

Compiling every node test takes minutes, so by default (and in CI) a deterministic sample runs:
every SAMPLE_EVERY-th supported case. TRITC_FULL_CONFORMANCE=1 runs all of them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tritc.onnx_backend import CompiledBackend

from .cases import supported_cases
from .expected_failures import EXPECTED_FAILURES
from .test_onnx_node import as_array, assert_outputs_match

SAMPLE_EVERY = 5
FULL = os.environ.get("TRITC_FULL_CONFORMANCE") == "1"

pytestmark = pytest.mark.conformance


def _params():
    for k, case in enumerate(supported_cases()):
        if not FULL and k % SAMPLE_EVERY:
            continue
        marks = []
        if case.name in EXPECTED_FAILURES:
            marks.append(pytest.mark.xfail(reason=EXPECTED_FAILURES[case.name], strict=True))
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_node_compiled(case):
    rep = CompiledBackend.prepare(case.model)
    for inputs, expected in case.data_sets:
        inputs, expected = [as_array(t) for t in inputs], [as_array(t) for t in expected]
        with np.errstate(all="ignore"):
            outputs = rep.run(inputs)
        assert_outputs_match(outputs, expected, case.rtol, case.atol)

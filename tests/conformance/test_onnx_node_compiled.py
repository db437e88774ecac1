"""The ONNX backend node tests through the compiled path (LLVM), same cases and expected failures.

Compiling every node test takes minutes, so by default (and in CI) a deterministic sample runs:
every SAMPLE_EVERY-th supported case. TRITC_FULL_CONFORMANCE=1 runs all of them.
"""

from __future__ import annotations

import os

import pytest

from tritc.onnx_backend import CompiledBackend

from .test_onnx_node import check_node_case, node_params

SAMPLE_EVERY = 5
FULL = os.environ.get("TRITC_FULL_CONFORMANCE") == "1"

pytestmark = pytest.mark.conformance


@pytest.mark.parametrize("case", list(node_params(1 if FULL else SAMPLE_EVERY)))
def test_node_compiled(case):
    check_node_case(CompiledBackend, case)

"""Every op in the table, compiled and run against the interpreter on the ONNX node tests that use it
alone (up to three shapes / attribute sets per op). The full node-test suite through the compiled
path is tests/conformance/test_onnx_node_compiled.py; this is the per-op view of the same idea."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from tritc.errors import UnsupportedError
from tritc.ir.interpreter import run as interpret
from tritc.ir.ops import OPS, onnx_op
from tritc.onnx_backend import CompiledBackend, InterpreterBackend

from ..conformance.cases import supported_cases
from ..conformance.expected_failures import EXPECTED_FAILURES
from ..conformance.test_onnx_node import as_array

PER_OP = 3


def _cases_by_op():
    by_op: dict[str, list] = collections.defaultdict(list)
    for case in supported_cases():
        if case.name in EXPECTED_FAILURES or case.name.endswith("_expanded"):
            continue
        ops = {(n.domain, n.op_type) for n in case.model.graph.node if n.op_type != "Constant"}
        if len(ops) != 1:
            continue
        (dom, op_type), = ops
        opdef = onnx_op(op_type, dom)
        if opdef is not None and len(by_op[opdef.name]) < PER_OP:
            by_op[opdef.name].append(case)
    return by_op


BY_OP = _cases_by_op()
PARAMS = [pytest.param(case, id=f"{op}-{case.name}") for op in sorted(OPS) for case in BY_OP.get(op, [])]


def test_most_ops_have_cases():
    covered = {op for op in OPS if BY_OP.get(op)}
    assert len(covered) >= 120, f"only {len(covered)} ops have single-op node tests"


@pytest.mark.parametrize("case", PARAMS)
def test_op_compiled_matches_interpreter(case):
    inputs = [as_array(t) for t in case.data_sets[0][0]]
    with np.errstate(all="ignore"):
        want = InterpreterBackend.prepare(case.model).run(inputs)
        try:
            got = CompiledBackend.prepare(case.model).run(inputs)
        except UnsupportedError as e:
            pytest.fail(f"not compiled: {e}")
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and a.shape == b.shape, f"output {i}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-4, atol=1e-6,
                                       equal_nan=True, err_msg=f"output {i}")


__all__ = ["interpret"]

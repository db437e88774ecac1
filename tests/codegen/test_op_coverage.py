"""Every op in the table exists in all its places: OpDef (type rule), interpreter semantics, LLVM lowering.

(The FPGA target adds its lowering or an explicit host fallback per op when it lands.)
"""

from __future__ import annotations

import pytest

from tritc.codegen.llvm.ops import LOWERINGS
from tritc.ir.ops import OPS

NO_CODE = {"weight", "constant"}  # data, not computation: the memory plan places them


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_has_semantics_and_type_rule(op):
    d = OPS[op]
    assert callable(d.compute) and callable(d.infer)
    assert d.onnx is None or d.since, f"{op} maps ONNX {d.onnx} without listing versions"


@pytest.mark.parametrize("op", sorted(set(OPS) - NO_CODE))
def test_op_has_llvm_lowering(op):
    assert op in LOWERINGS, f"op '{op}' has no LLVM lowering (tritc/codegen/llvm/ops/)"


def test_no_lowering_for_unknown_ops():
    assert not set(LOWERINGS) - set(OPS), f"lowerings for ops not in the table: {sorted(set(LOWERINGS) - set(OPS))}"

"""Every op in the table exists in all its places: OpDef (type rule), interpreter semantics, LLVM lowering,
and an FPGA lowering or an explicit host fallback (codegen/fpga/host_ops.py).
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


@pytest.mark.parametrize("op", sorted(set(OPS) - NO_CODE))
def test_op_has_fpga_lowering_or_explicit_host_fallback(op):
    from tritc.codegen.fpga.host_ops import HOST_FALLBACK
    from tritc.codegen.fpga.lower import HOST_OPS
    from tritc.codegen.fpga.lower_ctx import LOWERINGS as FPGA_LOWERINGS

    places = [name for name, table in (("FPGA lowering", FPGA_LOWERINGS), ("host op", HOST_OPS),
                                       ("host fallback", HOST_FALLBACK)) if op in table]
    assert len(places) == 1, f"op '{op}' is in {places or 'none'} of the FPGA lowerings (codegen/fpga/lower_*.py), " \
                             f"lower.HOST_OPS and host_ops.HOST_FALLBACK: it must be in exactly one"


def test_fpga_tables_name_only_known_ops():
    from tritc.codegen.fpga.host_ops import HOST_FALLBACK

    assert not set(HOST_FALLBACK) - set(OPS), sorted(set(HOST_FALLBACK) - set(OPS))

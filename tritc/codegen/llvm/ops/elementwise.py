"""Lowerings of the elementwise ops: each is a scalar emitter run by the elementwise engine."""

from __future__ import annotations

import llvmlite.ir as ir

from ..elementwise import SCALAR, Scalar, is_float, lower_elementwise, scalar
from . import lowering


@scalar("add")
def _add(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fadd(a, b) if is_float(a) else s.b.add(a, b)


@scalar("sub")
def _sub(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fsub(a, b) if is_float(a) else s.b.sub(a, b)


@scalar("mul")
def _mul(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fmul(a, b) if is_float(a) else s.b.mul(a, b)


@scalar("relu")
def _relu(s: Scalar, x: ir.Value) -> ir.Value:
    zero = s.zero(x)
    if is_float(x):  # NaN stays NaN: select x unless x < 0
        return s.b.select(s.b.fcmp_ordered("<", x, zero), zero, x)
    return s.b.select(s.b.icmp_signed("<", x, zero), zero, x)


@scalar("leaky_relu")
def _leaky_relu(s: Scalar, x: ir.Value) -> ir.Value:
    alpha = s.const(x, s.attrs["alpha"])
    return s.b.select(s.b.fcmp_ordered("<", x, s.zero(x)), s.b.fmul(x, alpha), x)


@scalar("equal")
def _equal(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fcmp_ordered("==", a, b) if is_float(a) else s.b.icmp_signed("==", a, b)


for _op in list(SCALAR):
    lowering(_op)(lower_elementwise)

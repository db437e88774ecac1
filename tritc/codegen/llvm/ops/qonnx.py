"""Lowerings of the QONNX quantisers (Quant, BipolarQuant): elementwise over the broadcast of X, scale and zero point.

y = scale * (round(clip(x / scale + zeropt, lo, hi)) - zeropt) in float32 (float64 when numpy would promote to it),
with every rounding mode of tritc/ir/ops/qonnx.py; the bit width is a compile-time constant (it sets lo and hi).
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np

from ....errors import UnsupportedError
from ....ir.ops.qonnx import ROUNDING, int_range
from ....ir.types import DType
from ..builder import F32, F64
from ..context import Buf, NodeCtx
from ..elementwise import broadcast_loop
from . import lowering
from .quant import call, load_f, store_f

# Operand dtypes that numpy combines with float32 into float32 (anything else promotes to float64).
_WITH_F32 = (DType.F32, DType.F16, DType.BF16, DType.I8, DType.U8, DType.I16, DType.U16, DType.BOOL)


def _compute_dtype(bufs: list[Buf | None]) -> DType:
    return DType.F32 if all(buf is None or buf.dtype in _WITH_F32 for buf in bufs) else DType.F64


def _round(b: ir.IRBuilder, mode: str, v: ir.Value) -> ir.Value:
    """numpy's rounding of tritc.ir.ops.qonnx.ROUNDING[mode]: sign(v) * f(|v|) keeps NaN and turns +-0 into 0."""
    if mode in ("ROUND", "HALF_EVEN"):
        return call(b, "llvm.roundeven", v)
    if mode in ("CEIL", "FLOOR"):
        return call(b, f"llvm.{mode.lower()}", v)
    if mode == "DOWN":
        return call(b, "llvm.trunc", v)
    zero, half = ir.Constant(v.type, 0.0), ir.Constant(v.type, 0.5)
    mag = call(b, "llvm.fabs", v)
    if mode == "UP":
        mag = call(b, "llvm.ceil", mag)
    elif mode == "HALF_UP":
        mag = call(b, "llvm.floor", b.fadd(mag, half))
    else:  # HALF_DOWN
        mag = call(b, "llvm.ceil", b.fsub(mag, half))
    signed = call(b, "llvm.copysign", mag, v)
    # np.sign(0) is 0 and np.sign(nan) is nan: zero * x and nan * x
    return b.select(b.fcmp_ordered("==", v, zero), b.fmul(zero, mag), b.select(b.fcmp_unordered("uno", v, v), v, signed))


@lowering("quant", const_operands=(3,))
def quant(ctx: NodeCtx) -> None:
    b, a = ctx.b, ctx.attrs
    x, scale, zero = ctx.ins[0], ctx.ins[1], ctx.ins[2]
    out = ctx.outs[0]
    assert x is not None and scale is not None and zero is not None
    width = ctx.const(3)
    bits = float(np.asarray(width).reshape(-1)[0]) if width is not None and np.asarray(width).size else 0.0
    if bits != int(bits) or bits < 1:
        raise UnsupportedError(f"node {ctx.node.describe()}: bitwidth must be a positive integer, got {bits}")
    mode = a["rounding_mode"].upper()
    if mode not in ROUNDING:
        raise UnsupportedError(f"node {ctx.node.describe()}: unknown rounding_mode '{a['rounding_mode']}'")
    lo, hi = int_range(bool(a["signed"]), bool(a["narrow"]), int(bits))
    dt = _compute_dtype([x, scale, zero])
    t = F64 if dt is DType.F64 else F32
    lo_c, hi_c = ir.Constant(t, float(lo)), ir.Constant(t, float(hi))

    def body(idx: list[ir.Value]) -> None:
        s, z = load_f(b, scale, idx[1], dt), load_f(b, zero, idx[2], dt)
        y = b.fadd(b.fdiv(load_f(b, x, idx[0], dt), s), z)
        y = b.select(b.fcmp_ordered("<", y, lo_c), lo_c, y)  # np.clip keeps NaN
        y = b.select(b.fcmp_ordered(">", y, hi_c), hi_c, y)
        store_f(b, b.fmul(b.fsub(_round(b, mode, y), z), s), out, idx[3])

    broadcast_loop(ctx, [x, scale, zero], out.shape, body)


@lowering("bipolar_quant")
def bipolar_quant(ctx: NodeCtx) -> None:
    b, x, scale, out = ctx.b, ctx.ins[0], ctx.ins[1], ctx.outs[0]
    assert x is not None and scale is not None
    dt = _compute_dtype([x, scale])
    t = F64 if dt is DType.F64 else F32

    def body(idx: list[ir.Value]) -> None:
        sign = b.select(b.fcmp_ordered(">=", load_f(b, x, idx[0], dt), ir.Constant(t, 0.0)), ir.Constant(t, 1.0),
                        ir.Constant(t, -1.0))
        store_f(b, b.fmul(sign, load_f(b, scale, idx[1], dt)), out, idx[2])

    broadcast_loop(ctx, [x, scale], out.shape, body)

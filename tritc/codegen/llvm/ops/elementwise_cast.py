"""cast / cast_like, and `convert`, the one conversion between compute values every lowering uses: tritc's
cast rules (tritc/ir/casts.py, docs/OPS.md "Casts") in LLVM IR, bit for bit.

Floats round once to nearest even: f64 -> f16 / bf16 go through f32 rounded to odd, which keeps the second
rounding correct; ints -> bf16 go through f64, exact (64-bit ints are first rounded to odd at 53 bits).
Floats -> ints are llvm.fptosi.sat / fptoui.sat (truncate, saturate, NaN -> 0); ints wrap.
"""

from __future__ import annotations

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import F32, F64, I64, intrinsic, suffix
from ..context import NodeCtx
from ..elementwise import Scalar, compute_type, emit_elementwise, f64_to_f32_odd, round_bf16, scalar
from . import lowering


def convert(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """`v` (a compute value of dtype src) as a compute value of dtype dst."""
    if src is dst:
        return v
    t = compute_type(dst)
    if dst is DType.BOOL:
        return b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0)) if src.is_float else b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
    if src is DType.BOOL:
        return b.uitofp(v, t) if dst.is_float else b.zext(v, t)
    if src.is_int and dst.is_int:
        return _int_to_int(b, v, src, dst)
    if src.is_int:
        return _int_to_float(b, v, src, dst)
    if isinstance(v.type, ir.HalfType):  # half widens exactly; f64 <-> f16 directly would be a libgcc call
        v = b.fpext(v, F32)
    if dst.is_float:
        return _float_to_float(b, v, dst)
    exact = ir.IntType(dst.bits)  # i4 / i2 for the sub-byte types, extended to their compute type below
    name = "llvm.fptosi.sat" if dst.is_signed else "llvm.fptoui.sat"
    return _int_to_int(b, intrinsic(b, f"{name}.{suffix(exact)}.{suffix(v.type)}", exact, [v]), dst, dst)


def _int_to_int(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """The low dst.bits bits of v (held sign- or zero-extended by src), in dst's compute type."""
    t = compute_type(dst)
    if dst.bits < v.type.width:
        v = b.trunc(v, ir.IntType(dst.bits))
        src = dst  # now held in exactly dst's bits
    if t.width > v.type.width:
        return b.sext(v, t) if src.is_signed else b.zext(v, t)
    return v


def _int_to_float(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """One correct rounding. f32 / f64: LLVM's sitofp / uitofp. f16 through f32: an int that f32 rounds is
    >= 2^24, far past f16's range either way. bf16 through f64: exact for up to 53 significant bits."""
    to_float = b.sitofp if src.is_signed else b.uitofp
    if dst is DType.F16:
        return b.fptrunc(to_float(v, F32), compute_type(dst))
    if dst is not DType.BF16:
        return to_float(v, compute_type(dst))
    if v.type.width < 64:
        return _float_to_float(b, to_float(v, F64), dst)
    negative = b.icmp_signed("<", v, ir.Constant(I64, 0)) if src.is_signed else ir.Constant(ir.IntType(1), 0)
    magnitude = b.select(negative, b.sub(ir.Constant(I64, 0), v), v)  # |INT64_MIN| = 2^63 as unsigned
    f = b.uitofp(_round_to_odd_53(b, magnitude), F64)  # exact
    return _float_to_float(b, b.select(negative, b.fneg(f), f), dst)


def _round_to_odd_53(b: ir.IRBuilder, m: ir.Value) -> ir.Value:
    """An unsigned i64 rounded to odd at 53 significant bits: the bits below are dropped and the lowest kept
    bit is set if any of them was, so that rounding it again to fewer bits is the correct rounding of m."""
    zeros = intrinsic(b, "llvm.ctlz.i64", I64, [m, ir.Constant(ir.IntType(1), 0)])
    extra = b.sub(ir.Constant(I64, 11), zeros)  # bits beyond 53
    shift = b.select(b.icmp_signed(">", extra, ir.Constant(I64, 0)), extra, ir.Constant(I64, 0))
    lowest = b.shl(ir.Constant(I64, 1), shift)
    dropped = b.and_(m, b.sub(lowest, ir.Constant(I64, 1)))
    kept = b.xor(m, dropped)
    return b.select(b.icmp_unsigned("!=", dropped, ir.Constant(I64, 0)), b.or_(kept, lowest), kept)


def _float_to_float(b: ir.IRBuilder, v: ir.Value, dst: DType) -> ir.Value:
    """An f32 / f64 value rounded once to the float dtype dst (bf16 as an f32 holding a bf16 value)."""
    if dst is DType.F64:
        return b.fpext(v, F64) if isinstance(v.type, ir.FloatType) else v
    if isinstance(v.type, ir.DoubleType):
        v = f64_to_f32_odd(b, v) if dst is not DType.F32 else b.fptrunc(v, F32)
    return round_bf16(b, v) if dst is DType.BF16 else b.fptrunc(v, compute_type(dst)) if dst is DType.F16 else v


@scalar("cast", "cast_like")
def _cast(s: Scalar, x: ir.Value, _like: ir.Value | None = None) -> ir.Value:
    return convert(s.b, x, s.dtype(0), s.out_dtype)


@lowering("cast_like", symbolic=True)
def cast_like(ctx: NodeCtx) -> None:
    emit_elementwise(ctx, operands=1)  # the target operand only gives the dtype: its shape need not broadcast


__all__ = ["convert"]

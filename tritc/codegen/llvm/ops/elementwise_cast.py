"""cast / cast_like: dtype conversions exactly as numpy's astype (and ml_dtypes for bf16) does them.

Floats to integers truncate toward zero; out of range or nan gives what numpy gives on x86-64:
the integer indefinite value (INT_MIN of the 32- or 64-bit conversion) truncated to the result's
width, and for unsigned 32/64-bit results the unsigned-conversion sequence C compilers emit.
Anything to bf16 goes through f32 (double rounding, as ml_dtypes does); f64 to f16 rounds once.
"""

from __future__ import annotations

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import F32, I32, intrinsic, suffix
from ..context import NodeCtx
from ..elementwise import Scalar, compute_type, emit_elementwise, round_bf16, scalar
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
    if dst is DType.BF16:  # via f32 (ml_dtypes), then round to bf16
        return round_bf16(b, convert(b, v, src, DType.F32))
    if src.is_int and dst.is_int:
        if t.width < v.type.width:
            return b.trunc(v, t)
        if t.width > v.type.width:
            return b.sext(v, t) if src.is_signed else b.zext(v, t)
        return v
    if src.is_int:  # to half through f32: exact below 2^24, and larger values overflow f16 either way
        via = F32 if isinstance(t, ir.HalfType) else t
        f = b.sitofp(v, via) if src.is_signed else b.uitofp(v, via)
        return b.fptrunc(f, t) if via != t else f
    if dst.is_float:
        return _float_to_float(b, v, t)
    if isinstance(v.type, ir.HalfType):  # numpy converts half to float first
        v = b.fpext(v, F32)
    return _float_to_int(b, v, dst, from_half=src is DType.F16)


def _float_to_float(b: ir.IRBuilder, v: ir.Value, t: ir.Type) -> ir.Value:
    """fpext/fptrunc, with half always converted through f32 (f64 <-> f16 directly would be a libgcc
    call even with F16C). f64 -> f32 rounds to odd first, so that the second rounding to f16 is still
    the correctly rounded result (numpy rounds once)."""
    if isinstance(v.type, ir.HalfType):
        v = b.fpext(v, F32)
    if isinstance(t, ir.HalfType):
        return b.fptrunc(_f64_to_f32_odd(b, v) if isinstance(v.type, ir.DoubleType) else v, t)
    if isinstance(t, ir.FloatType) and isinstance(v.type, ir.DoubleType):
        return b.fptrunc(v, t)
    if isinstance(t, ir.DoubleType) and isinstance(v.type, ir.FloatType):
        return b.fpext(v, t)
    return v


def _f64_to_f32_odd(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """f64 -> f32 rounding to odd: truncate toward zero, then set the last bit if inexact."""
    y = b.fptrunc(x, F32)
    back = b.fpext(y, x.type)
    fabs = f"llvm.fabs.{suffix(x.type)}"
    away = b.fcmp_ordered(">", intrinsic(b, fabs, x.type, [back]), intrinsic(b, fabs, x.type, [x]))
    bits = b.bitcast(y, I32)
    bits = b.select(away, b.sub(bits, ir.Constant(I32, 1)), bits)
    bits = b.select(b.fcmp_ordered("!=", back, x), b.or_(bits, ir.Constant(I32, 1)), bits)
    return b.bitcast(bits, F32)


def cvtt(b: ir.IRBuilder, x: ir.Value, bits: int) -> ir.Value:
    """x86's truncating float -> i32/i64 conversion: INT_MIN for nan and out-of-range values
    (LLVM's fptosi would be poison there)."""
    it = ir.IntType(bits)
    lo = -(2.0 ** (bits - 1))
    below = lo - 1.0  # the largest invalid value below the range, if the float type has it
    exact = isinstance(x.type, ir.DoubleType) and bits == 32
    ok_lo = b.fcmp_ordered(">", x, ir.Constant(x.type, below)) if exact else b.fcmp_ordered(">=", x, ir.Constant(x.type, lo))
    ok = b.and_(ok_lo, b.fcmp_ordered("<", x, ir.Constant(x.type, -lo)))
    safe = b.select(ok, x, ir.Constant(x.type, 0.0))
    return b.select(ok, b.fptosi(safe, it), ir.Constant(it, -(1 << (bits - 1))))


def _unsigned_cvtt(b: ir.IRBuilder, x: ir.Value, bits: int) -> ir.Value:
    """The compilers' float -> uN sequence: x >= 2^(N-1) ? cvtt(x - 2^(N-1)) ^ 2^(N-1) : cvtt(x)."""
    half = ir.Constant(x.type, 2.0 ** (bits - 1))
    high = b.fcmp_ordered(">=", x, half)
    shifted = b.xor(cvtt(b, b.fsub(x, half), bits), ir.Constant(ir.IntType(bits), -(1 << (bits - 1))))
    return b.select(high, shifted, cvtt(b, x, bits))


def _float_to_int(b: ir.IRBuilder, x: ir.Value, dst: DType, from_half: bool) -> ir.Value:
    t = compute_type(dst)
    if dst is DType.I64:
        return cvtt(b, x, 64)
    if dst is DType.U64:
        return _unsigned_cvtt(b, x, 64)
    if dst is DType.U32:  # numpy's half loop converts through int64; the others use the unsigned sequence
        return b.trunc(cvtt(b, x, 64), I32) if from_half else _unsigned_cvtt(b, x, 32)
    wide = cvtt(b, x, 32)
    return wide if t.width == 32 else b.trunc(wide, t)


@scalar("cast", "cast_like")
def _cast(s: Scalar, x: ir.Value, _like: ir.Value | None = None) -> ir.Value:
    return convert(s.b, x, s.dtype(0), s.out_dtype)


@lowering("cast_like")
def cast_like(ctx: NodeCtx) -> None:
    emit_elementwise(ctx, operands=1)  # the target operand only gives the dtype: its shape need not broadcast


__all__ = ["convert", "cvtt"]

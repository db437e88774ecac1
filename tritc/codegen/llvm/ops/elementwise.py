"""Lowerings of the elementwise ops: each is a scalar emitter run by the elementwise engine.

This file holds arithmetic, comparisons, logic, bitwise ops and selection; elementwise_math.py the
float functions and activations, elementwise_cast.py the conversions. Integer results are bit-exact
with the interpreter (division by zero gives 0, INT_MIN / -1 wraps, shifts out of range fill).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import I64
from ..elementwise import SCALAR, Scalar, is_float, lower_elementwise, scalar
from . import LOWERINGS, elementwise_cast, elementwise_math, lowering  # noqa: F401 - the others register emitters
from .elementwise_cast import convert


def _signed(s: Scalar, i: int = 0) -> bool:
    return s.dtype(i).is_signed


# ---- arithmetic ---------------------------------------------------------------------------------


@scalar("add")
def _add(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fadd(a, b) if is_float(a) else s.b.add(a, b)


@scalar("sub")
def _sub(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fsub(a, b) if is_float(a) else s.b.sub(a, b)


@scalar("mul")
def _mul(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
    return s.b.fmul(a, b) if is_float(a) else s.b.mul(a, b)


def _safe_divisor(s: Scalar, y: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(y with 0 and -1 replaced by 1, y == 0, y == -1): LLVM's division is undefined for x / 0
    and traps for INT_MIN / -1, so those cases are computed apart."""
    b = s.b
    zero, minus1 = b.icmp_signed("==", y, s.zero(y)), b.icmp_signed("==", y, s.const(y, -1))
    bad = b.or_(zero, minus1) if _signed(s, 1) else zero
    return b.select(bad, s.const(y, 1), y), zero, minus1


@scalar("div")
def _div(s: Scalar, x: ir.Value, y: ir.Value) -> ir.Value:
    b = s.b
    if is_float(x):
        return b.fdiv(x, y)
    safe, zero, minus1 = _safe_divisor(s, y)
    if not _signed(s):
        return b.select(zero, s.zero(x), b.udiv(x, safe))
    q = b.select(minus1, b.sub(s.zero(x), x), b.sdiv(x, safe))  # truncates toward zero, as C does
    return b.select(zero, s.zero(x), q)


@scalar("mod")
def _mod(s: Scalar, x: ir.Value, y: ir.Value) -> ir.Value:
    b = s.b
    if is_float(x):
        r = s.narrow(b.frem(s.wide(x), s.wide(y)))  # frem is C's fmod
        if s.attrs["fmod"]:
            return r
        # numpy's mod: the sign of y; an exact zero is +-0 with y's sign
        fix = b.xor(b.fcmp_ordered("<", y, s.zero(y)), b.fcmp_ordered("<", r, s.zero(r)))
        nonzero = b.fcmp_unordered("!=", r, s.zero(r))
        return b.select(nonzero, b.select(fix, b.fadd(r, y), r), s.call("llvm.copysign", s.zero(r), y))
    safe, zero, minus1 = _safe_divisor(s, y)
    if not _signed(s):
        return b.select(zero, s.zero(x), b.urem(x, safe))
    r = b.srem(x, safe)
    if not s.attrs["fmod"]:
        fix = b.and_(b.icmp_signed("!=", r, s.zero(r)), b.xor(b.icmp_signed("<", r, s.zero(r)), b.icmp_signed("<", y, s.zero(y))))
        r = b.select(fix, b.add(r, y), r)
    return b.select(b.or_(zero, minus1), s.zero(x), r)


@scalar("pow")
def _pow(s: Scalar, x: ir.Value, y: ir.Value) -> ir.Value:
    """Float x: powf/pow with y converted to x's (widened) dtype. Integer x: exact wrapping powers
    for y >= 0, trunc(pow(double, double)) otherwise, as the interpreter does."""
    b = s.b
    xd, yd = s.dtype(0), s.dtype(1)
    if xd.is_float:
        wide = DType.F32 if xd in (DType.F16, DType.BF16) else xd
        return s.narrow(s.libm("pow", s.wide(x), convert(b, y, yd, wide)))
    via_float = s.call("llvm.trunc", s.libm("pow", convert(b, x, xd, DType.F64), convert(b, y, yd, DType.F64)))
    if yd.is_float:
        return convert(b, via_float, DType.F64, xd)
    exact = b.call(_ipow(b.module), [convert(b, x, xd, DType.I64), convert(b, y, yd, DType.I64)])
    negative = b.icmp_signed("<", y, s.zero(y)) if yd.is_signed else ir.Constant(ir.IntType(1), 0)
    r = b.select(negative, convert(b, via_float, DType.F64, DType.I64), exact)
    return convert(b, r, DType.I64, xd)


def _ipow(module: ir.Module) -> ir.Function:
    """i64 tritc.ipow(i64 base, i64 exp): base ** exp mod 2^64 by squaring (exp as unsigned bits)."""
    fn = module.globals.get("tritc.ipow")
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(I64, [I64, I64]), "tritc.ipow")
    fn.linkage = "internal"
    base, exp = fn.args
    entry, head, body, done = (fn.append_basic_block(n) for n in ("entry", "head", "body", "done"))
    b = ir.IRBuilder(entry)
    b.branch(head)
    b.position_at_end(head)
    r, x, e = b.phi(I64), b.phi(I64), b.phi(I64)
    b.cbranch(b.icmp_unsigned("!=", e, I64(0)), body, done)
    b.position_at_end(body)
    odd = b.trunc(e, ir.IntType(1))
    r2, x2, e2 = b.select(odd, b.mul(r, x), r), b.mul(x, x), b.lshr(e, I64(1))
    b.branch(head)
    for phi, init, nxt in ((r, I64(1), r2), (x, base, x2), (e, exp, e2)):
        phi.add_incoming(init, entry)
        phi.add_incoming(nxt, body)
    b.position_at_end(done)
    b.ret(r)
    return fn


@scalar("neg")
def _neg(s: Scalar, x: ir.Value) -> ir.Value:
    return s.b.fneg(x) if is_float(x) else s.b.sub(s.zero(x), x)


@scalar("abs")
def _abs(s: Scalar, x: ir.Value) -> ir.Value:
    if is_float(x):
        return s.call("llvm.fabs", x)
    if not _signed(s):
        return x
    return s.b.select(s.b.icmp_signed("<", x, s.zero(x)), s.b.sub(s.zero(x), x), x)  # abs(INT_MIN) wraps


@scalar("sign")
def _sign(s: Scalar, x: ir.Value) -> ir.Value:
    b, one, zero = s.b, s.const(x, 1), s.zero(x)
    if is_float(x):  # sign(nan) is nan, sign(-0) is +0
        mid = b.select(b.fcmp_ordered("==", x, zero), zero, x)
        return b.select(b.fcmp_ordered(">", x, zero), one, b.select(b.fcmp_ordered("<", x, zero), s.const(x, -1), mid))
    if not _signed(s):
        return b.zext(b.icmp_unsigned("!=", x, zero), x.type)
    return b.select(b.icmp_signed(">", x, zero), one, b.select(b.icmp_signed("<", x, zero), s.const(x, -1), zero))


@scalar("reciprocal")
def _reciprocal(s: Scalar, x: ir.Value) -> ir.Value:
    w = s.wide(x)
    return s.narrow(s.b.fdiv(s.const(w, 1.0), w))


def max2(s: Scalar, a: ir.Value, b: ir.Value, largest: bool = True, signed: bool = True) -> ir.Value:
    """numpy's maximum/minimum of two compute values: a nan operand gives nan."""
    if is_float(a):
        wa, wb = s.wide(a), s.wide(b)
        r = s.call("llvm.maximum" if largest else "llvm.minimum", wa, wb)
        return s.b.fptrunc(r, a.type) if r.type != a.type else r
    cmp = s.b.icmp_signed if signed else s.b.icmp_unsigned
    return s.b.select(cmp(">" if largest else "<", a, b), a, b)


def _fold(fn: Callable[..., ir.Value]) -> Callable[..., ir.Value]:
    @functools.wraps(fn)
    def emit(s: Scalar, *xs: ir.Value) -> ir.Value:
        return functools.reduce(lambda acc, x: fn(s, acc, x), xs[1:], xs[0])

    return emit


scalar("max")(_fold(lambda s, a, b: max2(s, a, b, True, _signed(s))))
scalar("min")(_fold(lambda s, a, b: max2(s, a, b, False, _signed(s))))


@scalar("sum")
def _sum(s: Scalar, *xs: ir.Value) -> ir.Value:
    """Left to right, 16-bit floats accumulated in f32 and rounded once."""
    if not is_float(xs[0]):
        return functools.reduce(s.b.add, xs[1:], xs[0])
    return s.narrow(functools.reduce(s.b.fadd, [s.wide(x) for x in xs[1:]], s.wide(xs[0])))


@scalar("mean")
def _mean(s: Scalar, *xs: ir.Value) -> ir.Value:
    total = functools.reduce(s.b.fadd, [s.wide(x) for x in xs[1:]], s.wide(xs[0]))
    return s.narrow(s.b.fdiv(total, s.const(total, len(xs))))


# ---- comparisons, logic, bitwise ------------------------------------------------------------------


def _comparison(pred: str) -> Callable[..., ir.Value]:
    def emit(s: Scalar, a: ir.Value, b: ir.Value) -> ir.Value:
        if is_float(a):  # ordered: any comparison with nan is false
            return s.b.fcmp_ordered(pred, a, b)
        signed = _signed(s) and s.dtype(0) is not DType.BOOL  # False < True
        return (s.b.icmp_signed if signed else s.b.icmp_unsigned)(pred, a, b)

    return emit


for _op, _pred in (("equal", "=="), ("less", "<"), ("greater", ">"), ("less_or_equal", "<="), ("greater_or_equal", ">=")):
    scalar(_op)(_comparison(_pred))

scalar("and", "bitwise_and")(lambda s, a, b: s.b.and_(a, b))
scalar("or", "bitwise_or")(lambda s, a, b: s.b.or_(a, b))
scalar("xor", "bitwise_xor")(lambda s, a, b: s.b.xor(a, b))
scalar("not", "bitwise_not")(lambda s, x: s.b.not_(x))


@scalar("bit_shift")
def _bit_shift(s: Scalar, x: ir.Value, y: ir.Value) -> ir.Value:
    """A shift by a negative amount or by the width or more leaves the sign fill (LLVM: poison)."""
    b = s.b
    out = b.icmp_unsigned(">=", y, s.const(y, x.type.width))  # a negative amount is huge unsigned
    amount = b.select(out, s.zero(y), y)
    if s.attrs["direction"] == "LEFT":
        return b.select(out, s.zero(x), b.shl(x, amount))
    if not _signed(s):
        return b.select(out, s.zero(x), b.lshr(x, amount))
    fill = b.select(b.icmp_signed("<", x, s.zero(x)), s.const(x, -1), s.zero(x))
    return b.select(out, fill, b.ashr(x, amount))


# ---- selection ------------------------------------------------------------------------------------


@scalar("where")
def _where(s: Scalar, cond: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
    return s.b.select(cond, x, y)


@scalar("clip")
def _clip(s: Scalar, x: ir.Value, lo: ir.Value | None = None, hi: ir.Value | None = None) -> ir.Value:
    """min(max(x, lo), hi) with numpy's nan propagation; a missing bound is no bound."""
    y = x
    if lo is not None:
        y = max2(s, y, lo, True, _signed(s))
    if hi is not None:
        y = max2(s, y, hi, False, _signed(s))
    return y


@scalar("identity")
def _identity(s: Scalar, x: ir.Value) -> ir.Value:
    return x


for _op in list(SCALAR):
    if _op not in LOWERINGS:  # identity is a copy (core.py), cast_like reads one operand (elementwise_cast.py)
        lowering(_op, symbolic=True)(lower_elementwise)

__all__ = ["max2"]

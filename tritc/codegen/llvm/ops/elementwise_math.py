"""Scalar emitters of the float functions (sqrt, exp, trig, rounding, nan/inf tests) and activations.

16-bit floats are computed in f32 and rounded once, as the interpreter does (`s.wide` / `s.narrow`).
exp, log, tanh, sigmoid, erf and their users run inline f32 code from mathfns.py (vectorised);
the rarer trig functions and f64 call libm. Attribute constants are rounded to the compute type,
as numpy does with a Python float next to a float32 array.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir

from ....ir.types import DType
from ..elementwise import Scalar, is_float, scalar
from .elementwise_cast import convert


def _max(s: Scalar, a: ir.Value, b: ir.Value, largest: bool = True) -> ir.Value:
    """np.maximum / np.minimum of two float values (nan propagates)."""
    return s.call("llvm.maximum" if largest else "llvm.minimum", a, b)


# ---- float functions ---------------------------------------------------------------------------------

for _op in ("exp", "log", "tanh", "sigmoid", "erf"):
    scalar(_op)(lambda s, x, _name=_op: s.math(_name, x))

for _op, _libm in (("sin", "sin"), ("cos", "cos"), ("tan", "tan"), ("asin", "asin"), ("acos", "acos"), ("atan", "atan"),
                   ("sinh", "sinh"), ("cosh", "cosh"), ("asinh", "asinh"), ("acosh", "acosh"), ("atanh", "atanh")):
    scalar(_op)(lambda s, x, _name=_libm: s.libm(_name, x))

for _op, _intrinsic in (("sqrt", "llvm.sqrt"), ("floor", "llvm.floor"), ("ceil", "llvm.ceil"), ("round", "llvm.roundeven")):
    scalar(_op)(lambda s, x, _name=_intrinsic: s.narrow(s.call(_name, s.wide(x))))


@scalar("is_nan")
def _is_nan(s: Scalar, x: ir.Value) -> ir.Value:
    return s.b.fcmp_unordered("uno", x, x)


@scalar("is_inf")
def _is_inf(s: Scalar, x: ir.Value) -> ir.Value:
    b = s.b
    result = ir.Constant(ir.IntType(1), 0)
    if s.attrs["detect_positive"]:
        result = b.or_(result, b.fcmp_ordered("==", x, s.const(x, math.inf)))
    if s.attrs["detect_negative"]:
        result = b.or_(result, b.fcmp_ordered("==", x, s.const(x, -math.inf)))
    return result


# ---- activations -------------------------------------------------------------------------------------


@scalar("relu")
def _relu(s: Scalar, x: ir.Value) -> ir.Value:
    zero = s.zero(x)
    if is_float(x):  # nan stays nan (ordered compare is false), -0 becomes +0 as in np.maximum(x, 0)
        return s.b.select(s.b.fcmp_ordered("<=", x, zero), zero, x)
    if not s.dtype().is_signed:
        return x
    return s.b.select(s.b.icmp_signed("<", x, zero), zero, x)


@scalar("leaky_relu")
def _leaky_relu(s: Scalar, x: ir.Value) -> ir.Value:
    v = s.wide(x)
    return s.narrow(s.b.select(s.b.fcmp_ordered("<", v, s.zero(v)), s.b.fmul(s.const(v, s.attrs["alpha"]), v), v))


@scalar("elu")
def _elu(s: Scalar, x: ir.Value) -> ir.Value:
    v = s.wide(x)
    neg = s.b.fmul(s.const(v, s.attrs["alpha"]), s.math("expm1", v))
    return s.narrow(s.b.select(s.b.fcmp_ordered("<", v, s.zero(v)), neg, v))


@scalar("selu")
def _selu(s: Scalar, x: ir.Value) -> ir.Value:
    v, b = s.wide(x), s.b
    neg = b.fmul(s.const(v, s.attrs["alpha"]), s.math("expm1", v))
    return s.narrow(b.fmul(s.const(v, s.attrs["gamma"]), b.select(b.fcmp_ordered(">", v, s.zero(v)), v, neg)))


@scalar("celu")
def _celu(s: Scalar, x: ir.Value) -> ir.Value:
    v, b = s.wide(x), s.b
    alpha = s.const(v, s.attrs["alpha"])
    neg = b.fmul(alpha, s.math("expm1", b.fdiv(v, alpha)))
    return s.narrow(b.fadd(_max(s, v, s.zero(v)), _max(s, s.zero(v), neg, largest=False)))


@scalar("gelu")
def _gelu(s: Scalar, x: ir.Value) -> ir.Value:
    """x * Phi(x). The exact form is 0.5 x (1 + erf(x / sqrt2)) in f64 (libm), as the interpreter; in f32
    it is 0.5 x erfc(-x / sqrt2) (mathfns), which stays accurate for large negative x where 1 + erf cancels."""
    b = s.b
    v = s.wide(x)
    if s.attrs["approximate"] == "tanh":
        half = b.fmul(s.const(v, 0.5), v)
        inner = b.fadd(v, b.fmul(s.const(v, 0.044715), b.fmul(b.fmul(v, v), v)))
        t = s.math("tanh", b.fmul(s.const(v, math.sqrt(2 / math.pi)), inner))
        return s.narrow(b.fmul(half, b.fadd(s.const(v, 1.0), t)))
    return s.narrow(s.math("gelu_erf", v))


@scalar("hard_sigmoid")
def _hard_sigmoid(s: Scalar, x: ir.Value) -> ir.Value:
    v, b = s.wide(x), s.b
    t = b.fadd(b.fmul(s.const(v, s.attrs["alpha"]), v), s.const(v, s.attrs["beta"]))
    return s.narrow(_max(s, _max(s, t, s.zero(v)), s.const(v, 1.0), largest=False))


@scalar("hard_swish")
def _hard_swish(s: Scalar, x: ir.Value) -> ir.Value:
    v, b = s.wide(x), s.b
    t = b.fadd(b.fdiv(v, s.const(v, 6.0)), s.const(v, 0.5))
    return s.narrow(b.fmul(v, _max(s, _max(s, t, s.zero(v)), s.const(v, 1.0), largest=False)))


def _softplus(s: Scalar, v: ir.Value) -> ir.Value:
    """np.logaddexp(0, v) = max(v, 0) + log1p(exp(-|v|)): no overflow; nan gives nan."""
    b = s.b
    pos = b.select(b.fcmp_ordered(">", v, s.zero(v)), v, s.zero(v))
    tail = s.math("log1p", s.math("exp", b.fneg(s.call("llvm.fabs", v))))
    return b.fadd(pos, tail)


scalar("softplus")(lambda s, x: s.narrow(_softplus(s, s.wide(x))))


@scalar("mish")
def _mish(s: Scalar, x: ir.Value) -> ir.Value:
    v = s.wide(x)
    return s.narrow(s.b.fmul(v, s.math("tanh", _softplus(s, v))))


@scalar("softsign")
def _softsign(s: Scalar, x: ir.Value) -> ir.Value:
    v, b = s.wide(x), s.b
    return s.narrow(b.fdiv(v, b.fadd(s.const(v, 1.0), s.call("llvm.fabs", v))))


@scalar("swish")
def _swish(s: Scalar, x: ir.Value) -> ir.Value:
    v, b = s.wide(x), s.b
    e = s.math("exp", b.fmul(s.const(v, -s.attrs["alpha"]), v))
    return s.narrow(b.fdiv(v, b.fadd(s.const(v, 1.0), e)))


@scalar("prelu")
def _prelu(s: Scalar, x: ir.Value, slope: ir.Value) -> ir.Value:
    """In x's own dtype (no widening), as np.where(x < 0, x * slope, x)."""
    b = s.b
    if is_float(x):
        return b.select(b.fcmp_ordered("<", x, s.zero(x)), b.fmul(x, slope), x)
    if not s.dtype().is_signed:
        return x
    return b.select(b.icmp_signed("<", x, s.zero(x)), b.mul(x, slope), x)


@scalar("thresholded_relu")
def _thresholded_relu(s: Scalar, x: ir.Value) -> ir.Value:
    v = s.wide(x)
    return s.narrow(s.b.select(s.b.fcmp_ordered(">", v, s.const(v, s.attrs["alpha"])), v, s.zero(v)))


@scalar("shrink")
def _shrink(s: Scalar, x: ir.Value) -> ir.Value:
    """Integers are computed in f64 and truncated back (numpy promotes them with the float attributes)."""
    b, dt = s.b, s.dtype()
    v = s.wide(x) if dt.is_float else convert(b, x, dt, DType.F64)
    lambd, bias = s.const(v, s.attrs["lambd"]), s.const(v, s.attrs["bias"])
    inner = b.select(b.fcmp_ordered(">", v, lambd), b.fsub(v, bias), s.zero(v))
    r = b.select(b.fcmp_ordered("<", v, b.fneg(lambd)), b.fadd(v, bias), inner)
    return s.narrow(r) if dt.is_float else convert(b, r, DType.F64, dt)

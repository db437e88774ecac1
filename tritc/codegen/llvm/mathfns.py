"""Vectorisable f32 math in plain LLVM IR: exp, expm1, log, log1p, tanh, sigmoid, erf, erfc, gelu.

    y = exp_f32(b, x)      # x: float or <N x float>; straight-line code, no calls, no branches

libm calls (expf, ...) stop LLVM's loop vectoriser, so the hot f32 functions are written here as
range reduction + polynomial with selects for the special cases (inf, nan, underflow, negative
arguments of log). Accuracy, measured over every 97th f32: exp 1 ulp, log 0.8, log1p 2.4, sigmoid 2.3,
erf 1.1, expm1 3.4, erfc 4.3, tanh 4.7 (a rational function: one division instead of an exp, twice as
fast; 5.5 without FMA); f64 keeps libm. Polynomials are evaluated with llvm.fmuladd (one FMA where the
target has it, a multiply and an add elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import llvmlite.ir as ir

from .builder import I32, intrinsic, suffix

# Cephes logf coefficients; exp, tanh, erf, log erfc and erfc were fitted (float64 least squares) for tritc.
# (e^r - 1 - r) / r^2 on |r| <= ln2/2 (weighted least squares: relative error of e^r 4.6e-9)
_EXP = (0.0013746219157218032, 0.008370347368880631, 0.04166976263224339, 0.1666650632923374, 0.49999987185213735)
_LOG = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
        2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
# tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9.1 (rational fit with relative weights: 3.1e-8 before rounding)
_TANH_P = (1.3264358918459625e-08, 2.0551894030535093e-05, 0.003492468512507219, 0.13378520015823117, 0.9999999917494781)
_TANH_Q = (7.741938964861646e-07, 0.000328028114764734, 0.025865487895301343, 0.4671183993699676, 1.0)
# erf(x) / x - 1 as a polynomial in t = x*x on [0, 1] (relative error 1.4e-9 before rounding to f32).
_ERF = (7.882497109293133e-05, -0.000801885499248199, 0.005189311942640423, -0.02685432879603255,
        0.11283597463486737, -0.3761262690358022, 0.1283791658815026)  # the constant term minus 1
# log(erfc(a)) on [0.921875, 4] (erf = 1 - exp of it: at most 0.1 ulp of erf before rounding)
_LOG_ERFC = (1.6131019009836337e-06, -4.55711847159602e-05, 0.0005926017196520812, -0.004739417686779931,
             0.026362380200075274, -0.1099740464715407, -0.6319416357852465, -1.130163978371588, 0.0003025418138778999)
# (1 + 2a) exp(a^2) erfc(a) as a polynomial in q = (a - 2) / (a + 2), a in [0, 10.06] (relative error 1.2e-9).
_ERFC = (8.109653366135466e-05, 0.0001723622350257127, -0.0004015426541176036, -0.0014242898134075406,
         0.001252260284280016, 0.008710553554067912, -0.008030564426838525, -0.05421808099070449,
         0.16405099202204293, -0.16603050585940987, -0.09276381890026944, 1.2769783825186614)

LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125  # ln 2 split so that n * LN2_HI is exact for |n| < 512 (Cody-Waite)
LN2_LO = 1.4286068203094172e-06
MAGIC = 12582912.0  # 1.5 * 2^23: adding it rounds a float to an integer held in the low mantissa bits


# ---- small builders that work on f32 scalars and vectors alike ----------------------------------------


def c(like: ir.Value | ir.Type, v: float) -> ir.Constant:
    """The f32 constant v, splatted when `like` is a vector."""
    t = like if isinstance(like, ir.Type) else like.type
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, float(v))] * t.count)
    return ir.Constant(t, float(v))


def ci(like: ir.Value | ir.Type, v: int) -> ir.Constant:
    """The i32 constant v shaped like `like` (a float or vector of floats)."""
    t = _int_type(like if isinstance(like, ir.Type) else like.type)
    v = ((int(v) + (1 << 31)) % (1 << 32)) - (1 << 31)
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(I32, v)] * t.count)
    return ir.Constant(t, v)


def _int_type(t: ir.Type) -> ir.Type:
    return ir.VectorType(I32, t.count) if isinstance(t, ir.VectorType) else I32


def fma(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x * y + z, fused where the target has FMA (llvm.fmuladd)."""
    return intrinsic(b, f"llvm.fmuladd.{suffix(x.type)}", x.type, [x, y, z])


def poly(b: ir.IRBuilder, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
    """coeffs[0] * x^(n-1) + ... + coeffs[-1] (Horner, highest power first)."""
    acc: ir.Value = c(x, coeffs[0])
    for k in coeffs[1:]:
        acc = fma(b, acc, x, c(x, k))
    return acc


def fabs(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return intrinsic(b, f"llvm.fabs.{suffix(x.type)}", x.type, [x])


def copysign(b: ir.IRBuilder, mag: ir.Value, sign: ir.Value) -> ir.Value:
    return intrinsic(b, f"llvm.copysign.{suffix(mag.type)}", mag.type, [mag, sign])


def bits(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.bitcast(x, _int_type(x.type))


def from_bits(b: ir.IRBuilder, i: ir.Value, like: ir.Value) -> ir.Value:
    return b.bitcast(i, like.type)


def is_nan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fcmp_unordered("uno", x, x)


def _ldexp_split(b: ir.IRBuilder, y: ir.Value, n: ir.Value) -> ir.Value:
    """y * 2^n for n in [-254, 254] as two exact power-of-two factors, so that results that
    overflow give inf and results that underflow round once into the subnormals."""
    n1 = b.ashr(n, ci(y, 1))
    n2 = b.sub(n, n1)
    s1 = from_bits(b, b.shl(b.add(n1, ci(y, 127)), ci(y, 23)), y)
    s2 = from_bits(b, b.shl(b.add(n2, ci(y, 127)), ci(y, 23)), y)
    return b.fmul(b.fmul(y, s1), s2)


# ---- the functions ---------------------------------------------------------------------------------------


def exp_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, times 2^n. A nan needs no
    test: it passes the clamps and the polynomial, and nan times any scale is nan."""
    t = b.select(b.fcmp_ordered("<", x, c(x, -104.0)), c(x, -104.0), x)  # below: 0 (exp(-104) < 2^-150)
    t = b.select(b.fcmp_ordered(">", t, c(x, 89.0)), c(x, 89.0), t)  # above: inf
    j = fma(b, t, c(x, LOG2E), c(x, MAGIC))
    n = b.sub(bits(b, j), ci(x, 0x4B400000))
    nf = b.fsub(j, c(x, MAGIC))
    r = fma(b, nf, c(x, -LN2_HI), t)
    r = fma(b, nf, c(x, -LN2_LO), r)
    z = b.fmul(r, r)
    y = b.fadd(fma(b, poly(b, r, _EXP), z, r), c(x, 1.0))
    return _ldexp_split(b, y, n)


def expm1_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x - 1: for |x| < ln2/2 the exp polynomial without its leading 1 (no cancellation),
    else exp(x) - 1 (which loses at most a few ulp where the result is near -1/3 or 1/2)."""
    z = b.fmul(x, x)
    small = fma(b, poly(b, x, _EXP), z, x)
    big = b.fsub(exp_f32(b, x), c(x, 1.0))
    return b.select(b.fcmp_ordered("<", fabs(b, x), c(x, 0.34657359)), small, big)


def log_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """ln x: x = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m by a polynomial in m - 1; ln 0 = -inf,
    ln of a negative number is nan, ln inf = inf; subnormals are scaled first."""
    sub = b.fcmp_ordered("<", x, c(x, 1.1754943508222875e-38))
    xs = b.select(sub, b.fmul(x, c(x, 8388608.0)), x)
    i = bits(b, xs)
    e = b.sub(b.lshr(i, ci(x, 23)), b.select(sub, ci(x, 127 + 23), ci(x, 127)))
    m = from_bits(b, b.or_(b.and_(i, ci(x, 0x007FFFFF)), ci(x, 0x3F800000)), x)  # in [1, 2)
    big = b.fcmp_ordered(">", m, c(x, 1.4142135623730951))
    m = b.select(big, b.fmul(m, c(x, 0.5)), m)
    e = b.select(big, b.add(e, ci(x, 1)), e)
    ef = b.sitofp(e, x.type)
    f = b.fsub(m, c(x, 1.0))
    z = b.fmul(f, f)
    y = b.fmul(b.fmul(poly(b, f, _LOG), f), z)
    y = fma(b, ef, c(x, -2.12194440e-4), y)
    y = fma(b, z, c(x, -0.5), y)
    res = fma(b, ef, c(x, 0.693359375), b.fadd(f, y))
    res = b.select(b.fcmp_ordered("==", x, c(x, float("inf"))), x, res)
    res = b.select(b.fcmp_ordered("==", x, c(x, 0.0)), c(x, float("-inf")), res)
    res = b.select(b.fcmp_ordered("<", x, c(x, 0.0)), c(x, float("nan")), res)
    return b.select(is_nan(b, x), x, res)


def log1p_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """ln(1 + x) accurate for small x: log(w) * x / (w - 1) with w = 1 + x (Goldberg)."""
    w = b.fadd(x, c(x, 1.0))
    d = b.fsub(w, c(x, 1.0))
    exact = b.fcmp_ordered("==", d, c(x, 0.0))
    safe_d = b.select(exact, c(x, 1.0), d)
    res = b.fmul(log_f32(b, w), b.fdiv(x, safe_d))
    res = b.select(b.fcmp_ordered("==", w, c(x, float("inf"))), w, res)
    return b.select(exact, x, res)


def sigmoid_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 / (1 + e^-x), the formula the interpreter uses."""
    return b.fdiv(c(x, 1.0), b.fadd(c(x, 1.0), exp_f32(b, b.fneg(x))))


def tanh_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """A rational function of x^2 (one division) on |x| < 9.1; tanh rounds to exactly +-1 beyond."""
    big = b.fcmp_ordered(">=", fabs(b, x), c(x, 9.1))
    xc = b.select(big, c(x, 9.1), x)  # keeps the polynomials finite for inf
    t = b.fmul(xc, xc)
    r = b.fdiv(b.fmul(xc, poly(b, t, _TANH_P)), poly(b, t, _TANH_Q))
    return b.select(big, copysign(b, c(x, 1.0), x), r)


def _square(b: ir.IRBuilder, v: ir.Value) -> tuple[ir.Value, ir.Value]:
    """v*v as hi + lo exactly (Dekker: v split in 12-bit halves; no FMA needed)."""
    s = b.fmul(v, v)
    hi = from_bits(b, b.and_(bits(b, v), ci(v, 0xFFFFF000)), v)
    lo = b.fsub(v, hi)
    return s, b.fadd(b.fadd(b.fsub(b.fmul(hi, hi), s), b.fmul(b.fadd(hi, hi), lo)), b.fmul(lo, lo))


def _erfc_nonneg(b: ir.IRBuilder, a: ir.Value, a2: tuple[ir.Value, ir.Value] | None = None) -> ir.Value:
    """erfc(a) for a >= 0 (or nan): p(q) / (1 + 2a) * exp(-a^2), q = (a - 2) / (a + 2). exp(-a^2) is
    computed from a^2 = hi + lo (`a2`, or a*a exactly) so that its rounding is not amplified in the tail."""
    q = b.fdiv(b.fsub(a, c(a, 2.0)), b.fadd(a, c(a, 2.0)))
    p = poly(b, q, _ERFC)
    r = b.fdiv(p, fma(b, a, c(a, 2.0), c(a, 1.0)))
    s, err = a2 or _square(b, a)
    e = exp_f32(b, b.fneg(s))
    r = b.fmul(r, fma(b, e, b.fneg(err), e))  # exp(-s - err) = exp(-s) (1 - err)
    return b.select(b.fcmp_ordered(">", a, c(a, 10.0546875)), c(a, 0.0), r)  # erfc underflows past here


def gelu_erf_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """x Phi(x) = 0.5 x erfc(-x / sqrt2), with (x / sqrt2)^2 = x^2 / 2 taken exactly from x: rounding
    x / sqrt2 first would cost 2 a^2 ulps in the tail (x = -12: 150 ulps)."""
    a = b.fmul(fabs(b, x), c(x, 0.7071067811865476))
    s, err = _square(b, x)
    r = _erfc_nonneg(b, a, (b.fmul(s, c(x, 0.5)), b.fmul(err, c(x, 0.5))))
    r = b.select(b.fcmp_ordered(">", x, c(x, 0.0)), b.fsub(c(x, 2.0), r), r)  # erfc(-a) = 2 - erfc(a)
    return b.fmul(b.fmul(c(x, 0.5), x), r)


def erfc_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 - erf(x) without cancellation: accurate relative to the result in the tail."""
    r = _erfc_nonneg(b, fabs(b, x))
    return b.select(b.fcmp_ordered("<", x, c(x, 0.0)), b.fsub(c(x, 2.0), r), r)


def erf_f32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """x p(x^2) for |x| < 0.921875, else sign(x) (1 - exp(q(|x|))) with q ~ log erfc (|x| clamped to 4,
    past which erf rounds to 1): one exp, no division."""
    a = fabs(b, x)
    small = fma(b, x, poly(b, b.fmul(x, x), _ERF), x)  # x + x (p - 1): the rounding of p's 1.128 costs less
    ac = b.select(b.fcmp_ordered(">", a, c(x, 4.0)), c(x, 4.0), a)
    big = copysign(b, b.fsub(c(x, 1.0), exp_f32(b, poly(b, ac, _LOG_ERFC))), x)
    return b.select(b.fcmp_ordered("<", a, c(x, 0.921875)), small, big)


FUNCTIONS = {"exp": exp_f32, "expm1": expm1_f32, "log": log_f32, "log1p": log1p_f32, "sigmoid": sigmoid_f32, "tanh": tanh_f32,
             "erf": erf_f32, "erfc": erfc_f32, "gelu_erf": gelu_erf_f32}


def is_f32(t: ir.Type) -> bool:
    """True for float and vectors of float (what these functions take)."""
    return isinstance(t.element if isinstance(t, ir.VectorType) else t, ir.FloatType)


__all__ = ["FUNCTIONS", "erf_f32", "erfc_f32", "exp_f32", "expm1_f32", "gelu_erf_f32", "is_f32", "log1p_f32", "log_f32",
           "sigmoid_f32", "tanh_f32"]

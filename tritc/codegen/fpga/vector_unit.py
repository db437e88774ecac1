"""The vector unit's arithmetic (docs/ISA.md, "VOP"): every function as numpy float32 steps, each rounded.

This module *is* the definition the Simulator executes and the RTL is checked against: IEEE binary32 with
round to nearest even, subnormals kept, every step of the transcendental algorithms rounded as ISA.md writes
it, the reductions in the lane-then-tree order, NaN results written as the canonical quiet NaN. Arrays in,
arrays out; no Python loop per element (only per lane chunk and per tree level).
"""

from __future__ import annotations

import numpy as np

from .isa import VFunc

F32 = np.float32
CANONICAL_NAN = np.array(0x7FC00000, np.uint32).view(np.float32)[()]

# EXP: clamp, Cody-Waite reduction by ln 2 (LN2_HI has 16 significant bits: n * LN2_HI is exact), Horner.
EXP_LO, EXP_HI = F32(-87.33654), F32(88.72284)
LOG2E, LN2_HI, LN2_LO = F32(1.442695), F32(0.693145751953125), F32(1.4286068e-06)
EXP_C = tuple(F32(c) for c in (1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720))  # c0 .. c6

# SIN / COS: reduction by pi/2 in three parts (8 and 12 significant bits, then the rest), Taylor polynomials.
TWO_OVER_PI = F32(0.63661975)
PIO2 = (F32(1.5703125), F32(4.837512969970703e-04), F32(7.549790126404332e-08))
SIN_C = (F32(-1 / 6), F32(1 / 120), F32(-1 / 5040))   # s1, s2, s3
COS_C = (F32(-1 / 2), F32(1 / 24), F32(-1 / 720))     # c1, c2, c3

# ERF: Abramowitz and Stegun 7.1.26.
ERF_P = F32(0.3275911)
ERF_A = (F32(0.2548296), F32(-0.28449672), F32(1.4214138), F32(-1.4531521), F32(1.0614054))  # a1 .. a5
TANH_SAT = F32(9.0)

ONE, TWO, ZERO = F32(1.0), F32(2.0), F32(0.0)


def canonical(x: np.ndarray) -> np.ndarray:
    """x with every NaN replaced by the canonical quiet NaN 0x7FC00000 (in place when x is writable)."""
    nan = np.isnan(x)
    if nan.any():
        x = np.array(x, np.float32, copy=True)
        x[nan] = CANONICAL_NAN
    return x


def fmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IEEE 754-2019 maximum: NaN if either is NaN, +0 above -0."""
    r = np.where((a > b) | ((a == b) & ~np.signbit(a)), a, b)
    return np.where(np.isnan(a) | np.isnan(b), CANONICAL_NAN, r)


def fmin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IEEE 754-2019 minimum: NaN if either is NaN, -0 below +0."""
    r = np.where((a < b) | ((a == b) & np.signbit(a)), a, b)
    return np.where(np.isnan(a) | np.isnan(b), CANONICAL_NAN, r)


def vexp(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        lo, hi = x < EXP_LO, x > EXP_HI
        xc = np.where(lo | hi, ZERO, x)
        n = np.rint(xc * LOG2E)                         # an integer in [-126, 128]
        r = (xc - n * LN2_HI) - n * LN2_LO
        p = np.full_like(r, EXP_C[6])
        for c in EXP_C[5::-1]:
            p = p * r + c
        # p * 2^n rounded once: exact in float64 (p has 24 bits, 2^n is a power of two), then one rounding.
        y = (p.astype(np.float64) * np.exp2(n.astype(np.float64))).astype(np.float32)
        y = np.where(lo, ZERO, np.where(hi, F32(np.inf), y))
    return y.astype(np.float32, copy=False)


def _reduce_pio2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, k mod 4): x = k pi/2 + r, |r| <= pi/4 (for |x| < 6434)."""
    k = np.rint(x * TWO_OVER_PI)
    r = ((x - k * PIO2[0]) - k * PIO2[1]) - k * PIO2[2]
    q = np.fmod(np.where(np.isfinite(k), k, ZERO), F32(4.0))
    q = np.where(q < 0, q + F32(4.0), q).astype(np.int8)
    return r, q


def _sin_cos_poly(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = r * r
    p = np.full_like(r, SIN_C[2])
    p = p * z + SIN_C[1]
    p = p * z + SIN_C[0]
    s = r + (z * r) * p
    q = np.full_like(r, COS_C[2])
    q = q * z + COS_C[1]
    q = q * z + COS_C[0]
    c = ONE + z * q
    return s, c


def vsin(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        r, q = _reduce_pio2(x)
        s, c = _sin_cos_poly(r)
        return np.choose(q, (s, c, -s, -c)).astype(np.float32, copy=False)


def vcos(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        r, q = _reduce_pio2(x)
        s, c = _sin_cos_poly(r)
        return np.choose(q, (c, -s, -c, s)).astype(np.float32, copy=False)


def vtanh(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        e = vexp(x + x)
        y = ONE - TWO / (e + ONE)
        return np.where(np.abs(x) > TANH_SAT, np.copysign(ONE, x), y).astype(np.float32, copy=False)


def verf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        t = ONE / (ONE + ERF_P * np.abs(x))
        p = np.full_like(t, ERF_A[4])
        for a in ERF_A[3::-1]:
            p = p * t + a
        p = p * t
        y = ONE - p * vexp(-(x * x))
        return np.copysign(y, x).astype(np.float32, copy=False)


# -- reductions: lane l of L accumulates terms l, l+L, ... in order, then a binary tree over the lanes -----

def lane_reduce(terms: np.ndarray, lanes: int, op: str) -> np.ndarray:
    """Reduce the last axis of float32 `terms` the way the vector unit does: `op` is 'sum' or 'max'."""
    combine = np.add if op == "sum" else fmax
    n = terms.shape[-1]
    empty = ZERO if op == "sum" else F32(-np.inf)
    acc = np.full(terms.shape[:-1] + (lanes,), empty, np.float32)
    first = min(n, lanes)
    acc[..., :first] = terms[..., :first]
    for start in range(lanes, n, lanes):
        width = min(lanes, n - start)
        acc[..., :width] = combine(acc[..., :width], terms[..., start:start + width])
    while acc.shape[-1] > 1:
        acc = combine(acc[..., 0::2], acc[..., 1::2])
    return acc[..., 0]


def lane_matmul(a: np.ndarray, b: np.ndarray, lanes: int) -> np.ndarray:
    """d[i, j] = sum_k a[i, k] * b[j, k] with each product rounded, summed in the lane-then-tree order."""
    rows, depth = a.shape
    cols = b.shape[0]
    acc = np.zeros((rows, cols, lanes), np.float32)
    for start in range(0, depth, lanes):
        width = min(lanes, depth - start)
        prod = a[:, None, start:start + width] * b[None, :, start:start + width]
        if start == 0:
            acc[..., :width] = prod
        else:
            acc[..., :width] += prod
    while acc.shape[-1] > 1:
        acc = acc[..., 0::2] + acc[..., 1::2]
    return acc[..., 0]


def requantise(acc: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """REQ: sat8((A * M + 2^(30+s)) >> (31+s)) in 64-bit integers (an arithmetic shift: round half up)."""
    a = np.asarray(acc).astype(np.int64)
    y = (a * np.int64(multiplier) + np.int64(1 << (30 + shift))) >> np.int64(31 + shift)
    return np.clip(y, -128, 127)


ELEMENTWISE = {
    VFunc.COPY: lambda a, b, imm: a,
    VFunc.ADD: lambda a, b, imm: a + b,
    VFunc.SUB: lambda a, b, imm: a - b,
    VFunc.MUL: lambda a, b, imm: a * b,
    VFunc.DIV: lambda a, b, imm: a / b,
    VFunc.MAX: lambda a, b, imm: fmax(a, b),
    VFunc.MIN: lambda a, b, imm: fmin(a, b),
    VFunc.NEG: lambda a, b, imm: -a,
    VFunc.ABS: lambda a, b, imm: np.abs(a),
    VFunc.RECIP: lambda a, b, imm: ONE / a,
    VFunc.SQRT: lambda a, b, imm: np.sqrt(a),
    VFunc.EXP: lambda a, b, imm: vexp(a),
    VFunc.SIN: lambda a, b, imm: vsin(a),
    VFunc.COS: lambda a, b, imm: vcos(a),
    VFunc.TANH: lambda a, b, imm: vtanh(a),
    VFunc.ERF: lambda a, b, imm: verf(a),
    VFunc.WHERE: lambda a, b, imm: np.where(b != 0, a, imm),
    VFunc.ROUND: lambda a, b, imm: np.rint(a),
    VFunc.RELU: lambda a, b, imm: fmax(a, ZERO),
    VFunc.LT: lambda a, b, imm: (a < b).astype(np.float32),
    VFunc.EQ: lambda a, b, imm: (a == b).astype(np.float32),
}


def apply(func: VFunc, a: np.ndarray, b: np.ndarray | np.float32 | None, imm: np.float32) -> np.ndarray:
    """An elementwise function (not FILL, RSUM, RMAX, MM, REQ) of float32 `a` and `b` (an array or the immediate);
    NaN results are not yet canonical (the write does that)."""
    with np.errstate(all="ignore"):
        return np.asarray(ELEMENTWISE[func](a, b, imm), np.float32)

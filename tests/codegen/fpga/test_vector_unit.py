"""The vector unit's fp32 functions: the vectorised definitions equal a scalar, step-by-step reading of
docs/ISA.md bit for bit, and their error against float64 stays within the bounds ISA.md's "Accuracy" states."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tritc.codegen.fpga import vector_unit as vu

f32 = np.float32
F = np.float32


# -- scalar references: ISA.md's algorithms, one float32 step at a time ----------------------------------

def ref_exp(x: float) -> np.float32:
    x = f32(x)
    if math.isnan(x):
        return f32("nan")
    if x < f32(-87.33654):
        return f32(0.0)
    if x > f32(88.72284):
        return f32("inf")
    n = np.rint(x * f32(1.442695))
    r = (x - n * f32(0.693145751953125)) - n * f32(1.4286068e-06)
    p = f32(1 / 720)
    for c in (1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0):
        p = p * r + f32(c)
    with np.errstate(over="ignore"):
        return f32(math.ldexp(float(p), int(n)))     # exact in double, then one rounding to float32


def ref_sincos(x: float, cos: bool) -> np.float32:
    x = f32(x)
    k = np.rint(x * f32(0.63661975))
    r = ((x - k * f32(1.5703125)) - k * f32(4.837512969970703e-04)) - k * f32(7.549790126404332e-08)
    z = r * r
    s = r + (z * r) * ((f32(-1 / 5040) * z + f32(1 / 120)) * z + f32(-1 / 6))
    c = f32(1) + z * ((f32(-1 / 720) * z + f32(1 / 24)) * z + f32(-1 / 2))
    q = int(math.fmod(float(k), 4.0)) % 4 if math.isfinite(k) else 0
    table = (c, -s, -c, s) if cos else (s, c, -s, -c)
    return table[q]


def ref_tanh(x: float) -> np.float32:
    x = f32(x)
    if abs(x) > f32(9):
        return f32(math.copysign(1.0, x))
    return f32(1) - f32(2) / (ref_exp(x + x) + f32(1))


def ref_erf(x: float) -> np.float32:
    x = f32(x)
    t = f32(1) / (f32(1) + f32(0.3275911) * abs(x))
    p = f32(1.0614054)
    for a in (-1.4531521, 1.4214138, -0.28449672, 0.2548296):
        p = p * t + f32(a)
    p = p * t
    y = f32(1) - p * ref_exp(-(x * x))
    return f32(math.copysign(float(y), float(x)))


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 0.5, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 88.72284, 88.7228,
                    -87.33654, -87.3366, 100.0, -100.0, 9.0, 9.0001, 6433.9, -6433.9, 1e30], np.float32)


@pytest.mark.parametrize("name, vec, ref", [
    ("exp", vu.vexp, ref_exp), ("sin", vu.vsin, lambda x: ref_sincos(x, False)),
    ("cos", vu.vcos, lambda x: ref_sincos(x, True)), ("tanh", vu.vtanh, ref_tanh), ("erf", vu.verf, ref_erf),
])
def test_vectorised_equals_stepwise_definition(name, vec, ref):
    rng = np.random.default_rng(1)
    x = np.concatenate([SPECIAL, rng.uniform(-20, 20, 300), rng.uniform(-90, 90, 100),
                        rng.standard_normal(100) * 1e-3]).astype(np.float32)
    with np.errstate(all="ignore"):
        want = np.array([ref(v) for v in x], np.float32)
    got = vec(x)
    assert got.dtype == np.float32
    same = (bits(got) == bits(want)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{name}: {x[~same][:5]} -> {got[~same][:5]}, want {want[~same][:5]}"


def test_special_values():
    with np.errstate(all="ignore"):
        assert list(vu.vexp(np.array([0.0, -np.inf, np.inf, -88.0, 89.0], F))) == [1.0, 0.0, np.inf, 0.0, np.inf]
        assert vu.vexp(np.array([88.72284], F))[0] == np.inf           # n = 128: p * 2^128 overflows
        assert 0 < vu.vexp(np.array([-87.33654], F))[0] < 1.2e-38    # near the smallest normal
        assert np.isnan(vu.vexp(np.array([np.nan], F))[0])
        assert list(vu.vtanh(np.array([np.inf, -np.inf, 20.0, -9.5], F))) == [1.0, -1.0, 1.0, -1.0]
        assert list(vu.verf(np.array([np.inf, -np.inf], F))) == [1.0, -1.0]
        assert np.isnan(vu.vsin(np.array([np.inf], F))[0]) and np.isnan(vu.verf(np.array([np.nan], F))[0])
    assert vu.vcos(np.array([0.0], F))[0] == 1.0 and vu.vsin(np.array([0.0], F))[0] == 0.0


# -- accuracy against float64 (the bounds docs/ISA.md "Accuracy" states) ------------------------------------

def ulps(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|y - ref| in units of the float32 spacing at ref."""
    return np.abs(y.astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)


def sample(lo: float, hi: float) -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.concatenate([np.linspace(lo, hi, 100_001), rng.uniform(lo, hi, 100_000)]).astype(np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)

# (function, float64 reference, range, max ulp or None, max absolute error or None, max relative error or None)
BOUNDS = {
    "EXP": (vu.vexp, np.exp, (-87.33654, 88.72283), 3.0, None, 2.5e-7),
    "SIN": (vu.vsin, np.sin, (-6434.0, 6434.0), None, 4.0e-6, None),
    "COS": (vu.vcos, np.cos, (-6434.0, 6434.0), None, 4.0e-6, None),
    "TANH": (vu.vtanh, np.tanh, (-10.0, 10.0), None, 2.5e-7, None),
    "ERF": (vu.verf, lambda x: _erf(x).astype(np.float64), (-6.0, 6.0), None, 6.0e-7, None),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_accuracy_bounds(name):
    f, ref, (lo, hi), max_ulp, max_abs, max_rel = BOUNDS[name]
    x = sample(lo, hi)
    y = f(x)
    r = ref(x.astype(np.float64))
    assert np.isfinite(y).all()
    if max_ulp is not None:
        assert ulps(y, r).max() <= max_ulp
    if max_abs is not None:
        assert np.abs(y - r).max() <= max_abs
    if max_rel is not None:
        assert (np.abs(y - r) / np.abs(r)).max() <= max_rel


def test_tanh_relative_error_away_from_zero():
    """TANH's bound is absolute: 1 - 2 / (e^2a + 1) cancels near 0. Away from it the relative error is small."""
    x = sample(0.5, 9.0)
    r = np.tanh(x.astype(np.float64))
    assert (np.abs(vu.vtanh(x) - r) / r).max() < 3e-7


# -- reductions, max / min, requantisation ----------------------------------------------------------------

def ref_lane_reduce(row: list[np.float32], lanes: int, op: str) -> np.float32:
    comb = (lambda a, b: a + b) if op == "sum" else (lambda a, b: a if a > b or (a == b and not np.signbit(a)) else b)
    acc = []
    for lane in range(lanes):
        terms = row[lane::lanes]
        if not terms:
            acc.append(f32(0.0) if op == "sum" else f32(-np.inf))
            continue
        v = terms[0]
        for t in terms[1:]:
            v = comb(v, t)
        acc.append(v)
    while len(acc) > 1:
        acc = [comb(acc[2 * i], acc[2 * i + 1]) for i in range(len(acc) // 2)]
    return acc[0]


@pytest.mark.parametrize("lanes", [1, 4, 16])
def test_lane_reduce_order(lanes):
    rng = np.random.default_rng(3)
    terms = (rng.standard_normal((6, 37)) * 10.0 ** rng.integers(-3, 7, (6, 37))).astype(np.float32)
    got = vu.lane_reduce(terms, lanes, "sum")
    want = np.array([ref_lane_reduce(list(r), lanes, "sum") for r in terms], np.float32)
    assert np.array_equal(bits(got), bits(want))
    seq = np.zeros(6, np.float32)
    for i, r in enumerate(terms):      # left to right in float32: a different order, different bits
        s = f32(0)
        for t in r:
            s = s + t
        seq[i] = s
    if lanes > 1:
        assert not np.array_equal(bits(got), bits(seq))
    mx = vu.lane_reduce(terms, lanes, "max")
    assert np.array_equal(mx, terms.max(axis=1))


def test_lane_reduce_signed_zero_nan_and_empty_lanes():
    t = np.array([[-0.0, 0.0, -0.0], [-0.0, -0.0, -0.0], [1.0, np.nan, 2.0], [-5.0, -7.0, -6.0]], np.float32)
    mx = vu.lane_reduce(t, 16, "max")
    assert bits(mx[0]) == bits(f32(0.0)) and bits(mx[1]) == bits(f32(-0.0)) and np.isnan(mx[2]) and mx[3] == -5.0
    s = vu.lane_reduce(np.array([[-0.0]], np.float32), 16, "sum")
    assert bits(s[0]) == bits(f32(0.0))              # -0 + the empty lanes' +0
    s = vu.lane_reduce(np.array([[-0.0]], np.float32), 1, "sum")
    assert bits(s[0]) == bits(f32(-0.0))             # one lane starts from its first term


def test_lane_matmul_order():
    rng = np.random.default_rng(4)
    a = (rng.standard_normal((3, 45)) * 100).astype(np.float32)
    b = (rng.standard_normal((5, 45)) * 0.01).astype(np.float32)
    got = vu.lane_matmul(a, b, 8)
    want = np.array([[ref_lane_reduce([a[i, k] * b[j, k] for k in range(45)], 8, "sum") for j in range(5)]
                     for i in range(3)], np.float32)
    assert np.array_equal(bits(got), bits(want))


def test_fmax_fmin_ieee_2019():
    a = np.array([-0.0, 0.0, 1.0, np.nan, 2.0, -np.inf], np.float32)
    b = np.array([0.0, -0.0, np.nan, 1.0, 3.0, -1.0], np.float32)
    mx, mn = vu.fmax(a, b), vu.fmin(a, b)
    assert list(bits(mx[:2])) == [0, 0] and list(bits(mn[:2])) == [0x80000000, 0x80000000]
    assert np.isnan(mx[2]) and np.isnan(mx[3]) and np.isnan(mn[2]) and np.isnan(mn[3])
    assert mx[4] == 3.0 and mn[4] == 2.0 and mx[5] == -1.0 and mn[5] == -np.inf


def test_requantise_rounding_and_saturation():
    half = 1 << 30                                  # 0.5 in Q31
    a = np.array([1, -1, 3, -3, 2, -2, 254, 255, 256, -256, -257, -258, 1000, -1000], np.int32)
    assert list(vu.requantise(a, half, 0)) == [1, 0, 2, -1, 1, -1, 127, 127, 127, -128, -128, -128, 127, -128]
    assert list(vu.requantise(np.array([6, -6, 5], np.int32), half, 1)) == [2, -1, 1]   # x / 4: 1.5 -> 2, -1.5 -> -1
    rng = np.random.default_rng(5)
    acc = rng.integers(-2**31, 2**31, 500).astype(np.int32)
    for m, s in [(2**31 - 1, 0), (-2**31, 5), (123456789, 31), (987654321, 17)]:
        want = [max(-128, min(127, (int(x) * m + (1 << (30 + s))) >> (31 + s))) for x in acc]
        assert list(vu.requantise(acc, m, s)) == want

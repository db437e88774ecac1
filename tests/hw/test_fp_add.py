"""The fp32 adder against numpy's float32 addition and subtraction, bit for bit (a NaN result as the canonical
NaN): random bit patterns, operands of nearby exponents (cancellation), subnormals, and every pair of the special
values (zeros of both signs, the smallest subnormal and normal, the largest finite, infinities, NaNs)."""

from __future__ import annotations

import itertools

import numpy as np

from tritc.hw.fp_add import CANONICAL_NAN, FpAdder
from tritc.hw.sim import run

SPECIAL = [0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x80800000, 0x00800001,
           0x3F800000, 0xBF800000, 0x3F800001, 0x33800000, 0x4B800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F000000,
           0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001]


def reference(a: np.ndarray, b: np.ndarray, sub: np.ndarray) -> np.ndarray:
    fa, fb = a.view(np.float32), b.view(np.float32)
    with np.errstate(all="ignore"):
        y = np.where(sub.astype(bool), fa - fb, fa + fb).astype(np.float32)
    bits = y.view(np.uint32).copy()
    bits[np.isnan(y)] = CANONICAL_NAN
    return bits


def cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = 1500
    a = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    # Nearby exponents: b is a with its low bits and exponent perturbed, so that a - b cancels.
    near = (a[:n // 2] ^ rng.integers(0, 1 << 12, n // 2, dtype=np.uint32)) + (rng.integers(-2, 3, n // 2) << 23)
    b[:n // 2] = near.astype(np.uint32)
    # Subnormals and tiny normals.
    a[n // 2:n // 2 + 300] &= 0x80FFFFFF
    b[n // 2:n // 2 + 300] &= 0x80FFFFFF
    pairs = np.array(list(itertools.product(SPECIAL, SPECIAL)), np.uint32)
    a, b = np.concatenate([a, pairs[:, 0], pairs[:, 0]]), np.concatenate([b, pairs[:, 1], pairs[:, 1]])
    sub = np.concatenate([rng.integers(0, 2, n), np.zeros(len(pairs), int), np.ones(len(pairs), int)])
    return a, b, sub


def test_adder_is_numpy_float32_bit_for_bit():
    a, b, sub = cases(np.random.default_rng(3))
    want = reference(a, b, sub)
    dut = FpAdder()
    got = np.zeros_like(want)

    async def bench(ctx):
        for k in range(len(a)):
            ctx.set(dut.a, int(a[k]))
            ctx.set(dut.b, int(b[k]))
            ctx.set(dut.sub, int(sub[k]))
            got[k] = ctx.get(dut.y)

    run(dut, bench)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(hex(a[k]), hex(b[k]), int(sub[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]

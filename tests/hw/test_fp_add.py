"""The fp32 adder against numpy's float32 addition and subtraction, bit for bit (a NaN result as the canonical
NaN): random bit patterns, operands of nearby exponents (cancellation), subnormals, and every pair of the special
values, added and subtracted."""

from __future__ import annotations

import numpy as np

from tritc.hw.fp_add import FpAdder

from .fp_cases import as_bits, mismatches, random_bits, simulate, special_pairs


def test_adder_is_numpy_float32_bit_for_bit():
    rng = np.random.default_rng(3)
    n = 1500
    a, b = random_bits(rng, n), random_bits(rng, n)
    # Nearby exponents: b is a with its low bits and exponent perturbed, so that a - b cancels.
    near = (a[:n // 2] ^ rng.integers(0, 1 << 12, n // 2, dtype=np.uint32)) + (rng.integers(-2, 3, n // 2) << 23)
    b[:n // 2] = near.astype(np.uint32)
    a[n // 2:n // 2 + 300] &= 0x80FFFFFF           # subnormals and the smallest normals
    b[n // 2:n // 2 + 300] &= 0x80FFFFFF
    sa, sb = special_pairs()
    a, b = np.concatenate([a, sa, sa]), np.concatenate([b, sb, sb])
    sub = np.concatenate([rng.integers(0, 2, n), np.zeros(len(sa), int), np.ones(len(sa), int)])
    with np.errstate(all="ignore"):
        fa, fb = a.view(np.float32), b.view(np.float32)
        want = as_bits(np.where(sub.astype(bool), fa - fb, fa + fb))
    got = simulate(FpAdder(), {"a": a, "b": b, "sub": sub})
    assert not mismatches(a, b, got, want), mismatches(a, b, got, want)

"""The fp32 multiplier against numpy's float32 product, bit for bit (a NaN result as the canonical NaN): random bit
patterns, products near the subnormal range and near overflow, subnormal operands, short significands (exact ties),
every pair of special values."""

from __future__ import annotations

import numpy as np

from tritc.hw.fp_mul import FpMultiplier

from .fp_cases import as_bits, mismatches, random_bits, simulate, special_pairs


def test_multiplier_is_numpy_float32_bit_for_bit():
    rng = np.random.default_rng(4)
    n = 1500
    a, b = random_bits(rng, n), random_bits(rng, n)
    # Exponents that sum near the bottom (subnormal products, rounding up to the smallest normal) and the top.
    ea = rng.integers(1, 127, n)
    low = np.clip(127 - ea - 24 + rng.integers(0, 30, n), 0, 254)
    high = np.clip(127 + 127 - ea + rng.integers(-2, 3, n), 0, 254)
    eb = np.where(np.arange(n) % 2 == 0, low, high)
    a = (a & 0x807FFFFF) | (ea.astype(np.uint32) << 23)
    b[:n // 2 * 2] = ((b & 0x807FFFFF) | (eb.astype(np.uint32) << 23))[:n // 2 * 2]
    b[:200] &= 0x807FFFFF                             # subnormal operands
    # Short significands (13 bits each): their products lose only a few bits, so exact ties (guard set, nothing
    # below) are common, in the normal and the subnormal range, where the bits shifted out decide the rounding.
    short = rng.integers(0, 1 << 12, (2, n // 2), dtype=np.uint32) << 11
    a[n // 2:] = (a[n // 2:] & 0xFF800000) | short[0][:n - n // 2]
    b[n // 2:] = (b[n // 2:] & 0xFF800000) | short[1][:n - n // 2]
    # Products whose bits come in two clusters far apart (1 + 2^-23 times a short significand), shifted into the
    # subnormal range by every amount: whether anything was shifted out is what tells a tie from above a tie.
    grid = [(fa, fb, ea, s - ea) for fa in (1, 3, 0x400001) for fb in (0, 1, 3, 0x400000, 0x600000)
            for ea in (1, 60) for s in range(127 - 30, 128) if 0 <= s - ea <= 254]
    ga = np.array([(ea << 23) | fa for fa, fb, ea, eb in grid], np.uint32)
    gb = np.array([(eb << 23) | fb for fa, fb, ea, eb in grid], np.uint32)
    sa, sb = special_pairs()
    a, b = np.concatenate([a, ga, sa]), np.concatenate([b, gb, sb])
    with np.errstate(all="ignore"):
        want = as_bits(a.view(np.float32) * b.view(np.float32))
    got = simulate(FpMultiplier(), {"a": a, "b": b})
    assert not mismatches(a, b, got, want), mismatches(a, b, got, want)

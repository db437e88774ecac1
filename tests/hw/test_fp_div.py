"""The fp32 divider against numpy's float32 division, bit for bit (NaN canonical): random patterns, quotients near
the subnormal range and near overflow, subnormal operands, short significands (exact quotients and ties), the
reciprocal (RECIP is 1 / a), and every pair of special values."""

from __future__ import annotations

import numpy as np

from tritc.hw.fp_div import FpDivider
from tritc.hw.sim import get, put, run

from .fp_cases import as_bits, mismatches, random_bits, special_pairs


def test_divider_is_numpy_float32_bit_for_bit():
    rng = np.random.default_rng(10)
    n = 360
    a, b = random_bits(rng, n), random_bits(rng, n)
    ea = rng.integers(1, 254, n)
    eb = np.clip(ea - 127 + np.where(np.arange(n) % 2 == 0, rng.integers(120, 155, n), rng.integers(-130, -120, n)),
                 0, 254)
    a = (a & 0x807FFFFF) | (ea.astype(np.uint32) << 23)
    b = (b & 0x807FFFFF) | (eb.astype(np.uint32) << 23)
    b[:60] &= 0x807FFFFF                              # subnormal divisors
    a[60:120] &= 0x807FFFFF                           # subnormal dividends
    short = rng.integers(0, 1 << 6, (2, 100), dtype=np.uint32) << 17
    a[120:220] = (a[120:220] & 0xFF800000) | short[0]
    b[120:220] = (b[120:220] & 0xFF800000) | short[1]
    a[220:280] = 0x3F800000                           # RECIP: 1 / b
    sa, sb = special_pairs()
    a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    with np.errstate(all="ignore"):
        want = as_bits(a.view(np.float32) / b.view(np.float32))
    dut = FpDivider()
    got = np.zeros_like(want)

    async def feed(ctx):
        for k in range(len(a)):
            await put(ctx, dut.inp, {"a": int(a[k]), "b": int(b[k])})

    async def take(ctx):
        for k in range(len(a)):
            got[k] = await get(ctx, dut.out)

    run(dut, feed, take, max_cycles=40 * len(a))
    assert not mismatches(a, b, got, want), mismatches(a, b, got, want)

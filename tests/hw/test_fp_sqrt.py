"""The fp32 square root against numpy's float32 sqrt, bit for bit (NaN canonical): random positive patterns of
every exponent (odd and even), subnormals, perfect squares and values next to them, negatives and the specials."""

from __future__ import annotations

import numpy as np

from tritc.hw.fp_sqrt import FpSqrt
from tritc.hw.sim import get, put, run

from .fp_cases import SPECIAL, as_bits, random_bits


def test_sqrt_is_numpy_float32_bit_for_bit():
    rng = np.random.default_rng(12)
    a = random_bits(rng, 300) & 0x7FFFFFFF
    a[:60] &= 0x007FFFFF                                                   # subnormals
    squares = (rng.integers(1, 1 << 12, 60).astype(np.float32) ** 2).view(np.uint32)
    a = np.concatenate([a, squares, squares + 1, squares - 1, random_bits(rng, 40) | 0x80000000,
                        np.array(SPECIAL, np.uint32)])
    with np.errstate(all="ignore"):
        want = as_bits(np.sqrt(a.view(np.float32)))
    dut = FpSqrt()
    got = np.zeros_like(want)

    async def feed(ctx):
        for x in a:
            await put(ctx, dut.inp, int(x))

    async def take(ctx):
        for k in range(len(a)):
            got[k] = await get(ctx, dut.out)

    run(dut, feed, take, max_cycles=40 * len(a))
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(hex(a[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]

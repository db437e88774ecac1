"""RSUM and RMAX (and MM's sum) in the lane-then-tree order, against vector_unit.lane_reduce bit for bit: rows of
random lengths (shorter than the lanes, partial last chunks), signed zeros first in a lane, infinities and NaNs,
through a consumer that stalls."""

from __future__ import annotations

import random

import numpy as np

from tritc.codegen.fpga import vector_unit as vu
from tritc.hw.lane_reduce import LaneReducer
from tritc.hw.sim import get, put, run

from .fp_cases import SPECIAL, as_bits

LANES = 4


def test_rows_reduce_in_the_lane_tree_order():
    rng = np.random.default_rng(15)
    rows = []
    for k in range(80):
        n = int(rng.choice([1, 2, 3, 4, 5, 7, 9, 13]))
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        if k % 5 == 0:                                    # specials: -0 first in a lane, infinities, NaNs
            x.view(np.uint32)[rng.integers(0, n)] = rng.choice(SPECIAL)
        rows.append((x, k % 2 == 1))
    # A lane starts from its first term, not from +0 + it: a row of -0 sums to -0.
    rows += [(np.full(4, -0.0, np.float32), False), (np.full(9, -0.0, np.float32), False)]
    with np.errstate(invalid="ignore"):
        want = [as_bits(vu.lane_reduce(x[None], LANES, "max" if is_max else "sum"))[0] for x, is_max in rows]
    dut = LaneReducer(LANES)
    got = []
    stall = random.Random(1)

    async def feed(ctx):
        for x, is_max in rows:
            bits = x.view(np.uint32)
            for start in range(0, len(bits), LANES):
                part = bits[start:start + LANES]
                terms = [int(v) for v in part] + [0] * (LANES - len(part))
                await put(ctx, dut.inp, {"terms": terms, "mask": (1 << len(part)) - 1,
                                         "last": int(start + LANES >= len(bits)), "max": int(is_max)})

    async def take(ctx):
        for _ in rows:
            while stall.random() < 0.3:
                await ctx.tick()
            got.append(await get(ctx, dut.out))

    run(dut, feed, take, max_cycles=5000)
    bad = [(k, hex(g), hex(w)) for k, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, bad[:6]

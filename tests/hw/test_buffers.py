"""ACT's banks against a byte array: random byte writes, then wide reads of `lanes` activations from random (mostly
unaligned) addresses, through a consumer that stalls, each compared with the bytes at that address as int8."""

from __future__ import annotations

import random

import numpy as np

from tritc.hw.buffers import ActBuffer
from tritc.hw.params import hw_params
from tritc.hw.sim import get, put, run

from .conftest import SMALL


def test_wide_reads_from_any_byte_address():
    p = hw_params(SMALL)
    size, L = p.buffer_units[1], p.lanes
    rng = random.Random(16)
    image = np.zeros(size, np.int8)
    writes = [(rng.randrange(size), rng.randrange(256)) for _ in range(700)]
    for addr, value in writes:
        image[addr] = np.uint8(value).view(np.int8)
    reads = [rng.randrange(size - L + 1) for _ in range(150)] + [0, size - L]
    dut = ActBuffer(p)
    got = []

    async def bench(ctx):
        for addr, value in writes:
            await put(ctx, dut.wr, {"addr": addr, "data": value})
        for addr in reads:
            await put(ctx, dut.rd, addr)

    async def take(ctx):
        for _ in reads:
            while rng.random() < 0.3:
                await ctx.tick()
            got.append(list(await get(ctx, dut.rd_data)))

    run(dut, bench, take, max_cycles=5000)
    for addr, row in zip(reads, got):
        assert row == list(image[addr:addr + L]), addr

"""ACT's banks against a byte array: random byte writes, then wide reads of `lanes` activations from random (mostly
unaligned) addresses, through a consumer that stalls, each compared with the bytes at that address as int8; the
lane write port with bank conflicts beside byte writes."""

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
    writes = []                                  # chunks: up to a bank row of bytes, inside one row
    for _ in range(300):
        addr = rng.randrange(size)
        n = rng.randint(1, L - addr % L)
        values = [rng.randrange(256) for _ in range(n)]
        writes.append((addr, n, int.from_bytes(bytes(values), "little")))
        image[addr:addr + n] = np.array(values, np.uint8).view(np.int8)
    reads = [rng.randrange(size - L + 1) for _ in range(150)] + [0, size - L]
    dut = ActBuffer(p)
    got = []

    async def bench(ctx):
        for addr, n, value in writes:
            await put(ctx, dut.wr, {"addr": addr, "n": n, "data": value})
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


def test_lane_writes_with_bank_conflicts_beside_byte_writes():
    """The lane write port (4 lanes, the vector engine's) at strides that put lanes in one bank (16, 32: all four;
    8: pairs) and apart (1, 3), partial masks, while the byte port writes elsewhere every other cycle: every byte
    lands, and a chunk of distinct banks takes one cycle."""
    p = hw_params(SMALL)
    size, L, n = p.buffer_units[1], p.lanes, 4
    rng = random.Random(17)
    image = np.zeros(size, np.uint8)
    chunks = []
    for _ in range(60):
        stride = rng.choice([1, 3, 8, 16, 32])
        base = rng.randrange(size // 2 - 3 * stride)             # lanes below the byte writes
        addrs = [base + lane * stride for lane in range(n)]
        chunks.append((addrs, [rng.randrange(256) for _ in range(n)], rng.choice([15, 15, 5, 8, 0])))
    bytes_ = [(size // 2 + rng.randrange(size // 2), rng.randrange(256)) for _ in range(120)]
    dut = ActBuffer(p, write_lanes=n)
    cycles, got, bytes_done = [], np.zeros(size, np.uint8), []

    async def lanes(ctx):
        for addrs, values, mask in chunks:
            ctx.set(dut.wl.valid, 1)
            ctx.set(dut.wl.payload, {"addr": addrs, "data": values, "mask": mask})
            taken = 1
            while not (await ctx.tick().sample(dut.wl.ready))[2]:
                taken += 1
            ctx.set(dut.wl.valid, 0)
            cycles.append((addrs[1] - addrs[0], mask, taken))
        while not bytes_done:
            await ctx.tick()
        for row in range(size // L):
            for bank in range(L):
                got[row * L + bank] = ctx.get(dut.banks[bank].data[row])

    async def byte_writes(ctx):
        for addr, value in bytes_:
            await put(ctx, dut.wr, {"addr": addr, "n": 1, "data": value})
            await ctx.tick()
        bytes_done.append(1)

    run(dut, lanes, byte_writes, max_cycles=5000)
    for addrs, values, mask in chunks:
        for lane in range(n):
            if mask >> lane & 1:
                image[addrs[lane]] = values[lane]
    for addr, value in bytes_:
        image[addr] = value
    assert np.array_equal(got, image), np.flatnonzero(got != image)[:8]
    assert any(c == 1 for s, m, c in cycles if s in (1, 3) and m == 15)   # distinct banks: one cycle
    assert all(c >= 4 for s, m, c in cycles if s in (16, 32) and m == 15)   # one bank: a lane a cycle

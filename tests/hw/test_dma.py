"""The LOAD and STORE data movers against the Simulator: random 2-D strided transfers (contiguous rows, gathers and
scatters, negative strides, unaligned 4-byte elements straddling two beats, empty transfers) of every buffer kind
between the same DRAM image and buffers, handed over back to back (the movers pipeline them) through a DRAM that
takes a request every other cycle; afterwards both hold the same bytes, and the cycle model's count of the movers'
chunks and DRAM requests is theirs."""

from __future__ import annotations

import dataclasses
import random
from collections import deque

import numpy as np
import pytest

from tritc.codegen.fpga.isa import ELEM_BYTES, Buf, Instr, Op, StreamError
from tritc.codegen.fpga.ports import bank_window, store_bytes, transfer_cost
from tritc.codegen.fpga.verify import check_instr
from tritc.hw.dma import LoadMover, StoreMover
from tritc.hw.memory import DramModel
from tritc.hw.params import hw_params
from tritc.hw.sim import put, run
from tritc.runtime.fpga import Simulator

from .conftest import SMALL

DRAM = 8192   # bytes of DRAM the transfers reach: small enough to compare whole


class BufferModel:
    """The five buffers as byte arrays behind the movers' buffer ports: chunk writes, always taken; chunk reads
    answered the next cycle, in order, with `width` bytes from the chunk's address (zero past the buffer's end).
    Every chunk is checked to stay inside its bank window (what lets the RTL's buffers take it in one cycle)."""

    def __init__(self, raw: dict[Buf, np.ndarray], config, width: int):
        self.raw = {b: a.copy() for b, a in raw.items()}
        self.config, self.width = config, width
        self.chunks = 0

    def _check(self, buf: Buf, addr: int, n: int) -> None:
        w = bank_window(self.config, buf)
        assert 0 < n and (w is None or addr // w == (addr + n - 1) // w), (buf, addr, n)
        self.chunks += 1

    async def serve_writes(self, ctx, wr) -> None:
        ctx.set(wr.ready, 1)
        while True:
            _, _, valid, w = await ctx.tick().sample(wr.valid, wr.payload)
            if valid:
                buf = Buf(w.buf)
                self._check(buf, w.addr, w.n)
                self.raw[buf][w.addr:w.addr + w.n] = np.frombuffer(
                    (int(w.data) & ((1 << (8 * w.n)) - 1)).to_bytes(w.n, "little"), np.uint8)

    async def serve_reads(self, ctx, req, resp) -> None:
        ctx.set(req.ready, 1)
        pending: deque[int] = deque()
        while True:
            ctx.set(resp.valid, bool(pending))
            if pending:
                ctx.set(resp.payload, pending[0])
            _, _, valid, r, taken = await ctx.tick().sample(req.valid, req.payload, resp.ready)
            if pending and taken:
                pending.popleft()
            if valid:
                self.chunks += 1
                raw = self.raw[Buf(r.buf)]
                pending.append(int.from_bytes(raw[r.addr:r.addr + self.width].tobytes(), "little"))


def random_transfer(op: Op, rng: random.Random, sizes: dict[Buf, int]) -> Instr:
    """A LOAD or STORE that check_instr accepts, with shapes and strides drawn to hit every path of the walker."""
    while True:
        buf = rng.choice([b for b in Buf if not (op is Op.STORE and b is Buf.WGT)])
        item = ELEM_BYTES[buf]
        rows, cols = rng.choice([0, 1, 2, 3, 4, 4]), rng.choice([1, 3, 5, 8, 13, 40, 0])
        dram_cs = rng.choice([item, item, -item, rng.randint(-70, 70)])
        dram_rs = rng.choice([cols * item, rng.randint(-300, 300)])
        sram_rs = cols + rng.choice([0, 0, 1, 7])
        ins = Instr(op, buf=buf, rows=rows, cols=cols, dram_addr=rng.randrange(DRAM), dram_rs=dram_rs,
                    dram_cs=dram_cs, sram_addr=rng.randrange(sizes[buf]), sram_rs=sram_rs)
        try:
            check_instr(ins, 0, SMALL, DRAM)
        except StreamError:
            continue
        return ins


@pytest.mark.parametrize("op", [Op.LOAD, Op.STORE], ids=["load", "store"])
def test_transfers_match_the_simulator(op):
    p = hw_params(dataclasses.replace(SMALL, dram_bandwidth=8e9))   # a beat every other cycle: the movers wait
    rng = random.Random(int(op))
    nprng = np.random.default_rng(int(op))
    sim = Simulator(SMALL, dram_bytes=DRAM)
    sim.dram[:] = nprng.integers(0, 256, DRAM, dtype=np.uint8)
    for b in Buf:
        sim.raw[b][:] = nprng.integers(0, 256, sim.raw[b].size, dtype=np.uint8)
    transfers = [random_transfer(op, rng, p.buffer_units) for _ in range(60)]
    dut = LoadMover(p) if op is Op.LOAD else StoreMover(p)
    dram = DramModel.for_params(dut.mem, p, DRAM)
    dram.mem[:] = sim.dram
    buffers = BufferModel(sim.raw, SMALL, store_bytes(SMALL))

    # Transfers back to back (the mover pipelines them, up to dram_outstanding unfinished), then every `done`.
    async def bench(ctx):
        for ins in transfers:
            await put(ctx, dut.cmd, ins.fields)
        while len(dones) < len(transfers):
            await ctx.tick()

    dones = []

    async def count_dones(ctx):
        ctx.set(dut.done.ready, 1)
        while True:
            _, _, valid = await ctx.tick().sample(dut.done.valid)
            if valid:
                dones.append(1)

    async def buffer_port(ctx):
        if op is Op.LOAD:
            await buffers.serve_writes(ctx, dut.wr)
        else:
            await buffers.serve_reads(ctx, dut.rd_req, dut.rd_resp)

    run(dut, bench, background=(dram.serve, buffer_port, count_dones), max_cycles=20_000)

    sim.load_stream([*transfers, Instr(Op.FINISH)])
    sim.run()
    assert np.array_equal(dram.mem, sim.dram)
    for b in Buf:
        assert np.array_equal(buffers.raw[b], sim.raw[b]), b.name
    # The cycle model counts the movers' chunks and DRAM requests (WGT's divisions are its buffer's, not here).
    costs = [transfer_cost(SMALL, Buf(ins.buf), dram_addr=ins.dram_addr, rows=ins.rows, cols=ins.cols,
                           dram_rs=ins.dram_rs, dram_cs=ins.dram_cs, sram_addr=ins.sram_addr, sram_rs=ins.sram_rs)
             for ins in transfers]
    assert buffers.chunks == sum(c.chunks for c in costs)
    assert dram.requests == sum(c.requests for c in costs)

"""The memory port: the arbiter sharing one port among masters (random reads and writes with strobes, stalling
masters, every response back to its master in order) over the behavioural DRAM model, whose latency and rate
are checked against the cycle model's."""

from __future__ import annotations

import dataclasses
import random
from collections import deque

import numpy as np

from tritc.hw.memory import DramModel, MemArbiter
from tritc.hw.params import hw_params
from tritc.hw.sim import get, put, run

from .conftest import SMALL


def test_masters_share_the_port_and_get_their_own_responses():
    p = hw_params(SMALL)
    beat = p.mem_beat_bytes
    dut = MemArbiter(p, 3)
    dram = DramModel.for_params(dut.bus, p, 3 * 16 * beat)
    shadows = [np.zeros(16 * beat, np.uint8) for _ in range(3)]
    checked = [0, 0, 0]

    def master(i: int):
        port = getattr(dut, f"m{i}")
        rng = random.Random(i)
        expect: deque = deque()
        ops = 60

        async def issue(ctx):
            for _ in range(ops):
                row = rng.randrange(16)
                addr = i * 16 + row
                if rng.random() < 0.5:
                    data = rng.getrandbits(8 * beat)
                    strobe = rng.getrandbits(beat)
                    new = np.frombuffer(data.to_bytes(beat, "little"), np.uint8)
                    mask = np.array([(strobe >> b) & 1 for b in range(beat)], bool)
                    shadows[i][row * beat:(row + 1) * beat][mask] = new[mask]
                    expect.append(None)
                    await put(ctx, port.req, {"addr": addr, "write": 1, "data": data, "strobe": strobe})
                else:
                    expect.append(shadows[i][row * beat:(row + 1) * beat].tobytes())
                    await put(ctx, port.req, {"addr": addr, "write": 0, "data": 0, "strobe": 0})
                while rng.random() < 0.3:
                    await ctx.tick()

        async def collect(ctx):
            for _ in range(ops):
                while rng.random() < 0.3:
                    await ctx.tick()
                resp = await get(ctx, port.resp)
                want = expect.popleft()
                assert resp.write == (want is None)
                if want is not None:
                    assert int(resp.data).to_bytes(beat, "little") == want
                checked[i] += 1
        return issue, collect

    benches = [b for i in range(3) for b in master(i)]
    run(dut, *benches, background=(dram.serve,), max_cycles=5000)
    assert checked == [60, 60, 60] and dram.requests == 180
    assert np.array_equal(dram.mem, np.concatenate(shadows))


def test_latency_and_rate_are_the_cycle_models():
    # A read taken in cycle t answers in cycle t + latency (ceil(dram_latency_ns * clock)); at 16 B per cycle a
    # 64-byte beat is taken every 4 cycles, as the cycle model's transfer = bytes / bytes_per_cycle.
    slow = dataclasses.replace(SMALL, dram_bandwidth=4e9)
    p = hw_params(slow)
    dut = MemArbiter(p, 1)
    dram = DramModel.for_params(dut.bus, p, 64 * p.mem_beat_bytes)
    times = {}

    async def issue(ctx):
        cycle = 0
        for k in range(20):
            ctx.set(dut.m0.req.valid, 1)
            ctx.set(dut.m0.req.payload, {"addr": k})
            while True:
                _, _, taken = await ctx.tick().sample(dut.m0.req.ready)
                cycle += 1
                if taken:
                    break
            times.setdefault("first_taken", cycle - 1)
            times["last_taken"] = cycle - 1
        ctx.set(dut.m0.req.valid, 0)

    async def collect(ctx):
        ctx.set(dut.m0.resp.ready, 1)
        cycle = 0
        while True:   # sampled at the clock edge: what the design sees in that cycle, whatever order benches run in
            _, _, valid = await ctx.tick().sample(dut.m0.resp.valid)
            if valid:
                break
            cycle += 1
        times["first_resp"] = cycle

    run(dut, issue, collect, background=(dram.serve,), max_cycles=1000)
    assert p.mem_latency == 10 and p.mem_beat_bytes == 64
    assert times["first_resp"] - times["first_taken"] == p.mem_latency
    assert times["last_taken"] - times["first_taken"] == 19 * 4

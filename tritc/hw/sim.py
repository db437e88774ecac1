"""Driving the RTL in Amaranth's simulator: put and get on valid / ready streams, and a run with a cycle budget
(a design that stops answering fails the run with a named error instead of hanging it)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

from ..errors import CompilerError

Bench = Callable[[Any], Coroutine[Any, Any, None]]


class SimTimeoutError(CompilerError):
    """A simulation ran out of its cycle budget: the design (or its testbench) stopped making progress."""


async def put(ctx, stream, payload) -> None:
    """Offer `payload` on `stream` and return after the cycle it was taken (valid held until ready)."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    while True:   # a plain loop, not `until`: a bench left waiting when the simulation ends closes cleanly
        _, _, ready = await ctx.tick().sample(stream.ready)
        if ready:
            break
    ctx.set(stream.valid, 0)


async def get(ctx, stream):
    """Take one payload from `stream` (ready held until valid); the payload as it was when taken."""
    ctx.set(stream.ready, 1)
    while True:
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid:
            break
    ctx.set(stream.ready, 0)
    return payload


def run(dut: Elaboratable, *benches: Bench, background: tuple[Bench, ...] = (), max_cycles: int = 100_000,
        vcd: str | None = None) -> int:
    """Simulate `dut` on a `sync` clock until every bench returns; the cycles it took. SimTimeoutError after
    `max_cycles`. `background` benches (models of what surrounds the design, e.g. DRAM) run as long as needed."""
    top = Module()
    top.domains.sync = ClockDomain()   # the clock every component's `sync` logic runs on
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8)
    cycles = 0

    async def watchdog(ctx) -> None:
        nonlocal cycles
        while True:
            await ctx.tick()
            cycles += 1
            if cycles > max_cycles:
                raise SimTimeoutError(f"simulation did not finish within {max_cycles} cycles")

    for bench in benches:
        sim.add_testbench(bench)
    for bench in background:
        sim.add_testbench(bench, background=True)
    sim.add_testbench(watchdog, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return cycles

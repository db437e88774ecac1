"""What the vector engine's tests share: random VOPs the ISA accepts, buffer contents with the special values, the
buffers as numpy arrays behind the engine's ports, and a run that executes each VOP on the RTL and in the
Simulator (the same instruction, the same buffers) and compares every buffer byte for byte after each one."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from tritc.codegen.fpga.config import FpgaConfig
from tritc.codegen.fpga.isa import BINARY, ELEM_BYTES, Buf, Instr, Op, StreamError, VFunc, f32_bits
from tritc.codegen.fpga.verify import VOP_BUFFERS, check_instr
from tritc.hw.sim import put, run
from tritc.runtime.fpga import Simulator

from .conftest import SMALL
from .fp_cases import SPECIAL

LANES = SMALL.vector_lanes
TRANSCENDENTAL = (VFunc.EXP, VFunc.SIN, VFunc.COS, VFunc.TANH, VFunc.ERF)
TESTED = tuple(f for f in VFunc if f not in TRANSCENDENTAL)


def fill_buffers(sim: Simulator, rng: np.random.Generator) -> None:
    """Random contents: fp32 of many scales with specials, integers and halves (ROUND), int32 accumulators small
    and near the limits (rounded reads), every int8."""
    for buf in (Buf.VEC, Buf.KV):
        x = sim.typed[buf]
        n = x.size
        x[:] = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(np.float32)
        pick = rng.random(n)
        x[pick < 0.15] = np.round(x[pick < 0.15] * 2) / 2
        x[(pick > 0.75) & (pick < 0.8)] = 0.0           # WHERE's b: zeros of both signs, not only the specials'
        x[(pick > 0.8) & (pick < 0.82)] = -0.0
        bits = x.view(np.uint32)
        special = pick > 0.85
        bits[special] = rng.choice(SPECIAL, int(special.sum()))
    acc = sim.typed[Buf.ACC]
    big = rng.random(acc.size) < 0.4
    acc[:] = np.where(big, rng.integers(-2**31, 2**31, acc.size), rng.integers(-300, 300, acc.size))
    acc[rng.random(acc.size) < 0.1] = 0
    acc[:3] = [-2**31, 2**31 - 1, 16777217]
    act = sim.typed[Buf.ACT]
    act[:] = np.where(rng.random(act.size) < 0.1, 0, rng.integers(-128, 128, act.size))


def _imm(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.25:
        return int(np.array(rng.choice(SPECIAL), np.uint32).view(np.int32))
    if r < 0.4:
        return f32_bits(rng.choice([0.0, 1.0, -1.0, 0.5, 2.5, 1e-6]))
    return f32_bits(rng.gauss(0, 1) * 10.0 ** rng.randint(-3, 3))


def random_vop(func: VFunc, rng: random.Random, sizes: dict[Buf, int], config: FpgaConfig = SMALL) -> Instr:
    """A VOP of `func` that check_instr accepts: partial lane chunks, strides 0 (sources), negative and even,
    every buffer kind, in-place sometimes."""
    for _ in range(5000):
        rows = rng.choice([1, 1, 2, 3])
        cols = rng.choice([1, 2, 3, 4, 5, 7, 9])
        depth = 0
        if func is VFunc.MM:
            rows, cols, depth = rng.choice([1, 2, 3]), rng.choice([1, 2, 3]), rng.choice([0, 1, 3, 4, 5, 9])
        elif func in (VFunc.RSUM, VFunc.RMAX, VFunc.AMAX):
            cols = rng.choice([0, 1, 3, 4, 5, 9, 13])
        elif func is VFunc.REQ:
            depth = rng.randint(0, 31)
        use_imm = int(rng.random() < 0.35) if func in BINARY or func is VFunc.AMAX else 0
        imm = rng.randint(-2**31, 2**31 - 1) if func is VFunc.REQ else _imm(rng)
        v: dict[str, int] = {}
        for name in ("dst", "src1", "src2"):
            choices = (Buf.ACT, Buf.ACC) if func is VFunc.REQ and name == "src1" else VOP_BUFFERS
            buf = rng.choice(choices)
            cs = rng.choice([1, 1, 1, 2, -1, 3] + ([0, 0] if name != "dst" else []))
            n = depth if func is VFunc.MM and name != "dst" else cols
            rs = rng.choice([max(1, n) * abs(cs), rng.randint(-12, 12)] + ([0] if name != "dst" else []))
            v.update({f"{name}_buf": buf, f"{name}_addr": rng.randrange(sizes[buf]), f"{name}_rs": rs,
                      f"{name}_cs": cs})
        if func not in (VFunc.MM, VFunc.FILL) and rng.random() < 0.15:   # in place
            for k in ("buf", "addr", "rs", "cs"):
                v[f"dst_{k}"] = v[f"src1_{k}"]
        ins = Instr(Op.VOP, func=func, rows=rows, cols=cols, depth=depth, imm=imm, use_imm=use_imm, **v)
        try:
            check_instr(ins, 0, config)
        except StreamError:
            continue
        return ins
    raise AssertionError(f"no valid {func.name} drawn")


class PortBuffers:
    """The buffers as byte arrays behind the engine's read and write ports; each port takes a request with
    probability `take` per cycle, reads answered the next cycle in order and held until taken."""

    def __init__(self, raw: dict[Buf, np.ndarray], lanes: int, take: float, seed: int):
        self.raw = {b: a.copy() for b, a in raw.items()}
        self.lanes = lanes
        self.take = take
        self.rng = random.Random(seed)
        self.errors: list[str] = []        # accesses outside a buffer (a wrong address the compare would miss)

    def inside(self, buf: Buf, addr: int) -> bool:
        ok = 0 <= addr and (addr + 1) * ELEM_BYTES[buf] <= self.raw[buf].size
        if not ok:
            self.errors.append(f"{buf.name} element {addr} is outside the buffer")
        return ok

    async def sync(self, ctx) -> None:
        """Make `raw` what the buffers hold (these arrays already are)."""

    async def reset(self, ctx, buf: Buf, want: np.ndarray) -> None:
        self.raw[buf][:] = want

    def element(self, buf: Buf, addr: int) -> int:
        if not self.inside(buf, addr):
            return 0
        if buf is Buf.ACT:
            return int(self.raw[buf].view(np.int8)[addr]) & 0xFFFFFFFF
        return int(self.raw[buf].view(np.uint32)[addr])

    async def serve_reads(self, ctx, port) -> None:
        pending: deque[list[int]] = deque()
        while True:
            accept = self.rng.random() < self.take
            ctx.set(port.req.ready, accept)
            ctx.set(port.resp.valid, bool(pending))
            if pending:
                ctx.set(port.resp.payload, pending[0])
            _, _, valid, r, taken = await ctx.tick().sample(port.req.valid, port.req.payload, port.resp.ready)
            if pending and taken:
                pending.popleft()
            if valid and accept:
                buf = Buf(r.buf)
                pending.append([self.element(buf, r.addr[lane]) if r.mask >> lane & 1 else 0
                                for lane in range(self.lanes)])

    async def serve_writes(self, ctx, wr) -> None:
        while True:
            accept = self.rng.random() < self.take
            ctx.set(wr.ready, accept)
            _, _, valid, w = await ctx.tick().sample(wr.valid, wr.payload)
            if valid and accept:
                buf = Buf(w.buf)
                item = ELEM_BYTES[buf]
                for lane in range(self.lanes):
                    if w.mask >> lane & 1 and self.inside(buf, w.addr[lane]):
                        a = w.addr[lane] * item
                        self.raw[buf][a:a + item] = np.frombuffer(int(w.data[lane]).to_bytes(4, "little")[:item],
                                                                  np.uint8)


@dataclass
class Outcome:
    mismatches: list[str] = field(default_factory=list)
    refused: list[VFunc] = field(default_factory=list)
    cycles: dict[VFunc, list[tuple[int, int]]] = field(default_factory=dict)   # (measured, model) per VOP


def run_vops(dut, vops: list[Instr], *, seed: int, take: float = 1.0, buffers=None, max_cycles: int = 60_000,
             sim: Simulator | None = None) -> Outcome:
    """Run `vops` one after another on `dut` (a VectorEngine, or with `sim` and `buffers` anything with its `cmd` and
    `done`), each also in the Simulator (`sim`, default one of the engine's config) from the same buffers;
    compare all buffers after each. `buffers` is what serves the ports: None for PortBuffers over the Simulator's
    buffers; else an object with `raw` (each buffer's bytes after `await sync(ctx)`) and `reset(ctx, buf, bytes)`,
    its ports already part of `dut`."""
    if sim is None:
        sim = Simulator(dut.params.config, dram_bytes=4096)
        fill_buffers(sim, np.random.default_rng(seed))
    model = buffers or PortBuffers(sim.raw, sim.config.vector_lanes, take, seed)
    out = Outcome()

    async def bench(ctx):
        for buf in (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV):
            await model.reset(ctx, buf, sim.raw[buf])
        for k, ins in enumerate(vops):
            await put(ctx, dut.cmd, ins.fields)
            ctx.set(dut.done.ready, 1)
            cycles = 1
            while True:
                _, _, valid, payload = await ctx.tick().sample(dut.done.valid, dut.done.payload)
                if valid:
                    break
                cycles += 1
            ctx.set(dut.done.ready, 0)
            func = VFunc(ins.func)
            if payload.refused:
                out.refused.append(func)      # nothing may have changed: compare with the Simulator not run
            else:
                sim.load_stream([ins, Instr(Op.FINISH)])
                model_cycles = sim.run()["cycles"]
                out.cycles.setdefault(func, []).append((cycles, model_cycles))
            await model.sync(ctx)
            while getattr(model, "errors", None):
                out.mismatches.append(f"VOP {k} {func.name} {ins.fields}: {model.errors.pop()}")
            for buf in (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV):
                got, want = model.raw[buf], sim.raw[buf]
                if not np.array_equal(got, want):
                    bad = np.flatnonzero(got != want)[:4]
                    out.mismatches.append(f"VOP {k} {func.name} {ins.fields}: {buf.name} bytes {bad.tolist()} "
                                          f"got {got[bad].tolist()} want {want[bad].tolist()}")
                    await model.reset(ctx, buf, want)     # go on from the reference's state

    async def reads_a(ctx):
        await model.serve_reads(ctx, dut.rd_a)

    async def reads_b(ctx):
        await model.serve_reads(ctx, dut.rd_b)

    async def writes(ctx):
        await model.serve_writes(ctx, dut.wr)

    background = (reads_a, reads_b, writes) if buffers is None else ()
    run(dut, bench, background=background, max_cycles=max_cycles)
    return out


def cycle_report(out: Outcome) -> str:
    lines = [f"{'func':6} {'VOPs':>4} {'RTL':>6} {'model':>6} {'ratio':>5}"]
    for func, pairs in sorted(out.cycles.items()):
        got, want = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        lines.append(f"{func.name:6} {len(pairs):4} {got:6} {want:6} {got / want:5.2f}")
    return "\n".join(lines)

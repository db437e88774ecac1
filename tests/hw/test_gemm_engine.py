"""The GEMM engine against ISA.md's GEMM formula with ISA v3's weight layout (an int64 matmul over the trits
isa.decode_words reads): random GEMMs (m > 1, n not a multiple of R, kw not a multiple of P, reset 0 and 1, chains
accumulating over the GEMM before, kw = 0 clears, GEMMs that add nothing), both packings, one and two words per
beat. WGT is filled through its write port in LOAD-like runs (with the jumps that start a division), ACT is the
real ActBuffer, ACC a numpy array behind the ports with a read latency and random stalls. The cycles from cmd to
done are checked against the cycle model's; a fault (two trees swapped) fails; WGT is filled by the LoadMover too;
the first WGT row of a GEMM is the exact quotient for every row of the presets."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator as AmaranthSimulator

from tritc.codegen.fpga.isa import Buf, Instr, Op, decode_words
from tritc.hw.buffers import ActBuffer
from tritc.hw.dma import LoadMover
from tritc.hw.gemm_engine import GemmEngine, gemm_cycles
from tritc.hw.memory import DramModel
from tritc.hw.params import HwParams, hw_params
from tritc.hw.sim import get, put, run
from tritc.hw.wgt_buffer import WgtBuffer, exact_quotient, row_bits, row_bytes, wgt_rows
from tritc.runtime.fpga import Simulator

from .conftest import SMALL

SMALL_2BIT = dataclasses.replace(SMALL, weight_packing="2bit")
WIDE = dataclasses.replace(SMALL, matrix_rows=2, matrix_lanes=128)   # 2 words a beat: kw odd masks a word
OVERHEAD = 4     # cycles from cmd to done beyond the cycle model's, the ACC read answered the next cycle


try:   # ISA v3's layout, from the wgt3 branch once it is merged; until then the same formula (WGT_LAYOUT.md) here
    from tritc.codegen.fpga.isa import wgt_word_offset
except ImportError:
    def wgt_word_offset(j: int, g: int, kw: int, rows: int, per_beat: int) -> int:
        """Where word g (< kw) of output column j of a GEMM lies, in words from its wgt_addr (ISA v3)."""
        kwp = -(-kw // per_beat) * per_beat
        return (j // rows) * kwp * rows + (g // per_beat) * rows * per_beat + (j % rows) * per_beat + g % per_beat


def reference(p: HwParams, acc: np.ndarray, act: np.ndarray, wgt: np.ndarray, g: dict) -> None:
    """ISA.md's GEMM on numpy buffers (acc int32 words, act and wgt bytes), in place."""
    m, n, kw, wb = g["m"], g["n"], g["kw"], p.word_bytes
    if not (m and n and (kw or g["reset"])):
        return
    rows = [g["acc_addr"] + i * g["acc_rs"] for i in range(m)]
    if not kw:
        for base in rows:
            acc[base:base + n] = 0
        return
    words = np.stack([wgt[g["wgt_addr"] + wgt_word_offset(j, k, kw, p.rows, p.words_per_beat) * wb:][:wb]
                      for j in range(n) for k in range(kw)]).reshape(n, kw * wb)
    trits = decode_words(words, p.packing).astype(np.int64)
    a = np.stack([act[g["act_addr"] + i * g["act_rs"]:][:64 * kw] for i in range(m)]).view(np.int8)
    sums = a.astype(np.int64) @ trits.T
    for i, base in enumerate(rows):
        old = 0 if g["reset"] else acc[base:base + n].astype(np.int64)
        acc[base:base + n] = (sums[i] + old).astype(np.int32)


def random_gemms(p: HwParams, rng: random.Random, count: int) -> list[dict]:
    """GEMMs inside the SMALL buffers; about a third accumulate over the GEMM before (same ACC rows, reset 0)."""
    act_size, acc_size = p.buffer_units[Buf.ACT], p.buffer_units[Buf.ACC]
    rb = row_bytes(p)
    out: list[dict] = []
    while len(out) < count:
        kw = rng.choice([0, 1, 1, 2, 3, 3])
        prev = out[-1] if out else None
        if prev and prev["m"] and prev["n"] and rng.random() < 0.35:
            g = {k: prev[k] for k in ("m", "n", "acc_addr", "acc_rs")} | {"reset": 0}
        else:
            m, n = rng.choice([1, 1, 2, 3]), rng.choice([1, 2, 3, 5, 6, 7])
            acc_rs = n + rng.choice([0, 0, 1, 3]) if m > 1 else rng.choice([0, n])
            if (m - 1) * acc_rs + n > acc_size:
                continue
            g = {"m": m, "n": n, "acc_rs": acc_rs, "reset": rng.random() < 0.5,
                 "acc_addr": rng.randrange(acc_size - (m - 1) * acc_rs - n + 1)}
        m, n = g["m"], g["n"]
        act_rs = rng.choice([64 * kw, 64 * kw + rng.randrange(1, 40), rng.randrange(0, 64)]) if m > 1 else 0
        span = (m - 1) * act_rs + 64 * kw
        wrows = math.ceil(n / p.rows) * math.ceil(kw / p.words_per_beat)
        wmax = min(p.buffer_units[Buf.WGT] // rb - wrows, 3)   # weights shared: fewer bytes to fill
        if span > act_size or wmax < 0:
            continue
        g |= {"kw": kw, "act_rs": act_rs, "act_addr": rng.randrange(min(act_size - span, 160) + 1),
              "wgt_addr": rng.randrange(wmax + 1) * rb}
        out.append(g)
    return out


class AccModel:
    """ACC behind the engine's ports: writes taken (mask honoured) as they are accepted, reads answered in order
    `latency` cycles after (holding until taken) from the words as they were when the read was accepted; each port
    refuses a cycle with probability `stall`. Signals are set only when they change (a set costs a design step)."""

    def __init__(self, dut: GemmEngine, words: np.ndarray, rng: random.Random):
        self.dut, self.mem, self.rng = dut, words, rng
        self.stall, self.latency = 0.0, (1, 1)

    async def serve(self, ctx) -> None:
        d, pending, cycle = self.dut, deque(), 0
        R = d.params.rows
        now = {}

        def drive(sig, value):
            if now.get(id(sig)) != value:
                ctx.set(sig, value)
                now[id(sig)] = value

        while True:
            drive(d.acc_wr.ready, int(self.rng.random() >= self.stall))
            drive(d.acc_rd.ready, int(self.rng.random() >= self.stall))
            head = pending[0] if pending and pending[0][0] <= cycle else None
            drive(d.acc_rd_data.valid, int(head is not None))
            if head is not None:
                drive(d.acc_rd_data.payload, head[1])
            _, _, wv, wr, wrdy, rv, rq, rrdy, taken = await ctx.tick().sample(
                d.acc_wr.valid, d.acc_wr.payload, d.acc_wr.ready, d.acc_rd.valid, d.acc_rd.payload, d.acc_rd.ready,
                d.acc_rd_data.ready)
            cycle += 1
            if head is not None and taken:
                pending.popleft()
            if rv and rrdy:   # read before this cycle's write: a read and a write taken together are unordered
                words = tuple(int(self.mem[rq.addr + r]) if (rq.mask >> r) & 1 else 0 for r in range(R))
                pending.append((cycle + self.rng.randint(*self.latency) - 1, words))
            if wv and wrdy:
                for r in range(R):
                    if (wr.mask >> r) & 1:
                        self.mem[wr.addr + r] = wr.data[r]


class ActModel:
    """ACT behind the engine's read port, for the builds whose ActBuffer is slow to simulate (128 banks): `lanes`
    bytes from any address (past the end: random bytes, which the engine must mask), answered in order 1 to 3 cycles
    after, held until taken; the request port refuses a cycle with probability 0.3."""

    def __init__(self, dut: GemmEngine, image: np.ndarray, rng: random.Random):
        self.dut, self.rng = dut, rng
        self.image = np.concatenate([image, np.frombuffer(rng.randbytes(dut.params.lanes), np.uint8)]).view(np.int8)

    async def serve(self, ctx) -> None:
        d, pending, cycle, L = self.dut, deque(), 0, self.dut.params.lanes
        shown = None
        while True:
            ready = int(self.rng.random() >= 0.3)
            ctx.set(d.act_rd.ready, ready)
            head = pending[0] if pending and pending[0][0] <= cycle else None
            if head is not shown:
                ctx.set(d.act_data.valid, int(head is not None))
                if head is not None:
                    ctx.set(d.act_data.payload, head[1])
                shown = head
            _, _, valid, addr, taken = await ctx.tick().sample(d.act_rd.valid, d.act_rd.payload, d.act_data.ready)
            cycle += 1
            if head is not None and taken:
                pending.popleft()
            if valid and ready:
                pending.append((cycle + self.rng.randint(1, 3) - 1, [int(x) for x in self.image[addr:addr + L]]))


def runs_of(spans: list[tuple[int, int]], size: int, rng: random.Random) -> list[tuple[int, int]]:
    """The bytes the GEMMs read, as LOADs write them: the union of the spans, cut into contiguous runs (rows of a
    LOAD) at a few random points, in shuffled order, so that most runs start where the WGT write cursor is not."""
    used = np.zeros(size, bool)
    for lo, hi in spans:
        used[max(lo, 0):min(hi, size)] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], used.astype(np.int8), [0]])))
    runs = []
    for lo, hi in zip(edges[::2].tolist(), edges[1::2].tolist()):
        cuts = sorted({lo, hi, *(rng.randrange(lo, hi) for _ in range((hi - lo) // 150))})
        runs += list(zip(cuts, cuts[1:]))
    rng.shuffle(runs)
    return runs


async def write_bytes(ctx, port, runs, image, piece, width: int, window: int | None = None) -> None:
    """Chunks of up to `width` bytes (inside aligned `window`s when given) into a write port, as the LOAD mover
    makes them, each held until taken (one set a cycle: a set costs a design step)."""
    ctx.set(port.valid, 1)
    for lo, hi in runs:
        a = lo
        while a < hi:
            n = min(hi - a, width, window - a % window if window else width)
            ctx.set(port.payload, piece(a, n, int.from_bytes(image[a:a + n].tobytes(), "little")))
            while not (await ctx.tick().sample(port.ready))[2]:
                pass
            a += n
    ctx.set(port.valid, 0)


def simulate(config, batches: list[tuple[list[dict], bool]], *, seed: int = 0, engine=GemmEngine,
             act_buffer: bool = True):
    """Run the batches of GEMMs (one at a time without ACC stalls when the flag is False, else back to back with
    stalls and slow ACC reads) on one engine, ACT the real ActBuffer or the stalling ActModel; the final ACC, the
    reference's, and per timed GEMM (GEMM, cycles, model cycles)."""
    p = hw_params(config)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    act_img = nrng.integers(0, 256, p.buffer_units[Buf.ACT], dtype=np.uint8)
    wgt_img = nrng.integers(0, 256, p.buffer_units[Buf.WGT], dtype=np.uint8)
    acc0 = nrng.integers(-2**31, 2**31, p.buffer_units[Buf.ACC], dtype=np.int64).astype(np.int32)
    want = acc0.copy()
    for gemms, _ in batches:
        for g in gemms:
            reference(p, want, act_img, wgt_img, g)
    dut = engine(p)
    top = Module()
    top.submodules.engine = dut
    models = []
    if act_buffer:
        act = top.submodules.act = ActBuffer(p)
        wiring.connect(top, dut.act_rd, act.rd)
        wiring.connect(top, act.rd_data, dut.act_data)
    else:
        models.append(ActModel(dut, act_img, rng).serve)
    accm = AccModel(dut, acc0.copy(), rng)
    timed: list[tuple[dict, int, int]] = []

    gemms_all = [g for gemms, _ in batches for g in gemms]
    rb, L = row_bytes(p), p.lanes
    act_spans = [(g["act_addr"] + i * g["act_rs"], g["act_addr"] + i * g["act_rs"] + math.ceil(64 * g["kw"] / L) * L)
                 for g in gemms_all for i in range(g["m"])]
    wgt_spans = [(g["wgt_addr"],
                  g["wgt_addr"] + math.ceil(g["n"] / p.rows) * math.ceil(g["kw"] / p.words_per_beat) * rb)
                 for g in gemms_all]

    async def fill(ctx):
        # the bytes the GEMMs read (the partial last beat's too): ACT and WGT as LOADs' chunks
        if act_buffer:
            await write_bytes(ctx, act.wr, runs_of(act_spans, act_img.size, rng), act_img,
                              lambda a, n, v: {"addr": a, "n": n, "data": v}, p.lanes, p.lanes)
        await write_bytes(ctx, dut.wgt_wr, runs_of(wgt_spans, wgt_img.size, rng), wgt_img,
                          lambda a, n, v: {"buf": int(Buf.WGT), "addr": a, "n": n, "data": v}, p.mem_beat_bytes)

    async def bench(ctx):
        await fill(ctx)
        for gemms, stalls in batches:
            accm.stall, accm.latency = (0.3, (1, 4)) if stalls else (0.0, (1, 1))
            if not stalls:
                for g in gemms:
                    await put(ctx, dut.cmd, g)
                    ctx.set(dut.done.ready, 1)
                    cycles = 0
                    while True:
                        cycles += 1
                        if (await ctx.tick().sample(dut.done.valid))[2]:
                            break
                    ctx.set(dut.done.ready, 0)
                    timed.append((g, cycles, gemm_cycles(p, g["m"], g["kw"], g["n"])))
            else:
                dones = len(gemms)
                # the commands go in while the done pulses are counted: GEMMs overlap as the compute engine lets them
                ctx.set(dut.done.ready, 1)
                pending = list(gemms)
                while dones:
                    if pending and not ctx.get(dut.cmd.valid):
                        ctx.set(dut.cmd.valid, 1)
                        ctx.set(dut.cmd.payload, pending[0])
                    _, _, taken, done = await ctx.tick().sample(dut.cmd.ready, dut.done.valid)
                    if pending and taken:
                        pending.pop(0)
                        ctx.set(dut.cmd.valid, 0)
                    dones -= bool(done)
                ctx.set(dut.done.ready, 0)

    beats = sum(gemm_cycles(p, g["m"], g["kw"], g["n"]) + 40 for gemms, _ in batches for g in gemms)
    cycles = run(top, bench, background=(accm.serve, *models), max_cycles=act_img.size + 2 * wgt_img.size + 4 * beats + 2000)
    print(f"{cycles} cycles simulated")
    return accm.mem, want, timed


@pytest.mark.parametrize("config, count, act_buffer", [(SMALL, 8, True), (SMALL_2BIT, 10, False), (WIDE, 8, False)],
                         ids=["4x16-base3", "4x16-2bit", "2x128-base3"])
def test_random_gemms_are_exact_and_timed(config, count, act_buffer):
    p = hw_params(config)
    rng = random.Random(7)
    fixed = [dict(m=2, n=5, kw=0, reset=1, acc_addr=3, acc_rs=6, act_addr=0, act_rs=0, wgt_addr=0),   # a clear
             dict(m=0, n=5, kw=2, reset=1, acc_addr=0, acc_rs=0, act_addr=0, act_rs=0, wgt_addr=0),   # nothing
             dict(m=1, n=p.rows, kw=1, reset=1, acc_addr=40, acc_rs=0, act_addr=300, act_rs=0,   # WGT's last row
                  wgt_addr=(p.buffer_units[Buf.WGT] // row_bytes(p) - 1) * row_bytes(p))]
    # one-block GEMMs accumulating into the same words back to back: each reads what the one before still writes
    chain = [dict(m=1, n=max(1, p.rows - 1), kw=1, reset=int(k == 0), acc_addr=5, acc_rs=0, act_addr=64 * k,
                  act_rs=0, wgt_addr=0) for k in range(4)]
    if act_buffer:   # timed one by one, then back to back
        batches = [(random_gemms(p, rng, count) + fixed, False), (random_gemms(p, rng, count) + chain, True)]
    else:            # ActModel answers 1 to 3 cycles late: back to back only, untimed
        batches = [(random_gemms(p, rng, count) + fixed + chain, True)]
    got, want, timed = simulate(config, batches, seed=3, act_buffer=act_buffer)
    assert np.array_equal(got, want)
    for g, cycles, model in timed:
        print(f"m={g['m']} n={g['n']} kw={g['kw']} reset={int(g['reset'])}: {cycles} cycles, model {model}, "
              f"difference {cycles - model:+d}")
        if g["m"] and g["n"] and g["kw"]:
            assert 0 <= cycles - model <= OVERHEAD, (g, cycles, model)
        else:   # a clear writes a block a cycle (the model charges the fill only); an empty GEMM passes through
            blocks = g["m"] * math.ceil(g["n"] / p.rows) if g["reset"] else 0
            assert cycles <= blocks + OVERHEAD, (g, cycles)
    assert not act_buffer or sum(g["kw"] > 0 and not g["reset"] for g, _, _ in timed) >= 2
    overlapped = batches[-1][0]
    assert any(not g["reset"] for g in overlapped) and any(g["m"] > 1 for g in overlapped)


@pytest.mark.parametrize("preset", ["edge", "datacenter", SMALL], ids=["edge", "datacenter", "small"])
def test_first_row_is_an_exact_quotient(preset):
    # wgt_addr / row_bytes without a divider, for every row of WGT (2,521 on the presets, 13 * 16 and 13 * 128 bytes)
    p = hw_params(preset)
    rb, bits = row_bytes(p), row_bits(p)
    m = Module()
    x = Signal(p.addr_bits(Buf.WGT))
    q = exact_quotient(m, x, rb, bits, "q")
    got = []

    async def bench(ctx):
        for r in range(wgt_rows(p)):
            ctx.set(x, r * rb)
            got.append(ctx.get(q))

    sim = AmaranthSimulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == list(range(wgt_rows(p)))


class SwappedTrees(GemmEngine):
    """A deliberate fault: trees 0 and 1 take each other's words."""

    def tree_words(self, row):
        words = super().tree_words(row)
        words[0], words[1] = words[1], words[0]
        return words


def test_a_swapped_tree_fails():
    g = dict(m=2, n=3, kw=1, reset=1, acc_addr=0, acc_rs=3, act_addr=0, act_rs=64, wgt_addr=0)
    got, want, _ = simulate(SMALL, [([g], False)], engine=SwappedTrees)
    assert not np.array_equal(got, want)   # the same GEMM is exact on the real engine (the test above runs it)


def test_wgt_is_filled_by_the_load_mover():
    # LOADs into WGT through the real LoadMover and DRAM model (a contiguous tile, a 2-D one whose rows jump, the
    # last byte, then byte 0), then every row read back: the bytes the Simulator's LOADs leave in WGT.
    p = hw_params(SMALL)
    dram_bytes = 4096
    sim = Simulator(SMALL, dram_bytes=dram_bytes)
    sim.dram[:] = np.random.default_rng(5).integers(0, 256, dram_bytes, dtype=np.uint8)
    loads = [Instr(Op.LOAD, buf=int(Buf.WGT), sram_addr=0, dram_addr=100, rows=1, cols=300, dram_rs=0, dram_cs=1,
                   sram_rs=0),
             Instr(Op.LOAD, buf=int(Buf.WGT), sram_addr=1000, dram_addr=7, rows=4, cols=37, dram_rs=200, dram_cs=1,
                   sram_rs=61),
             Instr(Op.LOAD, buf=int(Buf.WGT), sram_addr=2047, dram_addr=9, rows=1, cols=1, dram_rs=0, dram_cs=1,
                   sram_rs=0),
             Instr(Op.LOAD, buf=int(Buf.WGT), sram_addr=0, dram_addr=3000, rows=1, cols=5, dram_rs=0, dram_cs=1,
                   sram_rs=0)]   # byte 0 right after the last byte: the cursor must not wrap onto it
    mover, wgt = LoadMover(p), WgtBuffer(p)
    top = Module()
    top.submodules.mover, top.submodules.wgt = mover, wgt
    wiring.connect(top, mover.wr, wgt.wr)
    dram = DramModel.for_params(mover.mem, p, dram_bytes)
    dram.mem[:] = sim.dram
    rows = []

    async def bench(ctx):
        for ins in loads:
            await put(ctx, mover.cmd, ins.fields)
            await get(ctx, mover.done)
        for r in range(wgt.depth):
            await put(ctx, wgt.rd, r)
            rows.append(b"".join(int(w).to_bytes(p.word_bytes, "little") for w in await get(ctx, wgt.rd_data)))

    run(top, bench, background=(dram.serve,), max_cycles=5000)
    sim.load_stream([*loads, Instr(Op.FINISH)])
    sim.run()
    got = np.frombuffer(b"".join(rows), np.uint8)[:p.buffer_units[Buf.WGT]]
    assert np.array_equal(got, sim.raw[Buf.WGT])

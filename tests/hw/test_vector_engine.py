"""The vector engine against the Simulator: random VOPs of every function it computes (partial lane chunks, strides
0, negative and even, every source and destination buffer, in place, the special values), each run on the RTL and
in the Simulator from the same buffers and compared byte for byte after each; through stalling ports; on
WordBuffers; long VOPs timed against the cycle model; the transcendental functions refused; deliberate faults
caught. And WordBuffer alone against a numpy array, with its bank-conflict cycles."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import wiring

from tritc.codegen.fpga.isa import Buf, Instr, Op, VFunc, f32_bits
from tritc.codegen.fpga.verify import check_instr
from tritc.hw import vector_engine, vector_walker
from tritc.hw.params import hw_params
from tritc.hw.sim import get, run
from tritc.hw.vector_engine import VectorEngine
from tritc.hw.word_buffer import WordBuffer
from tritc.runtime.fpga import Simulator

from .conftest import SMALL
from .vector_bench import LANES, TESTED, TRANSCENDENTAL, cycle_report, fill_buffers, random_vop, run_vops

P = hw_params(SMALL)


def _directed() -> list[Instr]:
    """FILLs of a NaN with a payload into VEC and KV (canonical), ACT and ACC (0); of 1e10 into ACT and ACC
    (saturated); of -2.5 (to even: -2). VOPs with no output (rows or cols 0), done at once."""
    vops = [Instr(Op.VOP, func=VFunc.ADD, rows=3, cols=0, dst_buf=Buf.VEC, src1_buf=Buf.VEC, src2_buf=Buf.KV),
            Instr(Op.VOP, func=VFunc.MM, rows=2, cols=0, depth=4, dst_buf=Buf.VEC, src1_buf=Buf.VEC,
                  src2_buf=Buf.KV),
            Instr(Op.VOP, func=VFunc.RSUM, rows=0, cols=5, dst_buf=Buf.VEC, src1_buf=Buf.VEC)]
    for imm in (f32_bits(np.float32(np.nan)) | 5, f32_bits(1e10), f32_bits(-2.5)):
        for buf, addr in ((Buf.VEC, 3), (Buf.ACT, 5), (Buf.ACC, 7), (Buf.KV, 1)):
            vops.append(Instr(Op.VOP, func=VFunc.FILL, rows=2, cols=5, imm=imm, dst_buf=buf, dst_addr=addr,
                              dst_rs=6, dst_cs=1))
    return vops


def test_every_function_matches_the_simulator():
    rng = random.Random(11)
    vops = [random_vop(func, rng, P.buffer_units) for func in TESTED for _ in range(6)]
    vops += [random_vop(VFunc.MM, rng, P.buffer_units) for _ in range(4)]     # the walker's most paths
    vops += [random_vop(func, rng, P.buffer_units) for func in TRANSCENDENTAL]
    rng.shuffle(vops)
    vops += _directed()
    out = run_vops(VectorEngine(P), vops, seed=11)
    print("\n" + cycle_report(out))
    assert not out.mismatches, "\n".join(out.mismatches[:5])
    assert sorted(out.refused) == sorted(TRANSCENDENTAL)
    assert set(out.cycles) == set(TESTED)
    assert [got for got, _ in out.cycles[VFunc.ADD][-1:] + out.cycles[VFunc.MM][-1:] + out.cycles[VFunc.RSUM][-1:]] \
        == [1, 1, 1]                                      # the empty ones: done the cycle after they are taken


def test_stalling_ports_at_8_lanes():
    # Every port takes a request in 60% of the cycles: the fork, the pending chunks and the write register hold.
    # 8 lanes: other lane offsets, chunk lengths and a tree of three levels.
    config = dataclasses.replace(SMALL, vector_lanes=8).validate()
    p = hw_params(config)
    rng = random.Random(12)
    funcs = [VFunc.ADD, VFunc.WHERE, VFunc.MM, VFunc.RSUM, VFunc.AMAX, VFunc.DIV, VFunc.REQ, VFunc.COPY]
    vops = [random_vop(rng.choice(funcs), rng, p.buffer_units, config) for _ in range(20)]
    out = run_vops(VectorEngine(p), vops, seed=12, take=0.6)
    assert not out.mismatches, "\n".join(out.mismatches[:5])


def _long_vops() -> list[Instr]:
    """Long enough that the rate shows (16 to 32 chunks), in SMALL's buffers: reads may repeat (a source row stride
    of 0, or overlapping rows)."""
    vec = dict(src1_buf=Buf.VEC, src1_addr=0, src1_cs=1)
    return [
        Instr(Op.VOP, func=VFunc.COPY, rows=2, cols=64, **vec, src1_rs=0, dst_buf=Buf.ACT, dst_rs=64, dst_cs=1),
        Instr(Op.VOP, func=VFunc.ADD, rows=2, cols=64, **vec, src1_rs=3, src2_buf=Buf.KV, src2_rs=1, src2_cs=1,
              dst_buf=Buf.ACT, dst_rs=64, dst_cs=1),
        Instr(Op.VOP, func=VFunc.RSUM, rows=8, cols=16, **vec, src1_rs=5, dst_buf=Buf.KV, dst_rs=1),
        Instr(Op.VOP, func=VFunc.MM, rows=2, cols=2, depth=32, **vec, src1_rs=64, src2_buf=Buf.KV, src2_rs=8,
              src2_cs=1, dst_buf=Buf.ACC, dst_rs=8, dst_cs=1),
        Instr(Op.VOP, func=VFunc.DIV, rows=2, cols=32, **vec, src1_rs=0, src2_buf=Buf.KV, src2_rs=16, src2_cs=1,
              dst_buf=Buf.ACT, dst_rs=64, dst_cs=1),
        Instr(Op.VOP, func=VFunc.REQ, rows=2, cols=64, depth=3, imm=1 << 30, src1_buf=Buf.ACT, src1_addr=0,
              src1_rs=64, src1_cs=1, dst_buf=Buf.VEC, dst_rs=64, dst_cs=1),
    ]


def test_long_vops_run_at_the_cycle_models_rate():
    vops = _long_vops()
    for ins in vops:
        check_instr(ins, 0, SMALL)
    out = run_vops(VectorEngine(P), vops, seed=13)
    print("\n" + cycle_report(out))
    assert not out.mismatches, "\n".join(out.mismatches[:5])
    for func, [(got, want)] in out.cycles.items():
        # One chunk a cycle and a shorter fill than the model's 8; DIV a chunk per 7.5 cycles against 8.
        assert got <= want, (func.name, got, want)


class _Faults:
    @staticmethod
    def nan_payload(monkeypatch):
        monkeypatch.setattr(vector_engine, "CANONICAL_NAN", 0x7FC00001)   # the write's NaN, not the canonical one

    @staticmethod
    def unsigned_stride(monkeypatch):
        def lane_offsets(m, stride, lanes, name):            # a negative column stride not sign-extended
            out = []
            for lane in range(lanes):
                s = Signal(22, name=f"{name}_bad{lane}")
                total = 0
                for bit in range(lane.bit_length()):
                    if lane >> bit & 1:
                        total = total + (stride.as_unsigned() << bit)
                m.d.comb += s.eq(total)
                out.append(s)
            return out
        monkeypatch.setattr(vector_walker, "lane_offsets", lane_offsets)


@pytest.mark.parametrize("fault", ["nan_payload", "unsigned_stride"])
def test_a_deliberate_fault_fails(monkeypatch, fault):
    getattr(_Faults, fault)(monkeypatch)
    rng = random.Random(14)
    vops = [random_vop(f, rng, P.buffer_units) for f in (VFunc.ADD, VFunc.COPY, VFunc.RMAX) for _ in range(3)]
    out = run_vops(VectorEngine(P), vops, seed=14)
    assert out.mismatches


class EngineOnVec(Elaboratable):
    """The engine with VEC as a WordBuffer behind its ports (src1 on read port 0, src2 on 1)."""

    def __init__(self):
        self.engine = VectorEngine(P)
        self.buffer = WordBuffer(P, Buf.VEC)
        self.cmd, self.done = self.engine.cmd, self.engine.done

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.engine, m.submodules.buffer = self.engine, self.buffer
        wiring.connect(m, self.engine.rd_a, self.buffer.rd0)
        wiring.connect(m, self.engine.rd_b, self.buffer.rd1)
        wiring.connect(m, self.engine.wr, self.buffer.wr)
        return m


class WordBufferState:
    """run_vops' view of a WordBuffer's RAMs (VEC); the other buffers are not touched."""

    def __init__(self, sim: Simulator, buffer: WordBuffer):
        self.raw = {b: a.copy() for b, a in sim.raw.items()}
        self.buffer = buffer

    async def sync(self, ctx) -> None:
        words = self.raw[Buf.VEC].view(np.uint32)
        for a in range(words.size):
            words[a] = ctx.get(self.buffer.banks[a % LANES].data[a // LANES])

    async def reset(self, ctx, buf: Buf, want: np.ndarray) -> None:
        self.raw[buf][:] = want
        if buf is Buf.VEC:
            for a, w in enumerate(want.view(np.uint32)):
                ctx.set(self.buffer.banks[a % LANES].data[a // LANES], int(w))


def test_engine_on_word_buffers():
    rng = random.Random(15)
    vops = []
    while len(vops) < 24:
        ins = random_vop(rng.choice([VFunc.ADD, VFunc.MUL, VFunc.WHERE, VFunc.RSUM, VFunc.MM, VFunc.COPY]), rng,
                         P.buffer_units)
        f = dict(ins.fields, dst_buf=Buf.VEC, src1_buf=Buf.VEC, src2_buf=Buf.VEC)
        ins = Instr(Op.VOP, **f)
        try:
            check_instr(ins, 0, SMALL)
        except Exception:
            continue
        vops.append(ins)
    sim = Simulator(SMALL, dram_bytes=4096)
    fill_buffers(sim, np.random.default_rng(15))
    dut = EngineOnVec()
    out = run_vops(dut, vops, seed=15, sim=sim, buffers=WordBufferState(sim, dut.buffer))
    print("\n" + cycle_report(out))
    assert not out.mismatches, "\n".join(out.mismatches[:5])


def test_word_buffer_against_an_array():
    """Random writes and reads of `lanes` elements with strides 1, 3, -1 (one cycle), 0 (reads: a broadcast, one
    cycle), 2 and 4 (bank conflicts: as many cycles as the busiest bank's distinct elements)."""
    dut = WordBuffer(P, Buf.VEC, read_ports=1)
    size = P.buffer_units[Buf.VEC]
    shadow = np.zeros(size, np.uint32)
    rng = np.random.default_rng(16)
    ops = []
    for k in range(160):
        write = k < 40 or rng.random() < 0.3
        stride = int(rng.choice([1, 3, -1, 2, 4] if write else [1, 3, -1, 0, 2, 4]))   # a write names each once
        base = int(rng.integers(0, size))
        addrs = [(base + lane * stride) % size for lane in range(LANES)]
        mask = int(rng.integers(1, 1 << LANES)) if rng.random() < 0.3 else (1 << LANES) - 1
        ops.append((write, addrs, mask, [int(x) for x in rng.integers(0, 1 << 32, LANES, dtype=np.uint64)]))
    expect_reads, timings = [], []
    for write, addrs, mask, values in ops:
        lanes = [lane for lane in range(LANES) if mask >> lane & 1]
        per_bank = {}
        for lane in lanes:
            per_bank.setdefault(addrs[lane] % LANES, set()).add(addrs[lane])
        timings.append(max(len(s) for s in per_bank.values()))
        if write:
            for lane in lanes:
                shadow[addrs[lane]] = values[lane]
        else:
            expect_reads.append([int(shadow[addrs[lane]]) if lane in lanes else None for lane in range(LANES)])
    got_reads, got_cycles = [], []

    async def requests(ctx):
        for write, addrs, mask, values in ops:
            port = dut.wr if write else dut.rd0.req
            payload = {"buf": Buf.VEC, "addr": addrs, "mask": mask}
            if write:
                payload["data"] = values
            ctx.set(port.valid, 1)
            ctx.set(port.payload, payload)
            cycles = 0
            while True:
                cycles += 1
                _, _, ready = await ctx.tick().sample(port.ready)
                if ready:
                    break
            ctx.set(port.valid, 0)
            got_cycles.append(cycles)

    async def responses(ctx):
        stall = random.Random(16)
        for _ in expect_reads:
            while stall.random() < 0.3:
                await ctx.tick()
            got_reads.append([int(x) for x in await get(ctx, dut.rd0.resp)])

    run(dut, requests, responses, max_cycles=5000)
    for want, got in zip(expect_reads, got_reads):
        assert [g if w is not None else None for g, w in zip(got, want)] == want
    assert len(got_reads) == len(expect_reads)
    # Reads may also wait for the previous answer to be taken (the stalling reader); writes never do.
    writes = [(c, t) for (w, *_), c, t in zip(ops, got_cycles, timings) if w]
    assert all(c == t for c, t in writes), writes
    reads = [(c, t) for (w, *_), c, t in zip(ops, got_cycles, timings) if not w]
    assert all(c >= t for c, t in reads)
    assert sum(c == t for c, t in reads) > len(reads) // 2

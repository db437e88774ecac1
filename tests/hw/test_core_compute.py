"""The core with its GEMM and vector engines (RtlDevice over tritc/hw/core.py) against the Simulator: random
streams that LOAD every buffer, run GEMMs and VOPs of every function (some VOPs marked `overlap` after a GEMM),
STORE every buffer, and end with the same DRAM and the same buffers bit for bit; a core built without the
transcendental unit stops at an EXP with a one-line UnsupportedError naming the instruction and the function; a
core built without its vector engine still runs GEMMs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tritc.codegen.fpga.isa import ELEM_BYTES, Buf, Instr, Op, StreamError, VFunc, encode
from tritc.codegen.fpga.verify import check_stream
from tritc.runtime.fpga import Simulator
from tritc.runtime.rtl import RtlDevice, RtlUnsupportedError

from .conftest import SMALL
from .test_core import raw_stream
from .test_gemm_engine import random_gemms
from .vector_bench import TESTED, TRANSCENDENTAL, random_vop

DRAM = 8192
OUT = 4096                                    # STOREs write from here; LOADs read below
LOADED = {Buf.WGT: 320, Buf.ACT: 256, Buf.ACC: 64, Buf.VEC: 96, Buf.KV: 64}     # elements loaded from DRAM


@pytest.fixture(scope="module")
def devices():
    return RtlDevice(SMALL, dram_bytes=DRAM), Simulator(SMALL, dram_bytes=DRAM)


def transfer(op: Op, buf: Buf, n: int, dram: int, **flags) -> Instr:
    e = ELEM_BYTES[buf]
    rows = 4 if n % 4 == 0 else 1
    cols = n // rows
    return Instr(op, buf=buf, sram_addr=0, dram_addr=dram, rows=rows, cols=cols, dram_rs=cols * e, dram_cs=e,
                 sram_rs=cols, **flags)


def compute_stream(rng: random.Random, gemms: int, vops: int, funcs=tuple(VFunc)) -> list[Instr]:
    """LOADs (each pushing l2c), a NOP popping each, GEMMs and VOPs in random order, a NOP pushing c2s, a STORE of
    each buffer popping it, FINISH. A VOP right after a GEMM is marked `overlap` when the stream checks allow it."""
    from tritc.hw.params import hw_params

    p = hw_params(SMALL)
    units = p.buffer_units
    loads, dram = [], 0
    for buf, n in LOADED.items():
        loads.append(transfer(Op.LOAD, buf, n, dram, push_next=1))
        dram += n * ELEM_BYTES[buf]
    g = [Instr(Op.GEMM, **{k: int(v) for k, v in d.items()})
         for d in random_gemms(p, rng, gemms)]
    v = [random_vop(rng.choice(funcs), rng, units) for _ in range(vops)]
    body = g + v
    rng.shuffle(body)
    stores, out = [], OUT
    for buf in (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV):
        n = min(units[buf], 256 // ELEM_BYTES[buf] * 2)
        stores.append(transfer(Op.STORE, buf, n, out))
        out += n * ELEM_BYTES[buf]
    stores[0] = stores[0].replace(pop_prev=1)
    stream = (loads + [Instr(Op.NOP, pop_prev=1) for _ in loads] + body + [Instr(Op.NOP, push_next=1)] + stores
              + [Instr(Op.FINISH)])
    for k in range(1, len(stream)):
        if stream[k].op is Op.VOP and stream[k - 1].op is Op.GEMM and rng.random() < 0.7:
            trial = stream[:k] + [stream[k].replace(overlap=1)] + stream[k + 1:]
            try:
                check_stream(trial, SMALL)
            except StreamError:
                continue
            stream = trial
    return stream


def run_both(devices, stream, seed):
    rtl, sim = devices
    image = np.random.default_rng(seed).integers(0, 256, DRAM, dtype=np.uint8)
    for dev in devices:
        dev.write(0, image)
        dev.load_stream(stream)
    return rtl.run(), sim.run()


def compare(devices) -> None:
    rtl, sim = devices
    assert np.array_equal(rtl.read(0, DRAM), sim.read(0, DRAM)), "DRAM differs"
    held = rtl.buffers()
    for b in Buf:
        bad = np.flatnonzero(held[b] != sim.raw[b])
        assert bad.size == 0, f"{b.name}: {bad.size} bytes differ from byte {bad[0]}: RTL {held[b][bad[:4]]} " \
                              f"Simulator {sim.raw[b][bad[:4]]}"


@pytest.mark.parametrize("seed", [1, 2])
def test_random_gemm_and_vop_streams_match_the_simulator(devices, seed):
    rng = random.Random(seed)
    stream = compute_stream(rng, gemms=6, vops=14)
    got, want = run_both(devices, stream, seed)
    ops = {op: sum(i.op is op for i in stream) for op in (Op.GEMM, Op.VOP)}
    overlaps = sum(i.op is Op.VOP and i.overlap for i in stream)
    trans = sum(i.op is Op.VOP and i.func in TRANSCENDENTAL for i in stream)
    print(f"\nseed {seed}: {len(stream)} instructions ({ops[Op.GEMM]} GEMM, {ops[Op.VOP]} VOP, {overlaps} overlap, "
          f"{trans} transcendental), "
          f"RTL {got['cycles']} cycles, Simulator {want['cycles']} (x{got['cycles'] / want['cycles']:.2f})")
    compare(devices)
    for key in ("dram_read_bytes", "dram_write_bytes", "instructions", "tokens_left", "ternary_ops"):
        assert got[key] == want[key], key
    # the GEMM engine's own counters: its trit products (above) and the cycles a GEMM was in flight
    assert got["ternary_ops"] > 0 and 0 < got["engines"]["matrix"]["busy"] <= got["cycles"]
    assert got["matrix_utilisation"] == got["ternary_ops"] / (got["cycles"] * 4 * 16)


def test_without_the_transcendental_unit_an_exp_stops_the_core_naming_it():
    from tritc.hw.vector_units import DivSqrtLanes

    devices = rtl, sim = (RtlDevice(SMALL, dram_bytes=DRAM, vector_units=(DivSqrtLanes,)),
                          Simulator(SMALL, dram_bytes=DRAM))
    rng = random.Random(5)
    exp = random_vop(VFunc.EXP, rng, rtl.params.buffer_units)
    stream = [Instr(Op.NOP), exp, Instr(Op.FINISH)]
    rtl.load_stream(stream)
    with pytest.raises(RtlUnsupportedError, match=r"^the RTL core does not run EXP yet: it stopped at instruction 1 "
                                                  r"\(VOP.EXP") as e:
        rtl.run()
    assert "\n" not in str(e.value) and e.value.index == 1
    # the device runs the next stream (the functions it has)
    stream = compute_stream(random.Random(6), gemms=1, vops=2, funcs=TESTED)
    run_both(devices, stream, 6)
    compare(devices)


def test_a_core_without_its_vector_engine_runs_gemms():
    devices = RtlDevice(SMALL, dram_bytes=DRAM, units=frozenset({"gemm"})), Simulator(SMALL, dram_bytes=DRAM)
    stream = compute_stream(random.Random(7), gemms=5, vops=0)
    got, want = run_both(devices, stream, 7)
    print(f"\nGEMMs only: RTL {got['cycles']} cycles, Simulator {want['cycles']}")
    compare(devices)
    vop = random_vop(VFunc.ADD, random.Random(1), devices[0].params.buffer_units)
    with pytest.raises(RtlUnsupportedError, match="built without its VOP engine: instruction 1"):
        devices[0].load_stream([Instr(Op.NOP), vop, Instr(Op.FINISH)])
    # unchecked, the word reaches fetch, which refuses it (the `absent` error) with its index
    devices[0].load_stream(raw_stream([encode(Instr(Op.NOP)), encode(vop), encode(Instr(Op.FINISH))], SMALL),
                           check=False)
    with pytest.raises(StreamError, match=r"stopped at instruction 1 \(VOP.ADD .*it has no VOP unit"):
        devices[0].run()


def test_overlap_vops_run_beside_the_gemm_and_its_tokens_wait_for_it(devices):
    """A long GEMM pushing c2s, then five VOPs marked `overlap` each pushing c2s (six tokens posted for a queue of
    four), a STORE per token: the first STORE sees the GEMM's accumulators (its token came after the GEMM's done),
    everything ends as in the Simulator. With only the last VOP pushing, the VOPs beside the GEMM save cycles against
    the same stream without the bit (with a STORE per VOP, the STOREs' chain hides the difference)."""
    gemm = Instr(Op.GEMM, m=2, n=16, kw=3, reset=1, act_rs=192, acc_rs=16, push_next=1)
    vops = [Instr(Op.VOP, func=VFunc.ADD, rows=1, cols=24, dst_buf=Buf.VEC, dst_addr=128 + 24 * k, dst_cs=1,
                  src1_buf=Buf.VEC, src1_addr=16 * k, src1_cs=1, src2_buf=Buf.KV, src2_addr=16 * k, src2_cs=1,
                  push_next=1) for k in range(5)]
    acc_store = transfer(Op.STORE, Buf.ACC, 4, OUT, pop_prev=1).replace(sram_addr=28)
    vec_stores = [transfer(Op.STORE, Buf.VEC, 4, OUT + 256 + 32 * k, pop_prev=1).replace(sram_addr=140 + 24 * k)
                  for k in range(5)]
    loads = [transfer(Op.LOAD, buf, n, 0 if buf is Buf.WGT else 1024 * (k + 1))
             for k, (buf, n) in enumerate(LOADED.items())]
    head = loads[:-1] + [loads[-1].replace(push_next=1), Instr(Op.NOP, pop_prev=1), gemm]
    cycles = {}
    for overlap in (0, 1):
        quiet = [v.replace(overlap=overlap, push_next=int(k == 4)) for k, v in enumerate(vops)]
        got, want = run_both(devices, head + quiet + [acc_store, vec_stores[-1], Instr(Op.FINISH)], 11)
        compare(devices)
        cycles[overlap] = got["cycles"], want["cycles"]
    print(f"\nGEMM and 5 VOPs: RTL {cycles[0][0]} cycles serial, {cycles[1][0]} with overlap; Simulator "
          f"{cycles[0][1]}, {cycles[1][1]}")
    assert cycles[1][0] < cycles[0][0] and cycles[1][1] < cycles[0][1]
    run_both(devices, head + [v.replace(overlap=1) for v in vops] + [acc_store, *vec_stores, Instr(Op.FINISH)], 12)
    compare(devices)


def test_back_to_back_gemms_push_after_their_done(devices):
    """A short GEMM and a long one, each pushing c2s, handed over back to back (two in flight): the STORE of the
    second's accumulators, popping the second token, sees them (no token before the GEMM in flight is done)."""
    loads = [transfer(Op.LOAD, buf, n, 0 if buf is Buf.WGT else 1024 * (k + 1))
             for k, (buf, n) in enumerate(LOADED.items())]
    first = Instr(Op.GEMM, m=1, n=4, kw=1, reset=1, acc_addr=0, push_next=1)
    second = Instr(Op.GEMM, m=2, n=16, kw=3, reset=1, act_rs=192, acc_rs=16, acc_addr=16, push_next=1)
    stores = [transfer(Op.STORE, Buf.ACC, 4, OUT, pop_prev=1),
              transfer(Op.STORE, Buf.ACC, 4, OUT + 64, pop_prev=1).replace(sram_addr=16)]
    stream = loads[:-1] + [loads[-1].replace(push_next=1), Instr(Op.NOP, pop_prev=1), first, second, *stores,
                           Instr(Op.FINISH)]
    got, want = run_both(devices, stream, 13)
    compare(devices)
    print(f"\ntwo GEMMs back to back: RTL {got['cycles']} cycles, Simulator {want['cycles']}")


def test_vops_read_act_in_one_wide_read_when_the_bytes_are_consecutive(devices):
    """A VOP reading ACT: a chunk of consecutive bytes (column stride 1) is one read of ACT's wide port, any other a
    lane's byte a cycle; both bit-exact, and each as long as the cycle model says (timing.lane_conflict)."""
    cycles = {}
    for cs, cols, base in ((1, 48, 0), (1, 7, 5), (2, 16, 3)):
        stream = [transfer(Op.LOAD, Buf.ACT, 512, 0, push_next=1),
                  Instr(Op.VOP, pop_prev=1, func=VFunc.COPY, rows=2, cols=cols, dst_buf=Buf.VEC, dst_rs=cols,
                        dst_cs=1, src1_buf=Buf.ACT, src1_addr=base, src1_rs=cols * cs, src1_cs=cs),
                  Instr(Op.FINISH)]
        got, want = run_both(devices, stream, 21)
        compare(devices)
        cycles[cs, cols] = got["cycles"], want["cycles"]
        assert abs(got["cycles"] / want["cycles"] - 1) < 0.05, (cs, cols, got["cycles"], want["cycles"])
    print(f"\nCOPY ACT -> VEC, RTL and model cycles: {cycles}")
    # consecutive bytes: 5 cycles a chunk (24 chunks against 4), where a lane a cycle would be 4 + 4
    assert (cycles[1, 48][0] - cycles[1, 7][0]) / (24 - 4) <= 5.5

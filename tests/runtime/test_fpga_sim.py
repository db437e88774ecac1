"""The Simulator device: hand-written streams against numpy references computed here (bit-exact on integer
paths and IEEE functions), the vector unit through real instructions, malformed streams and deadlocks refused
with the instruction named, and the cycle model's costs (transfers, the shared DRAM channel, double buffering).

The Simulator's own speed is measured in CPU seconds of this process (time.process_time), not wall time: the
machine is shared, and another process's load must not fail these tests."""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tritc.codegen.fpga import vector_unit as vu
from tritc.codegen.fpga.isa import Buf, Instr, Op, StreamError, VFunc, encode_stream
from tritc.codegen.fpga.ports import transfer_cost, wgt_division_cycles
from tritc.codegen.fpga.timing import GEMM_COMMIT, TOKEN_CYCLES, fetch_start, vop_cycles
from tritc.codegen.fpga.verify import check_stream
from tritc.runtime.fpga import ENERGY_PJ, DeadlockError, Device, DeviceError, HazardError, Simulator

from ..properties import budget
from .fpga_streams import (
    BITNET_2B,
    SMALL,
    DecoderShape,
    StreamBuilder,
    config,
    decoder_step,
    gemv_weights,
    load,
    row,
    store,
    tile_load,
    vop,
    weight_image_bytes,
)

EDGE = config("edge")
MIB = 1 << 20


def sim_for(cfg=EDGE, dram=16 * MIB) -> Simulator:
    return Simulator(cfg, dram_bytes=dram)


def f32bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


# -- the device ---------------------------------------------------------------------------------------------

def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_simulator_is_a_device_and_dram_is_lazy():
    before = resident_bytes()
    sim = Simulator(config("datacenter"))              # 8 GiB of DRAM, committed only where written
    assert isinstance(sim, Device) and sim.dram.size == 8 << 30
    sim.write((8 << 30) - 4, np.array([1, 2, 3, 4], np.uint8))
    assert list(sim.read((8 << 30) - 4, 4)) == [1, 2, 3, 4]
    assert resident_bytes() - before < 100 << 20        # the buffers (14 MiB) and a page of DRAM, not 8 GiB


def test_host_dram_access_checked():
    sim = sim_for(dram=4096)
    sim.write(0, b"\x01\x02")
    sim.write(2, np.array([3], np.uint16))
    assert list(sim.read(0, 4)) == [1, 2, 3, 0]
    r = sim.read(0, 2)
    r[0] = 9
    assert sim.read(0, 1)[0] == 1                       # a copy
    with pytest.raises(DeviceError, match="DRAM write of 8 bytes at 0xffc is outside the device's DRAM"):
        sim.write(4092, bytes(8))
    with pytest.raises(DeviceError, match="DRAM read"):
        sim.read(-1, 1)
    with pytest.raises(DeviceError, match="dram_bytes"):
        Simulator(EDGE, dram_bytes=EDGE.dram_bytes + 1)


# -- LOAD -> GEMM -> VOP -> STORE, bit exact --------------------------------------------------------------

@pytest.mark.parametrize("packing", ["base3", "2bit"])
@pytest.mark.parametrize("preset", ["edge", "datacenter"])
def test_gemm_pipeline_bit_exact(packing, preset):
    cfg = config(preset, weight_packing=packing)
    rng = np.random.default_rng(0)
    M, K, N = 3, 200, 40                               # K padded to 256 with zero trits; N not a multiple of rows
    kw = 4
    W, wimg = gemv_weights(rng, K, N, cfg)            # ISA v3 layout: N padded to whole blocks of rows
    x = rng.integers(-128, 128, (M, 256)).astype(np.int8)   # bytes past K are garbage: zero trits ignore them
    sim = sim_for(cfg)
    sim.write(0x1000, x)
    sim.write(0x8000, wimg)
    scale = np.float32(0.0371)
    mult, shift = 1_518_500_250, 6                       # Q31 0.7071..., then / 64
    instrs = [
        load(Buf.ACT, 0, 0x1000, M, 256),                              # act rows 256 apart in ACT
        load(Buf.WGT, 0, 0x8000, 1, wimg.size, push_next=1),
        Instr(Op.GEMM, acc_addr=0, act_addr=0, wgt_addr=0, m=M, kw=kw, n=N, act_rs=256, acc_rs=N, reset=1,
              pop_prev=1),
        vop(VFunc.MUL, M, N, (Buf.VEC, 0, N, 1), (Buf.ACC, 0, N, 1), imm=float(scale)),
        vop(VFunc.REQ, M, N, (Buf.ACT, 1024, N, 1), (Buf.ACC, 0, N, 1), imm=mult, depth=shift, push_next=1),
        store(Buf.VEC, 0, 0x20000, M, N, pop_prev=1),
        store(Buf.ACT, 1024, 0x30000, M, N),
        store(Buf.ACC, 0, 0x40000, M, N),
        Instr(Op.FINISH),
    ]
    check_stream(instrs, cfg)
    sim.load_stream(encode_stream(instrs))
    stats = sim.run()
    acc = x[:, :K].astype(np.int64) @ W.astype(np.int64)
    assert np.array_equal(sim.read(0x40000, 4 * M * N).view(np.int32).reshape(M, N), acc)
    assert np.array_equal(f32bits(sim.read(0x20000, 4 * M * N).view(np.float32).reshape(M, N)),
                          f32bits(acc.astype(np.float32) * scale))
    req = [[max(-128, min(127, (int(a) * mult + (1 << (30 + shift))) >> (31 + shift))) for a in r] for r in acc]
    assert np.array_equal(sim.read(0x30000, M * N).view(np.int8).reshape(M, N), np.array(req))
    assert stats["ternary_ops"] == M * N * 64 * kw
    assert stats["dram_read_bytes"] == M * 256 + wimg.size
    assert stats["dram_write_bytes"] == M * N * (4 + 1 + 4)


def test_gemm_accumulates_and_wraps_int32():
    rng = np.random.default_rng(1)
    K, N = 128, 16
    W, wimg = gemv_weights(rng, K, N, EDGE)
    x = rng.integers(-128, 128, K).astype(np.int8)
    sums = x.astype(np.int64) @ W
    start = (2**31 - 1 - sums).astype(np.int32)       # the first GEMM lands on 2^31 - 1, the second wraps
    sim = sim_for()
    sim.write(0, x)
    sim.write(0x1000, wimg)
    sim.write(0x2000, start)
    gemm = Instr(Op.GEMM, acc_addr=0, act_addr=0, wgt_addr=0, m=1, kw=2, n=N, reset=0)
    instrs = [
        load(Buf.ACT, 0, 0, 1, K),
        load(Buf.ACC, 0, 0x2000, 1, N),
        load(Buf.WGT, 0, 0x1000, 1, wimg.size, push_next=1),
        gemm.replace(pop_prev=1), gemm.replace(push_next=1),          # accumulate twice onto the loaded values
        store(Buf.ACC, 0, 0x3000, 1, N, pop_prev=1),
        Instr(Op.FINISH),
    ]
    sim.load_stream(instrs)
    sim.run()
    want = ((start.astype(np.int64) + 2 * sums + 2**31) % 2**32 - 2**31).astype(np.int32)
    got = sim.read(0x3000, 4 * N).view(np.int32)
    assert np.array_equal(got, want)
    assert np.array_equal(got[sums > 0], (-(2**31) - 1 + sums[sums > 0]).astype(np.int32))   # wrapped


# -- the vector unit through instructions -------------------------------------------------------------------

def run_vop(func, a, b=None, *, imm=None, depth=0, src_buf=Buf.VEC, src2_buf=None, dst_buf=Buf.VEC, lanes=None,
            out_shape=None):
    """One VOP over 2-D `a` (and `b`) loaded from DRAM; the destination read back from DRAM."""
    cfg = EDGE if lanes is None else config("edge", vector_lanes=lanes)
    sim = sim_for(cfg)
    a = np.atleast_2d(a)
    rows, cols = a.shape
    src2_buf = src_buf if src2_buf is None else src2_buf
    dt = {Buf.VEC: np.float32, Buf.KV: np.float32, Buf.ACC: np.int32, Buf.ACT: np.int8}
    sim.write(0, a.astype(dt[src_buf]))
    instrs = [load(src_buf, 0, 0, rows, cols)]
    src2 = None
    if b is not None:
        b = np.atleast_2d(b)
        sim.write(0x10000, b.astype(dt[src2_buf]))
        instrs.append(load(src2_buf, 4096, 0x10000, *b.shape))
        src2 = (src2_buf, 4096, b.shape[1], 1)
    instrs[-1] = instrs[-1].replace(push_next=1)
    out_shape = out_shape or (rows, cols)
    dst = (dst_buf, 8192, out_shape[1], 1)
    if func is VFunc.MM:
        ocols = b.shape[0] if b is not None else out_shape[1]
        out_shape = (rows, ocols)
        dst = (dst_buf, 8192, ocols, 1)
        instrs.append(vop(func, rows, ocols, dst, (src_buf, 0, cols, 1), src2, imm=imm, depth=cols,
                          pop_prev=1, push_next=1))
    else:
        instrs.append(vop(func, rows, cols, dst, (src_buf, 0, cols, 1) if func is not VFunc.FILL else None, src2,
                          imm=imm, depth=depth, pop_prev=1, push_next=1))
    instrs += [store(dst_buf, 8192, 0x20000, *out_shape, pop_prev=1), Instr(Op.FINISH)]
    check_stream(instrs, cfg)
    sim.load_stream(instrs)
    sim.run()
    n = out_shape[0] * out_shape[1]
    raw = sim.read(0x20000, n * (1 if dst_buf is Buf.ACT else 4))
    return raw.view(dt[dst_buf]).reshape(out_shape)


SPECIALS = np.array([0.0, -0.0, 1.0, -1.5, 2.5, 3.5, -2.5, 1e-40, -3e-39, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan,
                     7.0, 0.1, -0.3, 1e10], np.float32)


def canonical(x: np.ndarray) -> np.ndarray:
    x = np.array(x, np.float32)
    x[np.isnan(x)] = np.array(0x7FC00000, np.uint32).view(np.float32)
    return x


def ieee_max(a, b):
    out = []
    for x, y in zip(a.ravel(), b.ravel()):
        if math.isnan(x) or math.isnan(y):
            out.append(np.nan)
        elif x == y:
            out.append(x if not math.copysign(1, x) < 0 else y)
        else:
            out.append(max(x, y))
    return np.array(out, np.float32).reshape(a.shape)


def ieee_min(a, b):
    return -ieee_max(-a, -b)


@pytest.mark.parametrize("func, ref", [
    (VFunc.ADD, lambda a, b: a + b), (VFunc.SUB, lambda a, b: a - b), (VFunc.MUL, lambda a, b: a * b),
    (VFunc.DIV, lambda a, b: a / b), (VFunc.MAX, ieee_max), (VFunc.MIN, ieee_min),
    (VFunc.LT, lambda a, b: (a < b).astype(np.float32)), (VFunc.EQ, lambda a, b: (a == b).astype(np.float32)),
])
def test_binary_ieee_functions_exact(func, ref):
    a = np.repeat(SPECIALS, SPECIALS.size).reshape(SPECIALS.size, SPECIALS.size)
    b = a.T.copy()
    with np.errstate(all="ignore"):
        want = canonical(ref(a, b))
    got = run_vop(func, a, b)
    assert np.array_equal(f32bits(got), f32bits(want))


@pytest.mark.parametrize("func, ref", [
    (VFunc.COPY, lambda a: a), (VFunc.NEG, lambda a: -a), (VFunc.ABS, np.abs), (VFunc.RECIP, lambda a: 1 / a),
    (VFunc.SQRT, np.sqrt), (VFunc.ROUND, np.rint), (VFunc.RELU, lambda a: ieee_max(a, np.zeros_like(a))),
])
def test_unary_ieee_functions_exact(func, ref):
    a = SPECIALS.reshape(2, -1)
    with np.errstate(all="ignore"):
        want = canonical(ref(a))
    got = run_vop(func, a)
    assert np.array_equal(f32bits(got), f32bits(want))


def test_immediate_fill_where():
    a = SPECIALS.reshape(3, -1)
    got = run_vop(VFunc.ADD, a, imm=0.25)
    with np.errstate(all="ignore"):
        assert np.array_equal(f32bits(got), f32bits(canonical(a + np.float32(0.25))))
    assert np.array_equal(run_vop(VFunc.FILL, a, imm=-2.0), np.full(a.shape, -2.0, np.float32))
    mask = np.array([[1, 0, 0, np.nan, -0.0, 2, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0]], np.float32).reshape(3, -1)
    want = np.where(mask != 0, a, np.float32(9.0))
    assert np.array_equal(f32bits(run_vop(VFunc.WHERE, a, mask, imm=9.0)), f32bits(canonical(want)))


@pytest.mark.parametrize("func", [VFunc.EXP, VFunc.SIN, VFunc.COS, VFunc.TANH, VFunc.ERF])
def test_transcendentals_are_the_vector_unit_definition(func):
    rng = np.random.default_rng(2)
    a = np.concatenate([SPECIALS, rng.uniform(-30, 30, 46)]).astype(np.float32).reshape(4, 16)
    f = {VFunc.EXP: vu.vexp, VFunc.SIN: vu.vsin, VFunc.COS: vu.vcos, VFunc.TANH: vu.vtanh, VFunc.ERF: vu.verf}[func]
    assert np.array_equal(f32bits(run_vop(func, a)), f32bits(canonical(f(a))))
    x = rng.uniform(-5, 5, (2, 32)).astype(np.float32)
    ref = {VFunc.EXP: np.exp, VFunc.SIN: np.sin, VFunc.COS: np.cos, VFunc.TANH: np.tanh,
           VFunc.ERF: np.frompyfunc(math.erf, 1, 1)}[func]
    want = ref(x.astype(np.float64)).astype(np.float64)
    np.testing.assert_allclose(run_vop(func, x), want, rtol=3e-7 if func is VFunc.EXP else 0, atol=0 if
                               func is VFunc.EXP else 4e-6)


def test_conversions_at_act_and_acc():
    x = np.array([[0.5, 1.5, 2.5, -0.5, -2.5, 127.4, 127.5, 200.0, -128.5, -129.0, -1e9, np.nan, np.inf, -np.inf,
                   -0.0, 3.49]], np.float32)
    got = run_vop(VFunc.COPY, x, dst_buf=Buf.ACT)
    assert got.ravel().tolist() == [0, 2, 2, 0, -2, 127, 127, 127, -128, -128, -128, 0, 127, -128, 0, 3]
    got = run_vop(VFunc.COPY, x, dst_buf=Buf.ACC)
    assert got.ravel().tolist() == [0, 2, 2, 0, -2, 127, 128, 200, -128, -129, -1_000_000_000, 0, 2**31 - 1,
                                    -2**31, 0, 3]
    ints = np.array([[16_777_217, 2**31 - 1, -2**31, -16_777_219, 7, 0]], np.int32)
    got = run_vop(VFunc.COPY, ints, src_buf=Buf.ACC)
    assert got.ravel().tolist() == [16_777_216.0, 2.0**31, -(2.0**31), -16_777_220.0, 7.0, 0.0]
    codes = np.array([[-128, -1, 0, 127]], np.int8)
    assert run_vop(VFunc.ADD, codes, imm=0.5, src_buf=Buf.ACT).ravel().tolist() == [-127.5, -0.5, 0.5, 127.5]


@pytest.mark.parametrize("lanes", [16, 4])
def test_reductions_and_mm_lane_tree_order(lanes):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((5, 37)) * 10.0 ** rng.integers(-3, 7, (5, 37))).astype(np.float32)
    got = run_vop(VFunc.RSUM, a, out_shape=(5, 1), lanes=lanes)
    assert np.array_equal(f32bits(got[:, 0]), f32bits(vu.lane_reduce(a, lanes, "sum")))
    assert not np.array_equal(got[:, 0], a.sum(axis=1, dtype=np.float32))     # the order shows in the bits
    a[1, 5] = np.nan
    got = run_vop(VFunc.RMAX, a, out_shape=(5, 1), lanes=lanes)
    assert np.isnan(got[1, 0]) and np.array_equal(np.delete(got[:, 0], 1), np.delete(a.max(axis=1), 1))
    b = (rng.standard_normal((6, 37)) * 0.1).astype(np.float32)
    got = run_vop(VFunc.MM, a, b, lanes=lanes)
    want = np.array([[vu.lane_reduce((a[i] * b[j])[None], lanes, "sum")[0] for j in range(6)] for i in range(5)])
    assert np.array_equal(f32bits(got), f32bits(canonical(want)))
    finite = [0, 2, 3, 4]
    np.testing.assert_allclose(got[finite], (a.astype(np.float64) @ b.T.astype(np.float64))[finite], rtol=1e-5,
                               atol=1e-6 * np.abs(a[finite]).max())


def test_empty_reductions_write_their_identity():
    sim = sim_for()
    sim.load_stream([vop(VFunc.RSUM, 2, 0, (Buf.VEC, 0, 1, 1), (Buf.VEC, 100, 4, 1)),
                     vop(VFunc.RMAX, 2, 0, (Buf.VEC, 2, 1, 1), (Buf.VEC, 100, 4, 1)),
                     vop(VFunc.MM, 1, 2, (Buf.VEC, 4, 2, 1), (Buf.VEC, 100, 4, 1), (Buf.VEC, 200, 4, 1)),
                     vop(VFunc.ADD, 3, 0, (Buf.VEC, 6, 1, 1), (Buf.VEC, 100, 4, 1), imm=1.0),   # nothing
                     Instr(Op.FINISH)])
    sim.typed[Buf.VEC][:8] = 7.0
    sim.run()
    assert sim.typed[Buf.VEC][:8].tolist() == [0.0, 0.0, -np.inf, -np.inf, 0.0, 0.0, 7.0, 7.0]


def test_req_through_the_vector_unit():
    acc = np.array([[1, -1, 3, -3, 255, 256, -257, -258, 10**6, -10**6, 2**31 - 1, -2**31]], np.int32)
    half = 1 << 30
    assert run_vop(VFunc.REQ, acc, imm=half, src_buf=Buf.ACC, dst_buf=Buf.ACT).ravel().tolist() == \
        [1, 0, 2, -1, 127, 127, -128, -128, 127, -128, 127, -128]
    got = run_vop(VFunc.REQ, acc, imm=half, depth=3, src_buf=Buf.ACC, dst_buf=Buf.VEC)
    assert got.ravel().tolist() == [0.0, 0.0, 0.0, 0.0, 16.0, 16.0, -16.0, -16.0, 127.0, -128.0, 127.0, -128.0]
    codes = np.array([[-128, -3, 3, 127]], np.int8)
    assert run_vop(VFunc.REQ, codes, imm=half, src_buf=Buf.ACT, dst_buf=Buf.ACT).ravel().tolist() == [-64, -1, 2, 64]


def test_strided_broadcast_and_in_place_views():
    """A row broadcast by stride 0, a column view, an in-place update: element (i, j) at addr + i*rs + j*cs."""
    sim = sim_for()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = np.array([10, 20, 30, 40], np.float32)
    sim.write(0, x)
    sim.write(0x100, g)
    instrs = [load(Buf.VEC, 0, 0, 3, 4), load(Buf.VEC, 100, 0x100, 1, 4, push_next=1),
              vop(VFunc.MUL, 3, 4, (Buf.VEC, 0, 4, 1), (Buf.VEC, 0, 4, 1), (Buf.VEC, 100, 0, 1), pop_prev=1),
              vop(VFunc.COPY, 4, 3, (Buf.VEC, 200, 3, 1), (Buf.VEC, 0, 1, 4)),         # a transpose
              vop(VFunc.ADD, 3, 1, (Buf.VEC, 300, 1, 0), (Buf.VEC, 3, 4, 0), imm=0.5, push_next=1),  # last column
              store(Buf.VEC, 0, 0x1000, 1, 12, pop_prev=1),
              store(Buf.VEC, 200, 0x2000, 1, 12), store(Buf.VEC, 300, 0x3000, 1, 3), Instr(Op.FINISH)]
    check_stream(instrs, EDGE)
    sim.load_stream(instrs)
    sim.run()
    y = x * g
    assert np.array_equal(sim.read(0x1000, 48).view(np.float32).reshape(3, 4), y)
    assert np.array_equal(sim.read(0x2000, 48).view(np.float32).reshape(4, 3), y.T)
    assert np.array_equal(sim.read(0x3000, 12).view(np.float32), y[:, 3] + 0.5)


def test_gather_and_negative_strides_in_transfers():
    sim = sim_for()
    data = np.arange(64, dtype=np.uint8)
    sim.write(0x100, data)
    instrs = [load(Buf.ACT, 0, 0x100 + 63, 4, 8, dram_rs=-8, dram_cs=-1, sram_rs=8, push_next=1),  # reversed
              Instr(Op.NOP, pop_prev=1, push_next=1),
              store(Buf.ACT, 0, 0x1000, 8, 4, dram_rs=1, dram_cs=8, sram_rs=4, pop_prev=1),   # scattered columns
              Instr(Op.FINISH)]
    check_stream(instrs, EDGE)
    sim.load_stream(instrs)
    sim.run()
    rev = data[::-1][:32].reshape(4, 8)
    assert np.array_equal(sim.typed[Buf.ACT][:32].view(np.uint8).reshape(4, 8), rev)
    out = sim.read(0x1000, 32).reshape(4, 8)           # element (r, c) of ACT[r*4 + c] at 0x1000 + r + 8c
    assert np.array_equal(out.T, rev.reshape(8, 4))


# -- malformed streams ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (load(Buf.ACT, 0, (16 * MIB) - 10, 1, 11), "dram reaches DRAM [16777206, 16777216], outside the 16777216 bytes"),
    (load(Buf.ACT, 0, 0, 2, 16, dram_rs=-32), "dram reaches DRAM [-32, 15]"),
    (load(Buf.VEC, (512 << 10) // 4 - 1, 0, 1, 2), "sram reaches VEC [131071, 131072], outside the 131072 words"),
    (load(Buf.ACT, 0, 0, 2, 16, sram_rs=8), "sram writes some ACT element twice"),
    (store(Buf.VEC, 0, 0, 2, 4, dram_rs=8), "dram writes some DRAM element twice"),
    (store(Buf.WGT, 0, 0, 1, 4), "WGT is read only by GEMM"),
    (Instr(Op.GEMM, acc_addr=16383, m=1, n=2, kw=1), "acc reaches ACC [16383, 16384]"),
    (Instr(Op.GEMM, act_addr=(128 << 10) - 64, m=1, n=1, kw=2), "act reaches ACT"),
    (Instr(Op.GEMM, wgt_addr=(512 << 10) // 208 * 208, m=1, n=2, kw=1), "wgt reaches WGT [524160, 524367]"),   # a block
    (Instr(Op.GEMM, wgt_addr=13, m=1, n=1, kw=1), "wgt_addr 13 is not a multiple of the 208-byte weight beat"),
    (Instr(Op.GEMM, m=2, n=4, kw=1, acc_rs=2), "acc writes some ACC element twice"),
    (vop(VFunc.ADD, 1, 4, row(Buf.VEC, 0), row(Buf.WGT, 0), row(Buf.VEC, 8)), "src1 is WGT"),
    (vop(VFunc.REQ, 1, 4, row(Buf.ACT, 0), row(Buf.VEC, 0), imm=5), "src1 must be ACC or ACT"),
    (vop(VFunc.REQ, 1, 4, row(Buf.ACT, 0), row(Buf.ACC, 0), imm=5, depth=32), "REQ shift (depth) is 32"),
    (vop(VFunc.ADD, 1, 4, row(Buf.VEC, 1), row(Buf.VEC, 0), row(Buf.VEC, 100)), "dst overlaps src1"),
    (vop(VFunc.RSUM, 2, 4, (Buf.VEC, 4, 4, 1), (Buf.VEC, 0, 4, 1)), "dst overlaps src1"),   # row 0 into row 1
    (vop(VFunc.MM, 1, 1, row(Buf.VEC, 0), row(Buf.VEC, 0), row(Buf.VEC, 64), depth=4), "dst overlaps src1"),
    (vop(VFunc.COPY, 2, 2, (Buf.VEC, 0, 0, 1), row(Buf.VEC, 64)), "dst writes some VEC element twice"),
    (vop(VFunc.NEG, 1, 4, (Buf.VEC, 0, 0, -1), row(Buf.VEC, 64)), "dst reaches VEC [-3, 0]"),
    (Instr(Op.LOAD, buf=Buf.ACT, rows=1, cols=1, pop_prev=1), "the load engine has no previous engine"),
    (Instr(Op.STORE, buf=Buf.ACT, rows=1, cols=1, push_next=1), "the store engine has no next engine"),
])
def test_malformed_instructions_refused_before_running(bad, message):
    sim = sim_for()
    sim.write(0, b"\x07")
    instrs = [load(Buf.ACT, 0, 0, 1, 1), bad, Instr(Op.FINISH)]
    with pytest.raises(StreamError) as e:
        sim.load_stream(instrs)
    assert "instruction 1 (" in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    assert sim.stats == {} and sim.typed[Buf.ACT][0] == 0     # nothing ran


def test_aliasing_allowed_element_for_element():
    sim = sim_for()
    ok = [vop(VFunc.ADD, 2, 4, (Buf.VEC, 0, 4, 1), (Buf.VEC, 0, 4, 1), (Buf.VEC, 0, 4, 1)),    # x = x + x
          vop(VFunc.RSUM, 2, 4, (Buf.VEC, 0, 4, 1), (Buf.VEC, 0, 4, 1)),                      # row sum into x[i, 0]
          vop(VFunc.ADD, 1, 4, (Buf.VEC, 3, 0, -1), (Buf.VEC, 0, 0, 1), (Buf.VEC, 0, 0, 1)),  # reversed: overlaps
          Instr(Op.FINISH)]
    with pytest.raises(StreamError, match="instruction 2 .*dst overlaps src1"):
        sim.load_stream(ok)
    sim.load_stream(ok[:2] + ok[3:])
    sim.typed[Buf.VEC][:8] = np.arange(8)
    sim.run()
    assert sim.typed[Buf.VEC][:8].tolist() == [12, 2, 4, 6, 44, 10, 12, 14]


def test_stream_without_finish_runs_and_finish_must_be_last():
    sim = sim_for()
    sim.load_stream([Instr(Op.NOP)])
    assert sim.run()["instructions"] == 1
    with pytest.raises(StreamError, match="instruction 0 .FINISH. is not the last"):
        sim.load_stream([Instr(Op.FINISH), Instr(Op.NOP)])
    with pytest.raises(StreamError, match="truncated"):
        sim.load_stream(encode_stream([Instr(Op.NOP)])[:-3])
    with pytest.raises(StreamError, match="not an Instr"):
        sim.load_stream(["NOP"])


# -- tokens: static checks, deadlocks, hazards ---------------------------------------------------------------

def test_check_stream_balance_and_structure():
    cfg = EDGE
    with pytest.raises(StreamError, match="does not end with FINISH"):
        check_stream([Instr(Op.NOP)], cfg)
    with pytest.raises(StreamError, match=r"instruction 0 \(FINISH\): FINISH before the end"):
        check_stream([Instr(Op.FINISH), Instr(Op.FINISH)], cfg)
    unbalanced = [load(Buf.ACT, 0, 0, 1, 1, push_next=1), load(Buf.ACT, 0, 0, 1, 1, push_next=1),
                  Instr(Op.NOP, pop_prev=1, pop_next=1), Instr(Op.FINISH)]
    with pytest.raises(StreamError, match=r"l2c: \+1 \(more pushes than pops\); s2c: -1 \(more pops than pushes\)"):
        check_stream(unbalanced, cfg)
    with pytest.raises(StreamError, match="instruction 0 .* the load engine has no previous engine"):
        check_stream([Instr(Op.LOAD, buf=Buf.ACT, push_prev=1), Instr(Op.FINISH)], cfg)
    # Balanced but circular: each engine first waits for the other.
    circular = [load(Buf.ACT, 0, 0, 1, 1, pop_next=1, push_next=1), Instr(Op.NOP, pop_prev=1, push_prev=1),
                Instr(Op.FINISH)]
    with pytest.raises(DeadlockError, match=r"load engine at instruction 0 \(LOAD .*\) waits for a token in c2l; "
                                            r"compute engine at instruction 1 \(NOP !pop_prev !push_prev\) waits for "
                                            r"a token in l2c"):
        check_stream(circular, cfg)


def test_missing_token_deadlocks_with_the_instruction_and_queue_named():
    instrs = [load(Buf.ACT, 0, 0, 1, 64),                            # forgot push_next
              Instr(Op.GEMM, m=1, n=1, kw=1, reset=1, pop_prev=1, push_next=1),
              store(Buf.ACC, 0, 0x100, 1, 1, pop_prev=1), Instr(Op.FINISH)]
    sim = sim_for()
    sim.load_stream(instrs)
    t = time.process_time()
    with pytest.raises(DeadlockError) as e:
        sim.run()
    assert time.process_time() - t < 1.0
    msg = str(e.value)
    assert "deadlock at cycle" in msg
    assert "compute engine at instruction 1 (GEMM" in msg and "waits for a token in l2c (pushed 0, popped 0)" in msg
    assert "store engine at instruction 2 (STORE" in msg and "waits for a token in c2s" in msg
    with pytest.raises(StreamError, match="l2c: -1"):
        check_stream(instrs, EDGE)


def test_full_queues_deadlock():
    """Balanced, but each engine pushes 6 tokens before popping any, with queues of 4: both wait for room."""
    cfg = config("edge", queue_depth=4)
    n = 6
    instrs = [Instr(Op.NOP, push_next=1) for _ in range(n)] + [Instr(Op.NOP, pop_next=1) for _ in range(n)]
    instrs += [store(Buf.VEC, 0, 0, 1, 1, push_prev=1) for _ in range(n)]
    instrs += [store(Buf.VEC, 0, 0, 1, 1, pop_prev=1) for _ in range(n)] + [Instr(Op.FINISH)]
    sim = sim_for(cfg)
    sim.load_stream(instrs)
    with pytest.raises(DeadlockError, match=r"compute engine at instruction 4 \(NOP !push_next\) waits for room in "
                                            r"c2s \(full: 4 tokens not popped\); store engine at instruction 16 .* "
                                            r"waits for room in s2c"):
        sim.run()
    with pytest.raises(DeadlockError, match="waits for room in c2s"):
        check_stream(instrs, cfg)
    ok = config("edge", queue_depth=8)
    check_stream(instrs, ok)
    sim = sim_for(ok)
    sim.load_stream(instrs)
    assert sim.run()["tokens_left"] == {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}


def test_race_without_a_token_is_a_hazard():
    rng = np.random.default_rng(4)
    W, wimg = gemv_weights(rng, 64, 16, EDGE)
    instrs = [load(Buf.ACT, 0, 0, 1, 64, push_next=1), load(Buf.WGT, 0, 0x1000, 1, wimg.size),  # weights: no token
              Instr(Op.GEMM, m=1, n=16, kw=1, reset=1, pop_prev=1), Instr(Op.FINISH)]
    sim = sim_for()
    sim.load_stream(instrs)
    with pytest.raises(HazardError, match=r"instruction 2 \(GEMM .*\) on the matrix unit reads WGT \[0, 207\] while "
                                          r"instruction 1 \(LOAD .*\) on the load engine writes \[0, 207\] until cycle"):
        sim.run()
    unchecked = Simulator(EDGE, dram_bytes=MIB, check_hazards=False)
    unchecked.load_stream(instrs)
    unchecked.run()


# -- the cycle model -----------------------------------------------------------------------------------------

def test_transfer_costs_latency_plus_the_slower_of_dram_and_chunks():
    """docs/ISA.md, "Transfer timing": a transfer's data phase is the slower of its DRAM requests (a 128-byte beat
    each on edge, at 76.8 bytes a cycle) and its chunks (a cycle each: a run cut at beats and at the buffer's bank
    window, 64 bytes for ACT's 64 byte banks and VEC's 16 word banks; WGT takes any chunk of a beat)."""
    cfg = EDGE                                        # 120 ns at 250 MHz = 30 cycles; 76.8 bytes per cycle
    lat, bpc = 30, 19.2e9 / 250e6
    start = fetch_start(lat)
    cases = [   # (transfer, DRAM requests, chunks)
        (load(Buf.ACT, 0, 0, 1, 4096), 32, 64),                           # one run: ACT's banks take 64 a cycle
        (load(Buf.WGT, 0, 0, 1, 4096), 32, 32 + wgt_division_cycles(cfg)),  # a beat a cycle, one row division
        (load(Buf.ACT, 0, 0, 4, 100), 4, 2 + 3 + 2 + 3),                  # rows back to back: beats shared
        (load(Buf.ACT, 0, 0, 4, 100, dram_rs=128), 4, 2 + 3 + 2 + 3),     # a beat per row
        (load(Buf.ACT, 0, 0, 1, 10, dram_cs=8), 1, 10),                   # a gather in one beat: a chunk per element
        (load(Buf.VEC, 0, 0, 3, 5, dram_rs=20, dram_cs=4), 1, 3),         # 60 fp32 bytes back to back
    ]
    data = []
    for ins, requests, chunks in cases:
        cost = transfer_cost(cfg, Buf(ins.buf), dram_addr=ins.dram_addr, rows=ins.rows, cols=ins.cols,
                             dram_rs=ins.dram_rs, dram_cs=ins.dram_cs, sram_addr=ins.sram_addr, sram_rs=ins.sram_rs)
        assert (cost.requests, cost.chunks + cost.divisions) == (requests, chunks), ins
        data.append(max(math.ceil(requests * 128 / bpc), chunks))
        sim = sim_for(cfg)
        sim.load_stream([ins, Instr(Op.FINISH)])
        stats = sim.run()
        assert stats["cycles"] == start + lat + data[-1], ins
        assert stats["engines"]["load"]["busy"] == lat + data[-1]
        assert stats["seconds"] == stats["cycles"] / 250e6
    assert data[:2] == [64, 54]                  # ACT is bound by its banks, WGT by the DRAM
    # Back to back on one engine, one transfer in flight at a time: the costs add up.
    sim = sim_for(config("edge", dram_outstanding=1))
    sim.load_stream([ins for ins, _, _ in cases] + [Instr(Op.FINISH)])
    assert sim.run()["cycles"] == start + sum(lat + d for d in data)
    # As many in flight as there are transfers: each one's latency runs while the data of those before it moves,
    # so only the first latency shows.
    sim = sim_for(config("edge", dram_outstanding=len(cases)))
    sim.load_stream([ins for ins, _, _ in cases] + [Instr(Op.FINISH)])
    assert sim.run()["cycles"] == start + lat + sum(data)


def test_loads_and_stores_share_the_dram_channel():
    big = 76_800                                      # 1000 cycles of DRAM data, 1200 chunks of 64 bytes
    sim = sim_for()
    sim.load_stream([load(Buf.ACT, 0, 0, 100, big // 100), store(Buf.VEC, 0, 0x100000, 100, big // 400),
                     Instr(Op.FINISH)])
    stats = sim.run()
    # Both start once the stream is fetched; the store's data phase waits for the load's to end. Each moves a
    # 64-byte chunk a cycle (ACT's and VEC's bank windows on edge), slower than the DRAM's 76.8 bytes.
    start = fetch_start(30)
    assert stats["cycles"] == start + 30 + 1200 + 1200
    assert stats["engines"]["store"]["busy"] == 30 + 2400 and stats["engines"]["store"]["stall"] == 0   # held
    assert stats["dram_read_bytes"] == big and stats["dram_write_bytes"] == big


def test_matrix_unit_runs_beside_the_vector_unit():
    """ISA.md, "The matrix unit beside the compute engine": a VOP marked overlap runs while a GEMM multiplies, any
    other waits for it; back-to-back GEMMs pay one pipeline fill; an overlapping VOP that touches the GEMM's memory
    is a hazard."""
    gemm = Instr(Op.GEMM, acc_addr=0, m=1, n=64, kw=16, acc_rs=64, reset=1)      # 4 x 16 beats + a fill of 8
    add = dict(func=VFunc.ADD, rows=1, cols=1000, dst=(Buf.VEC, 0, 0, 1), src1=(Buf.VEC, 2000, 0, 1), imm=1.0)

    def cycles(*instrs):
        sim = sim_for()
        sim.load_stream([*instrs, Instr(Op.FINISH)])
        return sim.run()

    def add_vop(**flags):
        a = dict(add)
        return vop(a.pop("func"), a.pop("rows"), a.pop("cols"), a.pop("dst"), a.pop("src1"), imm=a.pop("imm"), **flags)

    start = fetch_start(30)                    # the stream's first words fetched: every run starts there
    g = 64 + 8 + GEMM_COMMIT                   # the GEMM: its beats, its fill, its commit to ACC
    v = vop_cycles(VFunc.ADD, 1, 1000, 0, 16)  # the VOP: 63 chunks and its start
    assert v == 63 + 4
    assert cycles(gemm)["cycles"] == start + g and cycles(add_vop())["cycles"] == start + v
    assert cycles(gemm, add_vop())["cycles"] == start + g + v                     # waits for the matrix unit
    st = cycles(gemm, add_vop(overlap=1))
    assert st["cycles"] == start + max(g, 1 + v)            # handed over in a cycle, the VOP beside the GEMM
    assert st["engines"]["matrix"]["busy"] == g and st["engines"]["compute"]["busy"] == 1 + v
    assert cycles(gemm, gemm.replace(acc_addr=64))["cycles"] == start + 2 * g - (8 + GEMM_COMMIT)   # fill paid once
    assert cycles(gemm, gemm.replace(reset=0))["cycles"] == start + 2 * g          # accumulating: after the drain
    reads_acc = vop(VFunc.MUL, 1, 64, (Buf.VEC, 0, 0, 1), (Buf.ACC, 0, 0, 1), imm=2.0, overlap=1)
    with pytest.raises(HazardError, match=r"on the compute engine reads ACC \[0, 63\] while instruction 0 \(GEMM"):
        cycles(gemm, reads_acc)
    with pytest.raises(StreamError, match=r"overlap is set, but its src1 touches ACC \[0, 63\] that instruction 0"):
        check_stream([gemm, reads_acc, Instr(Op.FINISH)], EDGE)         # and the static check says so first
    check_stream([gemm, add_vop(overlap=1), Instr(Op.FINISH)], EDGE)
    # Tokens leave the compute engine in program order: the VOP's push waits for the GEMM's (posted: the engine
    # goes on), so the store it releases starts when the GEMM has finished.
    st = cycles(gemm.replace(push_next=1), add_vop(overlap=1, push_next=1), store(Buf.VEC, 0, 0, 1, 16, pop_prev=1),
                store(Buf.VEC, 0, 64, 1, 16, pop_prev=1))
    assert st["engines"]["store"]["stall"] == g + TOKEN_CYCLES


def test_amax_is_the_absmax_floored_by_the_immediate():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 300)).astype(np.float32)
    a[1] = 0.0
    sim = sim_for()
    sim.write(0, a)
    sim.load_stream([load(Buf.VEC, 0, 0, 3, 300, push_next=1),
                     vop(VFunc.AMAX, 3, 300, (Buf.VEC, 1000, 1, 1), (Buf.VEC, 0, 300, 1), pop_prev=1),
                     vop(VFunc.AMAX, 3, 300, (Buf.VEC, 1003, 1, 1), (Buf.VEC, 0, 300, 1), imm=1e-5, push_next=1),
                     store(Buf.VEC, 1000, 0x10000, 1, 6, pop_prev=1), Instr(Op.FINISH)])
    st = sim.run()
    out = sim.read(0x10000, 24).view(np.float32)
    ref = np.abs(a).max(axis=1)
    assert np.array_equal(out[:3], ref) and np.array_equal(out[3:], np.maximum(ref, np.float32(1e-5)))
    assert st["cycles"] > 0


def test_compute_costs():
    """docs/HW.md, "Calibration": what each compute instruction costs, as the RTL's engines take it."""
    cfg = EDGE
    cases = [
        (Instr(Op.GEMM, m=2, n=40, kw=5, acc_rs=40, reset=1), 2 * 3 * 5 + 6 + 2 + GEMM_COMMIT),     # 16 x 64 lanes
        (vop(VFunc.ADD, 3, 40, (Buf.VEC, 0, 40, 1), (Buf.VEC, 200, 40, 1), imm=1.0), 3 * 3 + 4),   # a chunk a cycle
        # EXP: one sequencer per lane, an element at a time through its microprogram (14 cycles)
        (vop(VFunc.EXP, 3, 40, (Buf.VEC, 0, 40, 1), (Buf.VEC, 200, 40, 1)), 6 + 3 * 3 * 14),
        # DIV: four groups of 28-cycle dividers; one chunk waits for one division
        (vop(VFunc.DIV, 1, 16, row(Buf.VEC, 0), row(Buf.VEC, 200), row(Buf.VEC, 300)), 6 + 28),
        (vop(VFunc.DIV, 1, 160, row(Buf.VEC, 0), row(Buf.VEC, 200), row(Buf.VEC, 400)), 6 + 28 * 3 + 3),
        # Reductions: the 4-level lane tree is pipelined, its depth paid once per instruction, not per output.
        (vop(VFunc.RSUM, 3, 40, (Buf.VEC, 0, 40, 1), (Buf.VEC, 200, 40, 1)), 3 * 3 + 4 + 5),
        (vop(VFunc.RMAX, 1, 16, (Buf.VEC, 0, 1, 1), (Buf.VEC, 200, 16, 1)), 1 + 4 + 5),
        (vop(VFunc.MM, 2, 5, (Buf.VEC, 0, 5, 1), (Buf.VEC, 200, 40, 1), (Buf.KV, 0, 40, 1), depth=40),
         2 * 5 * 3 + 4 + 5),
        (vop(VFunc.MM, 4, 64, (Buf.VEC, 0, 64, 1), (Buf.VEC, 400, 128, 1), (Buf.KV, 0, 128, 1), depth=128),
         4 * 64 * 8 + 4 + 5),
        # Bank conflicts: VEC and KV are 16 word banks; lanes 2 apart fall in 8 of them (2 cycles a chunk), lanes 64
        # apart (attention's weighted sum of V along the cache) in one (16); a broadcast (stride 0) in one, read once.
        (vop(VFunc.ADD, 1, 32, (Buf.VEC, 0, 0, 2), (Buf.VEC, 200, 0, 2), imm=1.0), 2 * 2 + 4),
        (vop(VFunc.MM, 1, 4, (Buf.VEC, 0, 4, 1), (Buf.VEC, 200, 0, 1), (Buf.KV, 0, 1, 64), depth=16),
         4 * 1 * 16 + 4 + 5),
        (vop(VFunc.ADD, 1, 32, (Buf.VEC, 0, 0, 1), (Buf.VEC, 200, 0, 0), imm=1.0), 2 + 4),
        (Instr(Op.NOP), 1),
    ]
    start = fetch_start(30)              # every run begins once the stream's first words are fetched
    for ins, cycles in cases:
        sim = sim_for(cfg)
        sim.load_stream([ins, Instr(Op.FINISH)])
        stats = sim.run()
        assert stats["cycles"] == start + cycles, ins
        if ins.op is Op.GEMM:     # the compute engine hands it to the matrix unit in a cycle
            assert stats["engines"]["matrix"]["busy"] == cycles and stats["engines"]["compute"]["busy"] == 1
        else:
            assert stats["engines"]["compute"]["busy"] == cycles
    wide = config("datacenter")                        # 128 lanes: a 7-level tree; 150 ns: 38 cycles of latency
    for ins, cycles in [(vop(VFunc.RSUM, 6, 300, (Buf.VEC, 0, 1, 1), (Buf.VEC, 200, 300, 1)), 6 * 3 + 7 + 5),
                        (vop(VFunc.MM, 1, 128, (Buf.VEC, 0, 128, 1), row(Buf.VEC, 200), (Buf.KV, 0, 128, 1),
                             depth=128), 128 + 7 + 5)]:
        sim = sim_for(wide)
        sim.load_stream([ins, Instr(Op.FINISH)])
        assert sim.run()["cycles"] == fetch_start(38) + cycles, ins


def gemv_stream(cfg, K, N, tile, double_buffer):
    b = StreamBuilder(cfg)
    b.emit(load(Buf.ACT, 0, 0, 1, K))
    if double_buffer:
        b.gemv(0, 0x10000, K, N, 0, tile)
    else:
        # One weight buffer: every load waits until the GEMM of the previous tile has released it.
        kw = -(-K // 64)
        for t, j0 in enumerate(range(0, N, tile)):
            b.emit(tile_load(cfg, 0, 0x10000, K, N, j0, tile, pop_next=int(t > 0), push_next=1))
            last = j0 + tile >= N
            b.emit(Instr(Op.GEMM, acc_addr=j0, act_addr=0, wgt_addr=0, m=1, kw=kw, n=tile, reset=1, pop_prev=1,
                         push_prev=int(not last)))
    b.result(Instr(Op.NOP), store(Buf.ACC, 0, 0x800000, 1, N))
    return b.finish()


def test_double_buffering_overlaps_load_and_compute():
    cfg = config("edge", matrix_rows=4, dram_outstanding=1)   # a slower matrix unit: compute close to the load time
    K, N, tile = 1024, 256, 16
    kw = K // 64
    rng = np.random.default_rng(5)
    W, wimg = gemv_weights(rng, K, N, cfg)
    x = rng.integers(-128, 128, K).astype(np.int8)
    tile_load = 30 + math.ceil(math.ceil(tile * kw * 13 / 64) * 64 / 76.8)
    tile_gemm = math.ceil(tile / 4) * kw + 6 + 2
    tiles = N // tile
    results = {}
    for db in (True, False):
        instrs = gemv_stream(cfg, K, N, tile, db)
        check_stream(instrs, cfg)
        sim = sim_for(cfg)
        sim.write(0, x)
        sim.write(0x10000, wimg)
        sim.load_stream(instrs)
        results[db] = sim.run()
        assert np.array_equal(sim.read(0x800000, 4 * N).view(np.int32), x.astype(np.int64) @ W)
    load_total, gemm_total = tiles * tile_load, tiles * tile_gemm
    assert 0.6 < gemm_total / load_total < 1.0
    db, single = results[True]["cycles"], results[False]["cycles"]
    assert db <= max(load_total, gemm_total) + tile_gemm + 200          # + the first act load and the store
    assert single >= load_total + gemm_total
    assert results[True]["engines"]["load"]["busy"] >= load_total
    assert results[True]["engines"]["compute"]["stall"] < results[False]["engines"]["compute"]["stall"]


def test_stats_keys_and_energy():
    cfg = EDGE
    instrs = gemv_stream(cfg, 256, 64, 16, True)
    sim = sim_for(cfg)
    sim.load_stream(instrs)
    stats = sim.run()
    assert set(stats) >= {"cycles", "seconds", "dram_read_bytes", "dram_write_bytes", "ternary_ops",
                          "matrix_utilisation", "engines", "instructions", "host_seconds", "host_device_bytes",
                          "energy_joules", "energy"}
    assert set(stats["engines"]) == {"load", "compute", "store", "matrix"}
    assert all(set(v) == {"busy", "stall"} for v in stats["engines"].values())
    assert stats["instructions"] == len(instrs) and stats["host_seconds"] == 0.0 and stats["host_device_bytes"] == 0
    assert stats["ternary_ops"] == 64 * 256
    assert stats["matrix_utilisation"] == pytest.approx(64 * 256 / (stats["cycles"] * 16 * 64))
    assert all(e["busy"] + e["stall"] <= stats["cycles"] for e in stats["engines"].values())
    assert stats["energy_joules"] == pytest.approx(sum(stats["energy"].values()))
    assert set(stats["energy"]) == {"matrix", "vector", "sram", "dram"}
    # DRAM energy: every beat the port moves (128 bytes on edge) at the DDR4 figure; HBM2 is cheaper per bit. The
    # activations and the results are two beats each; each 832-byte weight tile, every other one starting half-way
    # into a beat, touches seven.
    beats = 256 // 128 + 4 * 7 + 64 * 4 // 128
    assert stats["energy"]["dram"] == pytest.approx(beats * 128 * 8 * ENERGY_PJ["ddr4_bit"] * 1e-12)
    assert stats["energy"]["matrix"] == pytest.approx(
        (64 * 256 * ENERGY_PJ["int8_add"] + 64 * 4 * ENERGY_PJ["int32_add"]) * ENERGY_PJ["fpga_logic_factor"] * 1e-12)
    hbm = sim_for(config("edge", dram_kind="hbm2"))
    hbm.load_stream(instrs)
    assert hbm.run()["energy"]["dram"] == pytest.approx(stats["energy"]["dram"] * 3.9 / ENERGY_PJ["ddr4_bit"])
    assert sim.run()["cycles"] == stats["cycles"]                     # runs repeat


# -- speed: a decode step of a 2-layer, hidden-512 decoder -----------------------------------------------------

@pytest.mark.parametrize("preset", ["edge", "datacenter"])
def test_decode_step_stream_runs_fast_and_right(preset):
    cfg = config(preset)
    instrs, image, probe = decoder_step(cfg, np.random.default_rng(6))
    assert len(instrs) > 1500
    check_stream(instrs, cfg)                           # balanced, no deadlock, every view in bounds
    sim = Simulator(cfg)                                # the preset's whole DRAM
    for addr, arr in image.items():
        sim.write(addr, arr)
    t = time.process_time()
    sim.load_stream(encode_stream(instrs))
    stats = sim.run()
    elapsed = time.process_time() - t
    assert elapsed < 10.0 and len(instrs) / elapsed > 2000        # measured: ~14,000 instructions/s
    assert stats["instructions"] == len(instrs)
    act = sim.read(probe["act"], 512).view(np.int8)
    acc = sim.read(probe["acc"], 2048).view(np.int32)
    assert np.array_equal(acc, act.astype(np.int64) @ probe["wq"])   # the q projection, bit exact
    assert np.isfinite(sim.read(probe["out"], 2048).view(np.float32)).all()
    assert stats["dram_read_bytes"] > 2_000_000 and 0 < stats["matrix_utilisation"] < 1
    busy = stats["engines"]
    assert busy["load"]["busy"] + busy["compute"]["busy"] + busy["matrix"]["busy"] > stats["cycles"]  # overlap


# -- timing only: the same stats without the data ----------------------------------------------------------------

def every_function_stream(cfg, rng):
    """Every vector function once over 4 x 40 rows (conversions to ACT and ACC, REQ, MM, reductions), results
    stored."""
    a = rng.standard_normal((4, 40)).astype(np.float32)
    acc = rng.integers(-10**6, 10**6, (4, 40)).astype(np.int32)
    image = {0: a, 0x1000: acc}
    instrs = [load(Buf.VEC, 0, 0, 4, 40), load(Buf.VEC, 160, 0, 4, 40), load(Buf.ACC, 0, 0x1000, 4, 40, push_next=1),
              Instr(Op.NOP, pop_prev=1)]
    out = 1000
    for func in VFunc:
        dst_buf = {VFunc.REQ: Buf.ACT, VFunc.ROUND: Buf.ACC}.get(func, Buf.VEC)
        src = (Buf.ACC, 0, 40, 1) if func is VFunc.REQ else (Buf.VEC, 0, 40, 1)
        if func is VFunc.MM:
            instrs.append(vop(func, 4, 4, (Buf.VEC, out, 4, 1), src, (Buf.VEC, 160, 40, 1), depth=40))
        elif func in (VFunc.RSUM, VFunc.RMAX, VFunc.AMAX):
            instrs.append(vop(func, 4, 40, (Buf.VEC, out, 1, 1), src))
        else:
            instrs.append(vop(func, 4, 40, (dst_buf, out, 40, 1), src, (Buf.VEC, 160, 40, 1), imm=1 << 29 if func is
                              VFunc.REQ else 0.5, depth=3 if func is VFunc.REQ else 0))
        out += 200
    instrs[-1] = instrs[-1].replace(push_next=1)
    instrs += [store(Buf.VEC, 1000, 0x10000, 1, out - 1000, pop_prev=1), store(Buf.ACT, 0, 0x20000, 1, 8192),
               Instr(Op.FINISH)]
    return instrs, image


GQA_HEAD = DecoderShape(hidden=256, heads=4, kv_heads=2, head_dim=64, ffn=768, layers=1, ctx=48, vocab=5000)


def timing_case(name):
    """(config, stream, DRAM image) of the streams that timing-only runs are checked on."""
    rng = np.random.default_rng(9)
    if name == "every-function":
        return (EDGE, *every_function_stream(EDGE, rng))
    if name.startswith("gemv"):
        W, wimg = gemv_weights(rng, 1024, 256, EDGE)
        x = rng.integers(-128, 128, 1024).astype(np.int8)
        return EDGE, gemv_stream(EDGE, 1024, 256, 16, name == "gemv-double"), {0: x, 0x10000: wimg}
    cfg = config(name.split("-")[-1])
    instrs, image, _ = decoder_step(cfg, rng, GQA_HEAD if name.startswith("gqa") else SMALL)
    return cfg, instrs, image


@pytest.mark.parametrize("name", ["every-function", "gemv-double", "gemv-single", "decode-edge", "decode-datacenter",
                                  "gqa-head-edge"])
def test_timing_only_reports_the_same_stats(name):
    cfg, instrs, image = timing_case(name)
    check_stream(instrs, cfg)
    stats, sims = {}, {}
    for functional in (True, False):
        sim = Simulator(cfg, dram_bytes=16 * MIB, functional=functional)
        for addr, arr in image.items():
            sim.write(addr, arr)
        sim.load_stream(instrs)
        stats[functional] = {k: v for k, v in sim.run().items() if k != "simulator_seconds"}
        sims[functional] = sim
    assert stats[False] == stats[True]
    assert stats[True]["instructions"] == len(instrs) and stats[True]["cycles"] > 0
    # Timing only moved nothing: DRAM holds the image alone and every buffer is still zero.
    fresh = Simulator(cfg, dram_bytes=16 * MIB)
    for addr, arr in image.items():
        fresh.write(addr, arr)
    assert np.array_equal(sims[False].dram, fresh.dram) and not np.array_equal(sims[True].dram, fresh.dram)
    assert not any(raw.any() for raw in sims[False].raw.values())
    assert sims[True].functional and not sims[False].functional


def test_timing_only_still_checks_races_deadlocks_and_malformed_streams():
    race = [load(Buf.ACT, 0, 0, 1, 64, push_next=1), load(Buf.WGT, 0, 0x1000, 1, 208),
            Instr(Op.GEMM, m=1, n=16, kw=1, reset=1, pop_prev=1), Instr(Op.FINISH)]
    missing = [load(Buf.ACT, 0, 0, 1, 64), Instr(Op.GEMM, m=1, n=1, kw=1, reset=1, pop_prev=1), Instr(Op.FINISH)]
    sim = Simulator(EDGE, dram_bytes=MIB, functional=False)
    sim.load_stream(race)
    with pytest.raises(HazardError, match=r"instruction 2 \(GEMM .*\) on the matrix unit reads WGT"):
        sim.run()
    sim.load_stream(missing)
    with pytest.raises(DeadlockError, match=r"compute engine at instruction 1 \(GEMM .* waits for a token in l2c"):
        sim.run()
    with pytest.raises(StreamError, match=r"instruction 0 .*dram reaches DRAM"):
        sim.load_stream([load(Buf.ACT, 0, MIB - 10, 1, 11), Instr(Op.FINISH)])


def best_time(fn, repeats=3) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def test_timing_only_is_much_faster_on_a_large_gemv():
    """A 4096 x 4096 GEMV (256 double-buffered weight tiles): the functional run decodes 16.8M trits; timing only
    runs the event loop alone. Both on zero DRAM: the work does not depend on the data."""
    instrs = gemv_stream(EDGE, 4096, 4096, 16, True)
    sims = {f: Simulator(EDGE, dram_bytes=64 * MIB, functional=f) for f in (True, False)}

    def run(functional):
        sims[functional].load_stream(instrs)
        return sims[functional].run()
    seconds = {f: best_time(lambda f=f: run(f)) for f in (True, False)}
    timing, functional = sims[False].stats, sims[True].stats
    assert {k: v for k, v in timing.items() if k != "simulator_seconds"} == \
        {k: v for k, v in functional.items() if k != "simulator_seconds"}
    assert timing["ternary_ops"] == 4096 * 4096
    assert seconds[True] / seconds[False] > 3          # measured: ~5x (0.06 s against 0.011 s)


def linear_ops(sh: DecoderShape) -> int:
    """Trit-activation products of a decode step of `sh`: every linear layer's K padded to words of 64."""
    def k(n):
        return 64 * -(-n // 64)
    layer = k(sh.hidden) * (sh.q_dim + 2 * sh.kv_dim + 2 * sh.ffn) + k(sh.q_dim) * sh.hidden + k(sh.ffn) * sh.hidden
    return sh.layers * layer + k(sh.hidden) * sh.vocab


def weight_bytes(sh: DecoderShape, cfg) -> int:
    def w(k, n):
        return weight_image_bytes(cfg, k, n)
    h, f = sh.hidden, sh.ffn
    layer = w(h, sh.q_dim) + 2 * w(h, sh.kv_dim) + w(sh.q_dim, h) + 2 * w(h, f) + w(f, h)
    return sh.layers * layer + w(h, sh.vocab)


def timing_only_decode_step(sh: DecoderShape, preset: str, min_rate: float):
    cfg = config(preset)
    instrs, image, _ = decoder_step(cfg, None, sh)      # no data: the stream alone
    assert image == {}
    sim = Simulator(cfg, functional=False)
    t = time.process_time()
    sim.load_stream(instrs)
    stats = sim.run()
    elapsed = time.process_time() - t
    assert stats["instructions"] == len(instrs) and stats["ternary_ops"] == linear_ops(sh)
    wbytes = weight_bytes(sh, cfg)
    assert wbytes < stats["dram_read_bytes"] < 1.1 * wbytes        # every weight read once, and little else
    assert len(instrs) / elapsed > min_rate
    return stats, len(instrs), elapsed


def test_bitnet_2b_shaped_layers_timing_only_fast():
    """Two BitNet-2B-shaped layers (hidden 2560, FFN 6912, 20 / 5 heads) and a 16384-column head, timing only."""
    sh = replace(BITNET_2B, layers=2, vocab=16384)
    stats, n, elapsed = timing_only_decode_step(sh, "edge", 10_000)     # measured: ~40,000 instructions/s
    assert n > 6000 and stats["matrix_utilisation"] > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["edge", "datacenter"])
def test_bitnet_2b_decode_step_timing_only(preset):
    """A whole BitNet-2B-shaped decode step (30 layers, vocabulary 128256: ~2.4e9 trit-activation products,
    ~105,000 instructions on tiles of 16 columns) modelled in seconds."""
    stats, n, elapsed = timing_only_decode_step(BITNET_2B, preset, 10_000)
    assert n > 100_000 and elapsed < 30
    assert stats["ternary_ops"] > 2.4e9


# -- properties: strided views against a per-element reference -------------------------------------------------

@st.composite
def transfers(draw):
    buf = draw(st.sampled_from([Buf.ACT, Buf.VEC, Buf.ACC]))
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    item = 1 if buf is Buf.ACT else 4
    return dict(buf=buf, rows=rows, cols=cols, item=item,
                src_rs=draw(st.integers(-40, 40)), src_cs=draw(st.integers(-8, 8)),
                sram_rs=draw(st.integers(cols, cols + 5)), sram_addr=draw(st.integers(0, 50)),
                dst_rs=draw(st.integers(-60, 60)), dst_cs=draw(st.sampled_from([item, -item, 2 * item, -3 * item])))


@settings(max_examples=budget(60))
@given(transfers())
def test_strided_transfers_match_elementwise_reference(t):
    sim = sim_for(dram=1 << 16)
    image = np.random.default_rng(7).integers(0, 256, 1 << 16).astype(np.uint8)
    sim.write(0, image)
    src, dst = 0x4000, 0xA000
    buf, rows, cols, item = t["buf"], t["rows"], t["cols"], t["item"]
    instrs = [Instr(Op.LOAD, buf=buf, sram_addr=t["sram_addr"], dram_addr=src, rows=rows, cols=cols,
                    dram_rs=t["src_rs"], dram_cs=t["src_cs"], sram_rs=t["sram_rs"], push_next=1),
              Instr(Op.NOP, pop_prev=1, push_next=1),
              Instr(Op.STORE, buf=buf, sram_addr=t["sram_addr"], dram_addr=dst, rows=rows, cols=cols,
                    dram_rs=t["dst_rs"], dram_cs=t["dst_cs"], sram_rs=t["sram_rs"], pop_prev=1),
              Instr(Op.FINISH)]
    try:
        sim.load_stream(instrs)
    except StreamError as e:
        assert "DRAM element twice" in str(e)       # only an overlapping scatter is refused here
        assume(False)
    sim.run()
    want = image.copy()
    for r in range(rows):
        for c in range(cols):
            a = src + r * t["src_rs"] + c * t["src_cs"]
            b = dst + r * t["dst_rs"] + c * t["dst_cs"]
            want[b:b + item] = image[a:a + item]
    assert np.array_equal(sim.read(0, 1 << 16), want)


@settings(max_examples=budget(60))
@given(st.integers(1, 4), st.integers(1, 5), st.lists(st.integers(-6, 6), min_size=6, max_size=6),
       st.sampled_from([VFunc.ADD, VFunc.MUL, VFunc.MAX, VFunc.SUB]))
def test_vop_views_match_elementwise_reference(rows, cols, strides, func):
    sim = sim_for(dram=1 << 12)
    vec = np.random.default_rng(8).standard_normal(4096).astype(np.float32)
    sim.typed[Buf.VEC][:4096] = vec
    d_rs, d_cs, a_rs, a_cs, b_rs, b_cs = strides
    dst, a, b = (Buf.VEC, 2000, d_rs, d_cs), (Buf.VEC, 500, a_rs, a_cs), (Buf.VEC, 800, b_rs, b_cs)
    try:
        sim.load_stream([vop(func, rows, cols, dst, a, b), Instr(Op.FINISH)])
    except StreamError as e:
        assert "VEC element twice" in str(e)        # a destination stride that repeats an element
        assume(False)
    sim.run()
    want = vec.copy()
    op = {VFunc.ADD: np.add, VFunc.MUL: np.multiply, VFunc.MAX: np.maximum, VFunc.SUB: np.subtract}[func]
    for i in range(rows):
        for j in range(cols):
            want[2000 + i * d_rs + j * d_cs] = op(vec[500 + i * a_rs + j * a_cs], vec[800 + i * b_rs + j * b_cs])
    assert np.array_equal(sim.typed[Buf.VEC][:4096], want)

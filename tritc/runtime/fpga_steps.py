"""How the Simulator executes one instruction (docs/ISA.md): its effect on numpy views of the device's memories,
its cost in the cycle model and its energy. runtime/fpga.py builds a Step per instruction when a stream is loaded
(`StepMaker.step`) and runs them in the order its event loop decides. Costs, counters and accesses depend only on
the instruction's fields, never on data: a timing-only StepMaker (`functional=False`) builds the same Steps
without their effects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..codegen.fpga import vector_unit as vu
from ..codegen.fpga.config import FpgaConfig
from ..codegen.fpga.isa import (
    BINARY,
    ELEM_BYTES,
    REDUCTIONS,
    Buf,
    Instr,
    Op,
    VFunc,
    bits_f32,
    decode_words,
    deinterleave_words,
    wgt_span_words,
)
from ..codegen.fpga.ports import beat_bytes, transfer_cost
from ..codegen.fpga.timing import GEMM_COMMIT, vop_cycles
from ..codegen.fpga.verify import QUEUES, View, pops, pushes

# fp32 additions and multiplications per element of each vector function (its algorithm in ISA.md; the shared
# divider / square root counted as 4 + 4 steps). Comparisons and selections count as additions.
_DIV = (4, 4)
_EXP = (9, 9)
VOP_FLOPS: dict[VFunc, tuple[int, int]] = {
    VFunc.COPY: (0, 0), VFunc.FILL: (0, 0), VFunc.ADD: (1, 0), VFunc.SUB: (1, 0), VFunc.MUL: (0, 1),
    VFunc.DIV: _DIV, VFunc.MAX: (1, 0), VFunc.MIN: (1, 0), VFunc.NEG: (0, 0), VFunc.ABS: (0, 0), VFunc.RECIP: _DIV,
    VFunc.SQRT: _DIV, VFunc.EXP: _EXP, VFunc.SIN: (9, 10), VFunc.COS: (9, 10),
    VFunc.TANH: (_EXP[0] + 2 + _DIV[0], _EXP[1] + _DIV[1]), VFunc.ERF: (_EXP[0] + 7 + _DIV[0], _EXP[1] + 8 + _DIV[1]),
    VFunc.WHERE: (1, 0), VFunc.RSUM: (1, 0), VFunc.RMAX: (1, 0), VFunc.AMAX: (1, 0), VFunc.MM: (1, 1), VFunc.REQ: (0, 0),
    VFunc.ROUND: (1, 0), VFunc.RELU: (1, 0), VFunc.LT: (1, 0), VFunc.EQ: (1, 0),
}
MEMORIES = (None, Buf.WGT, Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV)   # None: DRAM
_MEMORY_INDEX = {m: k for k, m in enumerate(MEMORIES)}
_QUEUE_INDEX = {name: k for k, name in enumerate(QUEUES)}


@dataclass(slots=True)
class Step:
    """One loaded instruction, ready to run: its effect, its tokens, its cost and its counters."""
    index: int
    engine: int
    pops: tuple[int, ...]
    pushes: tuple[int, ...]
    cycles: int             # compute: the whole cost; transfers: the data phase
    latency: int            # transfers: the DRAM latency before the data phase
    transfer: bool
    finish: bool
    effect: Callable[[], None] | None
    read_bytes: int = 0
    write_bytes: int = 0
    ternary_ops: int = 0
    energy: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    accesses: tuple[tuple[int, int, int, bool], ...] = ()   # (memory, first unit, last unit, writes)
    matrix: bool = False    # a GEMM: runs on the matrix unit while the compute engine goes on
    overlap: bool = False   # a VOP that may run while the matrix unit works (every other compute instruction waits)
    fill: int = 0           # a GEMM: its pipeline fill, during which the next GEMM may already enter
    accumulates: bool = False   # a GEMM without reset: it adds to accumulators, so it enters after the last drained


class StepMaker:
    """Builds the Step of each instruction over one device's memories: `dram` (uint8), `raw` (each buffer's bytes)
    and `typed` (the same buffers as their element type). `pj` is the energy table (fpga.ENERGY_PJ), `sram_pj`
    each buffer's energy per byte and `dram_pj` DRAM's per byte moved. With `functional` False every Step's
    effect is None (timing only: the same cycles, counters, energy and accesses, no data moved)."""

    def __init__(self, config: FpgaConfig, dram: np.ndarray, raw: dict[Buf, np.ndarray], typed: dict[Buf, np.ndarray],
                 pj: Mapping[str, float], sram_pj: dict[Buf, float], dram_pj: float, *, functional: bool = True):
        self.config, self.dram, self.raw, self.typed = config, dram, raw, typed
        self.functional = functional
        self.pj, self._sram_pj, self._dram_pj_per_byte = pj, sram_pj, dram_pj
        self.latency = math.ceil(config.dram_latency_ns * config.clock_hz / 1e9 - 1e-9)   # DRAM's, in cycles
        self._beat = beat_bytes(config)

    def step(self, index: int, ins: Instr, views: list[View]) -> Step:
        accesses = tuple((_MEMORY_INDEX[v.mem], v.lo, v.hi, v.write) for v in views if not v.empty)
        base = dict(index=index, engine=int(ins.engine), pops=tuple(_QUEUE_INDEX[n] for n in pops(ins)),
                    pushes=tuple(_QUEUE_INDEX[n] for n in pushes(ins)), latency=0, transfer=False,
                    finish=ins.op is Op.FINISH, accesses=accesses, matrix=ins.op is Op.GEMM,
                    overlap=ins.op is Op.VOP and bool(ins.overlap))
        if ins.op in (Op.NOP, Op.FINISH):
            return Step(**base, cycles=1 if ins.op is Op.NOP else 0, effect=None)
        if ins.op in (Op.LOAD, Op.STORE):
            return self._transfer_step(ins, views, base)
        if ins.op is Op.GEMM:
            return self._gemm_step(ins, views, base)
        return self._vop_step(ins, views, base)

    # -- views ---------------------------------------------------------------------------------------------
    def _typed_view(self, v: View) -> np.ndarray:
        arr = self.typed[v.mem]
        isz = arr.itemsize
        return as_strided(arr[v.base:], shape=v.shape, strides=(v.strides[0] * isz, v.strides[1] * isz))

    def _byte_views(self, dram: View, sram: View) -> tuple[np.ndarray, np.ndarray]:
        item = dram.item
        d = as_strided(self.dram[dram.base:], shape=dram.shape + (item,), strides=dram.strides + (1,))
        raw = self.raw[sram.mem]
        s = as_strided(raw[sram.base * item:], shape=sram.shape + (item,),
                       strides=(sram.strides[0] * item, item, 1))
        return d, s

    # -- LOAD / STORE ----------------------------------------------------------------------------------------
    def _transfer_step(self, ins: Instr, views: list[View], base: dict) -> Step:
        dram, sram = (views[1], views[0]) if ins.op is Op.LOAD else (views[0], views[1])
        rows, cols = dram.shape
        item = dram.item
        nbytes = rows * cols * item
        # The movers' cost (ports.py): a DRAM request per beat a transfer touches, at the DRAM's rate, and a chunk
        # a cycle into or out of the buffer's banks (plus WGT's row divisions); the data phase is the slower.
        cost = transfer_cost(self.config, Buf(ins.buf), dram_addr=ins.dram_addr, rows=ins.rows, cols=ins.cols,
                             dram_rs=ins.dram_rs, dram_cs=ins.dram_cs, sram_addr=ins.sram_addr, sram_rs=ins.sram_rs)
        moved = cost.requests * self._beat
        cycles = max(math.ceil(moved / self.config.bytes_per_cycle - 1e-9), cost.chunks + cost.divisions)
        effect = None
        if nbytes and self.functional:
            d, s = self._byte_views(dram, sram)
            effect = (lambda d=d, s=s: np.copyto(s, d)) if ins.op is Op.LOAD else (lambda d=d, s=s: np.copyto(d, s))
        energy = (0.0, 0.0, nbytes * self._sram_pj[sram.mem], moved * self._dram_pj_per_byte)
        base.update(latency=self.latency, transfer=True)
        return Step(**base, cycles=cycles, effect=effect, energy=energy,
                     read_bytes=nbytes if ins.op is Op.LOAD else 0, write_bytes=nbytes if ins.op is Op.STORE else 0)

    # -- GEMM ----------------------------------------------------------------------------------------------
    def _gemm_step(self, ins: Instr, views: list[View], base: dict) -> Step:
        c = self.config
        m, n, kw, reset = ins.m, ins.n, ins.kw, ins.reset
        fill = math.ceil(math.log2(c.matrix_lanes)) + 2
        cycles = m * math.ceil(n / c.matrix_rows) * math.ceil(64 * kw / c.matrix_lanes) + fill + GEMM_COMMIT
        ops = m * n * 64 * kw
        effect = self._gemm_effect(ins, views) if self.functional and m and n and (kw or reset) else None
        lanes_blocks = math.ceil(64 * kw / c.matrix_lanes)
        pj = self.pj
        matrix = (ops * pj["int8_add"] + m * n * lanes_blocks * pj["int32_add"]) * pj["fpga_logic_factor"]
        sram = (m * n * kw * c.word_bytes * self._sram_pj[Buf.WGT]
                + m * math.ceil(n / c.matrix_rows) * 64 * kw * self._sram_pj[Buf.ACT]
                + 4 * m * n * (1 if reset else 2) * self._sram_pj[Buf.ACC])
        return Step(**base, cycles=cycles, effect=effect, ternary_ops=ops, energy=(matrix, 0.0, sram, 0.0), fill=fill + GEMM_COMMIT,
                    accumulates=not reset)

    def _gemm_effect(self, ins: Instr, views: list[View]) -> Callable[[], None]:
        acc = self._typed_view(views[0])
        if not ins.kw:
            def clear() -> None:   # reset with kw = 0: the accumulators cleared
                acc[...] = 0
            return clear
        act = self._typed_view(views[1])
        c = self.config
        n, kw, reset, wb = ins.n, ins.kw, ins.reset, c.word_bytes
        rows, per_beat = c.matrix_rows, c.words_per_beat
        # the whole blocks the GEMM reads (ISA v3 layout); its columns are gathered when it runs, WGT may change first
        span = self.raw[Buf.WGT][ins.wgt_addr:ins.wgt_addr + wgt_span_words(n, kw, rows, per_beat) * wb]
        packing = c.weight_packing

        def effect() -> None:
            trits = decode_words(deinterleave_words(span, n, kw, rows, per_beat, wb), packing)
            # Exact: every partial sum is an integer below 2^26, far inside float64's 2^53.
            s = (act.astype(np.float64) @ trits.T.astype(np.float64)).astype(np.int64)
            if not reset:
                s += acc
            acc[...] = s.astype(np.int32)   # int32 wraps (never in practice: |sum| < 2^26)
        return effect

    # -- VOP -----------------------------------------------------------------------------------------------
    def _vop_step(self, ins: Instr, views: list[View], base: dict) -> Step:
        c = self.config
        func = VFunc(ins.func)
        rows, cols, depth = ins.rows, ins.cols, ins.depth
        lanes = c.vector_lanes
        elements = rows * cols * depth if func is VFunc.MM else rows * cols
        # The operands the lanes walk, with the stride between lanes (the column stride: along the row, or along
        # depth for MM); a reduction's or MM's result is one element per output.
        walked = [(v.mem, v.strides[1], v.write) for v in views
                  if not (v.write and (func is VFunc.MM or func in REDUCTIONS)) and not v.empty]
        cycles = vop_cycles(func, rows, cols, depth, lanes, matrix_lanes=c.matrix_lanes,
                            operands=tuple(walked))    # calibrated against the RTL's vector engine
        adds, muls = VOP_FLOPS[func]
        pj = self.pj
        if func is VFunc.REQ:
            arith = elements * (pj["int32_mul"] * 2 + pj["int32_add"])   # a 32x32 -> 64-bit product, a round add
        else:
            arith = elements * (adds * pj["fp32_add"] + muls * pj["fp32_mul"])
        vector = arith * pj["fpga_dsp_factor"]
        sram = sum(self._sram_pj[v.mem] * ELEM_BYTES[v.mem] * v.shape[0] * v.shape[1] for v in views)
        runs = self.functional and rows and (cols or func in REDUCTIONS)
        effect = self._vop_effect(ins, func, views) if runs else None
        return Step(**base, cycles=cycles, effect=effect, energy=(0.0, vector, sram, 0.0))

    def _vop_effect(self, ins: Instr, func: VFunc, views: list[View]) -> Callable[[], None]:
        byname = {v.operand: v for v in views}
        dst_view = byname["dst"]
        dst = self._typed_view(dst_view)
        dst_buf = dst_view.mem
        src = {k: (self._typed_view(v), v.mem) for k, v in byname.items() if k != "dst"}
        imm = bits_f32(ins.imm)
        lanes = self.config.vector_lanes
        rows, cols = ins.rows, ins.cols

        def read(name: str) -> np.ndarray:
            arr, buf = src[name]
            return arr.astype(np.float32) if buf in (Buf.ACT, Buf.ACC) else np.array(arr, np.float32)

        def b_operand() -> np.ndarray | np.float32:
            return imm if "src2" not in src else read("src2")

        if func is VFunc.REQ:
            raw, shift, mult = src["src1"][0], ins.depth, ins.imm

            def effect() -> None:
                y = vu.requantise(raw, mult, shift)
                dst[...] = y if dst_buf in (Buf.ACT, Buf.ACC) else y.astype(np.float32)
            return effect

        if func is VFunc.FILL:
            def compute() -> np.ndarray:
                return np.full((rows, cols), imm, np.float32)
        elif func is VFunc.MM:
            def compute() -> np.ndarray:
                b = np.full((cols, ins.depth), imm, np.float32) if "src2" not in src else read("src2")
                with np.errstate(all="ignore"):
                    return vu.lane_matmul(read("src1"), b, lanes)
        elif func in REDUCTIONS:
            kind = "sum" if func is VFunc.RSUM else "max"

            magnitude = func is VFunc.AMAX    # the sign bit cleared on the way into the lanes
            floor = magnitude and bool(ins.use_imm)   # AMAX with the immediate: at least imm (MAX's maximum)

            def compute() -> np.ndarray:
                a = np.abs(read("src1")) if magnitude else read("src1")
                with np.errstate(all="ignore"):
                    r = vu.lane_reduce(a, lanes, kind)
                    return (vu.fmax(r, imm) if floor else r)[:, None]
        else:
            binary = func in BINARY or func is VFunc.WHERE

            def compute() -> np.ndarray:
                return vu.apply(func, read("src1"), b_operand() if binary else None, imm)

        def effect() -> None:
            store_result(dst, dst_buf, compute())
        return effect


def store_result(dst: np.ndarray, buf: Buf, r: np.ndarray) -> None:
    """Store fp32 results into a destination view: ACT as sat8(rne(x)), ACC as sat32(rne(x)) (NaN as 0 in both),
    VEC and KV as they are with NaN canonical."""
    if buf is Buf.ACT or buf is Buf.ACC:
        lo, hi = (-128.0, 127.0) if buf is Buf.ACT else (-2147483648.0, 2147483647.0)
        with np.errstate(invalid="ignore"):
            y = np.clip(np.nan_to_num(np.rint(r.astype(np.float64)), nan=0.0), lo, hi)
        dst[...] = y.astype(dst.dtype)
    else:
        dst[...] = vu.canonical(r)


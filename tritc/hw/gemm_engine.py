"""The GEMM engine (docs/HW.md, "The GEMM engine"): one GEMM instruction at a time through WGT, ACT, the matrix
unit and the ACC writeback, at one beat per cycle: m * ceil(n / R) * ceil(64 kw / lanes) beats, then the fill.

Four stages, each decoupled by a FIFO so that a stall anywhere only holds what is behind it:
- The sequencer walks rows i < m, blocks of R columns, beats of a block, with adds only (no multiply, no divide:
  the beats per block are a shift of kw, the first WGT row an exact quotient, `wgt_buffer.exact_quotient`). Per
  beat it loads a request register (the ACT byte address, the WGT row) and queues the beat's `side` facts (the
  block's last beat, the word part, which words are inside K); per block it queues a descriptor (the ACC address,
  the columns j < n, reset, the GEMM's last block) for the writeback. It takes the next GEMM as it steps the
  last block of the current one, so GEMMs follow each other without a bubble (the cycle model overlaps a GEMM
  with the fill of the one before).
- The request register sends the ACT read and the WGT row read, each held until taken.
- The merge pairs the two answers with the side facts (all in order) and gives the matrix unit its beat: the
  activations of words past K set to 0, each tree's words from the row (`tree_words`).
- The writeback pairs each block's sums with its descriptor. Accumulating (reset = 0) it reads the R old words
  from ACC and queues the sums (`pend`, 4 deep: ACC reads answered within about 3 cycles keep the full rate), then
  writes sums + old; with reset it writes the sums. A block reads ACC only when no write of an earlier GEMM is
  still queued: a GEMM accumulating over the one before (the K chunks of one product) sees its writes. A GEMM
  with kw = 0 and reset clears its accumulators (a zero write per block, no beats); one that adds nothing (m, n
  or kw 0) passes a descriptor that writes nothing. `done` counts finished GEMMs, in order, each once its last
  ACC write has been taken.

The ports the core connects (ACT and ACC are the core's buffers, WGT is inside):
  cmd: In(stream(GEMM))                 the decoded GEMM's fields (queues.INSTR's f.gemm)
  done: Out(stream(0))                  one per GEMM, in order, after its last ACC write was accepted
  wgt_wr: In(stream(chunk_write))       LoadMover's `wr`, for the chunks of LOADs into WGT
  act_rd: Out(stream(act addr)), act_data: In(stream(lanes x int8))      ActBuffer's rd / rd_data
  acc_rd: Out(stream(ACC_READ)), acc_rd_data: In(stream(R x int32))      in order, held until taken
  acc_wr: Out(stream(ACC_WRITE))
A read the ACC port accepts after it accepted a write must see that write (a synchronous RAM does); a read of
ACT may run up to lanes - 64 bytes past K, whose values are masked.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import TRIT_GROUP
from ..codegen.fpga.isa import Buf, Op
from .dma import chunk_write_layout
from .matrix_unit import MatrixUnit, sums_layout
from .params import ACC_BITS, ACT_BITS, HwParams
from .queues import fields_layout
from .wgt_buffer import WgtBuffer, exact_quotient, row_bytes

GEMM = fields_layout(Op.GEMM)
PEND_DEPTH = 4        # blocks between the ACC read request and the write: the ACC read latency hidden
SIDE_DEPTH = 8        # beats between the request register and the merge
DONE_MAX = 255        # finished GEMMs `done` can owe before the writeback waits


def acc_read_layout(p: HwParams) -> data.StructLayout:
    """An ACC read: R words from word `addr` on; `mask` bit r set when word addr + r is needed (column j < n)."""
    return data.StructLayout({"addr": p.addr_bits(Buf.ACC), "mask": p.rows})


def acc_write_layout(p: HwParams) -> data.StructLayout:
    """An ACC write: word addr + r takes data[r] where mask bit r is set; the other words are left as they are."""
    return data.StructLayout({"addr": p.addr_bits(Buf.ACC), "data": sums_layout(p), "mask": p.rows})


class GemmEngine(wiring.Component):
    """A GEMM instruction's execution, WGT included; the port list is in the module's docstring."""

    def __init__(self, params: HwParams):
        self.params = params
        self.wgt = WgtBuffer(params)
        super().__init__({
            "cmd": In(stream.Signature(GEMM)), "done": Out(stream.Signature(0)),
            "wgt_wr": In(stream.Signature(chunk_write_layout(params.mem_beat_bytes))),
            "act_rd": Out(stream.Signature(params.addr_bits(Buf.ACT))),
            "act_data": In(stream.Signature(data.ArrayLayout(signed(ACT_BITS), params.lanes))),
            "acc_rd": Out(stream.Signature(acc_read_layout(params))),
            "acc_rd_data": In(stream.Signature(sums_layout(params))),
            "acc_wr": Out(stream.Signature(acc_write_layout(params))),
            "ops": Out(range(params.rows * params.lanes + 1)),
        })

    def tree_words(self, row) -> list[list]:
        """Tree r's words in a WGT row: words r * P .. r * P + P - 1 (ISA v3's (j % R) * P + g % P)."""
        P = self.params.words_per_beat
        return [[row[r * P + w] for w in range(P)] for r in range(self.params.rows)]

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        R, L, P, Q = p.rows, p.lanes, p.words_per_beat, p.beats_per_word
        wgt = m.submodules.wgt = self.wgt
        mu = m.submodules.matrix = MatrixUnit(p)
        wiring.connect(m, wiring.flipped(self.wgt_wr), wgt.wr)
        side_l = data.StructLayout({"last": 1, "part": range(Q), "wmask": P})
        desc_l = data.StructLayout({"addr": p.addr_bits(Buf.ACC), "mask": R, "sums": 1, "write": 1, "read": 1,
                                    "last": 1, "parity": 1})
        pend_l = data.StructLayout({"addr": p.addr_bits(Buf.ACC), "mask": R, "data": sums_layout(p), "read": 1,
                                    "write": 1, "last": 1})
        side = m.submodules.side = fifo.SyncFIFO(width=side_l.size, depth=SIDE_DEPTH)
        desc = m.submodules.desc = fifo.SyncFIFO(width=desc_l.size, depth=p.gemm_latency + 8)
        pend = m.submodules.pend = fifo.SyncFIFO(width=pend_l.size, depth=PEND_DEPTH)

        # ---- the sequencer ---------------------------------------------------------------------------------
        f = Signal(GEMM)
        active, run, null = Signal(), Signal(), Signal()   # run: beats; neither run nor null: a clear
        row0, wrow = Signal(wgt.row_bits), Signal(wgt.row_bits)
        beats = range(TRIT_GROUP * 4096 // min(L, TRIT_GROUP) + 1)
        b, last_b = Signal(beats), Signal(beats)            # the beat in its block, the block's last beat
        wlast = Signal(P)                                   # the words of a block's last beat inside K
        rows_left, rem = Signal(16), Signal(17)             # rows i to go; n - j0
        abits, cbits = p.addr_bits(Buf.ACT), p.addr_bits(Buf.ACC)
        act_base, act_ptr = Signal(abits), Signal(abits)
        acc_base, acc_ptr = Signal(cbits), Signal(cbits)
        parity = Signal()

        req_valid, act_sent, wgt_sent = Signal(), Signal(), Signal()
        req_act, req_row = Signal(abits), Signal(wgt.row_bits)
        act_fire = self.act_rd.valid & self.act_rd.ready
        wgt_fire = wgt.rd.valid & wgt.rd.ready
        req_done = (act_sent | act_fire) & (wgt_sent | wgt_fire)
        m.d.comb += [self.act_rd.valid.eq(req_valid & ~act_sent), self.act_rd.payload.eq(req_act),
                     wgt.rd.valid.eq(req_valid & ~wgt_sent), wgt.rd.payload.eq(req_row)]

        part = b[:Q.bit_length() - 1] if Q > 1 else 0
        block_last = ~run | (b == last_b)
        row_last = rem <= R
        gemm_last = null | (block_last & row_last & (rows_left == 1))
        need_desc = null | block_last
        step = Signal()
        m.d.comb += step.eq(active & (~run | ((~req_valid | req_done) & side.w_rdy)) & (~need_desc | desc.w_rdy))

        s_in = data.View(side_l, side.w_data)
        m.d.comb += [side.w_en.eq(step & run), s_in.last.eq(block_last), s_in.part.eq(part),
                     s_in.wmask.eq(Mux(block_last, wlast, (1 << P) - 1))]
        # `ops`: the trit products of the beat sequenced this cycle (the stats' ternary_ops): its words' 64 trits
        # (a word's `lanes` with fewer than 64 lanes) for each of the block's live columns, without a multiplier
        live_cols = Signal(R)                 # the block's columns inside n
        m.d.comb += live_cols.eq(Cat(*(rem > r for r in range(R))))
        live = Signal(range(R + 1))
        m.d.comb += live.eq(sum(live_cols[r] for r in range(R)))
        if Q > 1:
            per_beat = live << (L.bit_length() - 1)
        else:
            per_beat = sum(Mux(s_in.wmask[k], live, 0) for k in range(P)) << 6
        m.d.comb += self.ops.eq(Mux(step & run, per_beat, 0))
        d_in = data.View(desc_l, desc.w_data)
        m.d.comb += [desc.w_en.eq(step & need_desc), d_in.addr.eq(acc_ptr),
                     d_in.mask.eq(live_cols), d_in.sums.eq(run), d_in.write.eq(~null),
                     d_in.read.eq(run & ~f.reset), d_in.last.eq(gemm_last), d_in.parity.eq(parity)]

        with m.If(step & run):
            m.d.sync += [req_valid.eq(1), req_act.eq(act_ptr), req_row.eq(wrow), act_sent.eq(0), wgt_sent.eq(0)]
        with m.Elif(req_done):
            m.d.sync += req_valid.eq(0)
        with m.Else():
            m.d.sync += [act_sent.eq(act_sent | act_fire), wgt_sent.eq(wgt_sent | wgt_fire)]

        with m.If(step):
            with m.If(gemm_last):
                m.d.sync += active.eq(0)
            with m.Elif(block_last & row_last):       # the next row i: its first block
                m.d.sync += [b.eq(0), rows_left.eq(rows_left - 1), rem.eq(f.n), wrow.eq(row0),
                             act_base.eq(act_base + f.act_rs), act_ptr.eq(act_base + f.act_rs),
                             acc_base.eq(acc_base + f.acc_rs), acc_ptr.eq(acc_base + f.acc_rs)]
            with m.Elif(block_last):                  # the next block of the row: the next WGT row on
                m.d.sync += [b.eq(0), rem.eq(rem - R), act_ptr.eq(act_base), acc_ptr.eq(acc_ptr + R),
                             wrow.eq(wrow + 1)]
            with m.Else():
                m.d.sync += [b.eq(b + 1), act_ptr.eq(act_ptr + L)]
                m.d.sync += wrow.eq(wrow + (part == Q - 1) if Q > 1 else wrow + 1)

        # A new GEMM: taken when idle, or as the last block of the one before steps.
        c = self.cmd.payload
        m.d.comb += self.cmd.ready.eq(~active | (step & gemm_last))
        first_row = exact_quotient(m, c.wgt_addr, row_bytes(p), wgt.row_bits, "row0")
        if Q > 1:
            beats_m1 = (c.kw << (Q.bit_length() - 1)) - 1
        else:
            lp = P.bit_length() - 1
            beats_m1 = ((c.kw + P - 1) >> lp) - 1
        k_tail = c.kw[:P.bit_length() - 1] if P > 1 else 0
        with m.If(self.cmd.valid & self.cmd.ready):
            empty = (c.m == 0) | (c.n == 0) | ((c.kw == 0) & ~c.reset)
            m.d.sync += [f.eq(c), active.eq(1), null.eq(empty), run.eq(~empty & (c.kw != 0)), parity.eq(~parity),
                         row0.eq(first_row), wrow.eq(first_row), b.eq(0), last_b.eq(beats_m1),
                         wlast.eq(Cat(*((k_tail == 0) | (k_tail > w) for w in range(P))) if P > 1 else 1),
                         rows_left.eq(c.m), rem.eq(c.n), act_base.eq(c.act_addr), act_ptr.eq(c.act_addr),
                         acc_base.eq(c.acc_addr), acc_ptr.eq(c.acc_addr)]

        # ---- the merge: the ACT and WGT answers and the side facts, in order, to one beat ---------------------
        s_out = data.View(side_l, side.r_data)
        have = side.r_rdy & self.act_data.valid & wgt.rd_data.valid
        take = have & mu.inp.ready
        beat = mu.inp.payload
        m.d.comb += [mu.inp.valid.eq(have), self.act_data.ready.eq(take), wgt.rd_data.ready.eq(take),
                     side.r_en.eq(take), beat.last.eq(s_out.last)]
        if Q > 1:
            m.d.comb += beat.part.eq(s_out.part)
        for lane in range(L):
            a = self.act_data.payload[lane]
            m.d.comb += beat.act[lane].eq(Mux(s_out.wmask[lane // TRIT_GROUP], a, 0) if P > 1 else a)
        for r, words in enumerate(self.tree_words(wgt.rd_data.payload)):
            for w, word in enumerate(words):
                m.d.comb += beat.words[r][w].eq(word)

        # ---- the writeback: dispatch (pair sums and descriptor, read ACC) then commit (add, write) -------------
        d = data.View(desc_l, desc.r_data)
        tail_parity = Signal()               # the GEMM of the last block queued in `pend`
        hazard = d.read & (pend.level != 0) & (tail_parity != d.parity)
        ready = desc.r_rdy & (~d.sums | mu.out.valid) & ~hazard & pend.w_rdy
        go = ready & (~d.read | self.acc_rd.ready)
        m.d.comb += [self.acc_rd.valid.eq(ready & d.read), self.acc_rd.payload.addr.eq(d.addr),
                     self.acc_rd.payload.mask.eq(d.mask),
                     desc.r_en.eq(go), mu.out.ready.eq(go & d.sums), pend.w_en.eq(go)]
        e_in = data.View(pend_l, pend.w_data)
        m.d.comb += [e_in.addr.eq(d.addr), e_in.mask.eq(d.mask), e_in.read.eq(d.read), e_in.write.eq(d.write),
                     e_in.last.eq(d.last), e_in.data.eq(Mux(d.sums, mu.out.payload.as_value(), 0))]
        with m.If(go):
            m.d.sync += tail_parity.eq(d.parity)

        e = data.View(pend_l, pend.r_data)
        owed = Signal(range(DONE_MAX + 1))
        commit_ok = pend.r_rdy & (~e.read | self.acc_rd_data.valid) & (~e.last | (owed != DONE_MAX))
        commit = commit_ok & (~e.write | self.acc_wr.ready)
        wr = self.acc_wr.payload
        m.d.comb += [self.acc_wr.valid.eq(commit_ok & e.write), wr.addr.eq(e.addr), wr.mask.eq(e.mask),
                     pend.r_en.eq(commit), self.acc_rd_data.ready.eq(commit & e.read)]
        for r in range(R):
            old = Mux(e.read, self.acc_rd_data.payload[r], 0)
            total = Signal(signed(ACC_BITS), name=f"total_{r}")   # int32, wrapping
            m.d.comb += [total.eq(e.data[r] + old), wr.data[r].eq(total)]
        finished = commit & e.last
        m.d.comb += self.done.valid.eq(owed != 0)
        told = self.done.valid & self.done.ready
        with m.If(finished & ~told):
            m.d.sync += owed.eq(owed + 1)
        with m.Elif(told & ~finished):
            m.d.sync += owed.eq(owed - 1)
        return m


def gemm_cycles(p: HwParams, m: int, kw: int, n: int) -> int:
    """The cycle model's GEMM (runtime/fpga_steps.py): the beats, then the pipeline's fill."""
    return m * math.ceil(n / p.rows) * math.ceil(TRIT_GROUP * kw / p.lanes) + p.gemm_latency

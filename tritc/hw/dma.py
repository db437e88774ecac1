"""The LOAD and STORE engines' data movers: a 2-D strided transfer between DRAM beats and buffer elements
(docs/ISA.md, "LOAD, STORE"; docs/HW.md, "Transfers").

A TransferWalker turns the fields of a LOAD or STORE into *pieces*: each element (1 byte in WGT and ACT, 4 in ACC,
VEC, KV) at DRAM byte `dram_addr + r*dram_rs + c*dram_cs` and buffer element `sram_addr + r*sram_rs + c`, split in
two where a 4-byte element straddles two beats. Addresses advance by adds, never multiplies. `new_beat` marks a
piece whose beat differs from the previous piece's, so that a run of elements in one beat costs one DRAM request.
LoadMover requests each new beat and writes the pieces' bytes into the buffer with byte masks; StoreMover reads
the buffer, gathers consecutive pieces of one beat into one strobed write, and reports done when every write has
been acknowledged. One piece per cycle: phase 2 widens this to a beat per cycle over banked buffers.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import DRAM_ADDR_BITS
from ..codegen.fpga.isa import Buf, Op
from .memory import port_signature
from .params import HwParams
from .queues import fields_layout

TRANSFER = fields_layout(Op.LOAD)   # the fields of a LOAD; a STORE's are the same
SRAM_ADDR_BITS = 22
BUF_WRITE = data.StructLayout({"buf": 3, "addr": SRAM_ADDR_BITS, "data": 32, "mask": 4})
BUF_READ = data.StructLayout({"buf": 3, "addr": SRAM_ADDR_BITS})


def piece_layout(beat_bytes: int) -> data.StructLayout:
    lb = int(math.log2(beat_bytes))
    return data.StructLayout({"beat": DRAM_ADDR_BITS - lb, "off": lb, "n": 3, "start": 2, "buf": 3,
                              "sram": SRAM_ADDR_BITS, "new_beat": 1, "last": 1, "skip": 1})


class TransferWalker(wiring.Component):
    """`cmd`: one transfer's fields; `out`: its pieces in order, the last marked `last`. A transfer of no element
    gives one piece marked `skip` and `last`, so that the movers see its end."""

    def __init__(self, beat_bytes: int):
        self.beat_bytes = beat_bytes
        super().__init__({"cmd": In(stream.Signature(TRANSFER)),
                          "out": Out(stream.Signature(piece_layout(beat_bytes)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        B = self.beat_bytes
        lb = int(math.log2(B))
        f = Signal(TRANSFER)                      # the transfer in progress
        r, c = Signal(16), Signal(16)
        row_dram, dram = Signal(DRAM_ADDR_BITS), Signal(DRAM_ADDR_BITS)
        row_sram, sram = Signal(SRAM_ADDR_BITS), Signal(SRAM_ADDR_BITS)
        active, second, first = Signal(), Signal(), Signal()   # second: the straddling element's second piece
        empty = Signal()
        prev_beat = Signal(DRAM_ADDR_BITS - lb)

        word = (f.buf != Buf.WGT) & (f.buf != Buf.ACT)        # a 4-byte element
        off, beat = dram[:lb], dram[lb:]
        straddle = word & (off > B - 4)
        head_bytes = Mux(straddle, B - off, Mux(word, 4, 1))   # bytes of the element in its first beat
        out = self.out.payload
        piece_beat = Mux(second, beat + 1, beat)
        last_elem = (r == f.rows - 1) & (c == f.cols - 1)
        m.d.comb += [
            self.cmd.ready.eq(~active),
            self.out.valid.eq(active),
            out.beat.eq(piece_beat), out.off.eq(Mux(second, 0, off)),
            out.n.eq(Mux(second, 4 - (B - off), head_bytes)), out.start.eq(Mux(second, B - off, 0)),
            out.buf.eq(f.buf), out.sram.eq(sram), out.skip.eq(empty),
            out.new_beat.eq(first | (piece_beat != prev_beat)),
            out.last.eq(empty | (last_elem & (second | ~straddle))),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [f.eq(p), active.eq(1), first.eq(1), second.eq(0), r.eq(0), c.eq(0),
                         row_dram.eq(p.dram_addr), dram.eq(p.dram_addr), row_sram.eq(p.sram_addr),
                         sram.eq(p.sram_addr), empty.eq((p.rows == 0) | (p.cols == 0))]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [first.eq(0), prev_beat.eq(piece_beat)]
            with m.If(empty):
                m.d.sync += active.eq(0)
            with m.Elif(straddle & ~second):
                m.d.sync += second.eq(1)
            with m.Else():
                m.d.sync += second.eq(0)
                with m.If(last_elem):
                    m.d.sync += active.eq(0)
                with m.Elif(c == f.cols - 1):
                    m.d.sync += [c.eq(0), r.eq(r + 1),
                                 row_dram.eq(row_dram + f.dram_rs), dram.eq(row_dram + f.dram_rs),
                                 row_sram.eq(row_sram + f.sram_rs), sram.eq(row_sram + f.sram_rs)]
                with m.Else():
                    m.d.sync += [c.eq(c + 1), dram.eq(dram + f.dram_cs), sram.eq(sram + 1)]
        return m


def _bits(byte_index: Value) -> Value:
    """A byte index as a bit offset: three zero bits below it (a shift by 8 written as wiring, not a multiply)."""
    return Cat(Const(0, 3), byte_index)


def _byte_mask(start, n) -> list:
    """The 4 byte enables of bytes [start, start + n) of a word."""
    return [(k >= start) & (k < start + n) for k in range(4)]


class _Mover(wiring.Component):
    """What both movers share: `cmd` (a transfer, taken while none is in progress), `done` (its end), `mem` (the
    memory port), the buffer port(s) of `members`, and the walker with its queue of pieces, deep enough to cover
    the DRAM latency. A mover's `back` builds the rest and clears `busy` when it signals done."""

    def __init__(self, params: HwParams, members: dict):
        self.params = params
        super().__init__({"cmd": In(stream.Signature(TRANSFER)), "done": Out(stream.Signature(0)),
                          "mem": Out(port_signature(params.mem_beat_bytes)), **members})

    def elaborate(self, platform) -> Module:
        m = Module()
        B = self.params.mem_beat_bytes
        walker = m.submodules.walker = TransferWalker(B)
        pieces = m.submodules.pieces = fifo.SyncFIFO(width=piece_layout(B).size, depth=2 * self.params.mem_outstanding)
        busy = Signal()
        cmd = self.cmd
        m.d.comb += [walker.cmd.payload.eq(cmd.payload), walker.cmd.valid.eq(cmd.valid & ~busy),
                     cmd.ready.eq(walker.cmd.ready & ~busy)]
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += busy.eq(1)
        self.back(m, walker, pieces, busy)
        return m

    def back(self, m: Module, walker: TransferWalker, pieces: fifo.SyncFIFO, busy: Signal) -> None:
        raise NotImplementedError


class LoadMover(_Mover):
    """DRAM -> buffer. `cmd` a transfer, `done` once its last byte is written; `mem` the memory port (reads), `wr`
    the buffers' write port (an element's bytes with byte enables)."""

    def __init__(self, params: HwParams):
        super().__init__(params, {"wr": Out(stream.Signature(BUF_WRITE))})

    def back(self, m: Module, walker: TransferWalker, pieces: fifo.SyncFIFO, busy: Signal) -> None:
        B = self.params.mem_beat_bytes
        layout = piece_layout(B)

        # Walk: each new beat is requested as its first piece enters the queue.
        w = walker.out.payload
        need = w.new_beat & ~w.skip
        m.d.comb += [
            self.mem.req.payload.addr.eq(w.beat),
            self.mem.req.valid.eq(walker.out.valid & need & pieces.w_rdy),
            walker.out.ready.eq(pieces.w_rdy & (~need | self.mem.req.ready)),
            pieces.w_data.eq(w.as_value()), pieces.w_en.eq(walker.out.valid & walker.out.ready),
        ]

        # Write: a piece that starts a beat takes the beat's response; the others use the beat kept from it.
        head = data.View(layout, pieces.r_data)
        cur = Signal(8 * B)
        take = head.new_beat & ~head.skip
        src = Mux(take, self.mem.resp.payload.data, cur)
        have = pieces.r_rdy & (~take | self.mem.resp.valid)
        fire = have & (head.skip | self.wr.ready)
        byte = [src.bit_select(_bits((head.off + k)[:head.off.shape().width]), 8) for k in range(4)]
        elem = Cat(*byte)
        m.d.comb += [
            self.wr.valid.eq(have & ~head.skip),
            self.wr.payload.buf.eq(head.buf), self.wr.payload.addr.eq(head.sram),
            self.wr.payload.data.eq(elem << _bits(head.start)),
            self.wr.payload.mask.eq(Cat(*_byte_mask(head.start, head.n))),
            self.mem.resp.ready.eq(pieces.r_rdy & take & self.wr.ready),
            pieces.r_en.eq(fire),
        ]
        with m.If(fire & take):
            m.d.sync += cur.eq(self.mem.resp.payload.data)
        done = Signal()
        with m.If(fire & head.last):
            m.d.sync += done.eq(1)
        m.d.comb += self.done.valid.eq(done)
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += [done.eq(0), busy.eq(0)]


class StoreMover(_Mover):
    """Buffer -> DRAM. `cmd` a transfer, `done` once every write of it is acknowledged; `rd_req` / `rd_resp` the
    buffers' read port (responses in order), `mem` the memory port (strobed writes)."""

    def __init__(self, params: HwParams):
        super().__init__(params, {"rd_req": Out(stream.Signature(BUF_READ)), "rd_resp": In(stream.Signature(32))})

    def back(self, m: Module, walker: TransferWalker, pieces: fifo.SyncFIFO, busy: Signal) -> None:
        B = self.params.mem_beat_bytes
        layout = piece_layout(B)

        # Walk: every piece reads its element from the buffer as it enters the queue.
        w = walker.out.payload
        m.d.comb += [
            self.rd_req.payload.buf.eq(w.buf), self.rd_req.payload.addr.eq(w.sram),
            self.rd_req.valid.eq(walker.out.valid & ~w.skip & pieces.w_rdy),
            walker.out.ready.eq(pieces.w_rdy & (w.skip | self.rd_req.ready)),
            pieces.w_data.eq(w.as_value()), pieces.w_en.eq(walker.out.valid & walker.out.ready),
        ]

        # Gather: consecutive pieces of one beat build one strobed write; a new beat sends the previous one.
        head = data.View(layout, pieces.r_data)
        acc_valid, acc_beat = Signal(), Signal(head.beat.shape())
        acc_data, acc_strobe = Signal(8 * B), Signal(B)
        tail = Signal()                          # the transfer's last piece has been gathered
        outstanding = Signal(16)                 # writes sent and not yet acknowledged
        have = pieces.r_rdy & (head.skip | self.rd_resp.valid)
        flush_first = have & ~head.skip & acc_valid & head.new_beat
        flush_tail = ~pieces.r_rdy & tail & acc_valid
        send = (flush_first | flush_tail)
        fire = have & (~flush_first | self.mem.req.ready)
        lanes = Signal(8 * B)
        strobe = Signal(B)
        nbytes = Cat(*_byte_mask(0, head.n))      # the piece's bytes, from the element's byte `start`
        m.d.comb += [
            lanes.eq((self.rd_resp.payload >> _bits(head.start)) << _bits(head.off)),
            strobe.eq(nbytes << head.off),
            self.mem.req.valid.eq(send),
            self.mem.req.payload.addr.eq(acc_beat), self.mem.req.payload.write.eq(1),
            self.mem.req.payload.data.eq(acc_data), self.mem.req.payload.strobe.eq(acc_strobe),
            self.rd_resp.ready.eq(pieces.r_rdy & ~head.skip & fire),
            pieces.r_en.eq(fire),
            self.mem.resp.ready.eq(1),
        ]
        sent = send & self.mem.req.ready
        acked = self.mem.resp.valid
        with m.If(sent & ~acked):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(acked & ~sent):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(fire):
            with m.If(head.last):
                m.d.sync += tail.eq(1)
            with m.If(~head.skip):
                merged = [Mux(strobe[k], lanes.word_select(k, 8), acc_data.word_select(k, 8)) for k in range(B)]
                fresh = ~acc_valid | head.new_beat
                m.d.sync += [acc_valid.eq(1), acc_beat.eq(head.beat),
                             acc_data.eq(Mux(fresh, lanes, Cat(*merged))),
                             acc_strobe.eq(Mux(fresh, strobe, acc_strobe | strobe))]
        with m.Elif(flush_tail & self.mem.req.ready):
            m.d.sync += acc_valid.eq(0)
        m.d.comb += self.done.valid.eq(tail & ~acc_valid & (outstanding == 0) & ~pieces.r_rdy)
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += [tail.eq(0), busy.eq(0)]


"""The LOAD and STORE engines' data movers: a 2-D strided transfer between DRAM beats and buffer bytes, a *chunk* a
cycle (docs/ISA.md, "LOAD, STORE"; docs/HW.md, "Transfers").

A TransferWalker turns the fields of a LOAD or STORE into chunks. A transfer is a sequence of *runs*, bytes
consecutive in both DRAM and the buffer: a whole row when its elements are adjacent in DRAM (`dram_cs` = the
element's size, or one column), else each element alone. A run is cut into chunks where it crosses a DRAM beat and,
in the buffer, where it would cross its bank window (`bank_window`: ACT's `matrix_lanes` bytes and a word buffer's
`4 * vector_lanes`, so that a chunk writes each bank at most once; WGT, rows of R * P words, takes any chunk of a
beat). `new_beat` marks a chunk whose beat differs from the previous chunk's, so that a beat costs one DRAM
request however many chunks it feeds. Addresses advance by adds, never multiplies.

LoadMover requests each new beat and writes each chunk's bytes (shifted down from the beat) into the buffers with
`CHUNK_WRITE`; StoreMover reads each chunk from the buffers (`CHUNK_READ`, answered with the bytes from the chunk's
address on), gathers the chunks of one beat into one strobed write, and reports done when every write has been
acknowledged. A contiguous transfer moves at the lower of the DRAM's rate and a chunk a cycle;
`tritc.codegen.fpga.ports.transfer_chunks` counts the chunks the same way for the cycle model.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import DRAM_ADDR_BITS
from ..codegen.fpga.isa import Buf, Op
from ..codegen.fpga.ports import bank_window, store_bytes
from .memory import port_signature
from .params import HwParams
from .queues import fields_layout

TRANSFER = fields_layout(Op.LOAD)   # the fields of a LOAD; a STORE's are the same
SRAM_ADDR_BITS = 24                 # a byte address in any buffer (a word buffer's element address is 22 bits)


def chunk_write_layout(width: int) -> data.StructLayout:
    """A chunk into the buffers: `n` bytes (1 .. width) from byte `addr` of buffer `buf`, byte k of `data` the
    chunk's k-th."""
    return data.StructLayout({"buf": 3, "addr": SRAM_ADDR_BITS, "n": width.bit_length(), "data": 8 * width})


def chunk_read_layout() -> data.StructLayout:
    """A chunk read: the buffer's bytes from byte `addr` of `buf` on (the answer: the store width's bytes, byte 0
    the one at `addr`; those past the chunk's window are don't-care)."""
    return data.StructLayout({"buf": 3, "addr": SRAM_ADDR_BITS})


def chunk_layout(beat_bytes: int) -> data.StructLayout:
    lb = int(math.log2(beat_bytes))
    return data.StructLayout({"beat": DRAM_ADDR_BITS - lb, "off": lb, "n": beat_bytes.bit_length(), "buf": 3,
                              "sram": SRAM_ADDR_BITS, "new_beat": 1, "last": 1, "skip": 1})


def _min(a, b):
    return Mux(a < b, a, b)


def _runs(f):
    """Of a transfer's fields: whether its elements are 4-byte words, whether each row is one run, the bytes of a
    run, and a function turning an element count into bytes (a shift, not a multiply)."""
    word = (f.buf != Buf.WGT) & (f.buf != Buf.ACT)

    def nbytes(x):
        return Mux(word, Cat(Const(0, 2), x), x)

    contiguous = (f.cols == 1) | Mux(word, f.dram_cs == 4, f.dram_cs == 1)
    return word, contiguous, Mux(contiguous, nbytes(f.cols), Mux(word, 4, 1)), nbytes


class TransferWalker(wiring.Component):
    """`cmd`: one transfer's fields; `out`: its chunks in order, the last marked `last`. A transfer of no element
    gives one chunk marked `skip` and `last`, so that the movers see its end."""

    def __init__(self, params: HwParams):
        self.params = params
        super().__init__({"cmd": In(stream.Signature(TRANSFER)),
                          "out": Out(stream.Signature(chunk_layout(params.mem_beat_bytes)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        B = p.mem_beat_bytes
        lb = int(math.log2(B))
        nbits = B.bit_length()
        f = Signal(TRANSFER)                      # the transfer in progress
        r, c = Signal(16), Signal(16)             # row; element of the row (runs of one element)
        row_dram, elem_dram, dram = (Signal(DRAM_ADDR_BITS, name=n) for n in ("row_dram", "elem_dram", "dram"))
        row_sram, sram = Signal(SRAM_ADDR_BITS), Signal(SRAM_ADDR_BITS)
        left = Signal(19)                         # bytes of the run still to go (cols * 4 at most)
        active, first, empty = Signal(), Signal(), Signal()
        prev_beat = Signal(DRAM_ADDR_BITS - lb)

        _, contiguous, run_len, nbytes = _runs(f)
        sram_rs = nbytes(f.sram_rs)

        windows = {b: bank_window(p.config, b) for b in (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV)}
        win_left = Signal(nbits + 1)
        m.d.comb += win_left.eq(B)                # WGT: any chunk of a beat
        with m.Switch(f.buf):
            for b, w in windows.items():
                with m.Case(b):
                    k = int(math.log2(w))
                    m.d.comb += win_left.eq(_min(w - sram[:k], B))
        n = Signal(nbits)
        m.d.comb += n.eq(_min(_min(left, B - dram[:lb]), win_left))
        beat = dram[lb:]
        run_end = n == left
        row_end = contiguous | (c == f.cols - 1)
        last_row = r == f.rows - 1
        out = self.out.payload
        m.d.comb += [
            self.cmd.ready.eq(~active),
            self.out.valid.eq(active),
            out.beat.eq(beat), out.off.eq(dram[:lb]), out.n.eq(n), out.buf.eq(f.buf), out.sram.eq(sram),
            out.skip.eq(empty), out.new_beat.eq(first | (beat != prev_beat)),
            out.last.eq(empty | (run_end & row_end & last_row)),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            q = self.cmd.payload
            _, _, q_run, q_bytes = _runs(q)
            q_sram = q_bytes(q.sram_addr)
            m.d.sync += [f.eq(q), active.eq(1), first.eq(1), r.eq(0), c.eq(0), left.eq(q_run),
                         row_dram.eq(q.dram_addr), elem_dram.eq(q.dram_addr), dram.eq(q.dram_addr),
                         row_sram.eq(q_sram), sram.eq(q_sram), empty.eq((q.rows == 0) | (q.cols == 0))]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [first.eq(0), prev_beat.eq(beat)]
            with m.If(empty):
                m.d.sync += active.eq(0)
            with m.Elif(~run_end):
                m.d.sync += [dram.eq(dram + n), sram.eq(sram + n), left.eq(left - n)]
            with m.Elif(row_end):
                next_dram = (row_dram + f.dram_rs)[:DRAM_ADDR_BITS]
                next_sram = (row_sram + sram_rs)[:SRAM_ADDR_BITS]
                with m.If(last_row):
                    m.d.sync += active.eq(0)
                m.d.sync += [r.eq(r + 1), c.eq(0), left.eq(run_len), row_dram.eq(next_dram),
                             elem_dram.eq(next_dram), dram.eq(next_dram), row_sram.eq(next_sram),
                             sram.eq(next_sram)]
            with m.Else():                        # the next element of the row: adjacent in the buffer
                next_dram = (elem_dram + f.dram_cs)[:DRAM_ADDR_BITS]
                m.d.sync += [c.eq(c + 1), left.eq(run_len), elem_dram.eq(next_dram), dram.eq(next_dram),
                             sram.eq(sram + n)]
        return m


def _bits(byte_index: Value) -> Value:
    """A byte index as a bit offset: three zero bits below it (a shift by 8 written as wiring, not a multiply)."""
    return Cat(Const(0, 3), byte_index)


def byte_enables(n, width: int) -> Value:
    """The first `n` of `width` byte enables, a thermometer code: enable k is `n > k`, a compare of a few bits each
    (not `(1 << n) - 1`, whose subtract is a carry chain as long as the beat: 518 carry cells at 2 KiB)."""
    return Cat(*(n > k for k in range(width)))


class _Mover(wiring.Component):
    """What both movers share: `cmd` (a transfer), `done` (a handshake per transfer finished, in order), `mem` (the
    memory port), the buffer port(s) of `members`, and the walker with its queue of chunks, deep enough to cover the
    DRAM latency. Transfers pipeline: the walker takes the next one as soon as it has walked the last, up to the
    config's `dram_outstanding` transfers unfinished (ISA.md, "Transfer timing"), so that one transfer's DRAM
    latency runs under the data of the one before. A mover's `back` builds the rest and pulses `finish` as each
    transfer ends."""

    def __init__(self, params: HwParams, members: dict):
        self.params = params
        self.limit = max(1, params.config.dram_outstanding)
        super().__init__({"cmd": In(stream.Signature(TRANSFER)), "done": Out(stream.Signature(0)),
                          "mem": Out(port_signature(params.mem_beat_bytes)), **members})

    def elaborate(self, platform) -> Module:
        m = Module()
        walker = m.submodules.walker = TransferWalker(self.params)
        pieces = m.submodules.pieces = fifo.SyncFIFO(width=chunk_layout(self.params.mem_beat_bytes).size,
                                                     depth=2 * self.params.mem_outstanding)
        unfinished = Signal(range(self.limit + 1))       # taken and not yet finished
        finished = Signal(range(self.limit + 1))         # finished and not yet handed over on `done`
        finish = Signal()
        cmd = self.cmd
        room = unfinished < self.limit
        m.d.comb += [walker.cmd.payload.eq(cmd.payload), walker.cmd.valid.eq(cmd.valid & room),
                     cmd.ready.eq(walker.cmd.ready & room), self.done.valid.eq(finished != 0)]
        took, handed = cmd.valid & cmd.ready, self.done.valid & self.done.ready
        m.d.sync += [unfinished.eq(unfinished + took - finish), finished.eq(finished + finish - handed)]
        self.back(m, walker, pieces, finish)
        return m

    def back(self, m: Module, walker: TransferWalker, pieces: fifo.SyncFIFO, finish: Signal) -> None:
        raise NotImplementedError


class LoadMover(_Mover):
    """DRAM -> buffer. `cmd` a transfer, `done` once its last byte is written; `mem` the memory port (reads), `wr`
    the buffers' write port (a chunk a cycle, `chunk_write_layout(mem_beat_bytes)`)."""

    def __init__(self, params: HwParams):
        super().__init__(params, {"wr": Out(stream.Signature(chunk_write_layout(params.mem_beat_bytes)))})

    def back(self, m: Module, walker: TransferWalker, pieces: fifo.SyncFIFO, finish: Signal) -> None:
        B = self.params.mem_beat_bytes
        layout = chunk_layout(B)

        # Walk: each new beat is requested as its first chunk enters the queue.
        w = walker.out.payload
        need = w.new_beat & ~w.skip
        m.d.comb += [
            self.mem.req.payload.addr.eq(w.beat),
            self.mem.req.valid.eq(walker.out.valid & need & pieces.w_rdy),
            walker.out.ready.eq(pieces.w_rdy & (~need | self.mem.req.ready)),
            pieces.w_data.eq(w.as_value()), pieces.w_en.eq(walker.out.valid & walker.out.ready),
        ]

        # Write: a chunk that starts a beat takes the beat's response; the others use the beat kept from it.
        head = data.View(layout, pieces.r_data)
        cur = Signal(8 * B)
        take = head.new_beat & ~head.skip
        src = Mux(take, self.mem.resp.payload.data, cur)
        have = pieces.r_rdy & (~take | self.mem.resp.valid)
        fire = have & (head.skip | self.wr.ready)
        m.d.comb += [
            self.wr.valid.eq(have & ~head.skip),
            self.wr.payload.buf.eq(head.buf), self.wr.payload.addr.eq(head.sram), self.wr.payload.n.eq(head.n),
            self.wr.payload.data.eq(src >> _bits(head.off)),
            self.mem.resp.ready.eq(pieces.r_rdy & take & self.wr.ready),
            pieces.r_en.eq(fire),
        ]
        with m.If(fire & take):
            m.d.sync += cur.eq(self.mem.resp.payload.data)
        m.d.comb += finish.eq(fire & head.last)


class StoreMover(_Mover):
    """Buffer -> DRAM. `cmd` a transfer, `done` once every write of it is acknowledged; `rd_req` / `rd_resp` the
    buffers' read port (a chunk's bytes, `store_bytes` of them, answered in order), `mem` the memory port (strobed
    writes)."""

    def __init__(self, params: HwParams):
        width = store_bytes(params.config)
        super().__init__(params, {"rd_req": Out(stream.Signature(chunk_read_layout())),
                                  "rd_resp": In(stream.Signature(8 * width))})

    def back(self, m: Module, walker: TransferWalker, pieces: fifo.SyncFIFO, finish: Signal) -> None:
        B = self.params.mem_beat_bytes
        layout = chunk_layout(B)

        # Walk: every chunk reads its bytes from the buffer as it enters the queue.
        w = walker.out.payload
        m.d.comb += [
            self.rd_req.payload.buf.eq(w.buf), self.rd_req.payload.addr.eq(w.sram),
            self.rd_req.valid.eq(walker.out.valid & ~w.skip & pieces.w_rdy),
            walker.out.ready.eq(pieces.w_rdy & (w.skip | self.rd_req.ready)),
            pieces.w_data.eq(w.as_value()), pieces.w_en.eq(walker.out.valid & walker.out.ready),
        ]

        # Gather: consecutive chunks of one beat build one strobed write; a new beat sends the previous one, and a
        # transfer's last chunk sends its beat before the next transfer's first is taken (`tail`), so that each
        # transfer ends with a write of its own.
        head = data.View(layout, pieces.r_data)
        acc_valid, acc_beat = Signal(), Signal(head.beat.shape())
        acc_data, acc_strobe = Signal(8 * B), Signal(B)
        tail = Signal()                          # a transfer's last chunk is gathered, its beat not yet sent
        have = pieces.r_rdy & (head.skip | self.rd_resp.valid)
        flush_first = have & ~head.skip & acc_valid & head.new_beat & ~tail
        flush_tail = tail & acc_valid
        send = flush_first | flush_tail
        fire = have & ~tail & (~flush_first | self.mem.req.ready)
        lanes = Signal(8 * B)
        strobe = Signal(B)
        m.d.comb += [
            lanes.eq(self.rd_resp.payload << _bits(head.off)),
            strobe.eq(byte_enables(head.n, B) << head.off),
            self.mem.req.valid.eq(send),
            self.mem.req.payload.addr.eq(acc_beat), self.mem.req.payload.write.eq(1),
            self.mem.req.payload.data.eq(acc_data), self.mem.req.payload.strobe.eq(acc_strobe),
            self.rd_resp.ready.eq(pieces.r_rdy & ~head.skip & fire),
            pieces.r_en.eq(fire),
            self.mem.resp.ready.eq(1),
        ]
        with m.If(fire & ~head.skip):
            merged = [Mux(strobe[k], lanes.word_select(k, 8), acc_data.word_select(k, 8)) for k in range(B)]
            fresh = ~acc_valid | head.new_beat
            m.d.sync += [acc_valid.eq(1), acc_beat.eq(head.beat),
                         acc_data.eq(Mux(fresh, lanes, Cat(*merged))),
                         acc_strobe.eq(Mux(fresh, strobe, acc_strobe | strobe))]
        with m.If(fire & head.last):
            m.d.sync += tail.eq(1)

        # A transfer is finished once the write that ends it is acknowledged: `marks` holds, per transfer, the
        # count of writes sent when it ended; responses come in order, so it is done when as many are acknowledged.
        sent, acked = Signal(16), Signal(16)
        marks = m.submodules.marks = fifo.SyncFIFO(width=16, depth=self.limit)
        sending = send & self.mem.req.ready
        ended = tail & (~acc_valid | sending)     # the transfer's last beat goes now (or it had none left)
        m.d.comb += [marks.w_en.eq(ended), marks.w_data.eq(sent + sending)]
        with m.If(ended):
            m.d.sync += tail.eq(0)
        with m.If(flush_tail & self.mem.req.ready):
            m.d.sync += acc_valid.eq(0)
        m.d.sync += [sent.eq(sent + sending), acked.eq(acked + self.mem.resp.valid)]
        reached = ~(acked - marks.r_data)[15]    # acked >= mark, modulo the counters' wrap
        m.d.comb += [finish.eq(marks.r_rdy & reached), marks.r_en.eq(finish)]

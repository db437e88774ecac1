"""On-chip buffers (docs/HW.md, "Buffers"). ActBuffer is ACT: `matrix_lanes` byte-wide banks, byte `a` in bank
`a mod lanes` at row `a div lanes`, so that a GEMM reads `lanes` consecutive activations from any byte address in
one cycle: each bank reads its own row (the ones before the start's bank one row further), and the bytes are
rotated into order. One chunk write port (up to `lanes` consecutive bytes inside one aligned row of the banks, the
load engine's: each bank takes at most one byte), one wide read port, and optionally a lane write port
(`write_lanes` bytes at any addresses, the vector engine's): each bank takes, in a cycle, the load engine's byte if
the chunk covers that bank, else the lowest waiting lane that maps to it, so lanes at distinct banks (a stride-1
chunk, any odd stride) are written in one cycle.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Buf
from .dma import byte_enables
from .params import ACT_BITS, HwParams


class ActBuffer(wiring.Component):
    """`wr`: chunk writes (`n` bytes from byte `addr`, inside one aligned row of the banks), always taken; `rd`:
    addresses, each answered on `rd_data` the next cycle (held while not taken) with the `lanes` int8 activations
    from that byte on. A read must not run past the buffer's end (the ISA's checks). With `write_lanes`: `wl`, up
    to that many bytes (an address, a byte and a mask bit per lane), taken once every masked lane is written (a
    cycle when their banks differ and `wr` is not writing one of them)."""

    def __init__(self, params: HwParams, write_lanes: int = 0):
        self.params = params
        self.lanes = params.lanes
        self.size = params.buffer_units[Buf.ACT]
        addr = params.addr_bits(Buf.ACT)
        self.write_lanes = write_lanes
        members = {"wr": In(stream.Signature(data.StructLayout({"addr": addr, "n": self.lanes.bit_length(),
                                                                 "data": 8 * self.lanes}))),
                   "rd": In(stream.Signature(addr)),
                   "rd_data": Out(stream.Signature(data.ArrayLayout(signed(ACT_BITS), self.lanes)))}
        if write_lanes:
            members["wl"] = In(stream.Signature(data.StructLayout({
                "addr": data.ArrayLayout(addr, write_lanes), "data": data.ArrayLayout(8, write_lanes),
                "mask": write_lanes})))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        L = self.lanes
        lb = (L - 1).bit_length()
        depth = self.size // L
        advance = ~self.rd_data.valid | self.rd_data.ready
        m.d.comb += [self.wr.ready.eq(1), self.rd.ready.eq(advance)]
        start_bank = self.rd.payload[:lb] if lb else 0
        start_row = self.rd.payload[lb:]
        offset = Signal(range(L))                    # the start's bank, registered with the read
        outs = []
        self.banks = []                              # bank b holds bytes b, b + L, ... (a simulation reads them back)
        # The chunk laid over the banks: bank b takes byte b - (addr mod lanes) of it, at the chunk's row.
        off = self.wr.payload.addr[:lb] if lb else 0
        load_en = Signal(L)
        load_bytes = Signal(8 * L)
        m.d.comb += [load_en.eq(Mux(self.wr.valid, byte_enables(self.wr.payload.n, L) << off, 0)),
                     load_bytes.eq(self.wr.payload.data << Cat(Const(0, 3), off))]
        lanes = self._lane_writes(m, lb, load_en) if self.write_lanes else [None] * L
        for b in range(L):
            bank = m.submodules[f"bank{b}"] = Memory(shape=8, depth=depth, init=[])
            self.banks.append(bank)
            w, r = bank.write_port(), bank.read_port()
            load_hit = load_en[b]
            row, byte, en = self.wr.payload.addr[lb:], load_bytes.word_select(b, 8), load_hit
            if lanes[b] is not None:
                lane_en, lane_row, lane_byte = lanes[b]
                row, byte, en = Mux(load_hit, row, lane_row), Mux(load_hit, byte, lane_byte), load_hit | lane_en
            m.d.comb += [w.addr.eq(row), w.data.eq(byte), w.en.eq(en),
                         r.addr.eq(start_row + (b < start_bank)), r.en.eq(advance)]
            outs.append(r.data)
        with m.If(advance):
            m.d.sync += [offset.eq(start_bank), self.rd_data.valid.eq(self.rd.valid)]
        banks = Array(outs)
        for lane in range(L):                        # lane l holds the byte of bank (offset + l) mod L
            m.d.comb += self.rd_data.payload[lane].eq(banks[(offset + lane)[:lb] if lb else 0])
        return m



    def _lane_writes(self, m: Module, lb: int, load_en) -> list:
        """`wl`'s lanes onto the banks: lane l is written this cycle unless the load engine writes its bank or a lower
        waiting lane maps to it; per bank, (enable, row, byte) of the lane it takes."""
        L, n = self.lanes, self.write_lanes
        wl = self.wl
        served = Signal(n, name="wl_served")
        todo = Signal(n, name="wl_todo")
        m.d.comb += todo.eq(Mux(wl.valid, wl.payload.mask & ~served, 0))
        bank = [wl.payload.addr[k][:lb] if lb else 0 for k in range(n)]
        grant = Signal(n, name="wl_grant")
        for k in range(n):
            free = ~load_en.bit_select(bank[k], 1) if lb else ~load_en[0]
            for j in range(k):
                free = free & ~(todo[j] & (bank[j] == bank[k]))
            m.d.comb += grant[k].eq(todo[k] & free)
        complete = wl.valid & ((todo & ~grant) == 0)
        m.d.comb += wl.ready.eq(complete)
        with m.If(wl.valid):
            m.d.sync += served.eq(Mux(complete, 0, served | grant))
        out = []
        for b in range(L):
            hit = [grant[k] & ((bank[k] == b) if lb else 1) for k in range(n)]
            en = Signal(name=f"wl_en{b}")
            row = Signal(len(wl.payload.addr[0]) - lb, name=f"wl_row{b}")
            byte = Signal(8, name=f"wl_byte{b}")
            m.d.comb += [en.eq(_any(hit)), row.eq(_any(Mux(h, wl.payload.addr[k][lb:], 0) for k, h in enumerate(hit))),
                         byte.eq(_any(Mux(h, wl.payload.data[k], 0) for k, h in enumerate(hit)))]
            out.append((en, row, byte))
        return out


def _any(values):
    out = 0
    for v in values:
        out = out | v
    return out

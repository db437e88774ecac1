"""On-chip buffers (docs/HW.md, "Buffers"). ActBuffer is ACT: `matrix_lanes` byte-wide banks, byte `a` in bank
`a mod lanes` at row `a div lanes`, so that a GEMM reads `lanes` consecutive activations from any byte address in
one cycle: each bank reads its own row (the ones before the start's bank one row further), and the bytes are
rotated into order. One write port (a byte, from the load engine) and one wide read port.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Buf
from .params import ACT_BITS, HwParams


class ActBuffer(wiring.Component):
    """`wr`: byte writes; `rd`: addresses, each answered on `rd_data` the next cycle (held while not taken) with the
    `lanes` int8 activations from that byte on. A read must not run past the buffer's end (the ISA's checks)."""

    def __init__(self, params: HwParams):
        self.params = params
        self.lanes = params.lanes
        self.size = params.buffer_units[Buf.ACT]
        addr = params.addr_bits(Buf.ACT)
        super().__init__({"wr": In(stream.Signature(data.StructLayout({"addr": addr, "data": 8}))),
                          "rd": In(stream.Signature(addr)),
                          "rd_data": Out(stream.Signature(data.ArrayLayout(signed(ACT_BITS), self.lanes)))})

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
        for b in range(L):
            bank = m.submodules[f"bank{b}"] = Memory(shape=8, depth=depth, init=[])
            self.banks.append(bank)
            w, r = bank.write_port(), bank.read_port()
            m.d.comb += [w.addr.eq(self.wr.payload.addr[lb:]), w.data.eq(self.wr.payload.data),
                         w.en.eq(self.wr.valid & ((self.wr.payload.addr[:lb] == b) if lb else 1)),
                         r.addr.eq(start_row + (b < start_bank)), r.en.eq(advance)]
            outs.append(r.data)
        with m.If(advance):
            m.d.sync += [offset.eq(start_bank), self.rd_data.valid.eq(self.rd.valid)]
        banks = Array(outs)
        for lane in range(L):                        # lane l holds the byte of bank (offset + l) mod L
            m.d.comb += self.rd_data.payload[lane].eq(banks[(offset + lane)[:lb] if lb else 0])
        return m



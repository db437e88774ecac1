"""The vector engine's address walker (docs/HW.md, "The vector engine"): a VOP's fields to its *chunks*, each up to
`lanes` elements of src1 and src2 and where their results go, in the order the reference computes them.

    elementwise (J = 1, n = cols):  a(i, k + l), b(i, k + l) -> d(i, k + l)
    RSUM / RMAX / AMAX (J = 1, n = cols):  a(i, k + l) -> d(i, 0) after the chunk marked `last`
    MM (J = cols, n = depth):  src1(i, k + l), src2(j, k + l) -> d(i, j) after the chunk marked `last`

for i < rows, j < J, k = 0, L, 2L, ... < n (a reduction over n = 0 is one chunk with no lane, so its identity is
written). Addresses advance by adds only: a base per loop level and per operand, the lane offsets `l * cs`
built once per instruction from shifted copies of `cs` (no multiplier). Arithmetic is modulo 2^22, the address
field's width: a valid instruction's addresses are in range, a masked lane's address is don't-care.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Op, VFunc
from .queues import fields_layout
from .word_buffer import ADDR_BITS

VOP = fields_layout(Op.VOP)
REDUCE = (VFunc.RSUM, VFunc.RMAX, VFunc.AMAX)


def chunk_layout(lanes: int) -> data.StructLayout:
    lane_addrs = data.ArrayLayout(ADDR_BITS, lanes)
    return data.StructLayout({"a": lane_addrs, "b": lane_addrs, "d": lane_addrs, "mask": lanes, "last": 1,
                              "final": 1})


def lane_offsets(m: Module, stride, lanes: int, name: str) -> list[Signal]:
    """`l * stride` for each lane l, modulo 2^22: a sum of shifted copies of the (sign-extended) stride."""
    out = []
    for lane in range(lanes):
        s = Signal(ADDR_BITS, name=f"{name}_off{lane}")
        terms = [stride.as_signed() << bit for bit in range(lane.bit_length()) if lane >> bit & 1]
        total = 0
        for t in terms:
            total = total + t
        m.d.comb += s.eq(total)
        out.append(s)
    return out


class VopWalker(wiring.Component):
    """`cmd`: a non-empty VOP's fields (the engine filters empty and refused ones); `out`: its chunks, the last
    marked `final`. One chunk per cycle; `cmd` is ready again after the final chunk is taken."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({"cmd": In(stream.Signature(VOP)), "out": Out(stream.Signature(chunk_layout(lanes)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        L = self.lanes
        lb = (L - 1).bit_length()
        f = Signal(VOP)
        active = Signal()
        m.d.comb += [self.cmd.ready.eq(~active), self.out.valid.eq(active)]

        # Lane offsets of each operand's column stride, registered when the command is taken.
        offs = {}
        for name in ("dst", "src1", "src2"):
            comb = lane_offsets(m, getattr(self.cmd.payload, f"{name}_cs"), L, name)
            regs = [Signal(ADDR_BITS, name=f"{name}_lane{lane}") for lane in range(L)]
            with m.If(self.cmd.valid & self.cmd.ready):
                m.d.sync += [r.eq(c) for r, c in zip(regs, comb)]
            offs[name] = regs

        mm = f.func == VFunc.MM
        elementwise = ~mm & ~f.func.matches(*REDUCE)
        n = Mux(mm, f.depth, f.cols)
        rows_last = f.rows - 1
        cols_last = Mux(mm, f.cols - 1, 0)
        i, j = Signal(16), Signal(16)
        k = Signal(17)                                # the chunk's first term: 0, L, 2L, ...
        remaining = Signal(17)
        m.d.comb += remaining.eq(n - k)
        last = remaining <= L
        final = last & (j == cols_last) & (i == rows_last)
        a_i, a_k = Signal(ADDR_BITS), Signal(ADDR_BITS)
        b_i, b_j, b_k = Signal(ADDR_BITS), Signal(ADDR_BITS), Signal(ADDR_BITS)
        d_i, d_j, d_k = Signal(ADDR_BITS), Signal(ADDR_BITS), Signal(ADDR_BITS)
        chunk = self.out.payload
        for lane in range(L):
            m.d.comb += [chunk.a[lane].eq(a_k + offs["src1"][lane]), chunk.b[lane].eq(b_k + offs["src2"][lane]),
                         chunk.d[lane].eq(d_k + offs["dst"][lane]), chunk.mask[lane].eq(remaining > lane)]
        m.d.comb += [chunk.last.eq(last), chunk.final.eq(final)]

        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [f.eq(p), active.eq(1), i.eq(0), j.eq(0), k.eq(0),
                         a_i.eq(p.src1_addr), a_k.eq(p.src1_addr),
                         b_i.eq(p.src2_addr), b_j.eq(p.src2_addr), b_k.eq(p.src2_addr),
                         d_i.eq(p.dst_addr), d_j.eq(p.dst_addr), d_k.eq(p.dst_addr)]
        with m.If(self.out.valid & self.out.ready):
            with m.If(~last):                         # the next chunk of this output (or row)
                m.d.sync += [k.eq(k + L), a_k.eq(a_k + (f.src1_cs.as_signed() << lb)),
                             b_k.eq(b_k + (f.src2_cs.as_signed() << lb))]
                with m.If(elementwise):
                    m.d.sync += d_k.eq(d_k + (f.dst_cs.as_signed() << lb))
            with m.Elif(j != cols_last):              # MM: the next output of this row
                m.d.sync += [j.eq(j + 1), k.eq(0), a_k.eq(a_i), b_j.eq(b_j + f.src2_rs), b_k.eq(b_j + f.src2_rs),
                             d_j.eq(d_j + f.dst_cs), d_k.eq(d_j + f.dst_cs)]
            with m.Elif(~final):                      # the next row
                m.d.sync += [i.eq(i + 1), j.eq(0), k.eq(0), a_i.eq(a_i + f.src1_rs), a_k.eq(a_i + f.src1_rs),
                             d_i.eq(d_i + f.dst_rs), d_j.eq(d_i + f.dst_rs), d_k.eq(d_i + f.dst_rs)]
                with m.If(mm):                        # src2's rows are MM's output columns: back to the first
                    m.d.sync += [b_j.eq(f.src2_addr), b_k.eq(f.src2_addr)]
                with m.Else():
                    m.d.sync += [b_i.eq(b_i + f.src2_rs), b_k.eq(b_i + f.src2_rs)]
            with m.Else():
                m.d.sync += active.eq(0)
        return m

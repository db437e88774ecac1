"""The vector engine's multi-step units (docs/HW.md, "The vector engine"): what takes a lane chunk for more than
one cycle. A unit is a component with

    FUNCS                          the VFuncs it computes (class attribute)
    inp: In(stream(unit_in(L)))    func, a and b per lane (b is src2 or the immediate), the immediate
    out: Out(stream(L x 32))       the fp32 results of each chunk, in the order the chunks went in

A unit may hold several chunks at once (pipelined) as long as results leave in order; lanes outside a chunk's mask
compute don't-care values. The engine keeps each chunk's destination beside the unit and writes the results
through the same conversions as every function. Built here: DivSqrtLanes (DIV, RECIP, SQRT). The sequencer of
EXP, SIN, COS, TANH, ERF will be another unit of this shape, added to the engine's `units`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import VFunc
from .fp_div import FpDivider
from .fp_sqrt import FpSqrt

ONE = 0x3F800000


def unit_in(lanes: int) -> data.StructLayout:
    return data.StructLayout({"func": 6, "a": data.ArrayLayout(32, lanes), "b": data.ArrayLayout(32, lanes),
                              "imm": 32})


class DivSqrtLanes(wiring.Component):
    """A divider and a square root per lane (FpDivider, FpSqrt: 28 cycles an operation): a chunk starts when every
    lane's units are idle and leaves when every lane has its result. RECIP is 1 / a on the divider."""

    FUNCS = (VFunc.DIV, VFunc.RECIP, VFunc.SQRT)

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({"inp": In(stream.Signature(unit_in(lanes))),
                          "out": Out(stream.Signature(data.ArrayLayout(32, lanes)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        L = self.lanes
        p = self.inp.payload
        is_sqrt, is_recip = p.func == VFunc.SQRT, p.func == VFunc.RECIP
        idle = []
        have = Signal(L)
        for lane in range(L):
            div = m.submodules[f"div{lane}"] = FpDivider()
            root = m.submodules[f"sqrt{lane}"] = FpSqrt()
            idle += [div.inp.ready, root.inp.ready]
            m.d.comb += [div.inp.payload.a.eq(Mux(is_recip, ONE, p.a[lane])),
                         div.inp.payload.b.eq(Mux(is_recip, p.a[lane], p.b[lane])),
                         root.inp.payload.eq(p.a[lane])]
            start = self.inp.valid & self.inp.ready
            m.d.comb += [div.inp.valid.eq(start & ~is_sqrt), root.inp.valid.eq(start & is_sqrt),
                         div.out.ready.eq(~have[lane]), root.out.ready.eq(~have[lane])]
            with m.If(~have[lane] & (div.out.valid | root.out.valid)):
                m.d.sync += [self.out.payload[lane].eq(Mux(div.out.valid, div.out.payload, root.out.payload)),
                             have[lane].eq(1)]
        m.d.comb += [self.inp.ready.eq(Cat(idle).all()), self.out.valid.eq(have.all())]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += have.eq(0)
        return m

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
from ..codegen.fpga.timing import DIVIDER_GROUPS
from .fp_div import FpDivider
from .fp_sqrt import FpSqrt

ONE = 0x3F800000


def unit_in(lanes: int) -> data.StructLayout:
    return data.StructLayout({"func": 6, "a": data.ArrayLayout(32, lanes), "b": data.ArrayLayout(32, lanes),
                              "imm": 32})


class DivSqrtLanes(wiring.Component):
    """`copies` groups of a divider and a square root per lane (FpDivider, FpSqrt: 28 cycles an operation). Chunks
    go to the groups in turn, each when its group's units are idle, and leave in the same turn when every lane of
    the group has its result: with 4 groups a chunk every 7.5 cycles, about the cycle model's 8. RECIP is 1 / a
    on the divider."""

    FUNCS = (VFunc.DIV, VFunc.RECIP, VFunc.SQRT)

    def __init__(self, lanes: int, copies: int = DIVIDER_GROUPS):
        if copies < 1:
            raise ValueError(f"DivSqrtLanes needs at least one group of units, got copies={copies}")
        self.lanes, self.copies = lanes, copies
        super().__init__({"inp": In(stream.Signature(unit_in(lanes))),
                          "out": Out(stream.Signature(data.ArrayLayout(32, lanes)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        L, G = self.lanes, self.copies
        p = self.inp.payload
        is_sqrt, is_recip = p.func == VFunc.SQRT, p.func == VFunc.RECIP
        put_group, take_group = Signal(range(G)), Signal(range(G))
        start = self.inp.valid & self.inp.ready
        taken = self.out.valid & self.out.ready
        idle_of, have_of, result_of = [], [], []
        for g in range(G):
            idle = []
            have = Signal(L, name=f"have{g}")
            result = Signal(data.ArrayLayout(32, L), name=f"result{g}")
            mine = start & (put_group == g)
            for lane in range(L):
                div = m.submodules[f"div{g}_{lane}"] = FpDivider()
                root = m.submodules[f"sqrt{g}_{lane}"] = FpSqrt()
                idle += [div.inp.ready, root.inp.ready]
                m.d.comb += [div.inp.payload.a.eq(Mux(is_recip, ONE, p.a[lane])),
                             div.inp.payload.b.eq(Mux(is_recip, p.a[lane], p.b[lane])),
                             root.inp.payload.eq(p.a[lane]),
                             div.inp.valid.eq(mine & ~is_sqrt), root.inp.valid.eq(mine & is_sqrt),
                             div.out.ready.eq(~have[lane]), root.out.ready.eq(~have[lane])]
                with m.If(~have[lane] & (div.out.valid | root.out.valid)):
                    m.d.sync += [result[lane].eq(Mux(div.out.valid, div.out.payload, root.out.payload)),
                                 have[lane].eq(1)]
            with m.If(taken & (take_group == g)):
                m.d.sync += have.eq(0)
            idle_of.append(Cat(idle).all())
            have_of.append(have.all())
            result_of.append(result)
        with m.Switch(put_group):
            for g in range(G):
                with m.Case(g):
                    m.d.comb += self.inp.ready.eq(idle_of[g])
        with m.Switch(take_group):
            for g in range(G):
                with m.Case(g):
                    m.d.comb += [self.out.valid.eq(have_of[g]), self.out.payload.eq(result_of[g])]
        with m.If(start):
            m.d.sync += put_group.eq(Mux(put_group == G - 1, 0, put_group + 1))
        with m.If(taken):
            m.d.sync += take_group.eq(Mux(take_group == G - 1, 0, take_group + 1))
        return m

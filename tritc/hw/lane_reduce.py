"""The vector unit's reductions (docs/ISA.md, "Reduction order"): RSUM and RMAX of a row, and MM's sum of products.
Lane l of L accumulates the terms k = l, l + L, ... in order, starting from its first term (a lane that gets none
holds +0 for a sum, -inf for a max); then the L lane values are combined by a binary tree, pairs (2m, 2m + 1)
first. Bit-exact with codegen/fpga/vector_unit.py's lane_reduce.

A row arrives as chunks of L terms (a mask says which lanes hold one; the last chunk may be partial) on a stream;
its result leaves on `out` after the chunk marked `last`. The lane step and the tree are combinational here: phase
3 registers the tree's levels (the cycle model's log2(L) fill).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .fp_add import FpAdder
from .fp_compare import FpCompare

NEG_INF = 0xFF800000


def chunk_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"terms": data.ArrayLayout(32, lanes), "mask": lanes, "last": 1, "max": 1})


class LaneReducer(wiring.Component):
    """`inp`: the chunks of one row after another (`max` selects RMAX's maximum over RSUM's sum; constant over a
    row); `out`: each row's reduction."""

    def __init__(self, lanes: int):
        if lanes < 1 or lanes & (lanes - 1):
            raise ValueError(f"the lane tree needs a power-of-two lane count, got {lanes}")
        self.lanes = lanes
        super().__init__({"inp": In(stream.Signature(chunk_layout(lanes))), "out": Out(stream.Signature(32))})

    def _combine(self, m: Module, x, y, is_max, name: str):
        """fp32 x + y, or IEEE maximum(x, y) when `is_max`."""
        add = m.submodules[f"add_{name}"] = FpAdder()
        cmp = m.submodules[f"max_{name}"] = FpCompare()
        m.d.comb += [add.a.eq(x), add.b.eq(y), cmp.a.eq(x), cmp.b.eq(y)]
        return Mux(is_max, cmp.max, add.y)

    def elaborate(self, platform) -> Module:
        m = Module()
        L = self.lanes
        chunk = self.inp.payload
        is_max = chunk.max
        advance = ~self.out.valid | self.out.ready
        m.d.comb += self.inp.ready.eq(advance)
        take = self.inp.valid & advance
        lanes = []                                   # each lane's value after this chunk
        for lane in range(L):
            acc, has = Signal(32, name=f"acc_{lane}"), Signal(name=f"has_{lane}")
            term = chunk.terms[lane]
            step = Signal(32, name=f"step_{lane}")
            m.d.comb += step.eq(Mux(chunk.mask[lane], Mux(has, self._combine(m, acc, term, is_max, f"lane{lane}"), term),
                                    acc))
            got = has | chunk.mask[lane]
            # A lane without a term in the whole row is the operation's identity.
            lanes.append(Mux(got, step, Mux(is_max, NEG_INF, 0)))
            with m.If(take):
                m.d.sync += [acc.eq(step), has.eq(got & ~chunk.last)]
        level = 0
        while len(lanes) > 1:                        # pairs (2m, 2m + 1), then their pairs
            lanes = [self._combine(m, lanes[i], lanes[i + 1], is_max, f"tree{level}_{i // 2}")
                     for i in range(0, len(lanes), 2)]
            level += 1
        with m.If(take & chunk.last):
            m.d.sync += [self.out.payload.eq(lanes[0]), self.out.valid.eq(1)]
        with m.Elif(self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        return m

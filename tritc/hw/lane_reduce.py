"""The vector unit's reductions (docs/ISA.md, "Reduction order"): RSUM and RMAX of a row, and MM's sum of products.
Lane l of L accumulates the terms k = l, l + L, ... in order, starting from its first term (a lane that gets none
holds +0 for a sum, -inf for a max); then the L lane values are combined by a binary tree, pairs (2m, 2m + 1)
first. Bit-exact with codegen/fpga/vector_unit.py's lane_reduce.

A row arrives as chunks of L terms (a mask says which lanes hold one; the last chunk may be partial) on a stream;
its result leaves on `out` log2(L) + 1 cycles after the chunk marked `last` was taken: the lane values are
registered, then each level of the tree (the cycle model's log2(L) fill, paid once per instruction since rows
follow each other through it). The whole pipeline holds while `out` is not taken.
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
        advance = ~self.out.valid | self.out.ready      # the whole pipeline moves, or holds
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
        # The tree: the lane values of a finished row registered, then a register after each level of pairs (2m,
        # 2m + 1); the row's `max` travels with its values.
        valid, kind = Signal(name="tree_valid0"), Signal(name="tree_max0")
        values = [Signal(32, name=f"tree0_{i}") for i in range(L)]
        with m.If(advance):
            m.d.sync += [valid.eq(take & chunk.last), kind.eq(is_max)]
            m.d.sync += [v.eq(x) for v, x in zip(values, lanes)]
        level = 0
        while len(values) > 1:
            sums = [self._combine(m, values[i], values[i + 1], kind, f"tree{level}_{i // 2}")
                    for i in range(0, len(values), 2)]
            level += 1
            nvalid, nkind = Signal(name=f"tree_valid{level}"), Signal(name=f"tree_max{level}")
            nvalues = [Signal(32, name=f"tree{level}_{i}") for i in range(len(sums))]
            with m.If(advance):
                m.d.sync += [nvalid.eq(valid), nkind.eq(kind)]
                m.d.sync += [v.eq(x) for v, x in zip(nvalues, sums)]
            valid, kind, values = nvalid, nkind, nvalues
        m.d.comb += [self.out.valid.eq(valid), self.out.payload.eq(values[0])]
        return m

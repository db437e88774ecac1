"""The matrix unit: `rows` adder trees of `lanes` int8-times-trit products, int32 accumulation. No multiplier:
a product is the activation, its negation or zero, selected by the decoded trit.

A GEMM reaches it as a stream of beats (docs/HW.md, "Matrix unit"). A beat carries `lanes` activations (shared by
every tree) and, per tree, the packed weight words its lanes read: `words_per_beat` words when lanes >= 64, or
one word and the `part` of it (a quarter with 16 lanes) when lanes < 64. The beats of one output block follow
each other; the one marked `last` closes the block, and its sums, one int32 per tree, leave on `out`.
Activation lanes past the block's K carry 0 (the feeder masks them), so no weight past K counts.

Pipeline: decode and select, products (registered), log2(lanes) registered adder levels, the accumulator
register: `gemm_latency` = log2(lanes) + 2 stages, the fill of the cycle model. A stalled `out` stalls the
whole pipeline (one enable), so nothing is dropped.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ACC_BITS, ACT_BITS, PRODUCT_BITS, HwParams
from .weight_decoder import TRIT, WordDecoder


def beat_layout(p: HwParams) -> data.StructLayout:
    """One cycle's input of the matrix unit."""
    fields = {"act": data.ArrayLayout(signed(ACT_BITS), p.lanes),
              "words": data.ArrayLayout(data.ArrayLayout(unsigned(8 * p.word_bytes), p.words_per_beat), p.rows),
              "last": 1}
    if p.beats_per_word > 1:
        fields["part"] = range(p.beats_per_word)
    return data.StructLayout(fields)


def sums_layout(p: HwParams) -> data.ArrayLayout:
    return data.ArrayLayout(signed(ACC_BITS), p.rows)


class MatrixUnit(wiring.Component):
    """`inp`: a stream of beat_layout beats; `out`: a stream of the rows' int32 sums, one per block."""

    def __init__(self, params: HwParams):
        self.params = params
        super().__init__({"inp": In(stream.Signature(beat_layout(params))),
                          "out": Out(stream.Signature(sums_layout(params)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        beat = self.inp.payload
        advance = Signal()   # the pipeline moves: the result register is empty or being taken
        m.d.comb += [advance.eq(~self.out.valid | self.out.ready), self.inp.ready.eq(advance)]

        # Decode the words and pick each lane's trit.
        trits = []   # per tree, `lanes` TRIT views
        for r in range(p.rows):
            row = []
            for w in range(p.words_per_beat):
                dec = WordDecoder(p.packing)
                m.submodules[f"decode_{r}_{w}"] = dec
                m.d.comb += dec.word.eq(beat.words[r][w])
                if p.beats_per_word > 1:   # one word over several beats: this beat's `lanes` trits of it
                    part = Signal(data.ArrayLayout(TRIT, p.lanes), name=f"part_{r}")
                    with m.Switch(beat.part):
                        for k in range(p.beats_per_word):
                            with m.Case(k):
                                m.d.comb += part.eq(dec.trits.as_value()[2 * p.lanes * k:2 * p.lanes * (k + 1)])
                    row += list(part)
                else:
                    row += list(dec.trits)
            trits.append(row)

        # Products: a, -a or 0 (registered), then the registered adder levels.
        valid = Signal()
        last = Signal()
        level = []
        for r in range(p.rows):
            regs = []
            for lane in range(p.lanes):
                a, t = beat.act[lane], trits[r][lane]
                prod = Signal(signed(PRODUCT_BITS), name=f"prod_{r}_{lane}")
                with m.If(advance):
                    m.d.sync += prod.eq(Mux(t.nz, Mux(t.neg, -a, a), 0))
                regs.append(prod)
            level.append(regs)
        with m.If(advance):
            m.d.sync += [valid.eq(self.inp.valid), last.eq(beat.last)]
        for k in range(p.tree_levels):
            nvalid, nlast = Signal(name=f"valid_{k + 1}"), Signal(name=f"last_{k + 1}")
            nxt = []
            for r, regs in enumerate(level):
                pairs = []
                for i in range(0, len(regs), 2):
                    s = Signal(signed(PRODUCT_BITS + k + 1), name=f"sum_{k + 1}_{r}_{i // 2}")
                    with m.If(advance):
                        m.d.sync += s.eq(regs[i] + regs[i + 1])
                    pairs.append(s)
                nxt.append(pairs)
            with m.If(advance):
                m.d.sync += [nvalid.eq(valid), nlast.eq(last)]
            level, valid, last = nxt, nvalid, nlast

        # Accumulate: the result register is the accumulator; a block's first beat starts it from 0.
        fresh = Signal(init=1)
        with m.If(advance):
            with m.If(valid):
                for r in range(p.rows):
                    base = Mux(fresh, 0, self.out.payload[r])
                    m.d.sync += self.out.payload[r].eq(base + level[r][0])
                m.d.sync += [fresh.eq(last), self.out.valid.eq(last)]
            with m.Else():
                m.d.sync += self.out.valid.eq(0)
        return m

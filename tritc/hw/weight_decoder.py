"""The weight decoder: one packed word (13 bytes base3, 16 bytes 2bit) to 64 trits, no division, no multiplier.

base3 (docs/ISA.md, "Weights"): digit i of byte q is ((q * 3^i) mod 256) * 3 >> 8. With y_0 = q and
y_{i+1} = (3 y_i) mod 256 that is the carry of one 10-bit add, 3 y_i = y_i + (y_i << 1): its top two bits are
digit i and its low byte is y_{i+1}. Five chained shift-adds per byte; the 13th byte's fifth digit is the pad
and is dropped. 2bit: code c = t + 1 in two bits, code 3 read as 0 (what isa.decode_words defines).
A trit leaves as a sign / nonzero pair (TRIT), what the adder trees select with.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import PACKINGS, TRIT_GROUP

TRIT = data.StructLayout({"nz": 1, "neg": 1})   # -1: nz neg, 0: neither, +1: nz
TRIT_WORD = data.ArrayLayout(TRIT, TRIT_GROUP)


def base3_digits(m: Module, q: Value, name: str) -> list[Signal]:
    """The five base-3 digits (0..2, most significant first) of byte q: five chained 10-bit shift-adds. Each step is
    a named signal, so that the chain is built once (an expression used twice would be built twice)."""
    digits = []
    y = q
    for i in range(5):
        t = Signal(10, name=f"{name}_3y{i}")   # 3 y < 768: ten bits; the top two are the digit, the low byte next y
        m.d.comb += t.eq(y + (y << 1))
        digits.append(t[8:10])
        y = t[0:8]
    return digits


def digit_trit(d: Value) -> Value:
    """Digit d = t + 1 (0, 1, 2; 3 read as 1, i.e. trit 0) as a TRIT: nonzero when d is even, negative when 0."""
    return Cat(~d[0], ~d[0] & ~d[1])   # (nz, neg) in TRIT's field order


class WordDecoder(wiring.Component):
    """Combinational: `word` (a packed word, byte b in bits 8b..8b+7) -> `trits` (64 TRITs, trit 0 first)."""

    def __init__(self, packing: str):
        if packing not in PACKINGS:
            raise ValueError(f"unknown weight packing {packing!r}")
        self.packing = packing
        super().__init__({"word": In(8 * PACKINGS[packing]), "trits": Out(TRIT_WORD)})

    def elaborate(self, platform) -> Module:
        m = Module()
        nbytes = PACKINGS[self.packing]
        trits: list[Value] = []
        for b in range(nbytes):
            byte = self.word[8 * b:8 * b + 8]
            if self.packing == "base3":
                trits += [digit_trit(d) for d in base3_digits(m, byte, f"byte{b}")]
            else:
                trits += [digit_trit(byte[2 * i:2 * i + 2]) for i in range(4)]
        m.d.comb += self.trits.as_value().eq(Cat(*trits[:TRIT_GROUP]))
        return m

"""The vector unit's comparisons on fp32 bit patterns (docs/ISA.md, "VOP"): LT and EQ (false when either is NaN),
MAX and MIN as IEEE 754-2019 maximum / minimum (NaN if either is NaN, -0 below +0; RELU is MAX with +0), and REQ's
requantisation. Bit-exact with codegen/fpga/vector_unit.py. Combinational.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .fp_add import CANONICAL_NAN


class FpCompare(wiring.Component):
    """`lt` = a < b, `eq` = a == b (IEEE: +0 == -0, NaN unordered); `max`, `min` the IEEE 754-2019 maximum and
    minimum (a NaN operand gives the canonical NaN)."""

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "lt": Out(1), "eq": Out(1), "max": Out(32), "min": Out(32)})

    def elaborate(self, platform) -> Module:
        m = Module()
        a, b = self.a, self.b
        nan = ((a[23:31] == 0xFF) & (a[0:23] != 0)) | ((b[23:31] == 0xFF) & (b[0:23] != 0))
        sa, sb, ma, mb = a[31], b[31], a[0:31], b[0:31]
        zeros = (ma == 0) & (mb == 0)
        # Sign and magnitude: a negative is below a positive unless both are zeros; two negatives compare reversed.
        below = Signal()        # a < b, and -0 < +0 (the total order MAX and MIN use among equal values)
        m.d.comb += below.eq(Mux(sa != sb, sa, Mux(sa, ma > mb, ma < mb)))
        m.d.comb += [self.lt.eq(~nan & ~zeros & below),
                     self.eq.eq(~nan & ((a == b) | zeros))]
        m.d.comb += [self.max.eq(Mux(nan, CANONICAL_NAN, Mux(below, b, a))),
                     self.min.eq(Mux(nan, CANONICAL_NAN, Mux(below, a, b)))]
        return m


class Requantise(wiring.Component):
    """REQ: `y = sat8((A * M + 2^(30+s)) >> (31+s))`: a 64-bit product of the raw integer A and the Q31 multiplier
    M, an arithmetic shift (ties towards +inf), saturation to int8."""

    def __init__(self):
        super().__init__({"acc": In(signed(32)), "mult": In(signed(32)), "shift": In(range(32)),
                          "y": Out(signed(8))})

    def elaborate(self, platform) -> Module:
        m = Module()
        product = Signal(signed(64))
        m.d.comb += product.eq(self.acc * self.mult)
        rounded = Signal(signed(65))
        m.d.comb += rounded.eq(product + (1 << (30 + self.shift)))
        shifted = Signal(signed(34))                     # |A * M| < 2^62: after a shift of 31 or more, < 2^31
        m.d.comb += shifted.eq(rounded >> (31 + self.shift))
        m.d.comb += self.y.eq(Mux(shifted > 127, 127, Mux(shifted < -128, -128, shifted)))
        return m

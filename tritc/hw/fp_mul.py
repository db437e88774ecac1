"""The vector unit's fp32 multiplier (docs/HW.md, "The vector unit"): a * b in IEEE binary32, round to nearest even,
subnormal inputs and results kept, a NaN result as the canonical quiet NaN. Bit-exact with numpy's float32 product.

The 24 x 24 significand product is a real multiply (it maps to DSP blocks: "no multipliers" is the matrix path's
rule, not the vector unit's). Then: normalise by the product's leading-zero count (a subnormal operand has leading
zeros), shift right by as much as the exponent is below the smallest (a subnormal result) with the bits lost kept
sticky, and round once, half to even. Combinational; the lanes will register it between steps (phase 2).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .fp_add import CANONICAL_NAN
from .fp_round import round_pack

BIAS = 127


class FpMultiplier(wiring.Component):
    """`y = a * b`: fp32 bit patterns in and out."""

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "y": Out(32)})

    def elaborate(self, platform) -> Module:
        m = Module()
        a, b = self.a, self.b
        sign = a[31] ^ b[31]
        ea, eb, fa, fb = a[23:31], b[23:31], a[0:23], b[0:23]
        nan = ((ea == 0xFF) & (fa != 0)) | ((eb == 0xFF) & (fb != 0))
        inf_a, inf_b = (ea == 0xFF) & (fa == 0), (eb == 0xFF) & (fb == 0)
        zero_a, zero_b = a[0:31] == 0, b[0:31] == 0

        product = Signal(48)
        m.d.comb += product.eq(Cat(fa, ea != 0) * Cat(fb, eb != 0))

        # Normalise: the leading one to bit 47. value = (p / 2^47) * 2^(e - 127) with e as below.
        lz = Signal(range(49))
        for i in range(48):                        # the highest set bit wins (the last assignment)
            with m.If(product[i]):
                m.d.comb += lz.eq(47 - i)
        norm = Signal(48)
        e = Signal(signed(11))
        m.d.comb += [norm.eq(product << lz),
                     e.eq(Mux(ea != 0, ea, 1) + Mux(eb != 0, eb, 1) - BIAS + 1 - lz)]

        exp_out, frac_out = round_pack(m, norm, e, 0, "mul")

        with m.If(nan | (inf_a & zero_b) | (inf_b & zero_a)):
            m.d.comb += self.y.eq(CANONICAL_NAN)
        with m.Elif(inf_a | inf_b | (exp_out >= 0xFF)):
            m.d.comb += self.y.eq(Cat(Const(0, 23), Const(0xFF, 8), sign))
        with m.Elif(zero_a | zero_b):
            m.d.comb += self.y.eq(Cat(Const(0, 31), sign))
        with m.Else():
            m.d.comb += self.y.eq(Cat(frac_out, exp_out[:8], sign))
        return m

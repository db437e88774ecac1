"""The vector unit's fp32 adder (docs/HW.md, "The vector unit"): a + b or a - b in IEEE binary32, round to nearest
even, subnormal inputs and results kept, a NaN result as the canonical quiet NaN 0x7FC00000 (what a VEC or KV
write stores). Bit-exact with numpy's float32 addition, which is what codegen/fpga/vector_unit.py computes.

Combinational, in the textbook steps: unpack; order by magnitude; align the smaller significand with guard,
round and sticky bits; add or subtract; normalise (a carry shifts right, a cancellation shifts left by the leading
zero count, never below the smallest exponent, which is how subnormal results come out); round half to even.
The vector lanes will register it between steps (phase 2); the arithmetic stays this.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

CANONICAL_NAN = 0x7FC00000
FRAC = 23          # fraction bits
EXTRA = 3          # guard, round, sticky below the significand while it is aligned and added


class FpAdder(wiring.Component):
    """`y = a + b`, or `a - b` when `sub`: fp32 bit patterns in and out."""

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "sub": In(1), "y": Out(32)})

    def elaborate(self, platform) -> Module:
        m = Module()
        width = 1 + 1 + FRAC + EXTRA            # carry, hidden bit, fraction, guard / round / sticky: 28 bits

        def unpack(x, name: str, flip=None):
            sign = Signal(name=f"{name}_sign")
            m.d.comb += sign.eq(x[31] ^ (flip if flip is not None else 0))
            exp, frac = x[23:31], x[0:23]
            normal = exp != 0
            sig = Cat(frac, normal)                       # 24 bits with the hidden bit
            eff = Mux(normal, exp, 1)                     # a subnormal's exponent is the smallest one's
            return sign, exp, frac, sig, eff

        sa, ea_raw, fa, siga, ea = unpack(self.a, "a")
        sb, eb_raw, fb, sigb, eb = unpack(self.b, "b", self.sub)
        nan_a = (ea_raw == 0xFF) & (fa != 0)
        nan_b = (eb_raw == 0xFF) & (fb != 0)
        inf_a = (ea_raw == 0xFF) & (fa == 0)
        inf_b = (eb_raw == 0xFF) & (fb == 0)

        # Order by magnitude: x is the larger (the exponent and fraction bits compare as one unsigned number).
        swap = self.b[0:31] > self.a[0:31]
        sx, ex, sigx = Signal(), Signal(8), Signal(24)
        sy, ey, sigy = Signal(), Signal(8), Signal(24)
        m.d.comb += [sx.eq(Mux(swap, sb, sa)), ex.eq(Mux(swap, eb, ea)), sigx.eq(Mux(swap, sigb, siga)),
                     sy.eq(Mux(swap, sa, sb)), ey.eq(Mux(swap, ea, eb)), sigy.eq(Mux(swap, siga, sigb))]

        # Align y to x: shift right by the exponent difference, the bits shifted out ORed into the sticky bit.
        d = Signal(8)
        m.d.comb += d.eq(ex - ey)
        y_ext = Cat(Const(0, EXTRA), sigy)                # 27 bits
        shifted = Signal(width - 1)
        sticky = Signal()
        far = d >= width - 1
        m.d.comb += shifted.eq(Mux(far, 0, y_ext >> d))
        m.d.comb += sticky.eq(Mux(far, sigy != 0, (shifted << d)[:width - 1] != y_ext))   # shifting back loses bits
        y_al = Cat(shifted[0] | sticky, shifted[1:], Const(0, 1))
        x_al = Cat(Const(0, EXTRA), sigx, Const(0, 1))    # 28 bits

        # Add or subtract (x >= y in magnitude, so the difference is not negative).
        r = Signal(width)
        m.d.comb += r.eq(Mux(sx == sy, x_al + y_al, x_al - y_al))

        # Normalise: a carry shifts right by one (the lost bit kept sticky); else shift left by the leading zeros
        # above the hidden bit's place, at most down to exponent 1 (below it the result is subnormal).
        lz = Signal(range(width + 1))
        for i in range(width - 1):                        # the highest set bit below the carry wins (last assignment)
            with m.If(r[i]):
                m.d.comb += lz.eq(width - 2 - i)
        with m.If(r == 0):
            m.d.comb += lz.eq(width)
        norm = Signal(width)
        e = Signal(10)                                   # room for overflow past 254
        shift = Signal(range(width + 1))
        with m.If(r[width - 1]):
            m.d.comb += [norm.eq(Cat(r[1] | r[0], r[2:], Const(0, 1))), e.eq(ex + 1)]
        with m.Else():
            m.d.comb += shift.eq(Mux(lz < ex, lz, ex - 1))
            m.d.comb += [norm.eq(r << shift), e.eq(ex - shift)]

        # Round half to even on the guard bit, with round and sticky below it.
        mant = norm[EXTRA:EXTRA + 24]                    # hidden bit and fraction
        guard, rest = norm[2], norm[1] | norm[0]
        up = guard & (rest | mant[0])
        rounded = Signal(25)
        m.d.comb += rounded.eq(mant + up)
        e2 = Signal(10)
        frac_out = Signal(23)
        with m.If(rounded[24]):                          # 1.111..1 rounded up to 10.000..0
            m.d.comb += [e2.eq(e + 1), frac_out.eq(rounded[1:24])]
        with m.Else():
            m.d.comb += [e2.eq(Mux(rounded[23], e, 0)), frac_out.eq(rounded[0:23])]   # no hidden bit: subnormal

        result = Signal(32)
        with m.If(nan_a | nan_b | (inf_a & inf_b & (sa != sb))):
            m.d.comb += result.eq(CANONICAL_NAN)
        with m.Elif(inf_a | inf_b):
            m.d.comb += result.eq(Cat(Const(0, 23), Const(0xFF, 8), Mux(inf_a, sa, sb)))
        with m.Elif(r == 0):                             # an exact zero: -0 only for -0 + -0 (round to nearest)
            m.d.comb += result.eq(Cat(Const(0, 31), sa & sb))
        with m.Elif(e2 >= 0xFF):
            m.d.comb += result.eq(Cat(Const(0, 23), Const(0xFF, 8), sx))
        with m.Else():
            m.d.comb += result.eq(Cat(frac_out, e2[:8], sx))
        m.d.comb += self.y.eq(result)
        return m

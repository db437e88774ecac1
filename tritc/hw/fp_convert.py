"""The vector unit's conversions (docs/ISA.md, "VOP"): reading ACT or ACC gives the int8 / int32 as fp32, rounded to
nearest even; writing ACT or ACC stores `sat8(rne(x))` / `sat32(rne(x))`, NaN as 0 and infinities saturated; and
ROUND, an fp32 rounded to an integer half to even. Bit-exact with the Simulator (numpy's int32 -> float32
conversion, fpga_steps.store_result, numpy's rint). Combinational.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .fp_add import CANONICAL_NAN

BIAS = 127


class IntToFp(wiring.Component):
    """`y` = the fp32 nearest `x` (a signed 32-bit integer; an int8 arrives sign-extended), ties to even."""

    def __init__(self):
        super().__init__({"x": In(signed(32)), "y": Out(32)})

    def elaborate(self, platform) -> Module:
        m = Module()
        x = self.x
        sign = x[31]
        mag = Signal(32)                                   # |x|: -2^31 has magnitude 2^31, which fits unsigned
        m.d.comb += mag.eq(Mux(sign, -x, x))
        lz = Signal(range(33))
        for i in range(32):                                # the highest set bit wins (the last assignment)
            with m.If(mag[i]):
                m.d.comb += lz.eq(31 - i)
        norm = Signal(32)                                  # the leading one at bit 31
        m.d.comb += norm.eq(mag << lz)
        mant, guard, sticky = norm[8:32], norm[7], norm[0:7] != 0
        rounded = Signal(25)
        m.d.comb += rounded.eq(mant + (guard & (sticky | mant[0])))
        exp = Signal(9)
        m.d.comb += exp.eq(BIAS + 31 - lz + rounded[24])   # a carry out of rounding is one more power of two
        frac = Mux(rounded[24], rounded[1:24], rounded[0:23])
        m.d.comb += self.y.eq(Mux(mag == 0, 0, Cat(frac, exp[:8], sign)))
        return m


class FpToInt(wiring.Component):
    """`y` = `a` (an fp32) rounded half to even and saturated to a signed `bits`-bit integer (8 for ACT, 32 for
    ACC); NaN gives 0."""

    def __init__(self, bits: int):
        if bits not in (8, 32):
            raise ValueError(f"converts to int8 or int32, not int{bits}")
        self.bits = bits
        super().__init__({"a": In(32), "y": Out(signed(bits))})

    def elaborate(self, platform) -> Module:
        m = Module()
        a = self.a
        sign, exp, frac = a[31], a[23:31], a[0:23]
        sig = Cat(frac, exp != 0)                          # 24 bits; a subnormal is far below 0.5 and rounds to 0
        hi = (1 << (self.bits - 1)) - 1                    # the largest magnitude of the positive side
        # |a| = sig * 2^(exp - 150). Below 2^31 the integer part is sig >> (150 - exp) (exp < 150) or sig << (exp -
        # 150); at or above 2^31 (exp >= 158) every result saturates, so a 32-bit magnitude is enough.
        mag = Signal(33)
        small = exp < 150
        rsh = Signal(range(256))
        m.d.comb += rsh.eq(Mux(small, 150 - exp, 0))
        ext = Cat(Const(0, 2), sig)                        # two bits below: guard and sticky positions
        shifted = Signal(26)
        m.d.comb += shifted.eq(Mux(rsh > 25, 0, ext >> rsh))
        lost = Mux(rsh > 25, sig != 0, (shifted << rsh)[:26] != ext)
        whole, guard = shifted[2:26], shifted[1]
        sticky = shifted[0] | lost
        with m.If(small):
            m.d.comb += mag.eq(whole + (guard & (sticky | whole[0])))
        with m.Elif(exp < 158):
            m.d.comb += mag.eq(sig << (exp - 150)[:3])
        with m.Else():
            m.d.comb += mag.eq(1 << 32)                    # saturates whatever the sign
        nan = (exp == 0xFF) & (frac != 0)
        with m.If(nan):
            m.d.comb += self.y.eq(0)
        with m.Elif(sign):
            m.d.comb += self.y.eq(Mux(mag > hi + 1, -(hi + 1), -mag))
        with m.Else():
            m.d.comb += self.y.eq(Mux(mag > hi, hi, mag))
        return m


class FpRound(wiring.Component):
    """ROUND: `y` = `a` rounded to an integer, half to even, as an fp32 (the sign kept: -0.3 gives -0; NaN
    canonical). The fraction bits below the units are cleared and the rounding carry added to the magnitude bits
    as an integer: the encoding is monotonic, so a carry out of the fraction moves into the exponent by itself."""

    def __init__(self):
        super().__init__({"a": In(32), "y": Out(32)})

    def elaborate(self, platform) -> Module:
        m = Module()
        a = self.a
        sign, exp, frac = a[31], a[23:31], a[0:23]
        mag = a[0:31]
        k = Signal(range(24))                               # fraction bits below the units, for 127 <= exp < 150
        m.d.comb += k.eq(Mux((exp >= 127) & (exp < 150), 150 - exp, 0))
        below = Signal(31)                                  # the bits that are fraction of a unit
        m.d.comb += below.eq(mag & ((Const(1, 31) << k) - 1))
        half = Signal(31)
        m.d.comb += half.eq(Mux(k == 0, 0, Const(1, 31) << (k - 1)[:5]))
        odd = (mag >> k)[0]
        up = (below > half) | ((below == half) & (k != 0) & odd)
        rounded = Signal(31)
        m.d.comb += rounded.eq((mag - below) + Mux(up, Const(1, 31) << k, 0))
        with m.If((exp == 0xFF) & (frac != 0)):
            m.d.comb += self.y.eq(CANONICAL_NAN)
        with m.Elif(exp >= 150):                            # already an integer (or infinite)
            m.d.comb += self.y.eq(a)
        with m.Elif(exp == 126):                            # [0.5, 1): 0.5 to 0 (even), above it to 1
            m.d.comb += self.y.eq(Cat(Mux(frac != 0, Const(0x3F800000, 31), Const(0, 31)), sign))
        with m.Elif(exp < 126):                             # below 0.5: a zero of the same sign
            m.d.comb += self.y.eq(Cat(Const(0, 31), sign))
        with m.Else():
            m.d.comb += self.y.eq(Cat(rounded, sign))
        return m

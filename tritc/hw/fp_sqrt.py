"""The vector unit's square root (docs/ISA.md: SQRT, correctly rounded): sqrt(a) in IEEE binary32, round to
nearest even, subnormal inputs kept, NaN canonical. Bit-exact with numpy's float32 square root.

The digit recurrence of fp_div.py's divider, for a root: the operand normalised (a subnormal's leading zeros
counted off its exponent), its significand doubled when the exponent is odd, then the integer square root of it
times 2^27, one root bit per cycle (26 bits), the final remainder as the sticky bit, and fp_round's rounding.
A square root is never subnormal nor overflows. NaN, and any negative but -0, give NaN; +-0 and +inf themselves.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .fp_add import CANONICAL_NAN
from .fp_div import QUOTIENT_BITS, digit_recurrence, normalised
from .fp_round import round_pack

RADICAND_BITS = 2 * QUOTIENT_BITS      # the significand (25 bits at most) shifted up by 27


class FpSqrt(wiring.Component):
    """`inp`: an fp32; `out`: its square root, each in `QUOTIENT_BITS + 2` cycles."""

    def __init__(self):
        super().__init__({"inp": In(stream.Signature(32)), "out": Out(stream.Signature(32))})

    def elaborate(self, platform) -> Module:
        m = Module()
        a = self.inp.payload
        nan = ((a[23:31] == 0xFF) & (a[0:23] != 0)) | (a[31] & (a[0:31] != 0))
        passthrough = (a[0:31] == 0) | (a == 0x7F800000)       # +-0 and +inf are their own roots
        sig, ea = normalised(m, a, "a")
        unbiased = Signal(signed(11))
        m.d.comb += unbiased.eq(ea - 127)
        odd = unbiased[0]

        radicand = Signal(RADICAND_BITS)      # consumed two bits at a time from the top
        rem = Signal(QUOTIENT_BITS + 2)
        root = Signal(QUOTIENT_BITS)
        e = Signal(signed(12))
        step = Cat(radicand[-2:], rem)[:QUOTIENT_BITS + 2]   # rem * 4 + the next two bits
        trial = Cat(Const(1, 2), root)                        # root * 4 + 1
        fits = step >= trial

        def finish():
            # root has its leading one at the top: value = root / 2^25 * 2^e; rem != 0 is the sticky bit.
            exp_out, frac_out = round_pack(m, root, e + 127, rem != 0, "sqrt")
            return Cat(frac_out, exp_out[:8], Const(0, 1))

        digit_recurrence(
            m, self.inp, self.out, Mux(nan, CANONICAL_NAN, a), bypass=nan | passthrough,
            load=[radicand.eq(Cat(Const(0, 27), Mux(odd, sig << 1, sig))), rem.eq(0), root.eq(0),
                  e.eq((unbiased - odd).as_signed() >> 1)],
            step=[rem.eq(Mux(fits, step - trial, step)), root.eq(Cat(fits, root[:-1])), radicand.eq(radicand << 2)],
            finish=finish)
        return m

"""The vector unit's shared divider (docs/ISA.md: DIV and RECIP, correctly rounded): a / b in IEEE binary32, round
to nearest even, subnormals kept, a NaN result canonical. Bit-exact with numpy's float32 division.

Iterative, one quotient bit per cycle by restoring division (a digit recurrence: the remainder says exactly
whether anything is left, so the result rounds correctly, which a Newton-Raphson reciprocal would not guarantee).
Operands are normalised first (a subnormal's leading zeros counted off its exponent); 26 quotient bits, the
remainder as the sticky bit, then fp_round's rounding. A stream in, a stream out: one division at a time, 28
cycles each. Phase 3 makes it radix 4 and pipelined, and adds the square root to the same recurrence.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .fp_add import CANONICAL_NAN
from .fp_round import round_pack

OPERANDS = data.StructLayout({"a": 32, "b": 32})
QUOTIENT_BITS = 26       # 24 kept, a guard, one more so that a subnormal shift still sees a guard from the quotient


def normalised(m: Module, x, name: str):
    """(significand with its leading one at bit 23, exponent of that bit): subnormals normalised by their lz."""
    exp, frac = x[23:31], x[0:23]
    sig = Cat(frac, exp != 0)
    lz = Signal(range(25), name=f"{name}_lz")
    for i in range(24):                          # the highest set bit wins (the last assignment)
        with m.If(sig[i]):
            m.d.comb += lz.eq(23 - i)
    norm = Signal(24, name=f"{name}_sig")
    e = Signal(signed(11), name=f"{name}_exp")
    m.d.comb += [norm.eq(sig << lz), e.eq(Mux(exp != 0, exp, 1) - lz)]
    return norm, e


def digit_recurrence(m: Module, inp, out, bypass_value, *, bypass, load, step, finish) -> None:
    """The control both recurrences share: take an operand from `inp` and run `load`; unless `bypass` (a special
    operand, whose result `bypass_value` is), run `step` for QUOTIENT_BITS cycles, then `finish()` (the rounded
    result, built in its own cycle); offer the result on `out` until taken."""
    count = Signal(range(QUOTIENT_BITS + 1))
    result = Signal(32)
    with m.FSM():
        with m.State("idle"):
            m.d.comb += inp.ready.eq(1)
            with m.If(inp.valid):
                m.d.sync += [*load, count.eq(0), result.eq(bypass_value)]
                with m.If(bypass):
                    m.next = "done"
                with m.Else():
                    m.next = "iterate"
        with m.State("iterate"):
            m.d.sync += [*step, count.eq(count + 1)]
            with m.If(count == QUOTIENT_BITS - 1):
                m.next = "round"
        with m.State("round"):
            m.d.sync += result.eq(finish())
            m.next = "done"
        with m.State("done"):
            m.d.comb += [out.valid.eq(1), out.payload.eq(result)]
            with m.If(out.ready):
                m.next = "idle"


class FpDivider(wiring.Component):
    """`inp`: pairs (a, b); `out`: a / b, each in `QUOTIENT_BITS + 2` cycles."""

    def __init__(self):
        super().__init__({"inp": In(stream.Signature(OPERANDS)), "out": Out(stream.Signature(32))})

    def elaborate(self, platform) -> Module:
        m = Module()
        a, b = self.inp.payload.a, self.inp.payload.b
        nan_a = (a[23:31] == 0xFF) & (a[0:23] != 0)
        nan_b = (b[23:31] == 0xFF) & (b[0:23] != 0)
        inf_a, inf_b = (a[23:31] == 0xFF) & (a[0:23] == 0), (b[23:31] == 0xFF) & (b[0:23] == 0)
        zero_a, zero_b = a[0:31] == 0, b[0:31] == 0
        sign = a[31] ^ b[31]
        siga, ea = normalised(m, a, "a")
        sigb, eb = normalised(m, b, "b")
        special = Signal(32)                     # the result when it does not need the recurrence
        is_special = Signal()
        inf = Cat(Const(0, 23), Const(0xFF, 8), sign)
        zero = Cat(Const(0, 31), sign)
        with m.If(nan_a | nan_b | (zero_a & zero_b) | (inf_a & inf_b)):
            m.d.comb += [is_special.eq(1), special.eq(CANONICAL_NAN)]
        with m.Elif(inf_a | zero_b):
            m.d.comb += [is_special.eq(1), special.eq(inf)]
        with m.Elif(zero_a | inf_b):
            m.d.comb += [is_special.eq(1), special.eq(zero)]

        # State of one division.
        rem = Signal(26)                         # < 2 * divisor: one bit more than it
        div = Signal(24)
        quo = Signal(QUOTIENT_BITS)
        e = Signal(signed(12))
        s = Signal()
        low = siga < sigb                        # a's significand doubled when below b's: the first bit is then 1
        fits = rem >= div

        def finish():
            # quo has its leading one at the top: value = quo / 2^25 * 2^(e - 127); rem != 0 is the sticky bit.
            exp_out, frac_out = round_pack(m, quo, e, rem != 0, "div")
            return Mux(exp_out >= 0xFF, Cat(Const(0, 23), Const(0xFF, 8), s), Cat(frac_out, exp_out[:8], s))

        digit_recurrence(
            m, self.inp, self.out, special, bypass=is_special,
            load=[rem.eq(Mux(low, siga << 1, siga)), div.eq(sigb), quo.eq(0), s.eq(sign), e.eq(ea - eb + 127 - low)],
            step=[quo.eq(Cat(fits, quo[:-1])), rem.eq(Mux(fits, rem - div, rem) << 1)],
            finish=finish)
        return m

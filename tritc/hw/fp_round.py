"""The one rounding step the fp32 units share: a normalised significand with extra bits, its exponent and a sticky
bit to an fp32 exponent and fraction, round half to even, subnormal results included (docs/HW.md)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed


def round_pack(m: Module, norm: Value, e: Value, sticky_in: Value, name: str) -> tuple[Signal, Signal]:
    """`norm` (W >= 26 bits, its leading one at bit W - 1, or all zero) times 2^(e - 127), plus less than one unit
    of its last bit when `sticky_in`: the rounded (exponent, fraction), the exponent 255 or more on overflow. Below
    the smallest exponent the significand is shifted right by 1 - e first, the bits lost kept sticky."""
    W = len(norm)
    rshift = Signal(range(W + 3), name=f"{name}_rshift")
    m.d.comb += rshift.eq(Mux(e >= 1, 0, Mux(e < -W, W + 2, 1 - e)))
    shifted = Signal(W, name=f"{name}_shifted")
    m.d.comb += shifted.eq(norm >> rshift)
    lost = (shifted << rshift)[:W] != norm
    mant, guard = shifted[W - 24:W], shifted[W - 25]
    sticky = (shifted[0:W - 25] != 0) | lost | sticky_in
    rounded = Signal(25, name=f"{name}_rounded")
    m.d.comb += rounded.eq(mant + (guard & (sticky | mant[0])))
    exp_out = Signal(signed(12), name=f"{name}_exp")
    frac_out = Signal(23, name=f"{name}_frac")
    base = Mux(e >= 1, e, 1)                     # a subnormal result sits at the smallest exponent
    with m.If(rounded[24]):                      # 1.11..1 rounded up to 10.00..0
        m.d.comb += [exp_out.eq(base + 1), frac_out.eq(rounded[1:24])]
    with m.Else():                               # no hidden bit: a subnormal (or zero) result
        m.d.comb += [exp_out.eq(Mux(rounded[23], base, 0)), frac_out.eq(rounded[0:23])]
    return exp_out, frac_out

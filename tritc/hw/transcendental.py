"""The vector unit's sequenced functions (docs/ISA.md, "VOP"; docs/HW.md, "The transcendental unit"): EXP, SIN, COS,
TANH and ERF of an fp32, bit for bit as codegen/fpga/vector_unit.py computes them, NaN canonical.

A sequencer runs the microprogram of transcendental_program.py: a ROM of steps, one a cycle, each one operation
(rounded to fp32) on eight registers and a constant, through the phase-1 units: one FpAdder, one FpMultiplier,
FpRound, FpToInt, two FpCompares and the shared-style FpDivider (a DIV step waits for it). The only new arithmetic
is EXP's scaling `p * 2^n`: an exponent add, or the RNE right shift of fp_round's `round_pack` when subnormal.
One element at a time, in order; one instance serves a lane.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga import vector_unit as vu
from .fp_add import CANONICAL_NAN, FpAdder
from .fp_compare import FpCompare
from .fp_convert import FpRound, FpToInt
from .fp_div import FpDivider, normalised
from .fp_mul import FpMultiplier
from .fp_round import round_pack
from .transcendental_program import PROGRAMS, REGISTERS, Op, Step, bits

INPUT = data.StructLayout({"func": 6, "a": 32})        # func: the VFunc code (EXP 12, SIN 13, COS 14, TANH 15, ERF 16)
STEP = data.StructLayout({"op": 4, "dst": 3, "a": 3, "b": 3, "a_k": 1, "b_k": 1, "k": 32, "last": 1})
INF = 0x7F800000


def rom() -> tuple[list[int], dict[int | None, int]]:
    """The programs one after another as STEP words, and each one's first address."""
    words, entry = [], {}
    for func, program in PROGRAMS.items():
        entry[func] = len(words)
        for i, s in enumerate(program):
            words.append(encode(s, last=i == len(program) - 1))
    return words, entry


def encode(s: Step, last: bool) -> int:
    def reg(x):
        return 0 if not isinstance(x, int) else x

    fields = {"op": int(s.op), "dst": s.dst, "a": reg(s.a), "b": reg(s.b), "a_k": not isinstance(s.a, int),
              "b_k": not isinstance(s.b, int), "k": s.constant(), "last": last}
    word = 0
    for name, field in STEP:
        word |= (int(fields[name]) & ((1 << field.width) - 1)) << field.offset
    return word


class Transcendental(wiring.Component):
    """`inp`: (func, a); `out`: func(a), one result per input in order. Cycles per element: `cycles_per_element`."""

    def __init__(self):
        super().__init__({"inp": In(stream.Signature(INPUT)), "out": Out(stream.Signature(32))})

    def elaborate(self, platform) -> Module:
        m = Module()
        words, entry = rom()
        add = m.submodules.add = FpAdder()
        mul = m.submodules.mul = FpMultiplier()
        rnd = m.submodules.round = FpRound()
        to_int = m.submodules.to_int = FpToInt(32)
        cmp_lo = m.submodules.cmp_lo = FpCompare()
        cmp_hi = m.submodules.cmp_hi = FpCompare()
        div = m.submodules.div = FpDivider()

        pc = Signal(range(len(words)))
        step = data.View(STEP, Signal(STEP.size, name="step"))
        m.d.comb += step.as_value().eq(Array(Const(w, STEP.size) for w in words)[pc])
        regs = Array(Signal(32, name=f"r{i}") for i in range(REGISTERS))
        a = Signal(32)
        b = Signal(32)
        m.d.comb += [a.eq(Mux(step.a_k, step.k, regs[step.a])), b.eq(Mux(step.b_k, step.k, regs[step.b]))]
        op = step.op
        lo, hi = Signal(), Signal()        # EXP's input below / above its range (CLAMP sets, SCALE reads)
        q = Signal(2)                      # SIN / COS: the quadrant

        m.d.comb += [add.a.eq(a), add.b.eq(b), add.sub.eq(op == Op.SUB), mul.a.eq(a), mul.b.eq(b), rnd.a.eq(a),
                     to_int.a.eq(b),
                     cmp_lo.a.eq(a), cmp_lo.b.eq(bits(vu.EXP_LO)),                       # a < EXP_LO
                     cmp_hi.a.eq(step.k), cmp_hi.b.eq(Cat(a[0:31], a[31] & (op != Op.TANHSEL))),   # k < a, k < |a|
                     div.inp.payload.a.eq(a), div.inp.payload.b.eq(b)]

        # SCALE: a * 2^n, n = int(b) in [-126, 128] (EXP's range), rounded once by the multiplier's rounding step.
        sig, e = normalised(m, a, "scale")
        exp_out, frac_out = round_pack(m, Cat(Const(0, 2), sig), e + to_int.y, 0, "scale")
        a_nan = (a[23:31] == 0xFF) & (a[0:23] != 0)
        a_inf = (a[23:31] == 0xFF) & (a[0:23] == 0)
        scaled = Signal(32)
        with m.If(a_nan):
            m.d.comb += scaled.eq(CANONICAL_NAN)
        with m.Elif(a_inf | (exp_out >= 0xFF)):
            m.d.comb += scaled.eq(Cat(Const(INF, 31), a[31]))
        with m.Elif(a[0:31] == 0):
            m.d.comb += scaled.eq(a)
        with m.Else():
            m.d.comb += scaled.eq(Cat(frac_out, exp_out[:8], a[31]))

        sel = Mux(q[0], b, a)
        y = Signal(32)
        with m.Switch(op):
            for o, value in [(Op.MOV, a), (Op.ADD, add.y), (Op.SUB, add.y), (Op.MUL, mul.y), (Op.RINT, rnd.y),
                             (Op.DIV, div.out.payload), (Op.ABS, Cat(a[0:31], 0)), (Op.NEG, Cat(a[0:31], ~a[31])),
                             (Op.CLAMP, Mux(cmp_lo.lt | cmp_hi.lt, 0, a)),
                             (Op.SCALE, Mux(lo, 0, Mux(hi, INF, scaled))),
                             (Op.SINSEL, Cat(sel[0:31], sel[31] ^ q[1])),
                             (Op.TANHSEL, Mux(cmp_hi.lt, Cat(Const(0x3F800000, 31), a[31]), b)),
                             (Op.COPYSIGN, Cat(a[0:31], b[31]))]:
                with m.Case(o):
                    m.d.comb += y.eq(value)

        # The sequencer: take an input, run its program a step a cycle (a DIV step until the divider answers),
        # hold the result until taken. A new input is taken as the result before it leaves.
        busy = Signal()
        full = Signal()
        result = Signal(32)
        div_sent = Signal()
        m.d.comb += [self.out.valid.eq(full), self.out.payload.eq(result),
                     self.inp.ready.eq(~busy & (~full | self.out.ready))]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += full.eq(0)
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [regs[0].eq(self.inp.payload.a), busy.eq(1)]
            with m.Switch(self.inp.payload.func):
                for func, start in entry.items():
                    if func is not None:
                        with m.Case(func):
                            m.d.sync += pc.eq(start)
                with m.Default():
                    m.d.sync += pc.eq(entry[None])

        is_div = op == Op.DIV
        m.d.comb += [div.inp.valid.eq(busy & is_div & ~div_sent), div.out.ready.eq(busy & is_div & div_sent)]
        with m.If(div.inp.valid & div.inp.ready):
            m.d.sync += div_sent.eq(1)
        advance = busy & (~is_div | (div_sent & div.out.valid))
        with m.If(advance):
            m.d.sync += div_sent.eq(0)
            with m.If(op != Op.QUAD):
                m.d.sync += regs[step.dst].eq(y)
            with m.If(op == Op.CLAMP):
                m.d.sync += [lo.eq(cmp_lo.lt), hi.eq(cmp_hi.lt)]
            with m.If(op == Op.QUAD):          # |b| >= 2^31 (or not finite): a multiple of 4 (or irrelevant: r is NaN)
                m.d.sync += q.eq(Mux(b[23:31] >= 158, 0, to_int.y[0:2]) + step.k[23])    # k is 1.0 or 0.0
            with m.If(step.last):
                nan = (y[23:31] == 0xFF) & (y[0:23] != 0)
                m.d.sync += [result.eq(Mux(nan, CANONICAL_NAN, y)), full.eq(1), busy.eq(0)]
            with m.Else():
                m.d.sync += pc.eq(pc + 1)
        return m

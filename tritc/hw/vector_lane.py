"""One lane of the vector unit for the functions that take one pass (docs/ISA.md, "VOP"): COPY, FILL, ADD, SUB,
MUL, MAX, MIN, NEG, ABS, WHERE, ROUND, RELU, LT, EQ, from the units of fp_add, fp_mul, fp_compare and fp_convert.
`a` is src1, `b` src2 or the immediate (the operand reader chooses), `imm` the immediate; operands read from ACT or
ACC arrive converted (IntToFp) and results for them leave through FpToInt. A NaN result leaves as the canonical
NaN, what a VEC or KV write stores. The iterative (DIV, RECIP, SQRT), sequenced (EXP, SIN, COS, TANH, ERF) and
reducing (RSUM, RMAX, MM) functions and REQ are outside it (`single_pass` is 0 for them). Combinational.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import VFunc
from .fp_add import CANONICAL_NAN, FpAdder
from .fp_compare import FpCompare
from .fp_convert import FpRound
from .fp_mul import FpMultiplier

ONE = 0x3F800000
SINGLE_PASS = (VFunc.COPY, VFunc.FILL, VFunc.ADD, VFunc.SUB, VFunc.MUL, VFunc.MAX, VFunc.MIN, VFunc.NEG, VFunc.ABS,
               VFunc.WHERE, VFunc.ROUND, VFunc.RELU, VFunc.LT, VFunc.EQ)


class VectorLane(wiring.Component):
    """`y` = func(a, b, imm) for the SINGLE_PASS functions; `single_pass` says whether `func` is one of them."""

    def __init__(self):
        super().__init__({"func": In(6), "a": In(32), "b": In(32), "imm": In(32), "y": Out(32),
                          "single_pass": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        a, b, func = self.a, self.b, self.func
        add = m.submodules.add = FpAdder()
        mul = m.submodules.mul = FpMultiplier()
        cmp = m.submodules.cmp = FpCompare()
        rnd = m.submodules.round = FpRound()
        m.d.comb += [add.a.eq(a), add.b.eq(b), add.sub.eq(func == VFunc.SUB),
                     mul.a.eq(a), mul.b.eq(b),
                     cmp.a.eq(a), cmp.b.eq(Mux(func == VFunc.RELU, 0, b)),    # RELU is MAX with +0
                     rnd.a.eq(a)]
        r = Signal(32)
        with m.Switch(func):
            for f, value in [(VFunc.COPY, a), (VFunc.FILL, self.imm), (VFunc.ADD, add.y), (VFunc.SUB, add.y),
                             (VFunc.MUL, mul.y), (VFunc.MAX, cmp.max), (VFunc.RELU, cmp.max), (VFunc.MIN, cmp.min),
                             (VFunc.NEG, Cat(a[0:31], ~a[31])), (VFunc.ABS, Cat(a[0:31], 0)),
                             (VFunc.WHERE, Mux(b[0:31] != 0, a, self.imm)),       # b != 0: a NaN b is not 0
                             (VFunc.ROUND, rnd.y), (VFunc.LT, Mux(cmp.lt, ONE, 0)), (VFunc.EQ, Mux(cmp.eq, ONE, 0))]:
                with m.Case(f):
                    m.d.comb += [r.eq(value), self.single_pass.eq(1)]
        nan = (r[23:31] == 0xFF) & (r[0:23] != 0)
        m.d.comb += self.y.eq(Mux(nan, CANONICAL_NAN, r))
        return m

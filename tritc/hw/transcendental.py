"""The vector unit's sequenced functions (docs/ISA.md, "VOP"; docs/HW.md, "The transcendental unit"): EXP, SIN, COS,
TANH and ERF of an fp32, bit for bit as codegen/fpga/vector_unit.py computes them, NaN canonical.

A sequencer runs the microprogram of transcendental_program.py: a ROM of steps, one a cycle, each one operation
(rounded to fp32; a MAD step is a multiply and an add, each rounded) on eight registers and a constant, through the
phase-1 units: an FpAdder, an FpMultiplier, FpRound, FpToInt, two FpCompares and an FpDivider (a DIV step waits for
it). The only new arithmetic is EXP's scaling `p * 2^n` (ExpScale): an exponent add, or the RNE right shift of
fp_round's `round_pack` when subnormal. One element at a time, in order; one instance serves a lane.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga import vector_unit as vu
from ..codegen.fpga.timing import TRANSCENDENTAL_GROUPS
from .fp_add import CANONICAL_NAN, FpAdder
from .fp_compare import FpCompare
from .fp_convert import FpRound, FpToInt
from .fp_div import FpDivider, normalised
from .fp_mul import FpMultiplier
from .fp_round import round_pack
from .transcendental_program import PROGRAMS, REGISTERS, Op, Step, bits

INPUT = data.StructLayout({"func": 6, "a": 32})        # func: the VFunc code (EXP 12, SIN 13, COS 14, TANH 15, ERF 16)
STEP = data.StructLayout({"op": 4, "dst": 3, "a": 3, "b": 3, "c": 3, "a_k": 1, "b_k": 1, "c_k": 1, "k": 32,
                          "last": 1})
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

    fields = {"op": int(s.op), "dst": s.dst, "a": reg(s.a), "b": reg(s.b), "c": reg(s.c),
              "a_k": not isinstance(s.a, int), "b_k": not isinstance(s.b, int), "c_k": not isinstance(s.c, int),
              "k": s.constant(), "last": last}
    word = 0
    for name, field in STEP:
        word |= (int(fields[name]) & ((1 << field.width) - 1)) << field.offset
    return word


class ExpScale(wiring.Component):
    """EXP's last step, `p * 2^n` rounded once (n an integer in EXP's [-126, 128]): the exponent add, or the
    multiplier's rounding step shifting right to nearest even when the result is subnormal; +inf past the largest."""

    def __init__(self):
        super().__init__({"p": In(32), "n": In(signed(10)), "y": Out(32)})

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.p
        sig, e = normalised(m, p, "p")
        exp_out, frac_out = round_pack(m, Cat(Const(0, 2), sig), e + self.n, 0, "scale")
        with m.If((p[23:31] == 0xFF) & (p[0:23] != 0)):
            m.d.comb += self.y.eq(CANONICAL_NAN)
        with m.Elif((p[23:31] == 0xFF) | (exp_out >= 0xFF)):
            m.d.comb += self.y.eq(Cat(Const(INF, 31), p[31]))
        with m.Elif(p[0:31] == 0):
            m.d.comb += self.y.eq(p)
        with m.Else():
            m.d.comb += self.y.eq(Cat(frac_out, exp_out[:8], p[31]))
        return m


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
        scale = m.submodules.scale = ExpScale()

        pc = Signal(range(len(words)))
        step = data.View(STEP, Signal(STEP.size, name="step"))
        m.d.comb += step.as_value().eq(Array(Const(w, STEP.size) for w in words)[pc])
        regs = Array(Signal(32, name=f"r{i}") for i in range(REGISTERS))
        a, b, c = Signal(32), Signal(32), Signal(32)
        m.d.comb += [a.eq(Mux(step.a_k, step.k, regs[step.a])), b.eq(Mux(step.b_k, step.k, regs[step.b])),
                     c.eq(Mux(step.c_k, step.k, regs[step.c]))]
        op = step.op
        lo, hi = Signal(), Signal()        # EXP's input below / above its range (CLAMP sets, SCALE reads)
        q = Signal(2)                      # SIN / COS: the quadrant

        # Each unit sees its operands only in the steps that use it (0 otherwise): the others' inputs stay still.
        def uses(*ops):
            return Cat(*(op == o for o in ops)).any()

        fused = uses(Op.MAD, Op.MSB)
        use_mul, use_add = uses(Op.MUL, Op.MAD, Op.MSB), uses(Op.ADD, Op.SUB, Op.MAD, Op.MSB)
        use_int, use_cmp = uses(Op.SCALE, Op.QUAD), uses(Op.CLAMP, Op.TANHSEL)
        m.d.comb += [mul.a.eq(Mux(use_mul, a, 0)), mul.b.eq(Mux(use_mul, b, 0)),
                     add.a.eq(Mux(use_add, Mux(fused, c, a), 0)), add.b.eq(Mux(use_add, Mux(fused, mul.y, b), 0)),
                     add.sub.eq(uses(Op.SUB, Op.MSB)),
                     rnd.a.eq(Mux(op == Op.RINT, a, 0)),
                     to_int.a.eq(Mux(use_int, b, 0)),
                     scale.p.eq(Mux(op == Op.SCALE, a, 0)), scale.n.eq(to_int.y),     # n: EXP's [-126, 128]
                     cmp_lo.a.eq(Mux(use_cmp, a, 0)), cmp_lo.b.eq(bits(vu.EXP_LO)),                   # a < EXP_LO
                     cmp_hi.a.eq(Mux(use_cmp, step.k, 0)),                                           # k < a, k < |a|
                     cmp_hi.b.eq(Mux(use_cmp, Cat(a[0:31], a[31] & (op != Op.TANHSEL)), 0)),
                     div.inp.payload.a.eq(Mux(op == Op.DIV, a, 0)), div.inp.payload.b.eq(Mux(op == Op.DIV, b, 0))]

        sel = Mux(q[0], b, a)
        y = Signal(32)
        with m.Switch(op):
            for o, value in [(Op.MOV, a), (Op.ADD, add.y), (Op.SUB, add.y), (Op.MAD, add.y), (Op.MSB, add.y),
                             (Op.MUL, mul.y), (Op.RINT, rnd.y), (Op.DIV, div.out.payload),
                             (Op.ABS, Cat(a[0:31], 0)), (Op.NEG, Cat(a[0:31], ~a[31])),
                             (Op.CLAMP, Mux(cmp_lo.lt | cmp_hi.lt, 0, a)),
                             (Op.SCALE, Mux(lo, 0, Mux(hi, INF, scale.y))),
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


def unit_in(lanes: int) -> data.StructLayout:
    """A chunk of the vector engine's multi-step units: func, a and b per lane, the immediate (b and imm unused)."""
    return data.StructLayout({"func": 6, "a": data.ArrayLayout(32, lanes), "b": data.ArrayLayout(32, lanes),
                              "imm": 32})


class TranscendentalLanes(wiring.Component):
    """The vector engine's multi-step unit for the five functions: `copies` groups of `lanes` Transcendentals.
    Chunks go to the groups in turn, each when its group is idle, and leave in the same turn once every lane of it
    has its result; a group computes its next chunk while its last one waits to be taken. A chunk every
    `cycles_per_element / copies` cycles. `inp: In(stream(unit_in(lanes)))`, `out: Out(stream(lanes x 32))`."""

    FUNCS = tuple(f for f in PROGRAMS if f is not None)

    def __init__(self, lanes: int, copies: int = TRANSCENDENTAL_GROUPS):
        if lanes < 1 or copies < 1:
            raise ValueError(f"TranscendentalLanes needs lanes >= 1 and copies >= 1, got lanes={lanes}, "
                             f"copies={copies}")
        self.lanes, self.copies = lanes, copies
        super().__init__({"inp": In(stream.Signature(unit_in(lanes))),
                          "out": Out(stream.Signature(data.ArrayLayout(32, lanes)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        L, G = self.lanes, self.copies
        p = self.inp.payload
        put_group, take_group = Signal(range(G)), Signal(range(G))
        start = self.inp.valid & self.inp.ready
        taken = self.out.valid & self.out.ready
        idle_of, have_of, result_of = [], [], []
        for g in range(G):
            idle = []
            have = Signal(L, name=f"have{g}")
            result = Signal(data.ArrayLayout(32, L), name=f"result{g}")
            for lane in range(L):
                unit = m.submodules[f"unit{g}_{lane}"] = Transcendental()
                idle.append(unit.inp.ready)
                m.d.comb += [unit.inp.payload.func.eq(p.func), unit.inp.payload.a.eq(p.a[lane]),
                             unit.inp.valid.eq(start & (put_group == g)), unit.out.ready.eq(~have[lane])]
                with m.If(unit.out.valid & ~have[lane]):
                    m.d.sync += [result[lane].eq(unit.out.payload), have[lane].eq(1)]
            with m.If(taken & (take_group == g)):
                m.d.sync += have.eq(0)
            idle_of.append(Cat(idle).all())
            have_of.append(have.all())
            result_of.append(result)
        m.d.comb += [self.inp.ready.eq(Array(idle_of)[put_group]), self.out.valid.eq(Array(have_of)[take_group]),
                     self.out.payload.eq(Array(result_of)[take_group])]
        with m.If(start):
            m.d.sync += put_group.eq(Mux(put_group == G - 1, 0, put_group + 1))
        with m.If(taken):
            m.d.sync += take_group.eq(Mux(take_group == G - 1, 0, take_group + 1))
        return m

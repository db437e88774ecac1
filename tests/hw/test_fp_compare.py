"""Comparisons, MAX / MIN and REQ against codegen/fpga/vector_unit.py (numpy < and ==, fmax, fmin, requantise) on
random patterns, equal and nearly equal values, signed zeros, NaNs, and REQ's extremes."""

from __future__ import annotations

import numpy as np

from tritc.codegen.fpga import vector_unit as vu
from tritc.hw.fp_compare import FpCompare, Requantise
from tritc.hw.sim import run

from .fp_cases import as_bits, random_bits, special_pairs


def test_compare_max_min():
    rng = np.random.default_rng(8)
    a, b = random_bits(rng, 1000), random_bits(rng, 1000)
    b[:300] = a[:300] ^ rng.integers(0, 4, 300, dtype=np.uint32)      # equal and one-ulp neighbours
    b[300:400] = a[300:400] ^ 0x80000000                              # opposite signs, same magnitude
    sa, sb = special_pairs()
    a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    dut = FpCompare()
    got = {k: np.zeros(len(a), np.uint32) for k in ("lt", "eq", "max", "min")}

    async def bench(ctx):
        for k in range(len(a)):
            ctx.set(dut.a, int(a[k]))
            ctx.set(dut.b, int(b[k]))
            for name, arr in got.items():
                arr[k] = ctx.get(getattr(dut, name))

    run(dut, bench)
    fa, fb = a.view(np.float32), b.view(np.float32)
    with np.errstate(all="ignore"):
        want = {"lt": (fa < fb).astype(np.uint32), "eq": (fa == fb).astype(np.uint32),
                "max": as_bits(vu.fmax(fa, fb)), "min": as_bits(vu.fmin(fa, fb))}
    for name in got:
        bad = np.flatnonzero(got[name] != want[name])
        assert bad.size == 0, (name, [(hex(a[k]), hex(b[k]), hex(got[name][k]), hex(want[name][k])) for k in bad[:6]])


def test_requantise():
    rng = np.random.default_rng(9)
    n = 1500
    acc = rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64)
    acc[:300] = rng.integers(-(1 << 20), 1 << 20, 300)                 # accumulator-sized values
    mult = rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64)
    shift = rng.integers(0, 32, n)
    edges = [(-(1 << 31), -(1 << 31), 0), ((1 << 31) - 1, (1 << 31) - 1, 0), (-(1 << 31), (1 << 31) - 1, 31),
             (1, 1 << 30, 0), (-1, 1 << 30, 0), (3, 1 << 30, 1), (-3, 1 << 30, 1), (0, 12345, 7)]
    acc = np.concatenate([acc, [e[0] for e in edges]])
    mult = np.concatenate([mult, [e[1] for e in edges]])
    shift = np.concatenate([shift, [e[2] for e in edges]])
    dut = Requantise()
    got = np.zeros(len(acc), np.int64)

    async def bench(ctx):
        for k in range(len(acc)):
            ctx.set(dut.acc, int(acc[k]))
            ctx.set(dut.mult, int(mult[k]))
            ctx.set(dut.shift, int(shift[k]))
            got[k] = ctx.get(dut.y)

    run(dut, bench)
    want = np.array([vu.requantise(np.int32(x), int(mm), int(s)) for x, mm, s in zip(acc, mult, shift)])
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(int(acc[k]), int(mult[k]), int(shift[k]), int(got[k]), int(want[k])) for k in bad[:6]]

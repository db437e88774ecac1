"""The single-pass functions of a vector lane against codegen/fpga/vector_unit.py's `apply` (then canonical NaN, as
a VEC write stores), function by function, on random patterns, nearby values and the special values."""

from __future__ import annotations

import numpy as np

from tritc.codegen.fpga import vector_unit as vu
from tritc.codegen.fpga.isa import VFunc
from tritc.hw.sim import run
from tritc.hw.vector_lane import SINGLE_PASS, VectorLane

from .fp_cases import SPECIAL, as_bits, random_bits


def test_single_pass_functions_are_the_simulators():
    rng = np.random.default_rng(14)
    n = 160
    specials = np.array(SPECIAL, np.uint32)
    cases = []
    for func in SINGLE_PASS:
        a, b, imm = random_bits(rng, n), random_bits(rng, n), random_bits(rng, n)
        b[:40] = a[:40] ^ rng.integers(0, 3, 40, dtype=np.uint32)          # equal and neighbouring values
        a[40:80], b[40:80] = rng.choice(specials, 40), rng.choice(specials, 40)
        b[80:100] = rng.choice([0x00000000, 0x80000000], 20)               # WHERE's zero tests
        cases.append((func, a, b, imm))
    dut = VectorLane()
    got = {}

    async def bench(ctx):
        for func, a, b, imm in cases:
            out = np.zeros(n, np.uint32)
            ctx.set(dut.func, int(func))
            for k in range(n):
                ctx.set(dut.a, int(a[k]))
                ctx.set(dut.b, int(b[k]))
                ctx.set(dut.imm, int(imm[k]))
                assert ctx.get(dut.single_pass)
                out[k] = ctx.get(dut.y)
            got[func] = out
        ctx.set(dut.func, int(VFunc.EXP))
        assert not ctx.get(dut.single_pass)

    run(dut, bench)
    for func, a, b, imm in cases:
        fa, fb, fi = a.view(np.float32), b.view(np.float32), imm.view(np.float32)
        if func is VFunc.FILL:
            want = as_bits(fi)
        else:
            want = as_bits(np.broadcast_to(vu.apply(func, fa, fb, fi), fa.shape))
        bad = np.flatnonzero(got[func] != want)
        assert bad.size == 0, (func.name, [(hex(a[k]), hex(b[k]), hex(got[func][k]), hex(want[k])) for k in bad[:5]])

"""The conversions against the Simulator's: int32 -> fp32 as numpy converts (round to nearest even), and fp32 ->
int8 / int32 as fpga_steps.store_result writes ACT and ACC (rne, saturated, NaN as 0), on random and edge values."""

from __future__ import annotations

import numpy as np
import pytest

from tritc.codegen.fpga.isa import Buf
from tritc.hw.fp_convert import FpRound, FpToInt, IntToFp
from tritc.hw.sim import run
from tritc.runtime.fpga_steps import store_result

from .fp_cases import SPECIAL, as_bits, random_bits


def drive(dut, name: str, values: np.ndarray) -> np.ndarray:
    got = np.zeros(len(values), np.int64)

    async def bench(ctx):
        for k, v in enumerate(values):
            ctx.set(getattr(dut, name), int(v))
            got[k] = ctx.get(dut.y)

    run(dut, bench)
    return got


def test_int_to_fp_rounds_to_nearest_even():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.integers(-(1 << 31), 1 << 31, 1500, dtype=np.int64),
                        rng.integers(-128, 128, 200),                              # int8 reads of ACT
                        (rng.integers(1, 1 << 7, 300) << rng.integers(0, 24, 300)) | (1 << 24),   # near ties
                        [0, 1, -1, 127, -128, (1 << 24) + 1, (1 << 24) + 3, (1 << 31) - 1, -(1 << 31), -(1 << 31) + 1]])
    x = np.clip(x, -(1 << 31), (1 << 31) - 1).astype(np.int32)
    got = drive(IntToFp(), "x", x).astype(np.uint32)
    want = as_bits(x.astype(np.float32))
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(int(x[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]


@pytest.mark.parametrize("bits", [8, 32])
def test_fp_to_int_is_the_simulators_write(bits):
    rng = np.random.default_rng(bits)
    a = random_bits(rng, 1200)
    top = 127 + bits                                      # exponents around the saturation point and around 0.5
    a[:400] = (a[:400] & 0x807FFFFF) | (rng.integers(top - 10, top + 2, 400).astype(np.uint32) << 23)
    a[400:800] = (a[400:800] & 0x807FFFFF) | (rng.integers(120, 152, 400).astype(np.uint32) << 23)
    halves = (rng.integers(-(1 << 20), 1 << 20, 200) + 0.5).astype(np.float32).view(np.uint32)   # exact ties
    a = np.concatenate([a, halves, np.array(SPECIAL, np.uint32)])
    buf = Buf.ACT if bits == 8 else Buf.ACC
    want = np.zeros(len(a), np.int8 if bits == 8 else np.int32)
    store_result(want, buf, a.view(np.float32))
    got = drive(FpToInt(bits), "a", a)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(hex(a[k]), int(got[k]), int(want[k])) for k in bad[:8]]


def test_round_is_numpy_rint():
    rng = np.random.default_rng(13)
    a = random_bits(rng, 800)
    a[:500] = (a[:500] & 0x807FFFFF) | (rng.integers(120, 155, 500).astype(np.uint32) << 23)   # around the units
    halves = ((rng.integers(-(1 << 22), 1 << 22, 200) + 0.5).astype(np.float32)).view(np.uint32)   # exact ties
    small = np.float32([0.5, -0.5, 0.75, -0.75, 1.5, 2.5, -0.3, 8388607.5, -8388607.5]).view(np.uint32)
    a = np.concatenate([a, halves, np.array(SPECIAL, np.uint32), small])
    got = drive(FpRound(), "a", a).astype(np.uint32)
    with np.errstate(invalid="ignore"):
        want = as_bits(np.rint(a.view(np.float32)))
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(hex(a[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]

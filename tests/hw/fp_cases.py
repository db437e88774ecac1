"""What the fp32 unit tests share: the special values, numpy's float32 results as bit patterns with NaN canonical,
and a run of a combinational unit over many operand sets."""

from __future__ import annotations

import itertools

import numpy as np

from tritc.hw.fp_add import CANONICAL_NAN
from tritc.hw.sim import run

# Zeros of both signs, the smallest subnormal, the largest subnormal, the smallest normals, 1 and its neighbours,
# an exact power of two far down and far up, the largest finite, infinities, NaNs (quiet, with payload, signalling).
SPECIAL = [0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x80800000, 0x00800001,
           0x3F800000, 0xBF800000, 0x3F800001, 0x33800000, 0x4B800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F000000,
           0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001]


def special_pairs() -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array(list(itertools.product(SPECIAL, SPECIAL)), np.uint32)
    return pairs[:, 0], pairs[:, 1]


def random_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)


def as_bits(y: np.ndarray) -> np.ndarray:
    """float32 results as uint32 bit patterns, every NaN as the canonical one (what the units write)."""
    y = np.asarray(y, np.float32)
    bits = y.view(np.uint32).copy()
    bits[np.isnan(y)] = CANONICAL_NAN
    return bits


def simulate(dut, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Drive a combinational unit's inputs with each set of values; its `y` for each, as uint32."""
    n = len(next(iter(inputs.values())))
    got = np.zeros(n, np.uint32)

    async def bench(ctx):
        for k in range(n):
            for name, values in inputs.items():
                ctx.set(getattr(dut, name), int(values[k]))
            got[k] = ctx.get(dut.y)

    run(dut, bench)
    return got


def mismatches(a: np.ndarray, b: np.ndarray, got: np.ndarray, want: np.ndarray) -> list[tuple[str, ...]]:
    bad = np.flatnonzero(got != want)
    return [(hex(a[k]), hex(b[k]), hex(got[k]), hex(want[k])) for k in bad[:8]]

"""The matrix unit against GEMM as the Simulator executes it (fpga_steps: int8 activations times the trits
isa.decode_words reads from any bytes, exact int32 sums), and against an independent int64 matmul: random and
extreme activations, random weight bytes (invalid codes included),
both packings, a word over several beats (16 lanes) and several words per beat (128 lanes), a stalling consumer,
and the pipeline's fill against the cycle model's."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest

from tritc.codegen.fpga.isa import Buf, Instr, Op, decode_words, interleave_words, pack_words
from tritc.hw.matrix_unit import MatrixUnit
from tritc.hw.params import HwParams, hw_params
from tritc.hw.sim import get, put, run
from tritc.runtime.fpga import Simulator

from .conftest import SMALL


def gemm_reference(act: np.ndarray, wgt: np.ndarray, packing: str) -> np.ndarray:
    """acc[i, j] = sum_k act[i, k] * trit_k(column j's words), int32 wrapping: ISA.md's formula in int64."""
    trits = decode_words(wgt, packing).astype(np.int64)
    return (act.astype(np.int64) @ trits.T).astype(np.int32)


def simulator_gemm(config, act: np.ndarray, wgt: np.ndarray) -> np.ndarray:
    """The accumulators the Simulator computes for one GEMM over act (ACT at 0) and wgt (column-major words [n, kw *
    word_bytes], in WGT at 0 in the ISA v3 layout), reset."""
    m, n = act.shape[0], wgt.shape[0]
    roomy = dataclasses.replace(config, activation_buffer_bytes=4096, weight_buffer_bytes=8192,
                                accumulator_buffer_bytes=1024)
    sim = Simulator(roomy)
    sim.raw[Buf.ACT][:act.size] = act.view(np.uint8).ravel()
    image = interleave_words(wgt, config.matrix_rows, config.words_per_beat, config.word_bytes)   # ISA v3 layout
    sim.raw[Buf.WGT][:len(image)] = np.frombuffer(image, np.uint8)
    sim.load_stream([Instr(Op.GEMM, m=m, n=n, kw=act.shape[1] // 64, act_rs=act.shape[1], acc_rs=n, reset=1),
                     Instr(Op.FINISH)])
    sim.run()
    return sim.typed[Buf.ACC][:m * n].reshape(m, n).copy()


def beats(p: HwParams, act: np.ndarray, wgt: np.ndarray) -> list[tuple[dict, list[int] | None]]:
    """The beats a GEMM feeds the unit (i, then blocks of `rows` columns, then K), each with the block's expected
    column indices when it is the block's last beat. Lanes past K carry activation 0; trees past n get zero bytes."""
    m, kdim = act.shape
    n, kw, wb = wgt.shape[0], kdim // 64, p.word_bytes
    words = wgt.reshape(n, kw, wb)
    per_block = math.ceil(64 * kw / p.lanes)
    out = []
    for i in range(m):
        for j0 in range(0, n, p.rows):
            for b in range(per_block):
                a = np.zeros(p.lanes, np.int64)
                chunk = act[i, b * p.lanes:(b + 1) * p.lanes]
                a[:chunk.size] = chunk
                row_words = []
                for r in range(p.rows):
                    ws = []
                    for w in range(p.words_per_beat):
                        g = b // p.beats_per_word if p.beats_per_word > 1 else b * p.words_per_beat + w
                        ok = j0 + r < n and g < kw
                        ws.append(int.from_bytes(words[j0 + r, g].tobytes(), "little") if ok else 0)
                    row_words.append(ws)
                payload = {"act": [int(x) for x in a], "words": row_words, "last": int(b == per_block - 1)}
                if p.beats_per_word > 1:
                    payload["part"] = b % p.beats_per_word
                cols = list(range(j0, min(j0 + p.rows, n))) if b == per_block - 1 else None
                out.append((payload, (i, cols) if cols is not None else None))
    return out


def simulate(p: HwParams, gemms: list[tuple[np.ndarray, np.ndarray]], *, stall: float = 0.0) -> list[np.ndarray]:
    """Run each (act, wgt) through one unit, one after the other; the m x n accumulators of each."""
    dut = MatrixUnit(p)
    todo = [(k, payload, e) for k, (act, wgt) in enumerate(gemms) for payload, e in beats(p, act, wgt)]
    got = [np.zeros((act.shape[0], wgt.shape[0]), np.int64) for act, wgt in gemms]
    rng = random.Random(1)

    async def feeder(ctx):
        for _, payload, _ in todo:
            await put(ctx, dut.inp, payload)

    async def consumer(ctx):
        for k, _, block in todo:
            if block is None:
                continue
            while rng.random() < stall:
                await ctx.tick()
            sums = await get(ctx, dut.out)
            i, cols = block
            for r, j in enumerate(cols):
                got[k][i, j] = sums[r]

    run(dut, feeder, consumer, max_cycles=20 * len(todo) + 100)
    return [g.astype(np.int32) for g in got]


SMALL_2BIT = dataclasses.replace(SMALL, weight_packing="2bit")
WIDE = dataclasses.replace(SMALL, matrix_rows=2, matrix_lanes=128, activation_buffer_bytes=512)   # 2 words a beat


def extreme_gemm(packing: str) -> tuple[np.ndarray, np.ndarray]:
    """-128 and +127 against all -1 and all +1 trits: the largest and smallest sums a block can hold."""
    kw = 2
    trits = np.concatenate([np.full((2, 64 * kw), -1, np.int8), np.ones((2, 64 * kw), np.int8)])
    act = np.stack([np.full(64 * kw, -128, np.int8), np.full(64 * kw, 127, np.int8)])
    return act, pack_words(trits, packing)


@pytest.mark.parametrize("config", [SMALL, SMALL_2BIT, WIDE], ids=["4x16-base3", "4x16-2bit", "2x128-base3"])
def test_random_and_extreme_gemms_are_exact(config):
    p = hw_params(config)
    rng = np.random.default_rng(11)
    gemms = [extreme_gemm(p.packing)]
    for m, n, kw in [(2, 6, 1), (1, 4, 3), (3, 5, 2), (4, 9, 3)]:
        act = rng.integers(-128, 128, (m, 64 * kw), dtype=np.int8)
        wgt = rng.integers(0, 256, (n, kw * p.word_bytes), dtype=np.uint8)   # any bytes: invalid codes too
        gemms.append((act, wgt))
    want = [simulator_gemm(config, act, wgt) for act, wgt in gemms]
    for w, (act, wgt) in zip(want, gemms):
        assert np.array_equal(w, gemm_reference(act, wgt, p.packing))
    assert want[0][0, 0] == 128 * 128 and want[0][1, 0] == -127 * 128
    got = simulate(p, gemms, stall=0.3)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_fill_is_the_cycle_models():
    # Beats back to back into a consumer that is always ready: a block of B beats, presented from cycle 0, leaves in
    # cycle B - 1 + gemm_latency, so B beats cost B + log2(lanes) + 2 cycles, as docs/ISA.md charges a GEMM.
    p = hw_params(SMALL_2BIT)
    dut = MatrixUnit(p)
    nbeats = 8
    seen = {}

    async def feeder(ctx):
        for b in range(nbeats):
            await put(ctx, dut.inp, {"act": [1] * p.lanes, "words": [[0]] * p.rows, "last": int(b == nbeats - 1),
                                     "part": b % 4})

    async def watch(ctx):
        ctx.set(dut.out.ready, 1)
        cycle = 0
        while not ctx.get(dut.out.valid):
            await ctx.tick()
            cycle += 1
        seen["cycle"] = cycle

    run(dut, feeder, watch, max_cycles=100)
    assert seen["cycle"] == nbeats - 1 + p.gemm_latency

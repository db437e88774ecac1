"""What the RTL derives from an FpgaConfig, and the configs it refuses with one line naming the parameter."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tritc.codegen.fpga.config import PRESETS
from tritc.codegen.fpga.isa import Buf, Instr, Op
from tritc.codegen.fpga.timing import GEMM_COMMIT, fetch_start
from tritc.hw.params import HwConfigError, hw_params
from tritc.runtime.fpga import Simulator

from .conftest import SMALL


def test_presets_and_the_small_configuration_build():
    edge, dc, small = hw_params("edge"), hw_params("datacenter"), hw_params(SMALL)
    assert (edge.words_per_beat, edge.beats_per_word, edge.gemm_latency) == (1, 1, 8)
    assert (dc.words_per_beat, dc.beats_per_word, dc.gemm_latency) == (2, 1, 9)
    assert (small.words_per_beat, small.beats_per_word, small.gemm_latency) == (1, 4, 6)
    for p in (edge, dc, small):   # the fill the cycle model charges a GEMM (docs/ISA.md, "Cycle model")
        assert p.gemm_latency == math.ceil(math.log2(p.lanes)) + 2
    assert edge.addr_bits(Buf.WGT) == 19 and edge.addr_bits(Buf.ACC) == 14


@pytest.mark.parametrize("change, message", [
    ({"matrix_lanes": 192, "activation_buffer_bytes": 192 * 64}, "matrix_lanes must be a power of two"),
    ({"activation_buffer_bytes": 1000}, "activation_buffer_bytes must be a multiple of matrix_lanes"),
    ({"vector_buffer_bytes": 1056}, "vector_buffer_bytes must be a multiple of 4 \\* vector_lanes"),
])
def test_configs_the_rtl_cannot_build(change, message):
    cfg = dataclasses.replace(PRESETS["edge"], **change).validate()
    with pytest.raises(HwConfigError, match=message) as e:
        hw_params(cfg)
    assert "\n" not in str(e.value) and "(the RTL cannot build it)" in str(e.value)


def test_sixteen_lanes_take_a_word_over_four_cycles_in_the_cycle_model():
    # matrix_lanes = 16 divides a 64-trit word (config.py allows it since the RTL needs it): GEMM costs
    # m * ceil(n / rows) * 4 kw cycles plus the fill log2(16) + 2 and the commit, and computes the same sums as 64
    # lanes.
    rng = np.random.default_rng(0)
    m, n, kw = 2, 6, 3
    act = rng.integers(-128, 128, (m, 64 * kw), dtype=np.int8)
    wgt = rng.integers(0, 256, n * kw * 13, dtype=np.uint8)
    out = {}
    for lanes in (16, 64):
        sim = Simulator(dataclasses.replace(SMALL, matrix_lanes=lanes, activation_buffer_bytes=1024))
        sim.raw[Buf.ACT][:act.size] = act.view(np.uint8).ravel()
        sim.raw[Buf.WGT][:wgt.size] = wgt
        sim.load_stream([Instr(Op.GEMM, m=m, n=n, kw=kw, act_rs=64 * kw, acc_rs=n, reset=1), Instr(Op.FINISH)])
        stats = sim.run()
        start = fetch_start(math.ceil(SMALL.dram_latency_ns * SMALL.clock_hz / 1e9))   # the stream's first fetch
        assert stats["cycles"] == start + m * math.ceil(n / 4) * math.ceil(64 * kw / lanes) + int(math.log2(lanes)) + 2 \
            + GEMM_COMMIT
        out[lanes] = sim.typed[Buf.ACC][:m * n].copy()
    assert np.array_equal(out[16], out[64])

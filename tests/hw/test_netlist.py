"""Every component converts to a netlist with Amaranth's own RTLIL back end (no Yosys needed), and none has a
multiplier or divider cell: the matrix path is adds and selects only (docs/ISA.md), and the others need none (the
vector unit's fp multiplier and REQ, the design's two multiplies, are left out; the transcendental unit multiplies
only inside its FpMultiplier). The synthesis figures of phase 4 check the same on the mapped design (0 DSP blocks in
the matrix path). In the vector engine, which holds those units, multiplies are allowed in them only: a lane's fp
multiplier (also MM's products) and REQ's."""

from __future__ import annotations

import dataclasses
import re

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment

from tritc.codegen.fpga.isa import Buf
from tritc.hw.axi import AxiAdapter
from tritc.hw.buffers import ActBuffer
from tritc.hw.core import Core
from tritc.hw.dma import LoadMover, StoreMover
from tritc.hw.fp_add import FpAdder
from tritc.hw.fp_compare import FpCompare
from tritc.hw.fp_convert import FpRound, FpToInt, IntToFp
from tritc.hw.fp_div import FpDivider
from tritc.hw.fp_mul import FpMultiplier
from tritc.hw.fp_sqrt import FpSqrt
from tritc.hw.gemm_engine import GemmEngine
from tritc.hw.lane_reduce import LaneReducer
from tritc.hw.matrix_unit import MatrixUnit
from tritc.hw.memory import MemArbiter
from tritc.hw.params import hw_params
from tritc.hw.queues import InstrDecoder, TokenQueues
from tritc.hw.tokens import TokenProtocol
from tritc.hw.transcendental import ExpScale, Transcendental, TranscendentalLanes
from tritc.hw.vector_engine import VectorEngine
from tritc.hw.vector_units import DivSqrtLanes
from tritc.hw.vector_walker import VopWalker
from tritc.hw.weight_decoder import WordDecoder
from tritc.hw.wgt_buffer import WgtBuffer
from tritc.hw.word_buffer import WordBuffer

from .conftest import SMALL

ARITHMETIC = re.compile(r"^\s*cell \\?\$(mul|div|mod|divfloor|modfloor|pow)\b", re.M)
P = hw_params(SMALL)
COMPONENTS = {
    "matrix-4x16-base3": lambda: MatrixUnit(P),
    "matrix-1x128-2bit": lambda: MatrixUnit(hw_params(dataclasses.replace(
        SMALL, matrix_rows=1, matrix_lanes=128, weight_packing="2bit"))),
    "decoder-base3": lambda: WordDecoder("base3"),
    "act-buffer": lambda: ActBuffer(P),
    "fp-adder": FpAdder,
    "int-to-fp": IntToFp,
    "fp-compare": FpCompare,
    "fp-divider": FpDivider,
    "fp-sqrt": FpSqrt,
    "lane-reducer": lambda: LaneReducer(P.vector_lanes),
    "fp-to-int32": lambda: FpToInt(32),
    "fp-round": FpRound,
    "exp-scale": ExpScale,
    "instr-decoder": InstrDecoder,
    "token-queues": lambda: TokenQueues(P.queue_depth),
    "token-protocol": lambda: TokenProtocol(P.queue_depth),
    "arbiter": lambda: MemArbiter(P, 4),
    "axi-adapter": lambda: AxiAdapter(P),
    "axi-adapter-bursts": lambda: AxiAdapter(P, 16),
    "axi-adapter-no-hazard-check": lambda: AxiAdapter(P, hazard_check=False),
    "load-mover": lambda: LoadMover(P),
    "store-mover": lambda: StoreMover(P),
    "core": lambda: Core(P, frozenset({"gemm", "vop"})),
    "wgt-buffer": lambda: WgtBuffer(P),
    "gemm-engine-4x16-base3": lambda: GemmEngine(P),
    "gemm-engine-1x128-2bit": lambda: GemmEngine(hw_params(dataclasses.replace(
        SMALL, matrix_rows=1, matrix_lanes=128, weight_packing="2bit"))),
    "word-buffer": lambda: WordBuffer(P, Buf.VEC),
    "vop-walker": lambda: VopWalker(P.vector_lanes),
    "div-sqrt-lanes": lambda: DivSqrtLanes(P.vector_lanes),
}
MODULE = re.compile(r"^module (\S+)$(.*?)^end$", re.M | re.S)
# The engine's instances of FpMultiplier (inside each VectorLane) and Requantise.
MULTIPLYING = re.compile(r"\.(lane\d+\.mul|req\d+)$")


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_netlist_has_no_multiplier(name):
    text = rtlil.convert(COMPONENTS[name]())
    assert "cell" in text
    assert not ARITHMETIC.findall(text)


def test_vector_engine_multiplies_only_in_its_multipliers():
    text = rtlil.convert(VectorEngine(P))
    multiplying = {name for name, body in MODULE.findall(text) if ARITHMETIC.search(body)}
    assert multiplying and all(MULTIPLYING.search(name) for name in multiplying), sorted(multiplying)
    assert len(multiplying) == 2 * P.vector_lanes          # a multiplier and a REQ per lane, nothing else


def modules(text: str) -> dict[str, str]:
    """An RTLIL netlist's modules (one per submodule instance), their bodies without the attribute lines."""
    return {m.group(1): "\n".join(line for line in m.group(2).splitlines() if not line.strip().startswith("attribute"))
            for m in re.finditer(r"^module (\S+)\n(.*?)^end\n", text, re.M | re.S)}


@pytest.mark.parametrize("lanes", [None, 1])
def test_transcendental_multiplies_only_in_its_fp_multiplier(lanes):
    # Every multiply cell of the unit sits in a module that is FpMultiplier's netlist, line for line: one a unit.
    fp_mul = modules(rtlil.convert(FpMultiplier()))["\\top"]
    dut = Transcendental() if lanes is None else TranscendentalLanes(lanes, copies=2)
    with_mul = {name: body for name, body in modules(rtlil.convert(dut)).items() if ARITHMETIC.findall(body)}
    assert len(with_mul) == (1 if lanes is None else 2 * lanes)
    assert all(name.endswith(".mul") and body == fp_mul for name, body in with_mul.items())


@pytest.mark.parametrize("preset", ["edge", "datacenter"])
def test_components_elaborate_for_the_presets(preset):
    # The presets' widths and depths (128-byte and 2 KiB memory beats, as AXI bursts of 4 and 64 transfers on a
    # 256-bit HBM port; 64 and 128 activation banks of 128 KiB and 1 MiB) build; the matrix units at preset size
    # take 10-20 s and are left to `tritc hw verilog` (phase 4).
    p = hw_params(preset)
    components = [LoadMover(p), StoreMover(p), ActBuffer(p), WgtBuffer(p), MemArbiter(p, 4), AxiAdapter(p, 32),
                  TokenQueues(p.queue_depth), InstrDecoder(), VopWalker(p.vector_lanes)]
    if p.vector_lanes <= 16:   # datacenter's 128-lane word buffer takes ~20 s (its L^2 bank grants; docs/HW.md)
        components.append(WordBuffer(p, Buf.ACC))
    for component in components:
        assert Fragment.get(component, None) is not None

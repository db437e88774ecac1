"""The FPGA runtime: the Device protocol, and the Simulator device that executes docs/ISA.md.

A Device holds DRAM, takes an instruction stream, runs it and reports what the run cost. A board driver or an
RTL simulation plugs in behind the same protocol. The Simulator executes every instruction through numpy views
of its memories (bit-exact with the spec: integer paths exact, the vector unit's fp32 steps as
codegen/fpga/vector_unit.py defines them) and times the run with ISA.md's cycle model: three engines, each in
order, synchronised only by the four token queues, loads and stores sharing one DRAM channel. Timing only
(`functional=False`), it skips the data and reports the same stats, so a whole decode step of a large model is
modelled in seconds.

    sim = Simulator(PRESETS["edge"], dram_bytes=1 << 24)
    sim.write(0x1000, activations)
    sim.load_stream(instrs)          # or the bytes of encode_stream(instrs)
    stats = sim.run()                # cycles, seconds, DRAM traffic, utilisation, energy, ...
    out = sim.read(0x2000, 64)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..codegen.fpga.config import FpgaConfig, load_config
from ..codegen.fpga.isa import ELEM_BYTES, Buf, Engine, Instr, Op, StreamError, decode_stream
from ..codegen.fpga.timing import TOKEN_CYCLES, fetch_start
from ..codegen.fpga.verify import QUEUES, DeadlockError, buffer_elems, check_instr, deadlock_error, where
from ..errors import AcceleratorTimeoutError, CompilerError
from .fpga_steps import MEMORIES, Step, StepMaker

__all__ = ["ENERGY_PJ", "DeadlockError", "Device", "DeviceError", "HazardError", "Simulator", "StreamError",
           "checked_stream"]


class HazardError(StreamError):
    """Two engines touch the same memory at once, one of them writing: a token is missing between them."""


class DeviceError(CompilerError):
    """A host access to device memory that does not fit it (an address outside DRAM)."""


# Energy per operation (docs/ISA.md, "Energy": the sources and what each instruction counts). Arithmetic and SRAM:
# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm at 0.9 V. DRAM per bit
# moved: DDR4 an estimate by Micron's power method (TN-40-07), HBM2 from O'Connor et al., "Fine-Grained DRAM",
# MICRO 2017. FPGA over ASIC: Kuon and Rose, "Measuring the gap between FPGAs and ASICs", IEEE TCAD 2007 (dynamic
# power: 14x for logic in LUTs, 7.1x for designs whose arithmetic uses hard DSP blocks).
ENERGY_PJ: dict[str, float] = {
    "int8_add": 0.03,
    "int32_add": 0.1,
    "int32_mul": 3.1,
    "fp32_add": 0.9,
    "fp32_mul": 3.7,
    "sram_8kib_64bit": 10.0,      # one 64-bit read of an 8 KiB SRAM
    "sram_32kib_64bit": 20.0,
    "sram_1mib_64bit": 100.0,
    "ddr4_bit": 15.0,
    "hbm2_bit": 3.9,
    "fpga_logic_factor": 14.0,     # LUT / carry-chain logic: the matrix unit's adder trees
    "fpga_dsp_factor": 7.1,        # the vector unit's fp32 and REQ arithmetic: DSP slices plus LUTs
    "fpga_sram_factor": 1.0,       # BRAM / UltraRAM are SRAM macros: Horowitz's per-access energy as it is
}
SRAM_BANK_BYTES = 32 * 1024  # a buffer is banks of UltraRAM (32 KiB of data each): an access touches one bank

ENGINE_NAMES = ("load", "compute", "store", "matrix")   # the stats' units: three engines and the matrix unit
UNIT_NAMES = ("load engine", "compute engine", "store engine", "matrix unit")
ENERGY_PARTS = ("matrix", "vector", "sram", "dram")


@runtime_checkable
class Device(Protocol):
    """What the FPGA runtime drives: a DRAM to write and read, a stream to load and run, the last run's stats.

    Timing only: a device may offer a mode that models a run without computing its data (the Simulator's
    `functional=False`: the same stats, DRAM and buffers left as they were). It is an option of the device's
    constructor, not part of this protocol, and a device that always computes (a board, an RTL simulation) may
    ignore the request; callers that read results back must not ask for it."""

    config: FpgaConfig
    stats: dict[str, Any]

    def load_stream(self, stream: Sequence[Instr] | bytes) -> None: ...

    def write(self, addr: int, data: bytes | np.ndarray) -> None: ...

    def read(self, addr: int, nbytes: int) -> np.ndarray: ...

    def run(self) -> dict[str, Any]: ...


def sram_pj_per_byte(buffer_bytes: int) -> float:
    """Energy of one byte read or written in a buffer of this size (built of banks of SRAM_BANK_BYTES), on chip."""
    size = min(buffer_bytes, SRAM_BANK_BYTES)
    pts = [(8 * 1024, ENERGY_PJ["sram_8kib_64bit"]), (32 * 1024, ENERGY_PJ["sram_32kib_64bit"]),
           (1024 * 1024, ENERGY_PJ["sram_1mib_64bit"])]
    xs = [math.log2(s) for s, _ in pts]
    per64 = float(np.interp(math.log2(max(size, 1)), xs, [e for _, e in pts]))
    return per64 / 8 * ENERGY_PJ["fpga_sram_factor"]


def checked_stream(stream: Sequence[Instr] | bytes, config: FpgaConfig, dram_size: int) -> tuple[list[Instr], list]:
    """A stream as every Device takes it (the bytes of a binary stream: decoded and checked, header first; or
    instructions), each instruction checked against the config and `dram_size` bytes of DRAM: its instructions and
    their checked views. StreamError naming the first malformed instruction; FINISH only last."""
    if isinstance(stream, (bytes, bytearray, memoryview)):
        instrs = decode_stream(bytes(stream), config)
    else:
        instrs = list(stream)
        for i, ins in enumerate(instrs):
            if not isinstance(ins, Instr):
                raise StreamError(f"instruction {i} is a {type(ins).__name__}, not an Instr")
    views = []
    for i, ins in enumerate(instrs):
        if ins.op is Op.FINISH and i != len(instrs) - 1:
            raise StreamError(f"instruction {i} (FINISH) is not the last of the stream's {len(instrs)}")
        views.append(check_instr(ins, i, config, dram_size))
    return instrs, views


class Simulator:
    """A Device that executes docs/ISA.md in numpy and times it with ISA.md's cycle model.

    DRAM is `dram_bytes` (default: the config's) of zeros, committed by the OS only where written. The on-chip
    buffers keep their contents between runs, as on the device; DRAM keeps them until written.

    `functional=False` models timing only: run() reports exactly the stats of a functional run (cycles, busy and
    stall, DRAM bytes, ternary_ops, energy, ...; only `simulator_seconds` differs) but moves and computes no data,
    so DRAM and the buffers keep what they held. Nothing in the cycle model depends on data, and the checks do not
    either: malformed instructions are refused when loaded, hazards (compared by address) and deadlocks reported
    by run(), as in a functional run.

    `max_cycles` is the device's watchdog: a run that would go past that many cycles stops with
    AcceleratorTimeoutError ("accelerator timeout after N cycles ..."), as a board's watchdog would reset a hung
    accelerator. None (the default): no budget; the Simulator itself cannot hang (each step runs an instruction or
    reports a deadlock)."""

    def __init__(self, config: FpgaConfig | str, *, dram_bytes: int | None = None, check_hazards: bool = True,
                 functional: bool = True, max_cycles: int | None = None, trace: bool = False):
        if max_cycles is not None and (isinstance(max_cycles, bool) or not isinstance(max_cycles, int) or max_cycles < 1):
            raise DeviceError(f"max_cycles must be a positive number of cycles or None, not {max_cycles!r}")
        self.max_cycles = max_cycles
        self.check_hazards = check_hazards
        self.trace = trace
        self.timeline: list[tuple[int, int, int, int]] = []   # with trace: (instruction, engine, start, finish)
        self._functional = bool(functional)
        self.config = load_config(config)
        size = self.config.dram_bytes if dram_bytes is None else int(dram_bytes)
        if not 0 < size <= self.config.dram_bytes:
            raise DeviceError(f"dram_bytes {size} must be positive and at most the config's {self.config.dram_bytes}")
        self.dram = np.zeros(size, np.uint8)
        elems = buffer_elems(self.config)
        self.raw = {b: np.zeros(elems[b] * ELEM_BYTES[b], np.uint8) for b in Buf}
        dtypes = {Buf.WGT: np.uint8, Buf.ACT: np.int8, Buf.ACC: np.int32, Buf.VEC: np.float32, Buf.KV: np.float32}
        self.typed = {b: self.raw[b].view(dtypes[b]) for b in Buf}
        self.stats: dict[str, Any] = {}
        self._instrs: list[Instr] = []
        self._steps: list[Step] = []
        self._maker = StepMaker(self.config, self.dram, self.raw, self.typed, ENERGY_PJ,
                                {b: sram_pj_per_byte(elems[b] * ELEM_BYTES[b]) for b in Buf},
                                8 * ENERGY_PJ[f"{self.config.dram_kind}_bit"], functional=self._functional)

    @property
    def functional(self) -> bool:
        """Whether runs compute data (True) or model timing only (False); fixed when the Simulator is made."""
        return self._functional

    # -- host access to DRAM -------------------------------------------------------------------------------
    def _range(self, addr: int, nbytes: int, what: str) -> None:
        if addr < 0 or nbytes < 0 or addr + nbytes > self.dram.size:
            raise DeviceError(f"{what} of {nbytes} bytes at {addr:#x} is outside the device's DRAM "
                              f"({self.dram.size} bytes)")

    def write(self, addr: int, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Copy raw bytes into DRAM at `addr` (an array is written as its bytes, in C order)."""
        if isinstance(data, np.ndarray):
            b = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        else:
            b = np.frombuffer(bytes(data), np.uint8)
        self._range(addr, b.size, "DRAM write")
        self.dram[addr:addr + b.size] = b

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        """A uint8 copy of `nbytes` of DRAM at `addr`."""
        self._range(addr, nbytes, "DRAM read")
        return self.dram[addr:addr + nbytes].copy()

    # -- loading -------------------------------------------------------------------------------------------
    def load_stream(self, stream: Sequence[Instr] | bytes) -> None:
        """Take a stream (instructions, or the bytes of a binary stream: decoded and checked; one lowered for another
        ISA version or accelerator build is ArtifactCompatibilityError). Every instruction is checked here (its
        addresses are immediates): a malformed one raises StreamError naming it before anything runs. Token balance
        is not required (a stream that deadlocks is reported by run())."""
        instrs, views = checked_stream(stream, self.config, self.dram.size)
        steps = [self._maker.step(i, ins, v) for i, (ins, v) in enumerate(zip(instrs, views))]
        self._instrs, self._steps = instrs, steps
        self.stats = {}

    # -- running -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Execute the loaded stream; the stats of the run (also kept in `self.stats`)."""
        wall = time.perf_counter()
        steps = self._steps
        progs: list[list[Step]] = [[], [], []]
        for s in steps:
            progs[s.engine].append(s)
        pos = [0, 0, 0]
        # Units: 0 load, 1 compute (its issue stage and the vector unit), 2 store, 3 the matrix unit (GEMMs the
        # compute engine handed over). free[u]: when the unit can take its next instruction.
        free = [fetch_start(self._maker.latency)] * 4    # the stream's first words are fetched from DRAM first
        busy = [0, 0, 0, 0]
        stall = [0, 0, 0, 0]
        # A unit's pushes not yet made: (earliest push time, queues left, push times, when the unit is free).
        pending: list[tuple[int, list[int], list[int], int] | None] = [None, None, None, None]
        push_t: list[list[int]] = [[] for _ in QUEUES]
        pop_t: list[list[int]] = [[] for _ in QUEUES]
        depth = self.config.queue_depth
        outstanding = self.config.dram_outstanding
        ends: list[list[int]] = [[], [], []]   # per DMA engine, the data-phase ends of its transfers
        accept = 0     # when the matrix unit's pipeline takes the next GEMM: the last one's fill before it drains
        channel = 0
        done = 0
        totals = dict(read=0, write=0, ops=0)
        energy = [0.0, 0.0, 0.0, 0.0]
        hazards = self.check_hazards
        inflight: list[tuple[int, int, Step]] = []   # (finish, unit, step) of instructions still accessing memory
        timeline = self.timeline
        timeline.clear()
        while True:
            # Pushes waiting for room in a full queue go as soon as the token `depth` places ahead is popped.
            for e in range(4):
                p = pending[e]
                if p is None:
                    continue
                base, queues, times, release = p
                while queues:
                    qi = queues[0]
                    k = len(push_t[qi])
                    if k >= depth and len(pop_t[qi]) <= k - depth:
                        break
                    t = base if k < depth else max(base, pop_t[qi][k - depth])
                    push_t[qi].append(t)
                    times.append(t)
                    queues.pop(0)
                if not queues:
                    end = max(times, default=base)
                    stall[e] += end - base
                    free[e] = max(release, end) if end > base else release
                    pending[e] = None
            best = -1
            best_t = 0
            for e in range(3):
                if pending[e] is not None or pos[e] == len(progs[e]):
                    continue
                s = progs[e][pos[e]]
                if s.finish:
                    if pending[3] is not None or any(pending[o] is not None or pos[o] < len(progs[o])
                                                     for o in range(3) if o != e):
                        continue
                    t = max(max(free), max((x[-1] for x in ends if x), default=0))
                else:
                    t = free[e]
                    if e == 1 and (not s.overlap or s.pushes):
                        # Only a VOP marked `overlap` runs while the matrix unit works: everything else waits for
                        # it (a GEMM only for its pipeline to take one more). Tokens leave the compute engine in
                        # program order: a VOP's pushes wait (posted, the engine goes on) for the GEMM in flight's.
                        if pending[3] is not None:
                            continue
                        if s.matrix and not s.accumulates:
                            t = max(t, accept)
                        elif not s.overlap:
                            t = max(t, free[3])
                    ready = True
                    for qi in s.pops:
                        k = len(pop_t[qi])
                        if k >= len(push_t[qi]):
                            ready = False
                            break
                        t = max(t, push_t[qi][k] + TOKEN_CYCLES)
                    if not ready:
                        continue
                if best < 0 or t < best_t:
                    best, best_t = e, t
            if best < 0:
                if any(p is not None for p in pending) or any(pos[e] < len(progs[e]) for e in range(3)):
                    raise self._deadlock(progs, pos, pending, push_t, pop_t, max(free))
                break
            e, start, s = best, best_t, progs[best][pos[best]]
            pos[e] += 1
            done += 1
            if not s.finish:
                # a DMA engine with transfers in flight is busy, not stalled, while it waits for a token
                stall[e] += max(0, start - max(free[e], ends[e][-1] if s.transfer and ends[e] else 0))
            for qi in s.pops:
                pop_t[qi].append(start)
            unit = e
            if s.transfer:
                # Up to `outstanding` transfers of one engine in flight: the next starts (its latency running)
                # while this one's data moves; data phases take the channel in the order transfers start.
                data = max(start + s.latency, channel)
                finish = data + s.cycles
                channel = finish
                prev = ends[e][-1] if ends[e] else 0
                busy[e] += finish - max(start, prev)
                ends[e].append(finish)
                release = max(start + 1, ends[e][-outstanding]) if len(ends[e]) >= outstanding else start + 1
                base = finish
            elif s.matrix:
                unit = 3
                finish = start + s.cycles
                busy[3] += finish - max(start, free[3])
                busy[1] += 1
                # The compute engine hands the GEMM over in a cycle and goes on once the GEMM before it has
                # drained, so that only this one is in flight when it does.
                free[1] = max(start + 1, free[3])
                accept = finish - s.fill
                release = base = finish
            else:
                finish = start + s.cycles
                busy[e] += finish - start
                release = finish
                base = max(finish, free[3]) if s.pushes and not s.finish else finish
            if self.max_cycles is not None and finish > self.max_cycles:
                raise self._timeout(s, finish)
            if self.trace:
                timeline.append((s.index, unit, start, finish))
            if hazards and s.accesses:
                self._hazard(s, unit, start, finish, inflight)
            if s.effect is not None:
                s.effect()
            totals["read"] += s.read_bytes
            totals["write"] += s.write_bytes
            totals["ops"] += s.ternary_ops
            for k in range(4):
                energy[k] += s.energy[k]
            if s.pushes:
                pending[unit] = (base, list(s.pushes), [], release)
            else:
                free[unit] = release
        cycles = max(max(free), max((x[-1] for x in ends if x), default=0))
        return self._finish_stats(cycles, busy, stall, done, totals, energy, push_t, pop_t, wall)

    def _timeout(self, s: Step, finish: int) -> AcceleratorTimeoutError:
        budget = self.max_cycles or 0
        return AcceleratorTimeoutError(
            f"accelerator timeout after {budget} cycles ({budget / self.config.clock_hz * 1e3:.3g} ms at "
            f"{self.config.clock_hz / 1e6:g} MHz; the device's max_cycles): {where(s.index, self._instrs[s.index])} on "
            f"the {ENGINE_NAMES[s.engine]} engine would run until cycle {finish}")

    def _hazard(self, s: Step, unit: int, start: int, finish: int, inflight: list[tuple[int, int, Step]]) -> None:
        """StreamError if `s` touches memory that an instruction of another unit, still running at `start`,
        writes (or reads, when `s` writes): the stream lacks a token (or a sync) between them and its result
        depends on timing. Accesses are compared by their [first, last] unit ranges."""
        inflight[:] = [(f, u, o) for f, u, o in inflight if f > start]
        for f, u, o in inflight:
            if u == unit:
                continue
            for mem, lo, hi, w in s.accesses:
                for omem, olo, ohi, ow in o.accesses:
                    if mem == omem and (w or ow) and lo <= ohi and olo <= hi:
                        name = "DRAM" if MEMORIES[mem] is None else MEMORIES[mem].name
                        raise HazardError(
                            f"hazard at cycle {start}: {where(s.index, self._instrs[s.index])} on the "
                            f"{UNIT_NAMES[unit]} {'writes' if w else 'reads'} {name} [{lo}, {hi}] while "
                            f"{where(o.index, self._instrs[o.index])} on the {UNIT_NAMES[u]} "
                            f"{'writes' if ow else 'reads'} [{olo}, {ohi}] until cycle {f}: a token is missing "
                            f"between them")
        inflight.append((finish, unit, s))

    def _deadlock(self, progs, pos, pending, push_t, pop_t, now) -> DeadlockError:
        blocked = {}
        for e in range(3):
            if pending[e] is not None:
                s = progs[e][pos[e] - 1]
                q = QUEUES[pending[e][1][0]]
                blocked[Engine(e)] = (s.index, f"waits for room in {q} (full: {self.config.queue_depth} tokens "
                                               f"not popped)")
            elif pos[e] < len(progs[e]):
                s = progs[e][pos[e]]
                if s.finish:
                    blocked[Engine(e)] = (s.index, "(FINISH) waits for the other engines to drain")
                    continue
                need = [QUEUES[qi] for qi in s.pops if len(pop_t[qi]) >= len(push_t[qi])]
                blocked[Engine(e)] = (s.index, f"waits for a token in {', '.join(need)} (pushed "
                                               f"{', '.join(str(len(push_t[QUEUES.index(q)])) for q in need)}, "
                                               f"popped {', '.join(str(len(pop_t[QUEUES.index(q)])) for q in need)})")
        if pending[3] is not None and Engine.COMPUTE not in blocked:
            q = QUEUES[pending[3][1][0]]
            blocked[Engine.COMPUTE] = (progs[1][pos[1] - 1].index, f"(its matrix unit) waits for room in {q} (full: "
                                       f"{self.config.queue_depth} tokens not popped)")
        return deadlock_error(self._instrs, blocked, f" at cycle {now}")

    def _finish_stats(self, cycles, busy, stall, done, totals, energy, push_t, pop_t, wall) -> dict[str, Any]:
        c = self.config
        joules = [x * 1e-12 for x in energy]
        self.stats = {
            "cycles": int(cycles),
            "seconds": cycles / c.clock_hz,
            "dram_read_bytes": totals["read"],
            "dram_write_bytes": totals["write"],
            "ternary_ops": totals["ops"],
            "matrix_utilisation": totals["ops"] / (cycles * c.matrix_rows * c.matrix_lanes) if cycles else 0.0,
            "engines": {name: {"busy": busy[e], "stall": stall[e]} for e, name in enumerate(ENGINE_NAMES)},
            "instructions": done,
            "host_seconds": 0.0,
            "host_device_bytes": 0,
            "energy_joules": sum(joules),
            "energy": dict(zip(ENERGY_PARTS, joules)),
            "tokens_left": {q: len(push_t[k]) - len(pop_t[k]) for k, q in enumerate(QUEUES)},
            "simulator_seconds": time.perf_counter() - wall,
        }
        return self.stats



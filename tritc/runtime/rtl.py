"""RtlDevice: the Device protocol over the RTL core (tritc/hw/core.py) in Amaranth's simulator (docs/HW.md,
"RtlDevice").

The host side is the Simulator's: the same stream checks at load_stream (checked_stream: the header, the build,
every instruction), DRAM as a numpy array the host writes and reads. A run places the stream's words just above
that DRAM (where no checked transfer reaches), starts the core and simulates it until FINISH, a deadlock (the
core's watchdog: DeadlockError naming the blocked instructions, as the Simulator's), a word the core's decoder
refuses (StreamError with its index), or the cycle budget (AcceleratorTimeoutError). The simulation is built once
and kept, so the buffers keep their contents between runs, as on a device; the counters in the stats are the
hardware's.

    dev = RtlDevice(config, dram_bytes=1 << 16)
    dev.write(0x100, data); dev.load_stream(instrs); stats = dev.run(); out = dev.read(0x200, 64)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codegen.fpga.config import FpgaConfig, load_config
from ..codegen.fpga.isa import DEP_FLAGS, INSTR_BYTES, Buf, Engine, Instr, Op, StreamError, VFunc, decode, encode, stream_words
from ..codegen.fpga.verify import POP_QUEUE, PUSH_QUEUE, QUEUES, deadlock_error, where
from ..errors import AcceleratorTimeoutError, UnsupportedError
from .fpga import DeviceError, Simulator, checked_stream

__all__ = ["ABSENT_KEYS", "RtlDevice", "RtlUnsupportedError"]

# The Simulator's stats keys an RtlDevice does not report: the energy, the cycle model's estimate, not something the
# hardware counts.
ABSENT_KEYS = ("energy_joules", "energy")
DEFAULT_MAX_CYCLES = 2_000_000


class RtlUnsupportedError(UnsupportedError):
    """A stream that needs what this RTL core does not have: a compute engine it was built without (GEMM, VOP), or
    a vector function no unit of it computes (EXP, SIN, COS, TANH, ERF until the transcendental unit): `index` and
    `op` of the instruction."""

    def __init__(self, message: str, index: int = -1, op: Op | None = None):
        super().__init__(message)
        self.index, self.op = index, op


class RtlDevice:
    """A Device running streams on the RTL core in simulation. `units`: the compute engines the core is built with
    (default both; a stream with a GEMM or a VOP for an absent one is refused by load_stream). `vector_units`: the
    vector engine's multi-step units (None: the core's default, core.VECTOR_UNITS: every function). `max_cycles`: the run's cycle budget
    (AcceleratorTimeoutError past it; the simulation is then rebuilt, buffers cleared, as a board's watchdog resets
    a hung accelerator). `patience`: the core's watchdog (cycles without progress before it reports a deadlock)."""

    def __init__(self, config: FpgaConfig | str, *, dram_bytes: int | None = None, units: frozenset[str] | None = None,
                 max_cycles: int | None = DEFAULT_MAX_CYCLES, patience: int | None = None,
                 vector_units: tuple | None = None):
        from ..hw.fetch import UNITS
        from ..hw.params import hw_params

        if units is None:
            units = frozenset(UNITS)
        self.vector_units = vector_units
        self.config = load_config(config)
        self.params = hw_params(self.config)
        if max_cycles is not None and (isinstance(max_cycles, bool) or not isinstance(max_cycles, int) or max_cycles < 1):
            raise DeviceError(f"max_cycles must be a positive number of cycles or None, not {max_cycles!r}")
        self.max_cycles = max_cycles
        self.units, self.patience = frozenset(units), patience
        # With `trace`, a run records each engine's changes of instruction or state: (cycle, engine, index, state),
        # what calibration reads (cycles per instruction) and slows the simulation a little.
        self.trace = False
        self.timeline: list[tuple[int, str, int, str]] = []
        size = self.config.dram_bytes if dram_bytes is None else int(dram_bytes)
        if not 0 < size <= self.config.dram_bytes:
            raise DeviceError(f"dram_bytes {size} must be positive and at most the config's {self.config.dram_bytes}")
        beat = self.params.mem_beat_bytes
        self.stream_base = -(-size // beat) * beat          # the stream's words: the first beat above DRAM
        self._dram_full = np.zeros(self.stream_base, np.uint8)   # what the core sees below the stream
        self.dram = self._dram_full[:size]
        self.stats: dict[str, Any] = {}
        self.functional = True
        self._instrs: list[Instr | None] = []
        self._words = b""
        self._sim = None

    # -- host access to DRAM: the Simulator's --------------------------------------------------------------
    _range = Simulator._range
    write = Simulator.write
    read = Simulator.read

    # -- loading -------------------------------------------------------------------------------------------
    def load_stream(self, stream: Sequence[Instr] | bytes, *, check: bool = True) -> None:
        """Take a stream, checked as the Simulator checks it (StreamError naming a malformed instruction), and refuse
        one that needs a compute unit the core lacks (RtlUnsupportedError). `check=False` (binary streams only):
        the header is checked (magic, ISA version, build, length, hash) and the words go to the core as they are,
        so that the core's own decoder meets a malformed one (run() reports it with its index)."""
        if check:
            instrs, _views = checked_stream(stream, self.config, self.dram.size)
            for i, ins in enumerate(instrs):
                if ins.op in (Op.GEMM, Op.VOP) and ins.op.name.lower() not in self.units:
                    raise RtlUnsupportedError(f"this RTL core is built without its {ins.op.name} engine: {where(i, ins)} "
                                              f"needs its {'matrix' if ins.op is Op.GEMM else 'vector'} unit", i, ins.op)
            self._instrs = list(instrs)
            self._words = b"".join(encode(ins) for ins in instrs)
        else:
            if not isinstance(stream, (bytes, bytearray, memoryview)):
                raise StreamError("load_stream(check=False) takes the bytes of a binary stream")
            body = bytes(stream_words(bytes(stream), self.config))
            self._words = body
            self._instrs = [_try_decode(body[i:i + INSTR_BYTES], i // INSTR_BYTES)
                            for i in range(0, len(body), INSTR_BYTES)]
        self.stats = {}

    # -- running -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the loaded stream on the core; the stats: the Simulator's keys but ABSENT_KEYS, counted by the
        hardware (cycles from start to FINISH, payload bytes, instructions, each engine's busy and stall cycles,
        tokens left)."""
        if self._sim is None:
            self._build()
        wall = time.perf_counter()    # the run's, not the simulation's build (a few seconds, once)
        beat = self.params.mem_beat_bytes
        self._dram.stream = np.frombuffer(self._words + bytes(-len(self._words) % beat), np.uint8)
        r = self._call(("run", len(self._words) // INSTR_BYTES, self.max_cycles))
        if r["outcome"] == "timeout":
            self._sim = None        # a hung core is rebuilt (its buffers cleared) before the next run
            budget = self.max_cycles or 0
            raise AcceleratorTimeoutError(
                f"accelerator timeout after {budget} cycles ({budget / self.config.clock_hz * 1e3:.3g} ms at "
                f"{self.config.clock_hz / 1e6:g} MHz; the RTL device's max_cycles): the core neither finished nor "
                f"reported a deadlock")
        if r["error"]:
            raise self._refused(r)
        if r["refused"]:
            i = r["compute_index"]
            ins = self._instrs[i] if 0 <= i < len(self._instrs) else None
            func = VFunc(ins.func).name if ins is not None and ins.op is Op.VOP else "its function"
            raise RtlUnsupportedError(f"the RTL core does not run {func} yet: it stopped at {self._name(i)} (no unit "
                                      f"of its vector engine computes {func})", i, Op.VOP)
        if r["deadlock"]:
            raise self._deadlock(r)
        c = self.config
        self.stats = {
            "cycles": r["cycles"],
            "seconds": r["cycles"] / c.clock_hz,
            "dram_read_bytes": r["read_bytes"],
            "dram_write_bytes": r["write_bytes"],
            "ternary_ops": r["ternary_ops"],
            "matrix_utilisation": r["ternary_ops"] / (r["cycles"] * c.matrix_rows * c.matrix_lanes) if r["cycles"] else 0.0,
            # the matrix unit waits on nothing of its own (its tokens are the compute engine's): no stall
            "engines": {**{e.name.lower(): {"busy": r[f"{e.name.lower()}_busy"], "stall": r[f"{e.name.lower()}_stall"]}
                           for e in Engine}, "matrix": {"busy": r["matrix_busy"], "stall": 0}},
            "instructions": r["instructions"],
            "host_seconds": 0.0,
            "host_device_bytes": 0,
            "tokens_left": {q: r[f"tokens_{q}"] for q in QUEUES},
            "simulator_seconds": time.perf_counter() - wall,
        }
        return self.stats

    def buffers(self) -> dict[Buf, np.ndarray]:
        """The buffers' contents as bytes (the Simulator's `raw`), read out of the simulated RAMs."""
        if self._sim is None:
            self._build()
        return self._call(("peek",))

    def _name(self, index: int) -> str:
        ins = self._instrs[index] if 0 <= index < len(self._instrs) else None
        return where(index, ins) if ins is not None else f"instruction {index}"

    def _refused(self, r: dict) -> StreamError:
        i = r["error_index"]
        word = self._words[i * INSTR_BYTES:(i + 1) * INSTR_BYTES]
        try:
            ins = decode(word, i)
        except StreamError as e:
            return StreamError(f"the RTL core stopped at instruction {i}: its decoder refused the word ({e})")
        return StreamError(f"the RTL core stopped at {where(i, ins)}: it has no {ins.op.name} unit")

    def _deadlock(self, r: dict) -> Exception:
        from ..hw.engines import State

        blocked: dict[Engine, tuple[int, str]] = {}
        for e in Engine:
            n = e.name.lower()
            state, index, waiting = r[f"{n}_state"], r[f"{n}_index"], r[f"{n}_waiting"]
            lacking = [POP_QUEUE[(e, f)] for k, f in enumerate(DEP_FLAGS) if waiting >> k & 1 and (e, f) in POP_QUEUE]
            full = [PUSH_QUEUE[(e, f)] for k, f in enumerate(DEP_FLAGS) if waiting >> k & 1 and (e, f) in PUSH_QUEUE]
            if state == State.POP:
                blocked[e] = (index, f"waits for a token in {', '.join(lacking)} (the queue holds none)")
            elif state == State.PUSH:
                blocked[e] = (index, f"waits for room in {', '.join(full)} (full: {self.config.queue_depth} tokens "
                                     f"not popped)")
            elif state == State.EXEC:
                blocked[e] = (index, "(FINISH) waits for the other engines to drain")
        err = deadlock_error([ins or Instr(Op.NOP) for ins in self._instrs], blocked,
                             f" in the RTL core after {r['cycles']} cycles")
        if r["fetch_blocked"]:
            err = type(err)(f"{err}; fetch holds {self._name(r['fetch_index'])}: its engine's command queue is full")
        return err

    def _build(self) -> None:
        from amaranth.hdl import ClockDomain, Module
        from amaranth.sim import Simulator as AmaranthSimulator

        from ..hw.core import Core

        extra = {} if self.vector_units is None else {"vector_units": tuple(self.vector_units)}
        core = self._core = Core(self.params, self.units, patience=self.patience, **extra)
        top = Module()
        top.domains.sync = ClockDomain()
        top.submodules.core = core
        self._dram = _stream_dram(core.mem, self.params, self._dram_full, self.stream_base)
        sim = AmaranthSimulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(self._dram.serve, background=True)
        sim.add_testbench(self._host, background=True)
        self._request: tuple | None = None
        self._result: Any = None
        self._sim = sim

    def _call(self, request: tuple) -> Any:
        self._request, self._result = request, None
        try:
            while self._result is None:
                self._sim.advance()
        except Exception as e:   # a model of the core's surroundings refused what the core did (an unchecked stream)
            self._sim = None
            raise DeviceError(f"the RTL simulation stopped: {e}") from e
        return self._result

    async def _host(self, ctx) -> None:
        """The host's side of the simulation: waits for a request, then runs the core or reads its buffers."""
        from amaranth.hdl import Value

        from ..hw.engines import State

        core = self._core
        while True:
            if self._request is None:
                await ctx.tick()
                continue
            kind, *args = self._request
            if kind == "peek":
                self._result = self._peek(ctx)
                self._request = None
                continue
            count, budget = args
            await self._clear(ctx)
            ctx.set(core.base, self.stream_base // self.params.mem_beat_bytes)
            ctx.set(core.count, count)
            ctx.set(core.start, 1)
            await ctx.tick()
            ctx.set(core.start, 0)
            cycles, outcome = 0, "timeout"
            self.timeline.clear()
            watch = [(e.name.lower(), getattr(core, f"{e.name.lower()}_index"), getattr(core, f"{e.name.lower()}_state"))
                     for e in Engine] if self.trace else []
            seen = {}
            while budget is None or cycles <= budget:
                _, _, running = await ctx.tick().sample(core.running)
                cycles += 1
                for name, index, state in watch:
                    now = (ctx.get(index), ctx.get(state))
                    if seen.get(name) != now:
                        seen[name] = now
                        self.timeline.append((cycles, name, now[0], State(now[1]).name))
                if not running:
                    outcome = "stopped"
                    break
            result = {"outcome": outcome}
            for name in OUTPUTS:
                result[name] = ctx.get(Value.cast(getattr(core, name)))
            if outcome != "stopped" or not result["finished"]:
                await self._clear(ctx)
            self._result = result
            self._request = None

    async def _clear(self, ctx) -> None:
        """Reset the core's registers and drop the DRAM's answers in flight (a stopped run may leave some)."""
        ctx.set(self._core.clear, 1)
        for _ in range(2):
            await ctx.tick()
            self._dram.pending.clear()
        ctx.set(self._core.clear, 0)

    def _peek(self, ctx) -> dict[Buf, np.ndarray]:
        """Each buffer's bytes from its RAMs: element a of a banked buffer is row a // banks of bank a % banks."""
        core, units = self._core, self.params.buffer_units
        bufs = core.buffers
        out = {}
        for b, wb in bufs.words.items():
            vals = np.array([[ctx.get(bank.data[r]) for bank in wb.banks] for r in range(wb.depth)], np.uint32)
            out[b] = vals.reshape(-1).view(np.uint8)
        act = np.array([[ctx.get(bank.data[r]) for bank in bufs.act.banks] for r in range(bufs.act.banks[0].depth)],
                       np.uint8)
        out[Buf.ACT] = act.reshape(-1)
        wgt = (core.gemm.wgt if bufs.wgt is None else bufs.wgt)
        rows = b"".join(wgt.row_value(ctx, r).to_bytes(wgt.row_bytes, "little") for r in range(wgt.depth))
        out[Buf.WGT] = np.frombuffer(rows, np.uint8)[:units[Buf.WGT]].copy()
        return {b: out[b] for b in Buf}


OUTPUTS = ("running", "finished", "deadlock", "refused", "error", "error_index", "fetch_index", "fetch_blocked", "cycles",
           "instructions", "read_bytes", "write_bytes", "ternary_ops", "matrix_busy", *(f"{e.name.lower()}_{k}" for e in Engine
                                                         for k in ("state", "index", "waiting", "busy", "stall")),
           *(f"tokens_{q}" for q in QUEUES))


def _stream_dram(port, params, dram: np.ndarray, stream_base: int):
    """The DRAM model of a run: the device's DRAM, and above it (from `stream_base`) the stream's words, read only."""
    from ..hw.memory import DramModel

    class StreamDram(DramModel):
        def _access(self, req) -> dict:
            lo = req.addr * self.beat
            if lo < stream_base:
                return super()._access(req)
            off = lo - stream_base
            if req.write or off + self.beat > self.stream.size:
                raise IndexError(f"the core {'wrote' if req.write else 'read'} DRAM byte {lo:#x}, past the stream's "
                                 f"{self.stream.size} bytes at {stream_base:#x}")
            return {"data": int.from_bytes(self.stream[off:off + self.beat].tobytes(), "little"), "write": 0}

    model = StreamDram(port, params.mem_beat_bytes, params.mem_beat_bytes, latency=params.mem_latency,
                       bytes_per_cycle=params.config.bytes_per_cycle)
    model.mem = dram
    model.stream = np.zeros(0, np.uint8)
    return model


def _try_decode(word: bytes, index: int) -> Instr | None:
    try:
        return decode(word, index)
    except StreamError:
        return None

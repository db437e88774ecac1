"""The core that runs a whole instruction stream (docs/HW.md, "The core"): fetch, a command queue per engine, the
load, compute and store engines with the four token queues, the buffers, one memory port shared through a
MemArbiter, a watchdog and the hardware's own counters.

    core = Core(hw_params(config), units={"gemm", "vop"})   # the compute engines built in
    pulse core.clear, then core.start with core.base (the stream's first beat) and core.count (its words) held;
    then `finished`, or `deadlock` (the engines' state, index and waiting say who waits for what), or `error`
    (fetch refused the word at `error_index`), or `refused` (the vector engine cannot run the VOP at
    `compute_index`: a transcendental function until its unit is in `vector_units`).

`clear` resets every register of the core (not the buffers' contents, which persist between runs as on the
device); a run is `clear`, then `start`. The compute engine dispatches GEMMs to a GemmEngine and VOPs to a
VectorEngine (each present when named in `units`); the buffers and the arbitration of their ports among the
movers and the engines are BufferSet's (buffer_set.py).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, ResetInserter, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Engine
from ..codegen.fpga.verify import QUEUES
from .buffer_set import BufferSet
from .engines import ComputeEngine, LoadEngine, State, StoreEngine
from .fetch import CMD, FETCH_ERRORS, INDEX_BITS, Fetch, beat_addr_bits
from .gemm_engine import GemmEngine
from .memory import MemArbiter, port_signature
from .params import HwParams
from .queues import TokenQueue
from .transcendental import TranscendentalLanes
from .vector_engine import VectorEngine
from .vector_units import DivSqrtLanes

VECTOR_UNITS = (DivSqrtLanes, TranscendentalLanes)   # every function of ISA.md's VOP

COUNTER_BITS = 48                       # cycles and bytes: 13 days at 250 MHz, 256 TiB
ENGINES = (Engine.LOAD, Engine.COMPUTE, Engine.STORE)


def _popcount(v) -> object:
    total = Const(0, 1)
    for i in range(len(v)):
        total = total + v[i]
    return total


class Core(wiring.Component):
    """The accelerator core of one build. `units`: the compute engines built in (a subset of "gemm", "vop"; fetch
    refuses an instruction of an absent one). `vector_units`: the vector engine's multi-step unit classes (default
    DivSqrtLanes and TranscendentalLanes, one group of lanes each; a build without the second refuses EXP, SIN,
    COS, TANH, ERF at run time: `refused`). `patience`: cycles without progress
    anywhere before the watchdog calls a deadlock (default 4 DRAM latencies, at least 64: longer than any wait
    the core's own units have without a handshake). `cmd_depth`: instructions each engine's command queue holds
    (fetch stops while the next word's queue is full)."""

    def __init__(self, params: HwParams, units: frozenset[str] = frozenset(), *, patience: int | None = None,
                 cmd_depth: int = 16, fetch_beats: int = 8, vector_units: tuple = VECTOR_UNITS):
        self.params, self.units, self.cmd_depth, self.fetch_beats = params, frozenset(units), cmd_depth, fetch_beats
        self.vector_units = tuple(vector_units)
        self.buffers = BufferSet(params, gemm="gemm" in self.units, vop="vop" in self.units)
        self.patience = patience if patience is not None else max(64, 4 * params.mem_latency)
        members = {
            "clear": In(1), "start": In(1), "base": In(beat_addr_bits(params)), "count": In(INDEX_BITS),
            "mem": Out(port_signature(params.mem_beat_bytes)),
            "running": Out(1), "finished": Out(1), "deadlock": Out(1), "refused": Out(1),
            "error": Out(FETCH_ERRORS), "error_index": Out(INDEX_BITS),
            "fetch_index": Out(INDEX_BITS), "fetch_blocked": Out(1),   # the next word waits for its command queue
            "cycles": Out(COUNTER_BITS), "instructions": Out(INDEX_BITS),
            "read_bytes": Out(COUNTER_BITS), "write_bytes": Out(COUNTER_BITS),
            "ternary_ops": Out(COUNTER_BITS), "matrix_busy": Out(COUNTER_BITS),
        }
        for e in ENGINES:
            n = e.name.lower()
            members.update({f"{n}_state": Out(2), f"{n}_index": Out(INDEX_BITS), f"{n}_waiting": Out(4),
                            f"{n}_busy": Out(COUNTER_BITS), f"{n}_stall": Out(COUNTER_BITS)})
        members.update({f"tokens_{q}": Out(range(params.queue_depth + 1)) for q in QUEUES})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        fetch = m.submodules.fetch = Fetch(p, self.units, self.fetch_beats)
        m.d.comb += [fetch.start.eq(self.start), fetch.base.eq(self.base), fetch.count.eq(self.count)]
        engines = {Engine.LOAD: LoadEngine(p), Engine.COMPUTE: ComputeEngine(p, self.units),
                   Engine.STORE: StoreEngine(p)}
        queues = {}
        for e, eng in engines.items():
            n = e.name.lower()
            m.submodules[n] = eng
            q = queues[e] = m.submodules[f"{n}_cmds"] = fifo.SyncFIFO(width=CMD.size, depth=self.cmd_depth)
            src = getattr(fetch, n)
            m.d.comb += [q.w_data.eq(src.payload.as_value()), q.w_en.eq(src.valid), src.ready.eq(q.w_rdy),
                         eng.cmd.valid.eq(q.r_rdy), eng.cmd.payload.eq(q.r_data), q.r_en.eq(eng.cmd.ready),
                         getattr(self, f"{n}_state").eq(eng.state), getattr(self, f"{n}_index").eq(eng.index),
                         getattr(self, f"{n}_waiting").eq(eng.waiting)]
        for qn in QUEUES:
            tq = m.submodules[f"queue_{qn}"] = TokenQueue(p.queue_depth)
            m.d.comb += getattr(self, f"tokens_{qn}").eq(tq.count)
            for eng in engines.values():
                if qn in eng.pushes.values():
                    wiring.connect(m, getattr(eng, f"push_{qn}"), tq.push)
                if qn in eng.pops.values():
                    wiring.connect(m, tq.pop, getattr(eng, f"pop_{qn}"))
        load, compute, store = (engines[e] for e in ENGINES)
        arb = m.submodules.arbiter = MemArbiter(p, 3)
        wiring.connect(m, fetch.mem, arb.m0)
        wiring.connect(m, load.mem, arb.m1)
        wiring.connect(m, store.mem, arb.m2)
        wiring.connect(m, arb.bus, wiring.flipped(self.mem))
        bufs = m.submodules.buffers = self.buffers
        wiring.connect(m, load.wr, bufs.wr)
        wiring.connect(m, store.rd_req, bufs.rd_req)
        wiring.connect(m, bufs.rd_resp, store.rd_resp)
        if "gemm" in self.units:
            gemm = self.gemm = m.submodules.gemm = GemmEngine(p)
            wiring.connect(m, bufs.wgt_wr, gemm.wgt_wr)
            wiring.connect(m, gemm.act_rd, bufs.act_rd)
            wiring.connect(m, bufs.act_data, gemm.act_data)
            wiring.connect(m, gemm.acc_rd, bufs.acc_rd)
            wiring.connect(m, bufs.acc_rd_data, gemm.acc_rd_data)
            wiring.connect(m, gemm.acc_wr, bufs.acc_wr)
            self._dispatch(m, compute.gemm, gemm, compute.gemm.cmd.payload.f.gemm)
        if "vop" in self.units:
            vec = self.vector = m.submodules.vector = VectorEngine(p, units=self.vector_units)
            wiring.connect(m, vec.rd_a, bufs.rd_a)
            wiring.connect(m, vec.rd_b, bufs.rd_b)
            wiring.connect(m, vec.wr, bufs.vwr)
            self._dispatch(m, compute.vop, vec, compute.vop.cmd.payload.f.vop)
            m.d.comb += compute.vop.done.payload.refused.eq(vec.done.payload.refused)
        m.d.comb += self.refused.eq(compute.refused)

        def idle(e: Engine):
            busy = engines[e].pending
            return (engines[e].state == State.IDLE) & ~queues[e].r_rdy & ~busy

        m.d.comb += compute.drained.eq(fetch.done & idle(Engine.LOAD) & idle(Engine.STORE))
        all_idle = fetch.done & idle(Engine.LOAD) & idle(Engine.COMPUTE) & idle(Engine.STORE)
        progress = fetch.progress | load.progress | compute.progress | store.progress
        stuck = Signal(range(self.patience + 1))
        m.d.comb += [self.error.eq(fetch.error), self.error_index.eq(fetch.error_index)]
        waiting_word = Cat(*(getattr(fetch, e.name.lower()).valid & ~getattr(fetch, e.name.lower()).ready
                             for e in ENGINES)) != 0
        m.d.comb += self.fetch_blocked.eq(waiting_word)
        with m.If(self.start):
            m.d.sync += [self.running.eq(1), self.finished.eq(0), self.deadlock.eq(0), stuck.eq(0)]
        with m.Elif(self.running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If((fetch.error.as_value() != 0) | compute.refused):
                m.d.sync += self.running.eq(0)
            with m.Elif(all_idle):
                m.d.sync += [self.running.eq(0), self.finished.eq(1)]
            with m.Elif(progress):
                m.d.sync += stuck.eq(0)
            with m.Elif(stuck == self.patience - 1):
                m.d.sync += [self.running.eq(0), self.deadlock.eq(1)]
            with m.Else():
                m.d.sync += stuck.eq(stuck + 1)

        # The hardware's counters (RtlDevice's stats): instructions retired, payload bytes moved, and per engine the
        # cycles it worked (EXEC) and waited for a token or room (POP, PUSH).
        with m.If(self.running):
            m.d.sync += self.instructions.eq(self.instructions + load.retired + compute.retired + store.retired)
            for e, eng in engines.items():
                n = e.name.lower()
                busy, stall = getattr(self, f"{n}_busy"), getattr(self, f"{n}_stall")
                with m.If(eng.state == State.EXEC):
                    m.d.sync += busy.eq(busy + 1)
                with m.If((eng.state == State.POP) | (eng.state == State.PUSH)):
                    m.d.sync += stall.eq(stall + 1)
        # The matrix unit's: the trit products of the beats it sequenced, and the cycles a GEMM was in flight.
        if "gemm" in self.units:
            with m.If(self.running):
                m.d.sync += self.ternary_ops.eq(self.ternary_ops + self.gemm.ops)
                with m.If(compute.in_flight != 0):
                    m.d.sync += self.matrix_busy.eq(self.matrix_busy + 1)
        wr = load.wr
        with m.If(wr.valid & wr.ready):
            m.d.sync += self.read_bytes.eq(self.read_bytes + wr.payload.n)
        sreq = store.mem.req
        with m.If(sreq.valid & sreq.ready & sreq.payload.write):
            m.d.sync += self.write_bytes.eq(self.write_bytes + _popcount(sreq.payload.strobe))
        m.d.comb += self.fetch_index.eq(fetch.next_index)
        return ResetInserter({"sync": self.clear})(m)

    @staticmethod
    def _dispatch(m: Module, port, engine, fields) -> None:
        """The compute engine's dispatch port to an engine: its fields of the instruction, and its `done`."""
        m.d.comb += [engine.cmd.valid.eq(port.cmd.valid), engine.cmd.payload.eq(fields),
                     port.cmd.ready.eq(engine.cmd.ready),
                     port.done.valid.eq(engine.done.valid), engine.done.ready.eq(port.done.ready)]

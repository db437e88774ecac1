"""The three engines of docs/ISA.md ("Engines and tokens") with their data: each takes its decoded instructions in
order from its command queue, waits until every queue the instruction pops holds a token and takes them together,
executes, then pushes in order (prev, then next), each as soon as its queue has room. The token side is
TokenEngine's (tokens.py) with an execute step between the pops and the pushes:

- LoadEngine / StoreEngine hand the transfer to their LoadMover / StoreMover and wait for its `done` (a STORE's
  once every write is acknowledged, so a token it pushes means the bytes are in DRAM);
- ComputeEngine relays a NOP's tokens, dispatches a GEMM or a VOP on the `gemm` / `vop` port of its engine (an
  INSTR in, a `done` back), keeps GEMMs in flight beside `overlap` VOPs with their pushes posted, and holds FINISH
  until the other engines have drained.

An instruction whose tokens are there when it is taken pops them at once (IDLE to EXEC), and one with nothing to
push retires from EXEC: 2 cycles for a NOP.

Every engine reports what the watchdog and the host need: `state` (IDLE with nothing to do, POP waiting for
tokens, EXEC working, PUSH waiting for room), `index` of the instruction in hand, `waiting` (the queues it lacks:
a bit per flag), `progress` (a handshake this cycle), `retired` (an instruction finished this cycle).
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import DEP_FLAGS, Engine, Op
from ..codegen.fpga.ports import store_bytes
from ..codegen.fpga.verify import POP_QUEUE, PUSH_QUEUE
from .dma import TRANSFER, LoadMover, StoreMover, chunk_read_layout, chunk_write_layout
from .fetch import CMD, INDEX_BITS, UNITS
from .memory import port_signature
from .params import HwParams
from .queues import INSTR

POP_FLAGS = ("pop_prev", "pop_next")
PUSH_FLAGS = ("push_prev", "push_next")


class State(enum.IntEnum):
    IDLE = 0      # no instruction in hand (its command queue is empty, or it is about to take one)
    POP = 1       # waiting for a token in a queue it pops
    EXEC = 2      # working: a transfer, a unit's instruction, or FINISH waiting for the others to drain
    PUSH = 3      # waiting for room in a queue it pushes


DONE = data.StructLayout({"refused": 1})


def dispatch_signature() -> wiring.Signature:
    """A compute unit's port as the compute engine sees it: `cmd` the decoded instruction, `done` once it has
    finished (its results written), with `refused` set when the unit cannot execute it (the vector engine's
    transcendental functions until their unit is built in)."""
    return wiring.Signature({"cmd": Out(stream.Signature(INSTR)), "done": In(stream.Signature(DONE))})


class _Engine(wiring.Component):
    """The token side and the instruction register every engine shares; a subclass's `execute` drives EXEC and
    returns the condition that ends it (and whether the engine moved this cycle)."""

    role: Engine

    def __init__(self, params: HwParams, members: dict):
        self.params = params
        self.pops = {f: POP_QUEUE[(self.role, f)] for f in POP_FLAGS if (self.role, f) in POP_QUEUE}
        self.pushes = {f: PUSH_QUEUE[(self.role, f)] for f in PUSH_FLAGS if (self.role, f) in PUSH_QUEUE}
        members = {"cmd": In(stream.Signature(CMD)), "state": Out(2), "index": Out(INDEX_BITS),
                   "waiting": Out(len(DEP_FLAGS)), "progress": Out(1), "retired": Out(1), **members}
        members.update({f"pop_{q}": In(stream.Signature(0)) for q in self.pops.values()})
        members.update({f"push_{q}": Out(stream.Signature(0)) for q in self.pushes.values()})
        super().__init__(members)

    def execute(self, m: Module, instr) -> tuple:
        """Drive this engine's work while in EXEC; the conditions (finished, moved this cycle)."""
        raise NotImplementedError

    def setup(self, m: Module) -> None:
        """Add what the engine works with (its mover) to `m` before the token side is built."""

    def may_start(self, m: Module, instr):
        """Whether the instruction in hand may take its tokens and start (besides its tokens)."""
        return Const(1, 1)

    def posting(self, m: Module, instr):
        """Whether the instruction's pushes are posted (`post`) rather than made now, in the PUSH state."""
        return Const(0, 1)

    def post(self, m: Module, instr) -> None:
        """Record the instruction's pushes to be made later (only an engine whose `posting` can be true)."""

    def background(self, m: Module):
        """Work going on beside the instruction in hand (for the watchdog's progress)."""
        return Const(0, 1)

    def elaborate(self, platform) -> Module:
        m = Module()
        self.setup(m)
        instr = Signal(INSTR)
        flags = instr.flags
        pushed = {f: Signal(name=f"{f}_done") for f in self.pushes}
        step = Signal()
        m.d.comb += self.progress.eq(step | self.background(m))
        with m.Switch(self.state):
            with m.Case(State.IDLE):
                # An instruction whose tokens are there (and that may start) takes them as it is taken: EXEC next.
                c = self.cmd.payload.instr
                at_once = self.may_start(m, c)
                for f, q in self.pops.items():
                    at_once = at_once & ~(getattr(c.flags, f) & ~getattr(self, f"pop_{q}").valid)
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [instr.eq(c), self.index.eq(self.cmd.payload.index),
                                 self.state.eq(State.POP), *(p.eq(0) for p in pushed.values())]
                    with m.If(at_once):
                        for f, q in self.pops.items():
                            m.d.comb += getattr(self, f"pop_{q}").ready.eq(getattr(c.flags, f))
                        m.d.sync += self.state.eq(State.EXEC)
                m.d.comb += step.eq(self.cmd.valid)
            with m.Case(State.POP):
                ready = self.may_start(m, instr)
                for f, q in self.pops.items():
                    lacks = getattr(flags, f) & ~getattr(self, f"pop_{q}").valid
                    m.d.comb += self.waiting[DEP_FLAGS.index(f)].eq(lacks)
                    ready = ready & ~lacks
                with m.If(ready):
                    for f, q in self.pops.items():
                        m.d.comb += getattr(self, f"pop_{q}").ready.eq(getattr(flags, f))
                    m.d.sync += self.state.eq(State.EXEC)
                m.d.comb += step.eq(ready)
            with m.Case(State.EXEC):
                finished, busy = self.execute(m, instr)
                pushes = Const(0, 1)
                for f in self.pushes:
                    pushes = pushes | getattr(flags, f)
                with m.If(finished & pushes):
                    m.d.sync += self.state.eq(State.PUSH)
                with m.Elif(finished):            # nothing to push: retired now
                    m.d.sync += self.state.eq(State.IDLE)
                    m.d.comb += self.retired.eq(1)
                m.d.comb += step.eq(busy | finished)
            with m.Case(State.PUSH):
                posting = self.posting(m, instr)
                waiting = Const(0, 1)
                moved = []
                for f, q in self.pushes.items():
                    port = getattr(self, f"push_{q}")
                    todo = getattr(flags, f) & ~pushed[f] & ~waiting & ~posting
                    m.d.comb += port.valid.eq(todo)
                    with m.If(todo & port.ready):
                        m.d.sync += pushed[f].eq(1)
                    moved.append(todo & port.ready)
                    blocked = getattr(flags, f) & ~pushed[f] & ~(todo & port.ready) & ~posting
                    m.d.comb += self.waiting[DEP_FLAGS.index(f)].eq(blocked & ~waiting)
                    waiting = waiting | blocked
                with m.If(~waiting):
                    m.d.sync += self.state.eq(State.IDLE)
                    m.d.comb += self.retired.eq(1)
                with m.If(posting):
                    self.post(m, instr)
                progress = ~waiting
                for v in moved:
                    progress = progress | v
                m.d.comb += step.eq(progress)
        self.after(m)
        return m

    def after(self, m: Module) -> None:
        """Logic beside the state machine (overriding what it drives where both do)."""


class _DmaEngine(_Engine):
    """LOAD or STORE (ISA.md, "Transfers in flight"): EXEC hands the transfer to the mover and ends as the mover
    takes it, so that the next transfer follows while this one's data moves (the mover keeps up to
    `dram_outstanding` unfinished). Pushes are posted: each transfer's push flags wait in `owed` beside it and its
    tokens go out when the mover reports it finished (transfers finish in order, so tokens keep program order).
    `pending`: transfers handed over and not finished, or tokens owed (the core is not drained while any is)."""

    def execute(self, m: Module, instr) -> tuple:
        mover = self._mover
        fields = getattr(instr.f, self.op.name.lower())
        self._flags = instr.flags
        room = self.owed.w_rdy                   # a transfer pushes only while its queues can owe another token
        for f, q in self.queues:
            room = room & ~(getattr(instr.flags, f) & (self.promised[q] == self.params.queue_depth))
        m.d.comb += [mover.cmd.payload.eq(fields.as_value()), mover.cmd.valid.eq(room)]
        return mover.cmd.valid & mover.cmd.ready, self.moved_by(mover)

    def posting(self, m: Module, instr):
        return Const(1, 1)

    def setup(self, m: Module) -> None:
        mover = self._mover = m.submodules.mover = self.mover_class(self.params)
        wiring.connect(m, mover.mem, wiring.flipped(self.mem))
        self.connect_buffers(m, mover)
        self.queues = list(self.pushes.items())
        self.owed = m.submodules.owed = fifo.SyncFIFO(width=max(1, len(self.queues)), depth=mover.limit)
        depth = self.params.queue_depth
        # per queue: tokens owed by transfers handed over (`promised`, at most a queue's depth, so that an engine
        # runs no further ahead of its consumer than a queue of tokens would let it) and of those, the ones whose
        # transfer has finished (`posted`), pushed as the queue takes them
        self.promised = {q: Signal(range(depth + 1), name=f"promised_{q}") for _, q in self.queues}
        self.posted = {q: Signal(range(depth + 1), name=f"posted_{q}") for _, q in self.queues}

    def background(self, m: Module):
        return self.moved_by(self._mover)

    def after(self, m: Module) -> None:
        mover, owed = self._mover, self.owed
        flags = self._flags                     # the instruction in hand's (its EXEC hands the transfer over)
        taken = mover.cmd.valid & mover.cmd.ready
        m.d.comb += [owed.w_en.eq(taken), owed.w_data.eq(Cat(*(getattr(flags, f) for f, _ in self.queues)) if
                                                           self.queues else 0),
                     mover.done.ready.eq(owed.r_rdy), owed.r_en.eq(mover.done.valid)]
        busy = owed.r_rdy
        for k, (f, q) in enumerate(self.queues):
            port = getattr(self, f"push_{q}")
            add = mover.done.valid & owed.r_data[k]
            sent = port.valid & port.ready
            m.d.comb += port.valid.eq(self.posted[q] != 0)
            m.d.sync += [self.posted[q].eq(self.posted[q] + add - sent),
                         self.promised[q].eq(self.promised[q] + (taken & getattr(flags, f)) - sent)]
            busy = busy | (self.posted[q] != 0)
        m.d.comb += self.pending.eq(busy)

    def moved_by(self, mover):
        mem = mover.mem
        return (mem.req.valid & mem.req.ready) | (mem.resp.valid & mem.resp.ready)


class LoadEngine(_DmaEngine):
    """The load engine: `cmd` its LOADs, `mem` its memory port, `wr` the buffers' write port (LoadMover's)."""

    role, op, mover_class = Engine.LOAD, Op.LOAD, LoadMover

    def __init__(self, params: HwParams):
        super().__init__(params, {"mem": Out(port_signature(params.mem_beat_bytes)), "pending": Out(1),
                                  "wr": Out(stream.Signature(chunk_write_layout(params.mem_beat_bytes)))})

    def connect_buffers(self, m: Module, mover) -> None:
        wiring.connect(m, mover.wr, wiring.flipped(self.wr))

    def moved_by(self, mover):
        return super().moved_by(mover) | (mover.wr.valid & mover.wr.ready)


class StoreEngine(_DmaEngine):
    """The store engine: `cmd` its STOREs, `mem` its memory port, `rd_req` / `rd_resp` the buffers' read port."""

    role, op, mover_class = Engine.STORE, Op.STORE, StoreMover

    def __init__(self, params: HwParams):
        super().__init__(params, {"mem": Out(port_signature(params.mem_beat_bytes)), "pending": Out(1),
                                  "rd_req": Out(stream.Signature(chunk_read_layout())),
                                  "rd_resp": In(stream.Signature(8 * store_bytes(params.config)))})

    def connect_buffers(self, m: Module, mover) -> None:
        wiring.connect(m, mover.rd_req, wiring.flipped(self.rd_req))
        wiring.connect(m, wiring.flipped(self.rd_resp), mover.rd_resp)

    def moved_by(self, mover):
        return (super().moved_by(mover) | (mover.rd_req.valid & mover.rd_req.ready)
                | (mover.rd_resp.valid & mover.rd_resp.ready))


assert TRANSFER.size == INSTR.members["f"].members["store"].size


class ComputeEngine(_Engine):
    """The compute engine: `cmd` its NOPs, GEMMs, VOPs and FINISH; `gemm` / `vop` the dispatch ports of the units
    in `units` (an absent unit's instructions never reach it: fetch refuses them); `drained` from the core (the
    load and store engines idle with empty queues, every word fetched) ends FINISH. A unit's `done` with `refused`
    sets `refused` (until the core is cleared) and the engine stays on that instruction: the core stops there.

    A GEMM is in flight from the cycle its engine takes it to its `done` (ISA.md, "The matrix unit beside the compute
    engine"): the engine goes on, but only a VOP with `overlap`, or the next GEMM (which the GEMM engine takes as
    the one before drains; two at most in flight), may start meanwhile; every other instruction waits until the
    GEMMs are done and their pushes made. The GEMMs' pushes, and those of the `overlap` VOPs that finish while one is
    in flight or before its pushes are made, are posted: counted per queue (`posted`) and made once no GEMM is in
    flight, as the queues take them (tokens are counts: a queue receives its tokens no earlier than the pushes of
    the GEMMs before them, at worst later). `pending`: a GEMM in flight or a posted push not made."""

    role = Engine.COMPUTE

    def __init__(self, params: HwParams, units: frozenset[str] = frozenset()):
        self.units = frozenset(units)
        unknown = self.units - set(UNITS)
        if unknown:
            raise ValueError(f"unknown compute unit(s) {sorted(unknown)}: the units are {', '.join(UNITS)}")
        super().__init__(params, {"drained": In(1), "refused": Out(1), "pending": Out(1),
                                  **{u: Out(dispatch_signature()) for u in sorted(self.units)}})
        self.in_flight = Signal(range(3))          # GEMMs taken by their engine, their done not yet seen
        # Posted tokens per queue, in three stages: `posted` goes to the queue as it takes them; `first` waits for the
        # done of the oldest GEMM in flight, `second` for the one after it (two in flight at most).
        self.posted = {q: Signal(8, name=f"posted_{q}") for q in self.pushes.values()}
        self.first = {q: Signal(8, name=f"first_{q}") for q in self.pushes.values()}
        self.second = {q: Signal(8, name=f"second_{q}") for q in self.pushes.values()}
        self._add = {q: Signal(name=f"post_{q}") for q in self.pushes.values()}

    def may_start(self, m: Module, instr):
        # an `overlap` VOP runs beside one GEMM, never two: the one before the last is what it may read (ISA.md)
        overlap = (instr.op == Op.VOP) & instr.f.vop.overlap & (self.in_flight < 2)
        follows = (instr.op == Op.GEMM) & (self.in_flight == 1)     # handed over as the one before drains
        return overlap | follows | ~self.pending

    def posting(self, m: Module, instr):
        return (instr.op == Op.GEMM) | ((instr.op == Op.VOP) & self.pending)

    def post(self, m: Module, instr) -> None:
        for f, q in self.pushes.items():
            m.d.comb += self._add[q].eq(getattr(instr.flags, f))

    def background(self, m: Module):
        return self.in_flight != 0

    def after(self, m: Module) -> None:
        # A posted token waits for the GEMM in flight that precedes it in program order: a GEMM's own tokens and those
        # of the VOPs after it for that GEMM (the second of two in flight: for it), so that each GEMM's tokens leave
        # at its own done, in program order; with none in flight they go to the queue at once.
        done = Signal()
        if "gemm" in self.units:
            d = self.gemm.done
            m.d.comb += [d.ready.eq(self.in_flight != 0), done.eq(d.valid & d.ready)]
            taken = self.gemm.cmd.valid & self.gemm.cmd.ready
            m.d.sync += self.in_flight.eq(self.in_flight + taken - done)
        to_second = self.in_flight == 2
        to_first = self.in_flight == 1
        any_posted = 0
        for q, count in self.posted.items():
            port = getattr(self, f"push_{q}")
            first, second, add = self.first[q], self.second[q], self._add[q]
            drain = count != 0
            with m.If(drain):                     # never while the state machine pushes: it waits for pending
                m.d.comb += port.valid.eq(1)
            sent = drain & port.ready
            with m.If(done):                      # the oldest GEMM is done: its tokens go; the next one's move up
                m.d.sync += [count.eq(count + first + (add & to_first) - sent),
                             first.eq(second + (add & to_second)), second.eq(0)]
            with m.Else():
                m.d.sync += [count.eq(count + (add & ~to_first & ~to_second) - sent),
                             first.eq(first + (add & to_first)), second.eq(second + (add & to_second))]
            any_posted = any_posted | (count != 0) | (first != 0) | (second != 0)
        m.d.comb += self.pending.eq((self.in_flight != 0) | any_posted)

    def execute(self, m: Module, instr) -> tuple:
        finished = Signal()
        busy = Signal()
        with m.Switch(instr.op):
            with m.Case(Op.NOP):
                m.d.comb += finished.eq(1)
            with m.Case(Op.FINISH):
                m.d.comb += finished.eq(self.drained)
            if "gemm" in self.units:
                with m.Case(Op.GEMM):            # done when taken: the GEMM is then in flight (`after`)
                    port = self.gemm
                    m.d.comb += [port.cmd.valid.eq(1), finished.eq(port.cmd.ready), busy.eq(1)]
            for unit in sorted(self.units & {"vop"}):
                port = getattr(self, unit)
                issued = Signal(name=f"{unit}_issued")
                with m.Case(Op.VOP):
                    m.d.comb += [port.cmd.valid.eq(~issued & ~self.refused), port.done.ready.eq(issued),
                                 finished.eq(port.done.valid & issued & ~port.done.payload.refused), busy.eq(1)]
                    with m.If(port.done.valid & issued & port.done.payload.refused):
                        m.d.sync += self.refused.eq(1)
                    with m.If(port.cmd.valid & port.cmd.ready):
                        m.d.sync += issued.eq(1)
                    with m.If(port.done.valid & port.done.ready):
                        m.d.sync += issued.eq(0)
        for unit in sorted(self.units):
            m.d.comb += getattr(self, unit).cmd.payload.eq(instr)
        return finished, busy

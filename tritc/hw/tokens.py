"""The engines' token handshakes (docs/ISA.md, "Engines and tokens"), without their data: TokenEngine runs one
engine's instructions as flag sets (wait until every queue it pops holds a token and take them together, run,
then push its queues in order, each as soon as there is room), and TokenProtocol joins the three engines through
the four TokenQueues with a watchdog: when no engine has made progress for `patience` cycles and one is still
unfinished, `deadlock` rises and stays, which is how the core will report a stream that can never end instead of
hanging. The real engines (phase 2) wrap their data movers in this same handshake.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import DEP_FLAGS, Engine
from ..codegen.fpga.verify import POP_QUEUE, PUSH_QUEUE, QUEUES
from .queues import TokenQueues

FLAGS_CMD = data.StructLayout({**{name: 1 for name in DEP_FLAGS}, "last": 1})
POP_FLAGS = ("pop_prev", "pop_next")
PUSH_FLAGS = ("push_prev", "push_next")


class TokenEngine(wiring.Component):
    """One engine's token side. `cmd`: its instructions' flags in order, the last one marked; `pop_<q>` and
    `push_<q>` for the queues its role touches (ISA.md's table); `progress` pulses when anything moved;
    `finished` after the last instruction has pushed."""

    def __init__(self, role: Engine):
        self.role = role
        self.pops = {flag: POP_QUEUE[(role, flag)] for flag in POP_FLAGS if (role, flag) in POP_QUEUE}
        self.pushes = {flag: PUSH_QUEUE[(role, flag)] for flag in PUSH_FLAGS if (role, flag) in PUSH_QUEUE}
        members = {"cmd": In(stream.Signature(FLAGS_CMD)), "progress": Out(1), "finished": Out(1)}
        members.update({f"pop_{q}": In(stream.Signature(0)) for q in self.pops.values()})
        members.update({f"push_{q}": Out(stream.Signature(0)) for q in self.pushes.values()})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        flags = Signal(FLAGS_CMD)
        pushed = {flag: Signal(name=f"{flag}_done") for flag in self.pushes}
        moved = []                           # pushes that went through this cycle
        with m.FSM():
            with m.State("take"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [flags.eq(self.cmd.payload), *(p.eq(0) for p in pushed.values())]
                    m.next = "pop"
                m.d.comb += self.progress.eq(self.cmd.valid)
            with m.State("pop"):
                # Every queue the instruction pops must hold a token; then it takes them all at once.
                ready = Const(1, 1)
                for flag, q in self.pops.items():
                    ready = ready & (~getattr(flags, flag) | getattr(self, f"pop_{q}").valid)
                with m.If(ready):
                    for flag, q in self.pops.items():
                        m.d.comb += getattr(self, f"pop_{q}").ready.eq(getattr(flags, flag))
                    m.next = "push"
                m.d.comb += self.progress.eq(ready)
            with m.State("push"):
                # Pushes in order (prev, then next), each as soon as its queue has room.
                waiting = Const(0, 1)
                for flag, q in self.pushes.items():
                    port = getattr(self, f"push_{q}")
                    todo = getattr(flags, flag) & ~pushed[flag] & ~waiting
                    m.d.comb += port.valid.eq(todo)
                    with m.If(todo & port.ready):
                        m.d.sync += pushed[flag].eq(1)
                    moved.append(todo & port.ready)
                    waiting = waiting | (getattr(flags, flag) & ~pushed[flag] & ~(todo & port.ready))
                with m.If(~waiting):
                    m.next = "take"
                    with m.If(flags.last):
                        m.next = "finished"
                progress = ~waiting
                for v in moved:
                    progress = progress | v
                m.d.comb += self.progress.eq(progress)
            with m.State("finished"):
                m.d.comb += self.finished.eq(1)
        return m


class TokenProtocol(wiring.Component):
    """The three engines' token sides and the four queues (`depth` tokens each). `load`, `compute`, `store`: each
    engine's flag stream; `done` once all have finished; `deadlock` once none has moved for `patience` cycles
    while one has not finished (sticky)."""

    def __init__(self, depth: int, patience: int = 8):
        self.depth, self.patience = depth, patience
        super().__init__({"load": In(stream.Signature(FLAGS_CMD)), "compute": In(stream.Signature(FLAGS_CMD)),
                          "store": In(stream.Signature(FLAGS_CMD)), "done": Out(1), "deadlock": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        queues = m.submodules.queues = TokenQueues(self.depth)
        engines = {}
        for role in Engine:
            eng = engines[role] = m.submodules[role.name.lower()] = TokenEngine(role)
            wiring.connect(m, wiring.flipped(getattr(self, role.name.lower())), eng.cmd)
            for q in eng.pops.values():
                wiring.connect(m, getattr(queues, f"{q}_pop"), getattr(eng, f"pop_{q}"))
            for q in eng.pushes.values():
                wiring.connect(m, getattr(eng, f"push_{q}"), getattr(queues, f"{q}_push"))
        assert {q for e in engines.values() for q in (*e.pops.values(), *e.pushes.values())} == set(QUEUES)
        done = engines[Engine.LOAD].finished & engines[Engine.COMPUTE].finished & engines[Engine.STORE].finished
        progress = engines[Engine.LOAD].progress | engines[Engine.COMPUTE].progress | engines[Engine.STORE].progress
        idle = Signal(range(self.patience + 1))
        with m.If(progress | done):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.patience):
            m.d.sync += idle.eq(idle + 1)
        with m.If(idle == self.patience):
            m.d.sync += self.deadlock.eq(1)
        m.d.comb += self.done.eq(done)
        return m

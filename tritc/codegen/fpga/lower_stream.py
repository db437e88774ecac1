"""StreamBuilder: a sequential program of LOAD / GEMM / VOP / STORE made into a three-engine stream with tokens.

The lowerings emit instructions as if one engine ran them in program order, each with the buffer and DRAM spans
it reads and writes. The builder inserts exactly the dependency tokens that make the concurrent execution
(docs/ISA.md, "Engines and tokens") compute what the sequential program does: a read after a write, a write
after a read and a write after a write on another engine each become a push on the producer and a pop on the
consumer. Load <-> store dependencies (a LOAD of DRAM a STORE wrote, a LOAD into a buffer a STORE still reads)
have no queue of their own and are relayed through the compute engine (s2c, then c2l; l2c, then c2s), by a NOP
when no compute instruction already carries them. Double buffering is then nothing but allocation: a tile
loaded into the other half of a buffer conflicts with nothing in flight, so its LOAD waits for no token.

A vector clock per engine (the last instruction of each engine it is known to run after) keeps tokens minimal:
a dependency already implied by earlier tokens, or by the engine's own order, costs nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from .isa import ENGINE_OF, Engine, Instr, Op

DRAM = 5  # the DRAM space of a Span (0..4 are the Buf codes)
LOAD, COMPUTE, STORE = Engine.LOAD, Engine.COMPUTE, Engine.STORE
PRUNE_EVERY = 256


@dataclass(frozen=True)
class Span:
    """A half-open interval [lo, hi) of one memory space: a buffer (in its units) or DRAM (bytes)."""

    space: int
    lo: int
    hi: int


def view_span(space: int, addr: int, rows: int, cols: int, rs: int, cs: int, elem: int = 1) -> Span:
    """The bounding span of a 2-D strided view: element (r, c) at addr + r*rs + c*cs, each `elem` units long."""
    if rows <= 0 or cols <= 0:
        return Span(space, addr, addr)
    lo = addr + min(0, (rows - 1) * rs) + min(0, (cols - 1) * cs)
    hi = addr + max(0, (rows - 1) * rs) + max(0, (cols - 1) * cs) + elem
    return Span(space, lo, hi)


def _overlap(a: Span, b: Span) -> bool:
    return a.space == b.space and a.lo < b.hi and b.lo < a.hi


@dataclass
class _Item:
    op: Op
    fields: dict[str, int]
    engine: Engine
    flags: list[int]          # pop_prev, pop_next, push_prev, push_next
    clock: tuple[int, int, int]  # per engine: the last local index known complete when this one completes


# The flag a producer sets to push toward a consumer engine, and the flag the consumer pops it with.
_PUSH = {(LOAD, COMPUTE): 3, (COMPUTE, LOAD): 2, (COMPUTE, STORE): 3, (STORE, COMPUTE): 2}
_POP = {(LOAD, COMPUTE): 0, (STORE, COMPUTE): 1, (COMPUTE, LOAD): 1, (COMPUTE, STORE): 0}


class StreamBuilder:
    """Collects instructions in program order; `finish()` gives the stream with its tokens and a FINISH."""

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self.local: dict[Engine, list[int]] = {e: [] for e in Engine}   # engine -> indices into items
        self.clock = [[-1, -1, -1] for _ in Engine]                      # clock[E][X]
        self.records: dict[int, list[tuple[int, int, int, int, bool]]] = {}  # space -> (lo, hi, engine, idx, write)
        self.compute_clock: dict[Engine, list[int]] = {LOAD: [], STORE: []}  # per compute instruction, non-decreasing
        self._emitted = 0
        self.tokens = 0
        self.relays = 0
        self.marks: list[tuple[int, str]] = []   # (index of the first instruction, what follows): for profiles
        # The spans of the last GEMM while it may still run on the matrix unit (reads, writes): the compute engine
        # goes on past a GEMM, and a VOP that touches none of them is marked `overlap` (it runs meanwhile).
        self.matrix_spans: tuple[list[Span], list[Span]] | None = None
        self.overlaps = 0

    def mark(self, what: str) -> None:
        self.marks.append((len(self.items), what))

    # ---- emitting --------------------------------------------------------------------------------------
    def emit(self, op: Op, reads: tuple[Span, ...] | list[Span] = (), writes: tuple[Span, ...] | list[Span] = (),
             **fields: int) -> None:
        engine = ENGINE_OF[op]
        need = [-1, -1, -1]
        for sp in reads:
            for lo, hi, e, idx, write in self.records.get(sp.space, ()):
                if write and e != engine and lo < sp.hi and sp.lo < hi and idx > need[e]:
                    need[e] = idx
        for sp in writes:
            for lo, hi, e, idx, _w in self.records.get(sp.space, ()):
                if e != engine and lo < sp.hi and sp.lo < hi and idx > need[e]:
                    need[e] = idx
        flags = self._sync(engine, need)
        if op == Op.GEMM:
            self.matrix_spans = ([sp for sp in reads if sp.hi > sp.lo], [sp for sp in writes if sp.hi > sp.lo])
        elif op == Op.VOP and self.matrix_spans is not None:
            g_reads, g_writes = self.matrix_spans
            if (any(_overlap(a, b) for a in reads for b in g_writes)
                    or any(_overlap(a, b) for a in writes for b in g_reads + g_writes)):
                self.matrix_spans = None        # it waits for the matrix unit, which is idle after it
            else:
                fields = dict(fields, overlap=1)
                self.overlaps += 1
        elif op == Op.NOP:
            self.matrix_spans = None
        idx = self._append(op, engine, flags, fields)
        for write, spans in ((False, reads), (True, writes)):
            for sp in spans:
                if sp.hi > sp.lo:
                    self.records.setdefault(sp.space, []).append((sp.lo, sp.hi, engine, idx, write))
        self._emitted += 1
        if self._emitted % PRUNE_EVERY == 0:
            self._prune()

    def finish(self) -> list[Instr]:
        """The stream: every instruction with its flags, then FINISH (which waits for every engine to drain)."""
        self._append(Op.FINISH, COMPUTE, [0, 0, 0, 0], {})
        out = []
        for it in self.items:
            pp, pn, qp, qn = it.flags
            out.append(Instr(it.op, pop_prev=pp, pop_next=pn, push_prev=qp, push_next=qn, **it.fields))
        return out

    # ---- tokens ----------------------------------------------------------------------------------------
    def _sync(self, engine: Engine, need: list[int]) -> list[int]:
        """The pop flags that make `engine`'s next instruction run after instruction need[X] of each engine X."""
        flags = [0, 0, 0, 0]
        mine = self.clock[engine]
        if engine != COMPUTE:
            other = STORE if engine == LOAD else LOAD
            if need[other] > mine[other]:
                # No queue between load and store: the compute engine relays the dependency.
                if self.clock[COMPUTE][other] < need[other]:
                    self.relays += 1
                    self._append(Op.NOP, COMPUTE, self._pop_from(COMPUTE, other, need[other], [0, 0, 0, 0]), {})
                # the earliest compute instruction known to run after need[other]
                need[COMPUTE] = max(need[COMPUTE], bisect_left(self.compute_clock[other], need[other]))
            if need[COMPUTE] > mine[COMPUTE]:
                self._pop_from(engine, COMPUTE, need[COMPUTE], flags)
        else:
            for x in (LOAD, STORE):
                if need[x] > mine[x]:
                    self._pop_from(COMPUTE, x, need[x], flags)
        return flags

    def _pop_from(self, consumer: Engine, producer: Engine, idx: int, flags: list[int]) -> list[int]:
        """A token from instruction `idx` of `producer` to the next instruction of `consumer` (its flags)."""
        item = self.items[self.local[producer][idx]]
        push = _PUSH[(producer, consumer)]
        assert not item.flags[push], "a token the consumer already took (the clock should have covered it)"
        item.flags[push] = 1
        flags[_POP[(producer, consumer)]] = 1
        c = self.clock[consumer]
        for k in range(3):
            c[k] = max(c[k], item.clock[k])
        self.tokens += 1
        return flags

    def _append(self, op: Op, engine: Engine, flags: list[int], fields: dict[str, int]) -> int:
        idx = len(self.local[engine])
        self.clock[engine][engine] = idx
        self.local[engine].append(len(self.items))
        self.items.append(_Item(op, dict(fields), engine, flags, tuple(self.clock[engine])))  # type: ignore[arg-type]
        if engine == COMPUTE:
            for x in (LOAD, STORE):
                self.compute_clock[x].append(self.clock[COMPUTE][x])
        return idx

    def _prune(self) -> None:
        """Forget accesses every other engine is known to run after: they can cause no token any more."""
        known = [min(self.clock[y][x] for y in Engine if y != x) for x in Engine]
        for space, recs in self.records.items():
            self.records[space] = [r for r in recs if r[3] > known[r[2]]]

    # ---- what it made ----------------------------------------------------------------------------------
    def count(self, op: Op) -> int:
        return sum(1 for it in self.items if it.op == op)


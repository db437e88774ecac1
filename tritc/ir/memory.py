"""The memory schedule: where every intermediate value lives in one arena, for every binding of the symbolic dims.

    sched = current_schedule(graph)           # what schedule-memory attached, or None if the graph changed since
    sched.offsets({"seq": 7})["h"]            # bytes from the arena's start, at one binding of the symbols
    sched.arena                               # a Size: the arena's bytes as a formula of the symbols

The node order is the graph's own (schedule-memory reorders the graph). Values listed nowhere live outside the arena:
graph inputs and outputs in the caller's buffers, weights in the weight blob, constants inline. A schedule made by codegen
also places kernel scratch: a slot per node that needs working memory, live at that node's step only (`scratch`).
docs/MEMORY.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from .graph import Graph, Value
from .sizes import ALIGN, Size
from .types import format_type

# Ops whose result is its operand's bytes seen with another shape: the result aliases the operand, no copy.
VIEW_OPS = frozenset({"reshape", "squeeze", "unsqueeze", "flatten"})
NO_STORAGE_OPS = frozenset({"weight", "constant"})


@dataclass(frozen=True)
class Placement:
    """A value that owns an arena slot of `size` bytes (rounded up to ALIGN), which sits above the slots `below`: its
    offset is the highest end among them (0 if none), at every binding. Any two slots live at the same time are
    ordered this way, directly or through others, so they never overlap."""

    size: Size
    below: tuple[str, ...] = ()


@dataclass(frozen=True)
class Alias:
    """A value that uses the storage of `of`: a view (reshape, ...) or an elementwise result written over its operand
    (in place: `of` dies at that node and has the same shape and element size)."""

    kind: Literal["view", "inplace"]
    of: str


@dataclass(frozen=True)
class Unplanned:
    """A value whose size the IR does not know (a `?` dim): not in the arena; codegen allocates it."""


Entry = Placement | Alias | Unplanned


@dataclass(frozen=True)
class MemorySchedule:
    """Per value (by name, in node order) its Entry, and the fingerprint of the graph it was made for. `scratch` names
    the slots that hold a node's kernel scratch (codegen's schedules only): slot name -> the node's first result."""

    entries: Mapping[str, Entry] = field(hash=False)
    fingerprint: str
    scratch: Mapping[str, str] = field(default_factory=dict, hash=False)

    def root(self, name: str) -> str:
        """The value whose storage `name` uses (itself unless it is an alias)."""
        entry = self.entries.get(name)
        while isinstance(entry, Alias):
            name = entry.of
            entry = self.entries.get(name)
        return name

    def placement(self, name: str) -> Placement | None:
        """The arena slot `name` reads and writes (through its aliases), or None if it lives outside the arena."""
        entry = self.entries.get(self.root(name))
        return entry if isinstance(entry, Placement) else None

    @cached_property
    def slots(self) -> dict[str, Placement]:
        """The placed values, each after every slot it sits above."""
        placed = {k: e for k, e in self.entries.items() if isinstance(e, Placement)}
        order: dict[str, Placement] = {}
        for name in placed:
            stack, on_stack = [name], {name}
            while stack:
                top = stack[-1]
                pending = [u for u in placed[top].below if u not in order]
                if any(u in on_stack or u not in placed for u in pending):
                    raise ValueError(f"slot %{top} sits above a value that is no slot, or above itself")
                if pending:
                    stack.append(pending[0])
                    on_stack.add(pending[0])
                else:
                    order[stack.pop()] = placed[top]
                    on_stack.discard(top)
        return order

    @cached_property
    def tops(self) -> tuple[str, ...]:
        """The slots nothing sits above: the arena ends at the highest of their ends."""
        under = {u for e in self.slots.values() for u in e.below}
        return tuple(k for k in self.slots if k not in under)

    def offsets(self, bindings: Mapping[str, int]) -> dict[str, int]:
        """Every slot's offset at one binding: one max and one add per `below` edge."""
        off: dict[str, int] = {}
        end: dict[str, int] = {}
        for name, p in self.slots.items():
            off[name] = max((end[u] for u in p.below), default=0)
            end[name] = off[name] + p.size.aligned().evaluate(bindings)
        return off

    def arena_bytes(self, bindings: Mapping[str, int]) -> int:
        off = self.offsets(bindings)
        return max((off[t] + self.slots[t].size.aligned().evaluate(bindings) for t in self.tops), default=0)

    @cached_property
    def offset_sizes(self) -> dict[str, Size]:
        """Every slot's offset as one formula of the symbols (the max of the sums of slots along each chain below it,
        dominated sums dropped)."""
        off: dict[str, Size] = {}
        end: dict[str, Size] = {}
        for name, p in self.slots.items():
            ends = [end[u] for u in p.below]
            off[name] = ends[0].max(*ends[1:]) if ends else Size.const(0)
            end[name] = off[name] + p.size.aligned()
        return off

    @cached_property
    def arena(self) -> Size:
        """The arena's bytes as one formula of the symbols (exact; can be long: see arena_bound)."""
        ends = [self.offset_sizes[t] + self.slots[t].size.aligned() for t in self.tops]
        return ends[0].max(*ends[1:]) if ends else Size.const(0)

    @cached_property
    def arena_bound(self) -> Size:
        """An upper bound of the arena's bytes with no align() (each slot at most ALIGN - 1 bytes over its size):
        a few terms, for people; exact when every slot size is a multiple of ALIGN at every binding."""
        end: dict[str, Size] = {}
        for name, p in self.slots.items():
            ends = [end[u] for u in p.below]
            end[name] = (ends[0].max(*ends[1:]) if ends else Size.const(0)) + p.size.aligned().bounded()
        tops = [end[t] for t in self.tops]
        return tops[0].max(*tops[1:]) if tops else Size.const(0)

    def is_current(self, graph: Graph) -> bool:
        return self.fingerprint == fingerprint(graph)


def arena_formula(schedule: MemorySchedule) -> str:
    """The arena's bytes as a formula of the symbols, for people: `512*seq+64` when exact, else `at most max(...)`, an
    upper bound with a few terms (schedule.arena is exact and can be long; schedule.arena_bytes(bindings) gives
    exact values)."""
    exact = all(p.size.aligned().is_exact_polynomial for p in schedule.slots.values())
    return _formula(schedule.arena_bound, exact)


def lower_bound_formula(graph: Graph, schedule: MemorySchedule) -> str:
    """The lower bound (the most bytes live at one step) as a formula of the symbols, as arena_formula writes it."""
    bufs = [b for b in schedule_buffers(graph, schedule) if b.size is not None]
    at_step: dict[int, list[Size]] = {}
    for b in bufs:
        for step in range(b.start, b.end + 1):
            at_step.setdefault(step, []).append(b.size.aligned().bounded())  # type: ignore[union-attr]
    sums = {sum(sizes[1:], sizes[0]) for sizes in at_step.values()}
    exact = all(b.size.aligned().is_exact_polynomial for b in bufs)  # type: ignore[union-attr]
    return _formula(Size.const(0).max(*sums), exact)


def naive_formula(graph: Graph) -> str:
    """The naive total (every intermediate in a slot of its own) as a formula of the symbols."""
    sizes = [s.aligned() for _, v in produced_values(graph) if (s := Size.of_type(v.type)) is not None]
    total = sum(sizes[1:], sizes[0]) if sizes else Size.const(0)
    return _formula(total.bounded(), total.is_exact_polynomial)


def _formula(bound: Size, exact: bool) -> str:
    short = bound.simplified()
    return str(short) if exact and short == bound else f"at most {short}"


def fingerprint(graph: Graph) -> str:
    """A digest of what a schedule depends on: inputs, the node order, every operand and result (name and type),
    outputs. Any pass that changes one of them makes an attached schedule stale."""
    h = hashlib.blake2b(digest_size=16)
    for v in graph.inputs:
        h.update(f"{v.name}:{format_type(v.type)};".encode())
    for n in graph:
        ins = ",".join("" if v is None else v.name for v in n.inputs)
        outs = ",".join(f"{v.name}:{format_type(v.type)}" for v in n.outputs)
        h.update(f"{n.op}({ins})->{outs};".encode())
    h.update(("return " + ",".join(v.name for v in graph.outputs)).encode())
    return h.hexdigest()


def current_schedule(graph: Graph) -> MemorySchedule | None:
    """The schedule attached to `graph` if it still describes it, else None (run schedule-memory again)."""
    sched = getattr(graph, "memory", None)
    return sched if isinstance(sched, MemorySchedule) and sched.is_current(graph) else None


def produced_values(graph: Graph) -> Iterator[tuple[int, Value]]:
    """(step, value) for every result that may need storage of its own: not weights, constants or graph outputs."""
    outputs = {id(v) for v in graph.outputs}
    for step, node in enumerate(graph):
        if node.op in NO_STORAGE_OPS:
            continue
        for v in node.outputs:
            if id(v) not in outputs:
                yield step, v


# ---- liveness -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buffer:
    """Storage shared by a root value and its aliases, live from the root's node to the last node reading any of them
    (both ends included: a node's results never overlap its operands unless in place)."""

    root: str
    values: tuple[str, ...]
    start: int
    end: int
    size: Size | None  # None: unknown (Unplanned)


SCRATCH_SUFFIX = "#scratch"  # no value name ends so in the IR text: the printer would quote it


def scratch_slot(node_result: str) -> str:
    """The name of the scratch slot of the node whose first result is `node_result`."""
    return node_result + SCRATCH_SUFFIX


def buffers(graph: Graph, aliases: Mapping[str, Alias], scratch: Mapping[str, tuple[str, Size]] | None = None) -> list[Buffer]:
    """The buffers of the arena candidates of `graph` (produced_values) given which values alias which, in the order
    of their roots, then the scratch buffers (slot -> (the node's first result, bytes)), each live at its node's step
    only. A value aliasing storage outside the arena (a view of an input or weight) is in no buffer."""
    step_of = {id(n): i for i, n in enumerate(graph)}
    members: dict[str, list[Value]] = {}
    start: dict[str, int] = {}
    root_of: dict[str, str] = {}
    for step, v in produced_values(graph):
        alias = aliases.get(v.name)
        if alias is None:
            root_of[v.name] = v.name
            members[v.name] = [v]
            start[v.name] = step
        elif alias.of in root_of:
            root_of[v.name] = root_of[alias.of]
            members[root_of[v.name]].append(v)
    out = []
    for root, vals in members.items():
        end = max([step_of[id(n)] for v in vals for n, _ in v.uses] + [start[root]])
        out.append(Buffer(root, tuple(v.name for v in vals), start[root], end, Size.of_type(vals[0].type)))
    for slot, (result, size) in (scratch or {}).items():
        step = step_of[id(graph.value(result).producer)]
        out.append(Buffer(slot, (slot,), step, step, size))
    return out


def schedule_buffers(graph: Graph, schedule: MemorySchedule) -> list[Buffer]:
    """The buffers a schedule places: the values' (with their aliases) and its scratch slots."""
    scratch = {k: (v, schedule.entries[k].size) for k, v in schedule.scratch.items()}  # type: ignore[union-attr]
    return buffers(graph, aliases_of(schedule), scratch)


def overlap(a: Buffer, b: Buffer) -> bool:
    """Whether two buffers are live at a common step."""
    return a.start <= b.end and b.start <= a.end


def aliases_of(schedule: MemorySchedule) -> dict[str, Alias]:
    return {k: e for k, e in schedule.entries.items() if isinstance(e, Alias)}


# ---- numbers at one binding -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryNumbers:
    """A schedule's numbers at one binding of the symbols (bytes): the arena, the lower bound for this node order (the
    largest sum of slots live at one step, kernel scratch included), the naive total (every intermediate and scratch in
    its own slot, views included) and the largest intermediates (name, bytes)."""

    bindings: Mapping[str, int]
    arena: int
    lower_bound: int
    naive: int
    largest: tuple[tuple[str, int], ...]


def numbers(graph: Graph, schedule: MemorySchedule, bindings: Mapping[str, int], top: int = 10) -> MemoryNumbers:
    bufs = [b for b in schedule_buffers(graph, schedule) if b.size is not None]
    slot = {b.root: b.size.aligned().evaluate(bindings) for b in bufs}  # type: ignore[union-attr]
    live = [0] * (len(graph) + 1)
    for b in bufs:
        for s in range(b.start, b.end + 1):
            live[s] += slot[b.root]
    sizes = [(v.name, s.evaluate(bindings)) for _, v in produced_values(graph) if (s := Size.of_type(v.type)) is not None]
    naive = sum(-(-n // ALIGN) * ALIGN for _, n in sizes) + sum(slot[k] for k in schedule.scratch if k in slot)
    largest = tuple(sorted(sizes, key=lambda ns: (-ns[1], ns[0]))[:top])
    return MemoryNumbers(dict(bindings), schedule.arena_bytes(bindings), max(live), naive, largest)


def check_schedule(graph: Graph, schedule: MemorySchedule, bindings: Mapping[str, int]) -> list[str]:
    """What is wrong with `schedule` for `graph` at one binding: a slot that is not aligned, holds fewer bytes than its
    value, ends past the arena, or overlaps another slot live at the same step; an alias of a different size; an
    in-place result written over a value read later."""
    problems = []
    if not schedule.is_current(graph):
        problems.append("the schedule was made for another graph (its fingerprint differs)")
    arena = schedule.arena_bytes(bindings)
    offsets = schedule.offsets(bindings)
    step_of = {id(n): i for i, n in enumerate(graph)}
    placed = []
    for b in schedule_buffers(graph, schedule):
        entry = schedule.entries.get(b.root)
        if b.size is None:
            if not isinstance(entry, Unplanned):
                problems.append(f"%{b.root} has an unknown size but is {entry}")
            continue
        if not isinstance(entry, Placement):
            problems.append(f"%{b.root} needs arena storage but is {entry}")
            continue
        off, size = offsets[b.root], b.size.evaluate(bindings)
        if entry.size != b.size:
            problems.append(f"%{b.root}: slot size {entry.size} is not its type's {b.size}")
        if off % ALIGN or off < 0 or off + size > arena:
            problems.append(f"%{b.root}: slot [{off}, {off + size}) is unaligned or outside the arena of {arena} bytes")
        for i, name in enumerate(b.values[1:], 1):
            v = graph.value(name)
            vs = Size.of_type(v.type)  # unknown for a reshape to [?,?]: a view keeps its operand's bytes
            if vs is not None and vs.evaluate(bindings) != size:
                problems.append(f"%{name} aliases %{b.root} with another size")
            step = step_of[id(v.producer)]
            read_later = [u for u in b.values[:i] if any(step_of[id(n)] > step for n, _ in graph.value(u).uses)]
            entry = schedule.entries[name]
            if isinstance(entry, Alias) and entry.kind == "inplace" and read_later:
                problems.append(f"%{name} is written in place over %{read_later[0]}, which is read later")
        for other, (o_off, o_end) in placed:
            if overlap(b, other) and off < o_end and o_off < off + size:
                problems.append(f"%{b.root} [{off}, {off + size}) overlaps %{other.root} [{o_off}, {o_end}) while both live")
        placed.append((b, (off, off + size)))
    return problems


def unordered_pairs(graph: Graph, schedule: MemorySchedule) -> list[tuple[str, str]]:
    """Slots live at the same time of which neither sits (directly or through others) above the other: the pairs that
    could overlap at some binding. Empty for a valid schedule, whatever the sizes."""
    slots = schedule.slots
    bit = {k: 1 << i for i, k in enumerate(slots)}
    under: dict[str, int] = {}
    for k, p in slots.items():  # each after the slots below it
        under[k] = 0
        for u in p.below:
            under[k] |= under[u] | bit[u]
    bufs = [b for b in schedule_buffers(graph, schedule) if b.root in slots]
    return [(a.root, b.root) for i, a in enumerate(bufs) for b in bufs[i + 1:]
            if overlap(a, b) and not (under[a.root] & bit[b.root] or under[b.root] & bit[a.root])]

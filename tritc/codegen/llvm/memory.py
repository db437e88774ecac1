"""Where every value lives: caller buffers, the weight blob, or the arena, for static and symbolic sizes.

    plan = plan_memory(graph, weight_offsets)    # plan.of(value) -> Storage; plan.arena_bytes (int or Sym)

Graph inputs and outputs live in the caller's arrays; `weight` values in the weight blob; small
`constant`s become LLVM globals; every other value gets an offset in one arena, reused once the
value is dead (liveness over the node order). View ops (reshape, squeeze, unsqueeze, flatten) alias
their operand's storage instead of copying it.

Sizes may be symbolic (a polynomial in the model's symbols, symbolic.Sym). The arena is two regions:
values of static size first-fit in [0, S) (64-byte aligned, coalescing free blocks); values of
symbolic size get slots stacked after S, a dead value's slot reused by a later value only when the
slot is at least as large for every binding (`symbolic.dominates`), so one plan is valid for all
sizes. Offsets and the arena size are then expressions over the symbols, computed in tritc_main and,
for the arena size, by the runtime (`symbolic.evaluate`). This plan sits behind `plan_memory` only:
a schedule computed at the IR level (schedule-memory) can replace it without touching the lowerings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.graph import Graph, Node, Value
from .symbolic import Size, Sym, align, dominates, size

ALIGN = 64
VIEW_OPS = frozenset({"reshape", "squeeze", "unsqueeze", "flatten"})


@dataclass(frozen=True)
class Storage:
    kind: str  # "input" | "output" | "weight" | "constant" | "arena"
    index: Size = 0  # input/output position, or byte offset for weight/arena (an expression when symbolic)
    key: str = ""  # weight key for kind "weight"


@dataclass
class MemoryPlan:
    storage: dict[int, Storage] = field(default_factory=dict)  # id(value) -> where it lives
    arena_bytes: Size = 0
    alias_root: dict[int, Value] = field(default_factory=dict)  # id(view result) -> value owning the storage

    @property
    def aliases(self) -> int:
        """View ops that needed no copy."""
        return len(self.alias_root)

    def of(self, v: Value) -> Storage:
        return self.storage[id(v)]

    def owner(self, v: Value) -> Value:
        """The value whose storage `v` uses (itself unless `v` is an aliasing view)."""
        return self.alias_root.get(id(v), v)


def nbytes(v: Value) -> Size:
    if v.type.shape is None or None in v.type.shape:
        raise ValueError(f"value %{v.name} has an unknown shape ({v.type}); no memory can be planned for it")
    n: Size = v.type.dtype.itemsize
    for d in v.type.shape:
        n = n * size(d)
    return n


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class _Arena:
    """First-fit allocator over [0, size) with coalescing free blocks."""

    def __init__(self) -> None:
        self.free: list[tuple[int, int]] = []  # (offset, size), sorted by offset
        self.top = 0

    def alloc(self, size: int) -> int:
        size = _align(max(size, 1))
        for i, (off, sz) in enumerate(self.free):
            if sz >= size:
                if sz == size:
                    self.free.pop(i)
                else:
                    self.free[i] = (off + size, sz - size)
                return off
        off = self.top
        self.top += size
        return off

    def release(self, off: int, size: int) -> None:
        size = _align(max(size, 1))
        self.free.append((off, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for o, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((o, s))
        if merged and merged[-1][0] + merged[-1][1] == self.top:
            self.top = merged[-1][0]
            merged.pop()
        self.free = merged


class _Slots:
    """Slots for values of symbolic size, stacked in order; a free slot is reused by a value it holds for
    every binding (the first slot of exactly that size, else the first one that dominates it)."""

    def __init__(self) -> None:
        self.sizes: list[Sym | int] = []
        self.free: list[int] = []

    def alloc(self, nbytes: Sym) -> int:
        need = align(nbytes, ALIGN)
        for rule in (lambda s: s == need, lambda s: dominates(s, need)):
            for k in self.free:
                if rule(self.sizes[k]):
                    self.free.remove(k)
                    return k
        self.sizes.append(need)
        return len(self.sizes) - 1

    def release(self, k: int) -> None:
        self.free.append(k)

    def offsets(self, base: int) -> tuple[list[Size], Size]:
        """Each slot's byte offset and the end of the last one, with the slots placed from `base` on."""
        offs: list[Size] = []
        at: Size = base
        for s in self.sizes:
            offs.append(at)
            at = at + s
        return offs, at


def plan_memory(graph: Graph, weight_offsets: dict[str, int]) -> MemoryPlan:
    plan = MemoryPlan()
    outputs = {id(v): i for i, v in enumerate(graph.outputs)}
    for i, v in enumerate(graph.inputs):
        plan.storage[id(v)] = Storage("input", i)
    nodes = graph.nodes
    # Alias roots: a view's result shares its operand's storage unless it is a graph output.
    root: dict[int, Value] = {}

    def root_of(v: Value) -> Value:
        r = root.get(id(v), v)
        while id(r) in root and root[id(r)] is not r:
            r = root[id(r)]
        return r

    for node in nodes:
        if node.op in VIEW_OPS and id(node.outputs[0]) not in outputs and node.inputs[0] is not None:
            root[id(node.outputs[0])] = root_of(node.inputs[0])
    last_use: dict[int, int] = {}
    for step, node in enumerate(nodes):
        for v in node.inputs:
            if v is not None:
                r = root_of(v)
                last_use[id(r)] = step
    arena, slots = _Arena(), _Slots()
    static_top = 0
    live: dict[int, tuple[str, int, int]] = {}  # root id -> ("static", offset, size) | ("slot", k, 0)
    in_slot: dict[int, int] = {}  # id(value) -> slot, for values whose offset is known once all slots are
    for step, node in enumerate(nodes):
        for v in node.outputs:
            if id(v) in outputs:
                plan.storage[id(v)] = Storage("output", outputs[id(v)])
            elif node.op == "weight":
                # A weight folded after the layout (shape specialisation) has no offset: lower embeds it.
                plan.storage[id(v)] = Storage("weight", weight_offsets.get(node.attrs["ref"], -1), node.attrs["ref"])
            elif node.op == "constant":
                plan.storage[id(v)] = Storage("constant")
            elif id(v) in root:
                plan.alias_root[id(v)] = root_of(v)
            else:
                n = nbytes(v)
                if isinstance(n, int):
                    off = arena.alloc(n)
                    live[id(v)] = ("static", off, n)
                    plan.storage[id(v)] = Storage("arena", off)
                else:
                    k = slots.alloc(n)
                    live[id(v)] = ("slot", k, 0)
                    in_slot[id(v)] = k
        static_top = max(static_top, arena.top)  # before any release: dead results still get written
        # Free after allocating this node's results, so no result overlaps one of its operands.
        dead = [root_of(v) for v in node.inputs if v is not None and last_use.get(id(root_of(v))) == step]
        dead += [root_of(v) for v in node.outputs if id(root_of(v)) not in last_use]  # results nobody reads
        for r in dead:
            if id(r) in live:
                kind, a, n = live.pop(id(r))
                if kind == "static":
                    arena.release(a, n)
                else:
                    slots.release(a)
        static_top = max(static_top, arena.top)
    offsets, end = slots.offsets(_align(static_top))
    for vid, k in in_slot.items():
        plan.storage[vid] = Storage("arena", offsets[k])
    for vid, r in plan.alias_root.items():
        plan.storage[vid] = plan.storage[id(r)]
    plan.arena_bytes = end if slots.sizes else static_top
    return plan


def storage_of(plan: MemoryPlan, node: Node) -> list[Storage]:
    return [plan.of(v) for v in node.outputs]

"""Where every value of a static-shaped graph lives: caller buffers, the weight blob, or the arena.

    plan = plan_memory(graph)      # plan.storage[value] -> Storage; plan.arena_bytes

Graph inputs and outputs live in the caller's arrays; `weight` values in the weight blob; small
`constant`s become LLVM globals; every other value gets an offset in one arena, reused once the
value is dead (liveness over the node order, first-fit, 64-byte aligned). View ops (reshape,
squeeze, unsqueeze, flatten) alias their operand's storage instead of copying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.graph import Graph, Node, Value

ALIGN = 64
VIEW_OPS = frozenset({"reshape", "squeeze", "unsqueeze", "flatten"})


@dataclass(frozen=True)
class Storage:
    kind: str  # "input" | "output" | "weight" | "constant" | "arena"
    index: int = 0  # input/output position, or byte offset for weight/arena
    key: str = ""  # weight key for kind "weight"


@dataclass
class MemoryPlan:
    storage: dict[int, Storage] = field(default_factory=dict)  # id(value) -> where it lives
    arena_bytes: int = 0
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


def nbytes(v: Value) -> int:
    n = v.type.numel()
    if n is None:
        raise ValueError(f"value %{v.name} has no static shape ({v.type}); specialise shapes before codegen")
    return n * v.type.dtype.itemsize


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
    arena = _Arena()
    live: dict[int, tuple[int, int]] = {}  # root id -> (offset, size)
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
                plan.storage[id(v)] = plan.storage[id(root_of(v))]
                plan.alias_root[id(v)] = root_of(v)
            else:
                size = nbytes(v)
                off = arena.alloc(size)
                live[id(v)] = (off, size)
                plan.storage[id(v)] = Storage("arena", off)
        plan.arena_bytes = max(plan.arena_bytes, arena.top)  # before any release: dead results still get written
        # Free after allocating this node's results, so no result overlaps one of its operands.
        for v in node.inputs:
            if v is None:
                continue
            r = root_of(v)
            if last_use.get(id(r)) == step and id(r) in live:
                arena.release(*live.pop(id(r)))
        for v in node.outputs:  # results nobody reads (dead code that was kept) die at once
            r = root_of(v)
            if id(r) in live and id(r) not in last_use:
                arena.release(*live.pop(id(r)))
        plan.arena_bytes = max(plan.arena_bytes, arena.top)
    return plan


def storage_of(plan: MemoryPlan, node: Node) -> list[Storage]:
    return [plan.of(v) for v in node.outputs]

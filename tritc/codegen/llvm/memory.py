"""Where every value lives: caller buffers, the weight blob, inline constants, or one arena placed by schedule-memory.

    plan = plan_memory(graph, weight_offsets)   # the node order and the aliases (views, in place); no offsets yet
    ... each node's lowering runs and says what scratch it needs (NodeCtx.scratch) ...
    plan.place({node: nbytes})                  # the arena, scratch slots included: plan.schedule, plan.arena_bytes
    offsets = plan.emit_offsets(b)              # in tritc_main: slot name -> byte offset (int, Sym or i64 value)

Graph inputs and outputs live in the caller's arrays, `weight` values in the weight blob, small `constant`s become
LLVM globals. Everything else is placed by the schedule-memory pass's own code (passes/schedule_memory.py) run on the
graph codegen lowers (the prepared graph, generic or specialised, whose names and nodes may differ from the pipeline's):
its node order, its aliases (a view shares its operand's storage, an elementwise result may be written over an
operand that dies there) and its placement, where a slot's offset is the highest end among the slots it sits above.
So one plan holds for every binding of the symbols; offsets are computed in tritc_main from the dims and the
arena's size is a formula the runtime evaluates per call. Kernel scratch is a slot live for its node's step only.
docs/MEMORY.md, "For codegen".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import llvmlite.ir as ir

from ...ir.graph import Graph, Node, Value
from ...ir.memory import VIEW_OPS, Alias, MemorySchedule, scratch_slot
from ...passes.schedule_memory import decide_aliases, schedule
from .builder import I64
from .symbolic import Size, Sym, dominates, from_size, to_size

ALIGN = 64


@dataclass(frozen=True)
class Storage:
    kind: str  # "input" | "output" | "weight" | "constant" | "arena"
    index: int = 0  # input/output position, or the weight's byte offset in the blob (-1: folded after the layout)
    key: str = ""  # the weight's key (kind "weight"), or the arena slot's name (kind "arena")


class MemoryPlan:
    """The storage of every value of `graph`; the arena's placement once `place` has run."""

    def __init__(self, graph: Graph, weight_offsets: Mapping[str, int], *, inplace: bool = True):
        self.graph = graph
        self.alias_of: dict[str, Alias] = decide_aliases(graph, inplace)
        self.storage: dict[int, Storage] = {}
        self.alias_root: dict[int, Value] = {}  # id(alias) -> the value owning its storage
        self.schedule: MemorySchedule | None = None
        self.arena_bytes: Size = 0
        self.scratch_slots: dict[int, str] = {}  # id(node) -> its scratch slot
        outputs = {id(v): i for i, v in enumerate(graph.outputs)}
        for i, v in enumerate(graph.inputs):
            self.storage[id(v)] = Storage("input", i)
        by_name: dict[str, Value] = {v.name: v for v in graph.inputs}
        for node in graph:
            for v in node.outputs:
                by_name[v.name] = v
                if id(v) in outputs:
                    self.storage[id(v)] = Storage("output", outputs[id(v)])
                elif node.op == "weight":
                    ref = node.attrs["ref"]  # folded after the layout (shape specialisation): lower embeds it
                    self.storage[id(v)] = Storage("weight", weight_offsets.get(ref, -1), ref)
                elif node.op == "constant":
                    self.storage[id(v)] = Storage("constant")
                elif v.name in self.alias_of:
                    root = by_name[self.alias_of[v.name].of]
                    root = self.alias_root.get(id(root), root)
                    self.alias_root[id(v)] = root
                    self.storage[id(v)] = self.storage[id(root)]
                else:
                    self.storage[id(v)] = Storage("arena", key=v.name)

    @property
    def aliases(self) -> int:
        """View ops that needed no copy."""
        return sum(a.kind == "view" for a in self.alias_of.values())

    @property
    def in_place(self) -> int:
        """Elementwise results written over an operand."""
        return sum(a.kind == "inplace" for a in self.alias_of.values())

    def of(self, v: Value) -> Storage:
        return self.storage[id(v)]

    def owner(self, v: Value) -> Value:
        """The value whose storage `v` uses (itself unless `v` is an alias)."""
        return self.alias_root.get(id(v), v)

    def is_view(self, node: Node) -> bool:
        """A view whose result shares its operand's storage: no code."""
        alias = self.alias_of.get(node.outputs[0].name)
        return node.op in VIEW_OPS and alias is not None and alias.kind == "view"

    def shared_operands(self, node: Node) -> tuple[int, ...]:
        """The operands (indices into node.inputs) that share storage with a result: those an in-place result is
        written over. Their pointers and the result's may not be noalias."""
        if not any(self.alias_of.get(v.name, Alias("view", "")).kind == "inplace" for v in node.outputs):
            return ()
        roots = {id(self.owner(v)) for v in node.outputs}
        return tuple(i for i, v in enumerate(node.inputs) if v is not None and id(self.owner(v)) in roots)

    # ---- the arena ------------------------------------------------------------------------------------------------

    def place(self, scratch: Mapping[Node, Size] | None = None) -> None:
        """Place the arena: every arena value and, for each node in `scratch`, a slot of that many bytes live at its
        step only (schedule-memory's placement, valid for every binding of the symbols)."""
        sizes = {node.outputs[0].name: to_size(n) for node, n in (scratch or {}).items() if not _zero(n)}
        self.schedule = schedule(self.graph, order="keep", scratch=sizes, aliases=self.alias_of)
        self.scratch_slots = {id(node): scratch_slot(node.outputs[0].name) for node in (scratch or {})
                              if node.outputs[0].name in sizes}
        self.arena_bytes = from_size(self.schedule.arena)

    def emit_offsets(self, b: ir.IRBuilder) -> dict[str, Size | ir.Value]:
        """Every slot's byte offset, computed with `b` as the schedule defines it: the highest end among the slots
        below (0 if none); ints fold, polynomials stay Syms, a maximum that depends on the sizes is a select."""
        assert self.schedule is not None, "place() first"
        offsets: dict[str, Size | ir.Value] = {}
        ends: dict[str, Size | ir.Value] = {}
        for name, p in self.schedule.slots.items():
            off: Size | ir.Value = 0
            for u in p.below:
                off = _max(b, off, ends[u])
            offsets[name] = off
            ends[name] = _add(b, off, from_size(p.size.aligned()))
        return offsets

    def scratch_slot(self, node: Node) -> str | None:
        return self.scratch_slots.get(id(node))


def plan_memory(graph: Graph, weight_offsets: Mapping[str, int], *, order: bool = True, inplace: bool = True) -> MemoryPlan:
    """The plan for `graph`, whose nodes are first put in schedule-memory's order (order=True; the order is kept when
    it does not lower the peak). Call `place` once the lowerings have said what scratch they need."""
    if order:
        from ...passes.memory_order import memory_order
        from ...passes.schedule_memory import bytes_at, reference_bindings

        graph.reorder(memory_order(graph, bytes_at(reference_bindings(graph))))
    return MemoryPlan(graph, weight_offsets, inplace=inplace)


def _zero(n: Size) -> bool:
    return isinstance(n, int) and n == 0


def _poly(x: object) -> bool:
    return isinstance(x, int) or (isinstance(x, Sym) and x.kind == "poly")


def _add(b: ir.IRBuilder, x: Size | ir.Value, y: Size) -> Size | ir.Value:
    if _poly(x) and _poly(y):
        return x + y  # type: ignore[operator]
    return b.add(_value(x), _value(y), name="slot.end")


def _max(b: ir.IRBuilder, x: Size | ir.Value, y: Size | ir.Value) -> Size | ir.Value:
    if isinstance(x, int) and isinstance(y, int):
        return max(x, y)
    if _poly(x) and _poly(y):
        if x == y or dominates(x, y):  # type: ignore[arg-type]
            return x
        if dominates(y, x):  # type: ignore[arg-type]
            return y
    x, y = _value(x), _value(y)
    return b.select(b.icmp_signed(">", x, y), x, y, name="slot.start")


def _value(x: Size | ir.Value) -> ir.Value:
    return ir.Constant(I64, x) if isinstance(x, int) else x

"""schedule-memory: a node order that lowers the peak, then an arena slot per intermediate, valid for every size.

    %a = neg(%x); %b = relu(%a); %r = reshape(%b, %s)  ->  the same nodes (maybe reordered), and graph.memory,
    printed after return: memory { %a = arena "256*n" above %w  %b = inplace %a  %r = view %b }

Steps: the order (memory_order.py), aliases (views; elementwise results written over an operand that dies there),
buffers and their live steps (ir/memory.py), then the placement (memory_placement.py): which slot sits above which,
so that offsets are maxes of ends at every binding. docs/MEMORY.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..ir import dims
from ..ir.graph import Graph, Node, Value
from ..ir.memory import (
    VIEW_OPS,
    Alias,
    Entry,
    MemorySchedule,
    Unplanned,
    buffers,
    current_schedule,
    fingerprint,
    produced_values,
    scratch_slot,
)
from ..ir.sizes import Size
from .fuse_elementwise import ELEMENTWISE
from .infer_shapes import parse_bindings
from .memory_order import memory_order
from .memory_placement import place
from .pass_manager import Pass, PassResult, register

REFERENCE_SIZE = 128  # every symbol's size in the reference binding, unless `at` gives it
# Without `at`, placements are weighed at these sizes of the symbols (memory_placement.py): one placement holds for
# every binding, and the one closest to the lower bound over these wins.
LADDER = (1, 4, 16, 64, 256, 1024, 4096)
MAX_BINDINGS = 64
INPLACE_OPS = ELEMENTWISE | {"fused_elementwise"}  # result element i depends on operand element i only


def reference_bindings(graph: Graph, at: Sequence[str] = (), size: int = REFERENCE_SIZE) -> dict[str, int]:
    """The binding the heuristics weigh sizes at: every symbol of the graph's types `size`, or as `at` says."""
    given = parse_bindings(tuple(at))
    symbols: dict[str, None] = {}
    for v in graph.values():
        for d in v.type.shape or ():
            for s in sorted(dims.symbols(d)):
                symbols.setdefault(s, None)
    return {s: given.get(s, size) for s in symbols}


def candidate_bindings(ref: Mapping[str, int]) -> list[dict[str, int]]:
    """The bindings a placement is weighed at: `ref` first, then every combination of LADDER sizes of the symbols when
    there are few, else each symbol through the ladder with the others at their reference size, and every symbol
    alike at each size."""
    names = list(ref)
    if len(LADDER) ** len(names) <= MAX_BINDINGS:
        combos = [dict(zip(names, sizes)) for sizes in itertools.product(LADDER, repeat=len(names))]
    else:
        combos = [dict(ref, **{s: n}) for s in names for n in LADDER] + [dict.fromkeys(names, n) for n in LADDER]
    out = [dict(ref)]
    for c in combos:
        if c not in out:
            out.append(c)
    return out


def bytes_at(bindings: Mapping[str, int]):
    """Bytes of a value at `bindings`, 0 when its size is unknown (it is not in the arena then)."""
    def nbytes(v: Value) -> int:
        size = Size.of_type(v.type)
        return 0 if size is None else size.evaluate(bindings)
    return nbytes


# ---- aliases ------------------------------------------------------------------------------------------------------


def decide_aliases(graph: Graph, inplace: bool = True) -> dict[str, Alias]:
    """Views alias their operand; an elementwise result takes the storage of an operand of its shape and element size
    that no later node reads (through any alias either)."""
    step_of = {id(n): i for i, n in enumerate(graph)}
    aliases: dict[str, Alias] = {}
    root: dict[str, str] = {}  # arena value -> root of its buffer
    members: dict[str, list[Value]] = {}
    for step, v in produced_values(graph):
        node = v.producer
        assert node is not None
        src = _view_source(node) or (_inplace_source(node, v, step, root, members, step_of) if inplace else None)
        if src is not None:
            aliases[v.name] = Alias("view" if node.op in VIEW_OPS else "inplace", src.name)
            if src.name in root:  # else it aliases storage outside the arena (an input, a weight, an output)
                root[v.name] = root[src.name]
                members[root[v.name]].append(v)
            continue
        root[v.name] = v.name
        members[v.name] = [v]
    return aliases


def _view_source(node: Node) -> Value | None:
    return node.inputs[0] if node.op in VIEW_OPS and node.inputs and node.inputs[0] is not None else None


def _inplace_source(node: Node, v: Value, step: int, root: dict[str, str], members: dict[str, list[Value]],
                    step_of: dict[int, int]) -> Value | None:
    if node.op not in INPLACE_OPS or len(node.outputs) != 1 or Size.of_type(v.type) is None:
        return None
    for x in node.inputs:
        if x is None or x.name not in root or not _same_layout(x, v):
            continue
        group = members[root[x.name]]
        last = max(step_of[id(n)] for u in group for n, _ in u.uses)
        others = {id(y) for y in node.inputs if y is not None and y is not x and y.name in root}
        if last == step and not any(id(u) in others for u in group):
            return x
    return None


def _same_layout(x: Value, v: Value) -> bool:
    """Same element size and provably the same shape: element i of the result is element i of x."""
    a, b = x.type, v.type
    if a.dtype.itemsize != b.dtype.itemsize or a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    return all(dims.equal(p, q) is True for p, q in zip(a.shape, b.shape))


# ---- the pass -----------------------------------------------------------------------------------------------------


def schedule(graph: Graph, *, order: str = "auto", inplace: bool = True, at: Sequence[str] = (),
             scratch: Mapping[str, Size] | None = None, aliases: Mapping[str, Alias] | None = None) -> MemorySchedule:
    """Reorder `graph` (order="auto") and return its memory schedule (not attached: the pass does that).

    Codegen also gives `scratch`: bytes of working memory per node (keyed by the node's first result), placed like
    values that live for that node's step only; and `aliases`, when it decided them (decide_aliases) before
    lowering and the lowerings relied on them."""
    ref = reference_bindings(graph, at)
    if order == "auto":
        graph.reorder(memory_order(graph, bytes_at(ref)))
    if aliases is None:
        aliases = decide_aliases(graph, inplace)
    slots = {scratch_slot(r): (r, n) for r, n in (scratch or {}).items()}
    bufs = buffers(graph, aliases, slots)
    placements = place(bufs, [ref] if at else candidate_bindings(ref))
    entries: dict[str, Entry] = {}
    for _, v in produced_values(graph):
        alias = aliases.get(v.name)
        entries[v.name] = alias or placements.get(v.name) or Unplanned()
    for slot in slots:
        entries[slot] = placements[slot]
    return MemorySchedule(entries, fingerprint(graph), {slot: r for slot, (r, _) in slots.items()})


@register
@dataclass(frozen=True)
class ScheduleMemory(Pass):
    """Options: order=auto|keep (keep: the graph's order as it is), inplace (elementwise results over a dying operand),
    at=[seq=512,...] (the sizes the heuristics weigh; every other symbol REFERENCE_SIZE). Any later change to the
    graph makes the schedule stale (current_schedule returns None): run the pass again."""

    name = "schedule-memory"
    summary = "node order lowering the peak; one arena offset per intermediate (symbolic sizes), in place, views alias"

    order: Literal["auto", "keep"] = "auto"
    inplace: bool = True
    at: tuple[str, ...] = ()

    def run(self, graph: Graph) -> PassResult:
        before = [id(n) for n in graph]
        old = current_schedule(graph)
        sched = schedule(graph, order=self.order, inplace=self.inplace, at=self.at)
        graph.memory = sched
        changed = [id(n) for n in graph] != before or old is None or old.entries != sched.entries
        return PassResult(changed, sched)

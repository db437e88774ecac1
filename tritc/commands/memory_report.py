"""`tritc dump --memory-report`: schedule-memory's numbers at some sizes of the symbols, and the arena as a formula.

    peak arena, the lower bound of this node order, the naive total, the ten largest values (docs/MEMORY.md)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InternalError, OptionError
from ..ir.graph import Graph
from ..ir.memory import (
    Alias,
    MemorySchedule,
    Placement,
    Unplanned,
    arena_formula,
    current_schedule,
    lower_bound_formula,
    naive_formula,
    numbers,
)
from ..ir.sizes import Size
from ..ir.types import format_type
from ..passes.schedule_memory import reference_bindings
from .output import format_bindings, human_bytes, table

DEFAULT_SIZE = 1  # a symbol no --shape gives a size to, as tritc compile does


def render_memory_report(graph: Graph, schedule: object, shapes: Sequence[str]) -> str:
    from ..driver import parse_shapes

    if not isinstance(schedule, MemorySchedule):
        raise InternalError(f"schedule-memory ran but left no MemorySchedule (got {type(schedule).__name__})")
    if current_schedule(graph) is not schedule:
        raise OptionError("a pass after schedule-memory changed the graph, so its schedule no longer holds: "
                          "run schedule-memory last")
    given = parse_shapes(shapes)
    symbols = reference_bindings(graph)
    unknown = sorted(set(given) - set(symbols))
    if unknown:
        raise OptionError(f"--shape {', '.join(unknown)}: not a dim of the model (its dims: {', '.join(symbols) or 'none'})")
    bindings = {s: given.get(s, DEFAULT_SIZE) for s in symbols}
    defaulted = [s for s in symbols if s not in given]
    n = numbers(graph, schedule, bindings)
    offsets = schedule.offsets(bindings)
    kinds = [type(e).__name__ if not isinstance(e, Alias) else e.kind for e in schedule.entries.values()]

    def nbytes(k: int) -> str:
        return f"{k} bytes" if k < 1000 else f"{k} bytes ({human_bytes(k)})"

    where = format_bindings(bindings) + (f" ({', '.join(defaulted)} not given: {DEFAULT_SIZE})" if defaulted else "")
    lines = [f"memory schedule of @{graph.name} ({len(graph)} nodes) at {where}",
             f"values        {kinds.count('Placement')} in arena slots, {kinds.count('inplace')} in place, "
             f"{kinds.count('view')} views, {kinds.count('Unplanned')} unplanned (size unknown)",
             f"peak arena    {nbytes(n.arena)}",
             f"lower bound   {nbytes(n.lower_bound)}: the most bytes live at one step (arena / bound "
             f"{n.arena / max(n.lower_bound, 1):.3f})",
             f"naive total   {nbytes(n.naive)} (every intermediate in a buffer of its own)",
             "", "as formulas of the symbols (bytes; 'at most': each slot not a multiple of 64 counted 63 bytes over)",
             *_formula_lines("peak arena", arena_formula(schedule)),
             *_formula_lines("lower bound", lower_bound_formula(graph, schedule)),
             *_formula_lines("naive total", naive_formula(graph)),
             "", f"the {len(n.largest)} largest values"]
    rows = [["value", "type", "bytes (formula)", "bytes", "storage"]]
    for name, size in n.largest:
        v = graph.value(name)
        formula = Size.of_type(v.type)
        rows.append([f"%{name}", format_type(v.type), str(formula), str(size), _storage(schedule, name, offsets)])
    return "\n".join(lines) + "\n" + table(rows, right=(3,))


def _formula_lines(what: str, text: str) -> list[str]:
    head, sep, body = text.partition("max(")
    if not sep:
        return [f"{what:<13} {text}"]
    return [f"{what:<13} {head}the largest of"] + [f"                {t}" for t in body[:-1].split(", ")]


def _storage(schedule: MemorySchedule, name: str, offsets: dict[str, int]) -> str:
    entry = schedule.entries.get(name)
    if isinstance(entry, Placement):
        return f"offset {offsets[name]}"
    if isinstance(entry, Alias):
        root = schedule.root(name)
        at = f" (offset {offsets[root]})" if root in offsets else " (outside the arena)"
        return f"{entry.kind} of %{entry.of}{at}"
    if isinstance(entry, Unplanned):
        return "unplanned"
    return "outside the arena"

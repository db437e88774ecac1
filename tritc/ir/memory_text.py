"""The memory block of the IR text (docs/IR.md): schedule-memory's slots, printed after `return` and parsed back.

    memory {
      %a = arena "256*n" above %w
      %b = inplace %a
    }
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from ..errors import IRParseError
from .graph import Graph
from .memory import Alias, Entry, MemorySchedule, Placement, Unplanned, current_schedule, fingerprint, produced_values
from .sizes import Size

if TYPE_CHECKING:
    from .text import _Parser


def memory_lines(graph: Graph) -> list[str]:
    """The block's lines (indented as inside the graph), or none when the graph has no current schedule."""
    from .text import format_name

    sched = current_schedule(graph)
    if sched is None:
        return []
    body = [f"    {format_name('%', v.name)} = {format_entry(sched.entries[v.name])}"
            for _, v in produced_values(graph) if v.name in sched.entries]
    return ["  memory {", *body, "  }"]


def format_entry(entry: Entry) -> str:
    """`arena SIZE [above %a, %b]`, `view %x`, `inplace %x` or `unplanned`."""
    from .text import format_name, quote

    if isinstance(entry, Placement):
        size = str(entry.size) if entry.size.is_const else quote(str(entry.size))
        above = f" above {', '.join(format_name('%', u) for u in entry.below)}" if entry.below else ""
        return f"arena {size}{above}"
    if isinstance(entry, Alias):
        return f"{entry.kind} {format_name('%', entry.of)}"
    return "unplanned"


def parse_memory_block(p: _Parser) -> dict[str, Entry]:
    """`memory { %v = arena SIZE [above %a, ...] | view %x | inplace %x | unplanned ... }`, read by the text parser."""
    p.take("ident", "memory")
    p.take("punct", "{")
    entries: dict[str, Entry] = {}
    while not p.accept("punct", "}"):
        tok = p.tok
        name = p.use().name
        if name in entries:
            raise p.error(f"value %{name} is in the memory block twice", tok)
        p.take("punct", "=")
        kind = p.take("ident")
        if kind.text == "arena":
            size = _size(p)
            below = []
            if p.accept("ident", "above"):
                below.append(p.use().name)
                while p.accept("punct", ","):
                    below.append(p.use().name)
            entries[name] = Placement(size, tuple(below))
        elif kind.text in ("view", "inplace"):
            entries[name] = Alias(kind.text, p.use().name)  # type: ignore[arg-type]
        elif kind.text == "unplanned":
            entries[name] = Unplanned()
        else:
            raise p.error("expected arena, view, inplace or unplanned", kind)
    return entries


def attach_schedule(graph: Graph, entries: dict[str, Entry]) -> None:
    """Make the parsed block the graph's current schedule, refusing slots that sit above themselves."""
    graph.memory = MemorySchedule(entries, fingerprint(graph))
    try:
        graph.memory.slots  # noqa: B018 - ordering the slots finds any cycle
    except ValueError as e:
        raise IRParseError(f"memory block: {e}") from None


def _size(p: _Parser) -> Size:
    t = p.tok
    if t.kind == "number" and re.fullmatch(r"\d+", t.text):
        p.pos += 1
        return Size.const(int(t.text))
    if t.kind == "string":
        p.pos += 1
        try:
            return Size.parse(json.loads(t.text))
        except ValueError as e:
            raise p.error(str(e), t) from None
    raise p.error("expected a size (bytes, or a quoted expression of the symbols)")

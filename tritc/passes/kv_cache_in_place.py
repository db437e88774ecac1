"""kv-cache-in-place: give a decoder's KV cache the capacity form, so that generation appends to it in place.

    (%past_key_values.0.key: f32[batch,2,past,16], ...) -> (%present.0.key: f32[batch,2,past+seq,16], ...)
    %n = shape(%past_key_values.0.key) {start = 2, end = 3}
    %y, %s, %present.0.key, %present.0.value = fused_attention(%q, %k, %v, %m, %past_key_values.0.key, %past_key_values.0.value)
->
    (%past_key_values.0.key: f32[batch,2,past_capacity,16], ..., %past_len: i64[1] = past)
        -> (%present.0.key: f32[batch,2,past_capacity,16], ...)
    (%n is %past_len)
    %y, %s, %present.0.key, %present.0.value = fused_attention(%q, %k, %v, %m, %past_key_values.0.key, %past_key_values.0.value, %past_len)

The past inputs become buffers of a capacity of their own (a new symbol), the one new input `past_len` (i64[1]) says
how many rows hold keys and values, and the present outputs are the buffers with the step's rows written after
them: bound to the same arrays as the past inputs, nothing is copied (docs/ATTENTION.md, "KV cache: appending in
place"). The old length symbol keeps its meaning, the valid rows: `past_len` gives it by value
(Graph.value_symbols), so every type, relation (`total = past+seq`) and position computed from it stays right,
and the shape arithmetic that measured the past input's length reads `past_len` instead.

It changes the model's interface, so no pipeline runs it: the generation runtime asks for it
(CompiledModel.with_cache_in_place). All or nothing: when any attention cache cannot take the form (its past
input read by anything but the node and shape arithmetic on it, its present output read inside the graph, a length
that is not one symbol shared by every layer), the graph is left as it was and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import dims as dimlib
from ..ir.graph import Graph, Node, Value
from ..ir.symvalues import fold_static_values
from ..ir.types import DType, TensorType, format_type
from .eliminate_dead_code import EliminateDeadCode
from .infer_shapes import InferShapes
from .pass_manager import Pass, PassResult, register

LENGTH_AXIS = 2  # [batch, kv_heads, length, head size]
PAST, PAST_LEN, PRESENT = (4, 5), 6, (2, 3)  # fused_attention operand / result slots


@dataclass
class CacheReport:
    """Whether the graph took the capacity form, and why not (`reason`), or which caches did (`caches`)."""

    in_place: bool = False
    reason: str = ""
    caches: list[str] = field(default_factory=list)  # the past inputs made buffers
    past_len: str = ""  # the new input
    length: str = ""  # the symbol past_len gives
    capacity: str = ""  # the buffers' new length symbol

    def comment_lines(self) -> list[str]:
        if self.in_place:
            return [f"// kv-cache-in-place: {len(self.caches)} cache inputs are buffers of {self.capacity} rows, "
                    f"%{self.past_len} gives the {self.length} rows they hold"]
        return [f"// kv-cache-in-place: not done: {self.reason}"]


@dataclass(frozen=True)
class _Cache:
    node: Node
    past: tuple[Value, Value]
    present: tuple[Value, Value]


@register
@dataclass(frozen=True)
class KVCacheInPlace(Pass):
    name = "kv-cache-in-place"
    summary = "past key/value inputs of fused_attention -> capacity buffers appended in place (+ a past_len input)"
    past_len: str = "past_len"  # the new input's name (a fresh one if taken)

    def run(self, graph: Graph) -> PassResult:
        report = CacheReport()
        if _already(graph):
            report.reason = "the graph is in the capacity form already"
            return PassResult(False, report)
        trial = graph.copy()  # the checks read the graph with static shape arithmetic folded: decide on a copy
        _clean(trial)
        found = _caches(trial)
        if isinstance(found, str):
            report.reason = found
            return PassResult(False, report)
        _clean(graph)
        caches = _caches(graph)
        assert not isinstance(caches, str)
        length = caches[0].past[0].type.shape[LENGTH_AXIS]  # type: ignore[index]
        _rewrite(graph, caches, str(length), self.past_len, report)
        return PassResult(True, report)


def _already(graph: Graph) -> bool:
    return any(n.op == "fused_attention" and len(n.inputs) > PAST_LEN and n.inputs[PAST_LEN] is not None for n in graph)


def _clean(graph: Graph) -> None:
    """Static shape arithmetic folded and dead code gone: what is left reading a past input is what needs it (a
    legacy export's leftover `concat(past, new)` only measured the head size)."""
    if fold_static_values(graph):
        EliminateDeadCode().run(graph)


def _caches(graph: Graph) -> list[_Cache] | str:
    """Every fused_attention cache, checked; or why the graph cannot take the capacity form."""
    nodes = [n for n in graph if n.op == "fused_attention" and len(n.inputs) > PAST[1] and n.inputs[PAST[0]] is not None]
    if not nodes:
        return "no fused_attention node reads a past key/value cache"
    inputs = {id(v) for v in graph.inputs}
    outputs = [id(v) for v in graph.outputs]
    caches, lengths = [], set()
    for n in nodes:
        past = (n.inputs[PAST[0]], n.inputs[PAST[1]])
        present = tuple(n.outputs[i] for i in PRESENT) if len(n.outputs) > PRESENT[1] else ()
        where = f"node {n.describe()}"
        for v, slot in zip(past, PAST):
            if v is None or id(v) not in inputs:
                return f"{where}: its past operand {'none' if v is None else '%' + v.name} is not a graph input"
            if id(v) in outputs:
                return f"{where}: its past input %{v.name} is a graph output too"
            other = [u for u, i in v.uses if not (u is n and i == slot) and u.op != "shape"]
            if other:
                return (f"input %{v.name} is also read by node {other[0].describe()}: a buffer of capacity rows is not "
                        f"the past tensor it reads")
            shape = v.type.shape
            if shape is None or len(shape) != 4 or not isinstance(shape[LENGTH_AXIS], str) \
                    or dimlib.symbols(shape[LENGTH_AXIS]) != {shape[LENGTH_AXIS]}:
                return f"input %{v.name} ({format_type(v.type)}): its length (dim {LENGTH_AXIS}) is not a symbol of its own"
            lengths.add(shape[LENGTH_AXIS])
        if len(present) != 2:
            return f"{where} has no present results"
        for v in present:
            if outputs.count(id(v)) != 1:
                return f"{where}: its present result %{v.name} is not one graph output"
            if v.uses:
                return (f"%{v.name} is read by node {v.uses[0][0].describe()} as well: the capacity form's present is "
                        f"the whole buffer, not the concatenation it reads")
        caches.append(_Cache(n, past, present))  # type: ignore[arg-type]
    if len({id(v) for c in caches for v in c.past}) != 2 * len(caches):
        return "a past input feeds two attention nodes"
    if len(lengths) != 1:
        return f"the caches' lengths are different symbols ({', '.join(sorted(lengths))}): one past_len gives them all"
    length = lengths.pop()
    if length in graph.value_symbols.values():
        return f"'{length}' is given by an input's value already"
    return caches


def _fresh_symbol(graph: Graph, hint: str) -> str:
    used = {s for v in graph.inputs for d in v.type.shape or () for s in dimlib.symbols(d)} | set(graph.value_symbols.values())
    name, k = hint, 1
    while name in used:
        name, k = f"{hint}{k}", k + 1
    return name


def _rewrite(graph: Graph, caches: list[_Cache], length: str, past_len_name: str, report: CacheReport) -> None:
    capacity = _fresh_symbol(graph, f"{length}_capacity")
    past_len = graph.add_input(graph.fresh_name(past_len_name), TensorType(DType.I64, (1,)))
    graph.value_symbols[past_len.name] = length
    for c in caches:
        for v in c.past:
            shape = list(v.type.shape)  # type: ignore[arg-type]
            shape[LENGTH_AXIS] = capacity
            v.type = TensorType(v.type.dtype, tuple(shape))
            for user, _ in list(v.uses):
                if user.op == "shape":
                    _measure_valid_rows(graph, user, past_len)
        for v, past in zip(c.present, c.past):
            v.type = past.type
        c.node.inputs.append(None)
        c.node.set_input(PAST_LEN, past_len)
    InferShapes().run(graph)
    _clean(graph)  # the static parts of the shapes measured around the length (head size) are constants again
    report.in_place, report.past_len, report.length, report.capacity = True, past_len.name, length, capacity
    report.caches = [v.name for c in caches for v in c.past]


def _measure_valid_rows(graph: Graph, node: Node, past_len: Value) -> None:
    """A `shape` of a past input that covers its length reads past_len there: the rows the buffer holds, as the
    shape of the concatenated form's past input said."""
    rank = 4
    start, end = node.attrs.get("start", 0) or 0, node.attrs.get("end")
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    if not start <= LENGTH_AXIS < end:
        return
    data = node.inputs[0]
    parts: list[Value] = []
    if start < LENGTH_AXIS:
        parts.append(graph.add("shape", [data], [TensorType(DType.I64, (LENGTH_AXIS - start,))],
                               {"start": start, "end": LENGTH_AXIS}, node.name, before=node).output)
    parts.append(past_len)
    if end > LENGTH_AXIS + 1:
        parts.append(graph.add("shape", [data], [TensorType(DType.I64, (end - LENGTH_AXIS - 1,))],
                               {"start": LENGTH_AXIS + 1, "end": end}, node.name, before=node).output)
    new = parts[0] if len(parts) == 1 else \
        graph.add("concat", parts, [node.output.type], {"axis": 0}, node.name, before=node).output
    graph.replace_all_uses(node.output, new)
    graph.erase(node)


__all__ = ["CacheReport", "KVCacheInPlace"]

"""Symbolic values of small integer tensors: the shape arithmetic exporters leave in graphs.

    %s = shape(%x)            x: f32[batch,seq,64]    ->  s = [batch, seq, 64]
    %n = gather(%s, 1)                                ->  n = seq
    %e = unsqueeze(%n, 0); %c = concat(%e, [-1])      ->  c = [seq, -1]

A value's symbolic value is a list of dims (ints, symbols, polynomials, None for unknown
elements) with its rank (0 or 1). Type rules read it with `InferContext.sym_ints(i)` where a
constant would do, so `reshape(%x, %c)` gets the type f32[seq,?] instead of f32[?,?].
Only ranks 0 and 1 of at most MAX_LENGTH elements are tracked; anything else is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dims
from .types import Dim, DType

MAX_LENGTH = 64


@dataclass(frozen=True)
class SymValue:
    """The elements of a rank-0 or rank-1 integer tensor, each a dim."""

    elems: tuple[Dim, ...]
    rank: int  # 0 (a scalar, one element) or 1

    @property
    def known(self) -> bool:
        return all(e is not None for e in self.elems)


def from_const(c: Any) -> SymValue | None:
    if not isinstance(c, np.ndarray) or c.dtype.kind not in "iub" or c.ndim > 1 or c.size > MAX_LENGTH:
        return None
    return SymValue(tuple(int(v) for v in c.reshape(-1)), c.ndim)


def _axis0_indices(c: Any, n: int) -> list[int] | None:
    if not isinstance(c, np.ndarray) or c.dtype.kind not in "iu" or c.ndim > 1:
        return None
    out = []
    for v in c.reshape(-1):
        i = int(v) + (n if v < 0 else 0)
        if not 0 <= i < n:
            return None
        out.append(i)
    return out


Rule = Callable[[list["SymValue | None"], list[Any], dict[str, Any], list[Any]], "SymValue | None"]
RULES: dict[str, Rule] = {}


def input_values(graph: Any, bindings: Mapping[str, int] | None = None) -> dict[int, SymValue]:
    """Symbolic values of the graph inputs whose value is a size (Graph.value_symbols: `past_len` holds `past`),
    keyed by id(value) as the dicts of symbolic values are; a symbol in `bindings` is its size."""
    out: dict[int, SymValue] = {}
    for v in graph.inputs:
        symbol = graph.value_symbols.get(v.name)
        rank = len(v.type.shape or ())
        if symbol is not None and rank <= 1:
            out[id(v)] = SymValue(((bindings or {}).get(symbol, symbol),), rank)
    return out


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn

    return register


def propagate(op: str, syms: Sequence[SymValue | None], consts: Sequence[Any], attrs: dict[str, Any],
              input_types: Sequence[Any]) -> SymValue | None:
    """The symbolic value of a one-result node's result, or None when it is not tracked."""
    fn = RULES.get(op)
    if fn is None:
        return None
    full = [s if s is not None else from_const(c) for s, c in zip(syms, consts)]
    try:
        out = fn(full, list(consts), attrs, list(input_types))
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    if out is None or len(out.elems) > MAX_LENGTH:
        return None
    return out


@rule("shape")
def _shape(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    t = types[0]
    if t is None or t.shape is None:
        return None
    rank = len(t.shape)
    start = attrs.get("start") or 0
    end = attrs.get("end")
    end = rank if end is None else end
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return SymValue(tuple(t.shape[start:end]), 1)


@rule("size")
def _size(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    t = types[0]
    if t is None or t.shape is None:
        return None
    return SymValue((dims.product(list(t.shape)),), 0)


@rule("gather")
def _gather(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    data = s[0]
    if data is None or data.rank != 1 or attrs.get("axis", 0) not in (0, -1):
        return None
    idx = _axis0_indices(c[1], len(data.elems))
    if idx is None:
        return None
    return SymValue(tuple(data.elems[i] for i in idx), np.asarray(c[1]).ndim)


@rule("unsqueeze")
def _unsqueeze(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    return SymValue(s[0].elems, 1) if s[0] is not None and s[0].rank == 0 else None


@rule("squeeze")
def _squeeze(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    return SymValue(s[0].elems, 0) if s[0] is not None and s[0].rank == 1 and len(s[0].elems) == 1 else None


@rule("identity", "cast")
def _same(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    v = s[0]
    if v is None or ("to" in attrs and not attrs["to"].is_int):
        return None
    return v


@rule("concat")
def _concat(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    if any(v is None or v.rank != 1 for v in s):
        return None
    return SymValue(tuple(e for v in s for e in v.elems), 1)


@rule("slice")
def _slice(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    v = s[0]
    if v is None or v.rank != 1:
        return None
    starts, ends = from_const(c[1]), from_const(c[2]) if len(c) > 2 else None
    steps = from_const(c[4]) if len(c) > 4 and c[4] is not None else None
    if starts is None or ends is None or len(starts.elems) != 1:
        return None
    step = int(steps.elems[0]) if steps is not None else 1
    return SymValue(tuple(list(v.elems)[slice(int(starts.elems[0]), int(ends.elems[0]), step)]), 1)


def _elementwise(fn: Callable[[Dim, Dim], Dim]) -> Rule:
    def apply(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
        a, b = s[0], s[1]
        if a is None or b is None:
            return None
        n = max(len(a.elems), len(b.elems))
        if len(a.elems) not in (1, n) or len(b.elems) not in (1, n):
            return None
        ea = a.elems * n if len(a.elems) == 1 else a.elems
        eb = b.elems * n if len(b.elems) == 1 else b.elems
        out = tuple(None if x is None or y is None else fn(x, y) for x, y in zip(ea, eb))
        return SymValue(out, max(a.rank, b.rank))

    return apply


def _floor_div(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a // b if b else None
    return dims.div_exact(a, b)


RULES["add"] = _elementwise(dims.add)
RULES["sub"] = _elementwise(dims.sub)
RULES["mul"] = _elementwise(dims.mul)
RULES["div"] = _elementwise(_floor_div)


def _dim_equal(a: Dim, b: Dim) -> Dim:
    """1 / 0 for provably equal / different dims (a dim is never negative), None otherwise."""
    same = dims.equal(a, b)
    if same is None and (isinstance(a, int) and a < 0 or isinstance(b, int) and b < 0):
        same = False
    return None if same is None else int(same)


RULES["equal"] = _elementwise(_dim_equal)


@rule("where")
def _where(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    """where(cond, a, b) element by element, when the condition is known (Expand's -1 idiom)."""
    cond, a, b = s
    if cond is None or a is None or b is None or not cond.known:
        return None
    n = max(len(cond.elems), len(a.elems), len(b.elems))
    if any(len(v.elems) not in (1, n) for v in (cond, a, b)):
        return None

    def at(v: SymValue, i: int) -> Dim:
        return v.elems[0] if len(v.elems) == 1 else v.elems[i]

    return SymValue(tuple(at(a, i) if at(cond, i) else at(b, i) for i in range(n)), max(cond.rank, a.rank, b.rank))


@rule("reshape")
def _reshape(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    """A vector reshaped to one dim ([-1] or [n]) or to a scalar keeps its elements."""
    v, target = s[0], from_const(c[1])
    if v is None or target is None or not target.known:
        return None
    t = list(target.elems)
    if t in ([-1], [len(v.elems)]):
        return SymValue(v.elems, 1)
    if t == [] and len(v.elems) == 1:
        return SymValue(v.elems, 0)
    return None


@rule("constant_of_shape")
def _constant_of_shape(s: list, c: list, attrs: dict, types: list) -> SymValue | None:
    shape, value = s[0], attrs.get("value")
    if shape is None or not shape.known or len(shape.elems) != 1 or not isinstance(shape.elems[0], int):
        return None
    if value is not None and value.dtype.kind not in "iub":
        return None
    fill = 0 if value is None else int(value.reshape(-1)[0])
    return SymValue((fill,) * shape.elems[0], 1)


def node_value(graph: Any, node: Any, syms: Mapping[int, SymValue]) -> SymValue | None:
    """The symbolic value of `node`'s result when it is one small integer (or bool) result of an op with a rule,
    from its operands' values in `syms` and its constant operands; else None. What infer-shapes, the attention
    matcher and fold_static_values follow."""
    from .ops import OPS  # (the op table imports nothing from here; imported late all the same)

    if len(node.outputs) != 1 or node.op not in OPS or node.op in ("weight", "constant"):
        return None
    dt = node.outputs[0].type.dtype
    if not (dt.is_int or dt is DType.BOOL):
        return None
    return propagate(node.op, [None if v is None else syms.get(id(v)) for v in node.inputs],
                     [graph.const_value(v) for v in node.inputs], OPS[node.op].with_defaults(node.attrs),
                     [None if v is None else v.type for v in node.inputs])


def fold_static_values(graph: Any) -> bool:
    """Replace each small integer result whose symbolic value is static by a constant; whether any was. (Shape
    arithmetic whose answer does not depend on any symbol: `head_dim / 2` through Shape and Gather of a tensor with
    a symbolic batch.)"""
    syms: dict[int, SymValue] = input_values(graph)
    changed = False
    for node in list(graph):
        sv = node_value(graph, node, syms)
        if sv is None:
            continue
        out = node.outputs[0]
        syms[id(out)] = sv
        if sv.known and all(isinstance(e, int) for e in sv.elems) and out.type.is_static:
            array = np.array(sv.elems, dtype=out.type.dtype.np_dtype).reshape(out.type.shape)
            if array.size == len(sv.elems):
                c = graph.add_constant(array, out.type, graph.fresh_name(out.name + ".c"))
                graph.replace_all_uses(out, c)
                changed = True
    return changed

"""The pieces fuse-attention recognises around softmax(Q K^T * scale + mask) V: constant scales, K^T written as
transposes and reshapes, the repeat-KV expand, the past concatenation, and the causal part of a boolean mask.

Each matcher returns what it found or a `Miss` saying why not, which fuse-attention puts in its report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import dims
from ..ir.graph import Graph, Node, Value
from ..ir.symvalues import SymValue, input_values, node_value
from ..ir.types import Dim, DType


@dataclass(frozen=True)
class Miss:
    """Why a pattern did not match (a sentence fragment naming the value)."""

    reason: str


def producer(v: Value | None, *ops: str) -> Node | None:
    if v is None or v.producer is None or (ops and v.producer.op not in ops):
        return None
    return v.producer


def scalar(graph: Graph, v: Value | None) -> float | None:
    """The value of a one-element float or int constant."""
    c = graph.const_value(v)
    if isinstance(c, np.ndarray) and c.size == 1 and c.dtype.kind in "fiu":
        return float(c.reshape(-1)[0])
    return None


def shape_of(v: Value) -> tuple[Dim, ...] | None:
    return v.type.shape


def equal_given(a: Dim, b: Dim, relations: dict[str, Dim] | None = None) -> bool:
    """Whether dims a and b are equal, given relations {symbol: dim} (e.g. total = past+seq) between symbols: both sides
    are evaluated at a few sets of random positive values of the free symbols, the related ones computed from them
    (a polynomial identity test: polynomials of these small degrees that agree there are equal)."""
    if dims.equal(a, b) is True:
        return True
    if not relations or a is None or b is None:
        return False
    free = (dims.symbols(a) | dims.symbols(b) | {s for d in relations.values() for s in dims.symbols(d)}) - set(relations)
    rng = np.random.default_rng(7)
    for _ in range(3):
        values = {s: int(rng.integers(1_000, 1_000_000)) for s in sorted(free)}
        for name, d in relations.items():
            values[name] = dims.evaluate(d, values)
        if None in values.values() or dims.evaluate(a, values) != dims.evaluate(b, values) or dims.evaluate(a, values) is None:
            return False
    return True


def same_dims(a: tuple[Dim, ...] | None, b: tuple[Dim, ...] | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(dims.equal(x, y) is True for x, y in zip(a, b))


def peel_scale(graph: Graph, v: Value) -> tuple[Value, float]:
    """v = x * c1 / c2 ... with scalar constants c: (x, the product). Only multiplications whose other operand is a
    one-element constant of no higher rank than x are peeled (so the result has x's shape)."""
    factor = 1.0
    while True:
        n = producer(v, "mul", "div")
        if n is None or len(n.inputs) != 2:
            return v, factor
        picked = None
        for i in ((0, 1) if n.op == "mul" else (0,)):
            c = scalar(graph, n.inputs[1 - i])
            x = n.inputs[i]
            if c is not None and x is not None and x.type.rank == v.type.rank and x.type.dtype is v.type.dtype:
                picked = (x, c)
                break
        if picked is None:
            return v, factor
        v, c = picked
        factor = factor * c if n.op == "mul" else factor / c


def untranspose_keys(graph: Graph, kt: Value) -> Value | tuple[Node, list[int]] | Miss:
    """kt = K^T (the last two axes of a 4-D K swapped), written as transpose(K, [0, 1, 3, 2]), as a transpose with
    another permutation of some X (then K = transpose(X, perm with its last two swapped), returned as (node, perm)
    for the caller to create), or as reshape(transpose(reshape(K, [B*H, S, D]), [0, 2, 1]), [B, H, D, S])."""
    t = producer(kt, "transpose")
    if t is not None and t.inputs[0] is not None and t.inputs[0].type.rank == 4:
        perm = list(t.attrs.get("perm") or [3, 2, 1, 0])
        swapped = perm[:2] + [perm[3], perm[2]]
        return t.inputs[0] if swapped == [0, 1, 2, 3] else (t, swapped)
    outer = producer(kt, "reshape")
    if outer is not None:
        mid = producer(outer.inputs[0], "transpose")
        inner = producer(mid.inputs[0], "reshape") if mid is not None else None
        if inner is not None and list(mid.attrs.get("perm") or []) == [0, 2, 1]:
            k = inner.inputs[0]
            ks, kts = shape_of(k), shape_of(kt)
            inner_shape = shape_of(inner.outputs[0])
            # (the element count fixes the merged first dim of the inner reshape: only its last two need checking)
            if k is not None and ks is not None and kts is not None and len(ks) == 4 and inner_shape is not None and \
                    len(inner_shape) == 3 and same_dims(kts, (ks[0], ks[1], ks[3], ks[2])) and \
                    same_dims(inner_shape[1:], (ks[2], ks[3])):
                return k
    return Miss(f"%{kt.name} is not K^T of a 4-D K (a transpose of the last two axes)")


def repeated_kv(v: Value) -> tuple[Value, int]:
    """v = repeat_kv(x, n): reshape(expand(unsqueeze(x, 2), [B, Hkv, n, S, D]), [B, Hkv * n, S, D]) -> (x, n);
    anything else is (v, 1). Query head h then reads kv head h // n, as the expanded tensor's does."""
    r = producer(v, "reshape")
    e = producer(r.inputs[0], "expand") if r is not None else None
    u = producer(e.inputs[0], "unsqueeze", "reshape") if e is not None else None
    if u is None or u.inputs[0] is None:
        return v, 1
    x = u.inputs[0]
    xs, us, es, vs = shape_of(x), shape_of(u.outputs[0]), shape_of(e.outputs[0]), shape_of(v)
    if xs is None or us is None or es is None or vs is None or len(xs) != 4 or len(es) != 5:
        return v, 1
    if not same_dims(us, (xs[0], xs[1], 1, xs[2], xs[3])):
        return v, 1
    n = es[2]
    # (the reshape keeps the element count: with batch, heads * n and head size matching, its sequence dim is x's,
    # whatever name the exporter's shape arithmetic gave it)
    if not isinstance(n, int) or not same_dims(es, (xs[0], xs[1], n, xs[2], xs[3])) or \
            not same_dims((vs[0], vs[1], vs[3]), (xs[0], dims.mul(xs[1], n), xs[3])):
        return v, 1
    return x, n


def past_concat(v: Value) -> tuple[Value | None, Value]:
    """v = concat(past, new) along the sequence axis (2 of 4) -> (past, new); anything else is (None, v)."""
    c = producer(v, "concat")
    if c is None or len(c.inputs) != 2 or v.type.rank != 4 or int(c.attrs.get("axis", 0)) not in (2, -2):
        return None, v
    past, new = c.inputs
    if past is None or new is None or past.type.rank != 4:
        return None, v
    return past, new


def symbolic_values(graph: Graph) -> dict[int, SymValue]:
    """Symbolic values of the graph's small integer results (shape arithmetic), as infer-shapes follows them."""
    syms: dict[int, SymValue] = input_values(graph)
    for node in graph:
        sv = node_value(graph, node, syms)
        if sv is not None:
            syms[id(node.outputs[0])] = sv
    return syms


def _scalar_dim(graph: Graph, syms: dict[int, SymValue], v: Value | None) -> Dim:
    c = graph.const_value(v)
    if isinstance(c, np.ndarray) and c.size == 1 and c.dtype.kind in "iu":
        return int(c.reshape(-1)[0])
    s = syms.get(id(v)) if v is not None else None
    return s.elems[0] if s is not None and len(s.elems) == 1 else None


def positions(graph: Graph, syms: dict[int, SymValue], v: Value) -> tuple[int, Dim, Dim] | None:
    """v = range(start, start + n) (+ a scalar offset) laid along one axis of a tensor of rank 1 to 4 by unsqueezes,
    reshapes or expands of size-1 axes -> (that axis counted from the end, start, n), or None."""
    shape = shape_of(v)
    if shape is None or not 1 <= len(shape) <= 4 or sum(d != 1 for d in shape) != 1:
        return None
    axis = next(i for i, d in enumerate(shape) if d != 1) - len(shape)  # counted from the end
    x = v
    while x.type.rank != 1:
        n = producer(x, "unsqueeze", "reshape", "expand")
        if n is None or n.inputs[0] is None or shape_of(n.inputs[0]) is None:
            return None
        x = n.inputs[0]
        if sum(d != 1 for d in shape_of(x)) > 1:
            return None
    found = positions_1d(graph, syms, x)
    if found is None or (shape[axis] is not None and dims.equal(found[1], shape[axis]) is not True):
        return None
    return axis, found[0], found[1]


def positions_1d(graph: Graph, syms: dict[int, SymValue], v: Value) -> tuple[Dim, Dim] | None:
    """v = range(start, limit, 1) (+ a scalar offset), 1-D -> (start, its length), or None."""
    a = producer(v, "add")
    if a is not None and None not in a.inputs:
        for i in (0, 1):
            off = _scalar_dim(graph, syms, a.inputs[1 - i])
            inner = positions_1d(graph, syms, a.inputs[i]) if a.inputs[i].type.rank == 1 else None
            if off is not None and inner is not None:
                return dims.add(inner[0], off), inner[1]
        return None
    r = producer(v, "range")
    if r is None or v.type.rank != 1 or v.type.shape is None or scalar(graph, r.inputs[2]) != 1.0:
        return None
    start = _scalar_dim(graph, syms, r.inputs[0])
    length = v.type.shape[0]
    if length is None:  # the type rule may not have followed it: limit - start
        limit = _scalar_dim(graph, syms, r.inputs[1])
        length = dims.sub(limit, start) if limit is not None and start is not None else None
    return None if start is None else (start, length)


def is_true(graph: Graph, v: Value | None) -> bool:
    c = graph.const_value(v)
    return isinstance(c, np.ndarray) and c.dtype == np.bool_ and bool(c.all())


def conjuncts(v: Value) -> list[Value]:
    """The operands of a tree of `and`s (and expands of one) as a flat list."""
    n = producer(v, "and", "expand")
    if n is None:
        return [v]
    if n.op == "expand":
        return conjuncts(n.inputs[0]) if n.inputs[0] is not None and n.inputs[0].type.dtype is DType.BOOL else [v]
    return [t for x in n.inputs if x is not None for t in conjuncts(x)]


def is_causal_term(graph: Graph, syms: dict[int, SymValue], v: Value, q_len: Dim, total: Dim, past: Dim,
                   relations: dict[str, Dim] | None = None) -> bool:
    """v = (key position <= query position) with keys 0..total-1 on the last axis and queries past..past+q_len-1 on
    the one before: exactly fused_attention's causal rule. Accepts less_or_equal(k, q) and greater_or_equal(q, k)."""
    n = producer(v, "less_or_equal", "greater_or_equal")
    if n is None or len(n.inputs) != 2 or None in n.inputs:
        return False
    k, q = n.inputs if n.op == "less_or_equal" else n.inputs[::-1]
    kp, qp = positions(graph, syms, k), positions(graph, syms, q)
    if kp is None or qp is None or kp[0] != -1 or qp[0] != -2:
        return False
    return all(equal_given(a, b, relations) for a, b in ((kp[1], 0), (kp[2], total), (qp[1], past), (qp[2], q_len)))


__all__ = ["Miss", "conjuncts", "is_causal_term", "is_true", "past_concat", "peel_scale", "producer", "repeated_kv",
           "equal_given", "same_dims", "scalar", "symbolic_values", "untranspose_keys"]

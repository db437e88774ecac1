"""Relations between a model's symbols that its ops imply, and dims folded from symbolic shape values.

    attention_mask: i64[batch,total]   +   scores: f32[batch,heads,seq,past+seq]   ->   total = past+seq

Exporters name every input dim on its own (`past`, `total`, `seq`), although the graph only works when some
of them agree: an elementwise op broadcasting `total` against `past+seq` (neither is 1 in use) leaves the
type rule with an unknown dim. `infer_relations` reads those broadcasts: it rewrites the later plain symbol
as the other side everywhere (`total` -> `past+seq`), re-infers the types and repeats. The runtime then
binds every symbol from the input arrays and checks each relation with one clear error naming the input,
axis, symbol and both values (never assuming one from a default binding).

`fold_shape_values` (tritc/ir/symvalues.py's fold_static_values, which kv-cache-in-place runs too) replaces
small integer values whose symbolic value is fully static by constants, so `head_dim / 2` computed through
Shape and Gather is a constant even when the tensor it measured has a symbolic batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...ir import dims as dimlib
from ...ir.graph import Graph
from ...ir.symvalues import fold_static_values as fold_shape_values
from ...ir.types import Dim, TensorType
from ...passes.infer_shapes import InferShapes
from ...passes.pass_manager import PassManager

MAX_ROUNDS = 16


def substitute(d: Dim, symbol: str, value: Dim) -> Dim:
    """d with `symbol` replaced by the dim `value` (polynomials stay canonical)."""
    if not isinstance(d, str) or symbol not in dimlib.symbols(d):
        return d
    out: Dim = 0
    for monomial, coeff in (dimlib.to_poly(d) or {}).items():
        term: Dim = coeff
        for s in monomial:
            term = dimlib.mul(term, value if s == symbol else s)
        out = dimlib.add(out, term)
    return out


def rewrite_symbol(g: Graph, symbol: str, value: Dim) -> None:
    """Every type of `g` with `symbol` replaced by the dim `value`."""
    values = list(g.inputs) + [v for node in g for v in node.outputs]
    for v in values:
        if v.type.shape is not None:
            shape = tuple(substitute(d, symbol, value) for d in v.type.shape)
            if shape != v.type.shape:
                v.type = TensorType(v.type.dtype, shape)


def _unknown(g: Graph) -> list[tuple]:
    """(node, result axis, the operands' dims there) for results with an unknown dim, right-aligned as broadcasting
    aligns them."""
    found = []
    for node in g:
        for v in node.outputs:
            shape = v.type.shape
            if shape is None or None not in shape:
                continue
            for axis, d in enumerate(shape):
                if d is not None:
                    continue
                back = len(shape) - axis
                seen = [x.type.shape[-back] for x in node.inputs if x is not None and x.type.shape is not None
                        and len(x.type.shape) >= back]
                found.append((node, axis, [s for s in seen if s != 1]))
    return found


def _choose(dims: list[Dim], order: Mapping[str, int]) -> tuple[str, Dim] | None:
    """Which symbol to rewrite as what: the later plain symbol of two different symbolic dims."""
    distinct = list(dict.fromkeys(d for d in dims if isinstance(d, str)))
    if len(distinct) < 2 or any(d is None for d in dims):
        return None
    plain = sorted((d for d in distinct if dimlib.symbols(d) == {d}), key=lambda s: order.get(s, len(order)), reverse=True)
    for s in plain:
        other = next(d for d in distinct if d != s)
        if s not in dimlib.symbols(other):
            return s, other
    return None


def infer_relations(g: Graph, symbols: list[str]) -> dict[str, Dim]:
    """Rewrite `g` in place so that every symbol a broadcast ties to another dim is replaced by it; the
    relations found, symbol -> the dim it equals (in the other symbols)."""
    order = {s: i for i, s in enumerate(symbols)}
    relations: dict[str, Dim] = {}
    for _ in range(MAX_ROUNDS):
        choice = None
        for _node, _axis, seen in _unknown(g):
            choice = _choose(seen, order)
            if choice is not None:
                break
        if choice is None:
            break
        symbol, value = choice
        relations = {s: substitute(d, symbol, value) for s, d in relations.items()}
        relations[symbol] = value
        rewrite_symbol(g, symbol, value)
        PassManager([InferShapes()]).run(g)
    return relations


__all__ = ["fold_shape_values", "infer_relations", "rewrite_symbol", "substitute"]

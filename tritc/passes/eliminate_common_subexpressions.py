"""eliminate-common-subexpressions: one node for each identical (op, operands, attributes).

    %a = relu(%x) : f32[4]
    %b = relu(%x) : f32[4]      ->   uses of %b now use %a; %b's node is gone

When %b is a graph output its name must survive, so it becomes `%b = identity(%a)`. Such naming
identities are never merged again: that would only chain them (identity(identity(%a))) and make
a second run of the pass change the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node, Value
from .pass_manager import Pass, register

# Ops whose result is not a pure function of operands and attributes are never merged.
IMPURE = frozenset({"random_normal", "random_uniform", "random_normal_like", "random_uniform_like", "bernoulli"})


def _freeze(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("tensor", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def node_key(node: Node, subst: Mapping[int, Value] | None = None) -> tuple:
    """What makes two nodes interchangeable: op, operands, attributes and result types. `subst` maps the id of a
    value to the one that is replacing it (the merges decided so far, applied later in one batch)."""
    subst = subst or {}
    return (node.op, tuple(id(subst.get(id(v), v)) if v is not None else None for v in node.inputs),
            tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items())),
            tuple(v.type for v in node.outputs))


@register
@dataclass(frozen=True)
class EliminateCommonSubexpressions(Pass):
    name = "eliminate-common-subexpressions"
    summary = "merge nodes that compute the same thing from the same operands"

    def run(self, graph: Graph) -> bool:
        seen: dict[tuple, Node] = {}
        outputs = {id(v) for v in graph.outputs}
        merges: list[tuple[Node, list[Value]]] = []
        subst: dict[int, Value] = {}   # a merged node's result -> the first node's (its users see this in their keys)
        for node in graph.nodes:
            if node.op in IMPURE or (node.op == "identity" and id(node.outputs[0]) in outputs):
                continue
            key = node_key(node, subst)
            first = seen.get(key)
            if first is None:
                seen[key] = node
                continue
            if node.op == "weight" and any(id(v) in outputs for v in node.outputs):
                continue
            merges.append((node, first.outputs))
            subst.update((id(old), new) for old, new in zip(node.outputs, first.outputs))
        # one batch: linear in the graph, where a merge at a time rescanned the outputs (a 10k-wide fan-out of
        # outputs took minutes)
        graph.replace_nodes(merges)
        return bool(merges)

"""canonicalize: local rewrites to one canonical form, applied until nothing changes.

    %y = gemm(%a, %b, %c) {transB = 1}        ->  %bt = transpose(%b) {perm = [1, 0]}
                                                  %m = matmul(%a, %bt); %y = add(%m, %c)
    %y = transpose(transpose(%x) {perm = p}) {perm = q}   ->  %y = transpose(%x) {perm = p.q}
    %y = identity(%x) / dropout(%x) / cast(%x) {to = <x's dtype>}   ->  uses of %y use %x

Each rewrite is a function keyed by op that returns True when it changed the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..ir import dims
from ..ir.graph import Graph, Node, Value
from ..ir.types import TensorType
from .pass_manager import Pass, register

Rewrite = Callable[[Graph, Node], bool]
REWRITES: dict[str, Rewrite] = {}
MAX_ROUNDS = 50


def rewrite(*ops: str) -> Callable[[Rewrite], Rewrite]:
    def reg(fn: Rewrite) -> Rewrite:
        for op in ops:
            REWRITES[op] = fn
        return fn

    return reg


def _forward(graph: Graph, node: Node, value: Value) -> bool:
    """Replace the node's (single used) result by `value`, unless that only moves an output name."""
    out = node.outputs[0]
    is_output = any(v is out for v in graph.outputs)
    if is_output and (value.producer is None or any(v is value for v in graph.outputs)):
        return False  # would be re-expressed as an identity: no progress possible
    if any(v.uses or any(v is o for o in graph.outputs) for v in node.outputs[1:]):
        return False
    graph.replace_all_uses(out, value)
    graph.erase(node)
    return True


def _same_type(a: TensorType, b: TensorType) -> bool:
    if a.dtype != b.dtype or a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    return all(dims.equal(x, y) is True for x, y in zip(a.shape, b.shape))


@rewrite("identity")
def _identity(graph: Graph, node: Node) -> bool:
    return _forward(graph, node, node.inputs[0])  # type: ignore[arg-type]


@rewrite("dropout")
def _dropout(graph: Graph, node: Node) -> bool:
    training = graph.const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if len(node.inputs) > 2 and node.inputs[2] is not None and (training is None or bool(np.asarray(training))):
        return False
    return _forward(graph, node, node.inputs[0])  # type: ignore[arg-type]


@rewrite("cast")
def _cast(graph: Graph, node: Node) -> bool:
    x = node.inputs[0]
    return x is not None and x.type.dtype == node.attrs["to"] and _forward(graph, node, x)


@rewrite("cast_like")
def _cast_like(graph: Graph, node: Node) -> bool:
    x, like = node.inputs[0], node.inputs[1]
    if x is None or like is None:
        return False
    if x.type.dtype == like.type.dtype:
        return _forward(graph, node, x)
    new = graph.add("cast", [x], [node.outputs[0].type], {"to": like.type.dtype}, node.name, before=node)
    graph.replace_node(node, new.outputs)
    return True


@rewrite("gemm")
def _gemm(graph: Graph, node: Node) -> bool:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if a is None or b is None or a.type.rank != 2 or b.type.rank != 2:
        return False
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    out = node.outputs[0]
    dt = out.type.dtype

    def transposed(v: Value) -> Value:
        shape = v.type.shape
        t = TensorType(v.type.dtype, (shape[1], shape[0]))  # type: ignore[index]
        return graph.add("transpose", [v], [t], {"perm": [1, 0]}, node.name, before=node).output

    if node.attrs.get("transA", 0):
        a = transposed(a)
    if node.attrs.get("transB", 0):
        b = transposed(b)
    y = graph.add("matmul", [a, b], [out.type], {}, node.name, before=node).output
    if alpha != 1.0:
        k = graph.add_constant(np.array(alpha, dt.np_dtype), TensorType(dt, ()), before=node)
        y = graph.add("mul", [y, k], [out.type], {}, node.name, before=node).output
    if c is not None and beta != 0.0:
        if beta != 1.0:
            k = graph.add_constant(np.array(beta, dt.np_dtype), TensorType(dt, ()), before=node)
            c = graph.add("mul", [c, k], [c.type], {}, node.name, before=node).output
        y = graph.add("add", [y, c], [out.type], {}, node.name, before=node).output
    graph.replace_node(node, [y])
    return True


@rewrite("transpose")
def _transpose(graph: Graph, node: Node) -> bool:
    x = node.inputs[0]
    rank = x.type.rank if x is not None else None
    if x is None or rank is None:
        return False
    perm = node.attrs.get("perm") or list(reversed(range(rank)))
    if perm == list(range(rank)):
        return _forward(graph, node, x)
    p = x.producer
    if p is not None and p.op == "transpose" and len(x.uses) == 1 and not any(v is x for v in graph.outputs):
        inner = p.attrs.get("perm") or list(reversed(range(rank)))
        composed = [inner[i] for i in perm]
        new = graph.add("transpose", [p.inputs[0]], [node.outputs[0].type], {"perm": composed}, node.name, before=node)
        graph.replace_node(node, new.outputs)
        graph.erase(p)
        return True
    return False


@rewrite("reshape")
def _reshape(graph: Graph, node: Node) -> bool:
    x = node.inputs[0]
    if x is None:
        return False
    if _same_type(x.type, node.outputs[0].type) and x.type.is_static:
        return _forward(graph, node, x)
    p = x.producer
    shape = graph.const_value(node.inputs[1])
    if (p is not None and p.op == "reshape" and isinstance(shape, np.ndarray) and not np.any(shape == 0)
            and len(x.uses) == 1 and not any(v is x for v in graph.outputs)):
        node.set_input(0, p.inputs[0])
        graph.erase(p)
        return True
    return False


@rewrite("squeeze", "unsqueeze", "expand", "flatten")
def _shape_noop(graph: Graph, node: Node) -> bool:
    x = node.inputs[0]
    if x is None or not x.type.is_static or not _same_type(x.type, node.outputs[0].type):
        return False
    return _forward(graph, node, x)


@rewrite("concat")
def _concat(graph: Graph, node: Node) -> bool:
    if len(node.inputs) == 1 and node.inputs[0] is not None and _same_type(node.inputs[0].type, node.outputs[0].type):
        return _forward(graph, node, node.inputs[0])
    return False


@rewrite("mul", "div")
def _times_one(graph: Graph, node: Node) -> bool:
    x, k = node.inputs[0], node.inputs[1]
    one = graph.const_value(k)
    if x is None or not isinstance(one, np.ndarray) or not np.all(one == 1):
        return False
    if not _same_type(x.type, node.outputs[0].type):
        return False  # the constant broadcasts x to a bigger shape
    return _forward(graph, node, x)


@register
@dataclass(frozen=True)
class Canonicalize(Pass):
    name = "canonicalize"
    summary = "gemm to matmul+add, merge transpose/reshape chains, drop no-op casts, identities and dropouts"

    def run(self, graph: Graph) -> bool:
        changed_any = False
        for _ in range(MAX_ROUNDS):
            changed = False
            for node in graph.nodes:
                fn = REWRITES.get(node.op)
                if fn is not None and node.graph is graph and fn(graph, node):
                    changed = True
            changed_any |= changed
            if not changed:
                break
        return changed_any

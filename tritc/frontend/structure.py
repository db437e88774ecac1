"""Structural checks of an ONNX graph for the frontend: text fields, names defined once, and a topological order.

All iterative (Kahn's algorithm with a heap; an explicit walk to show a cycle), so graph size never
meets Python's recursion limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import onnx

from ..errors import ModelFormatError, ModelValidationError


def node_label(node: onnx.NodeProto, index: int | None) -> str:
    if node.name:
        return f"'{node.name}' ({node.op_type})"
    if node.output and node.output[0]:
        return f"{node.op_type} -> '{node.output[0]}'"
    return f"#{index} ({node.op_type})" if index is not None else f"({node.op_type})"


def check_text(model: onnx.ModelProto, source: str) -> None:
    """Every name must be UTF-8 text: protobuf hands invalid UTF-8 in proto2 strings back as bytes."""
    g = model.graph

    def bad(what: str) -> ModelFormatError:
        return ModelFormatError(f"{source}: {what} is not valid UTF-8 text")

    if not isinstance(g.name, str):
        raise bad("the graph's name")
    for e in model.opset_import:
        if not isinstance(e.domain, str):
            raise bad("an opset_import domain")
    for kind, vis in (("graph input", g.input), ("graph output", g.output), ("value_info", g.value_info)):
        for k, vi in enumerate(vis):
            if not isinstance(vi.name, str):
                raise bad(f"the name of {kind} #{k}")
            if vi.type.HasField("tensor_type"):
                for d in vi.type.tensor_type.shape.dim:
                    if not isinstance(d.dim_param, str):
                        raise bad(f"a dim_param of {kind} '{vi.name}'")
    for k, t in enumerate(g.initializer):
        if not isinstance(t.name, str):
            raise bad(f"the name of initializer #{k}")
    for k, sp in enumerate(g.sparse_initializer):
        if not isinstance(sp.values.name, str):
            raise bad(f"the name of sparse initializer #{k}")
    for k, node in enumerate(g.node):
        for s in (node.op_type, node.domain, node.name, *node.input, *node.output):
            if not isinstance(s, str):
                raise bad(f"a name in node #{k}")
        for a in node.attribute:
            if not isinstance(a.name, str) or not isinstance(a.ref_attr_name, str):
                raise bad(f"an attribute name in node #{k}")


def topological_order(g: onnx.GraphProto, source: str, warnings: list[str]) -> list[int]:
    """Node indices in a stable topological order, after checking every name is defined exactly once.

    Out-of-order nodes are re-sorted (the file's order wherever the dependencies allow), with a warning."""

    def fail(msg: str) -> ModelValidationError:
        return ModelValidationError(f"{source}: {msg}")

    available: set[str] = set()
    for kind, names in (("initializer", [t.name for t in g.initializer]),
                        ("sparse initializer", [t.values.name for t in g.sparse_initializer])):
        for name in names:
            if not name:
                raise fail(f"an {kind} has no name")
            if name in available:
                raise fail(f"{kind} '{name}' is defined twice")
            available.add(name)
    inputs: set[str] = set()
    for vi in g.input:
        if vi.name in inputs:
            raise fail(f"graph input '{vi.name}' is listed twice")
        inputs.add(vi.name)
    available |= inputs
    producer: dict[str, int] = {}
    for idx, node in enumerate(g.node):
        for o in node.output:
            if not o:
                continue
            if o in producer or o in available:
                raise fail(f"value '{o}' is defined twice (again by node "
                                                      f"{node_label(node, idx)})")
            producer[o] = idx
    seen_out: set[str] = set()
    for o in g.output:
        if o.name in seen_out:
            raise fail(f"graph output '{o.name}' is listed twice")
        seen_out.add(o.name)
        if o.name not in producer and o.name not in available:
            raise fail(f"graph output '{o.name}' is never produced")
    n = len(g.node)
    deps: list[list[int]] = [[] for _ in range(n)]
    consumers: list[list[int]] = [[] for _ in range(n)]
    for idx, node in enumerate(g.node):
        mine = set()
        for name in node.input:
            if not name or name in available:
                continue
            p = producer.get(name)
            if p is None:
                raise fail(f"node {node_label(node, idx)} uses '{name}', "
                                                      f"which no node, input or initializer defines")
            if p not in mine:
                mine.add(p)
                deps[idx].append(p)
                consumers[p].append(idx)
    # Kahn's algorithm with a heap: the original order wherever the dependencies allow it.
    waiting = [len(d) for d in deps]
    ready = [i for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for c in consumers[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != n:
        raise fail(f"the graph has a cycle: {_cycle(g.node, deps, waiting)}")
    if any(order[k] != k for k in range(n)):
        warnings.append("nodes were not in topological order; they were re-sorted")
    return order


def _cycle(nodes: Sequence[onnx.NodeProto], deps: list[list[int]], waiting: list[int]) -> str:
    """A readable cycle among the nodes Kahn's algorithm could not place (iterative walk)."""
    i = next(k for k in range(len(waiting)) if waiting[k] > 0)
    path: list[int] = []
    pos: dict[int, int] = {}
    while i not in pos:
        pos[i] = len(path)
        path.append(i)
        i = next(d for d in deps[i] if waiting[d] > 0)  # a stuck node always has a stuck dependency
    loop = path[pos[i]:][::-1]
    shown = [node_label(nodes[k], k) for k in loop[:6]] + (["..."] if len(loop) > 6 else [])
    return " -> ".join(shown + [node_label(nodes[loop[0]], loop[0])])

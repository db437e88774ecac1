"""fold-ternary's layer policy for lossy modes: which layer is the output head, which weight is an embedding table.

In `exact` mode every exactly ternary layer folds (nothing is lost, so nothing needs protecting); in
`absmean` the output head and weights tied to an embedding table stay float, as BitNet keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..ir.graph import Graph, Node, Value

RESIDUAL_OPS = ("add", "sum")
# Ops that end a walk towards the outputs: a layer behind another weight layer is not the head.
LAYER_OPS = ("gemm", "conv", "conv_transpose", "ternary_matmul", "ternary_conv")
CONSTANT_OPS = ("weight", "constant")


def _is_constant(v: Value | None) -> bool:
    return v is None or (v.producer is not None and v.producer.op in CONSTANT_OPS)


def _ancestors(v: Value) -> set[int]:
    """Ids of v and of every value it is computed from."""
    seen: set[int] = set()
    stack = [v]
    while stack:
        u = stack.pop()
        if id(u) in seen:
            continue
        seen.add(id(u))
        if u.producer is not None:
            stack.extend(x for x in u.producer.inputs if x is not None)
    return seen


def residual_adds(graph: Graph) -> list[Node]:
    """Adds that join a stream with something computed from it (h + f(h)): the skip connections.

    An operand that merely shares an ancestor (f(x) + g(x), a mask, a bias) does not make a residual add."""
    found = []
    for node in graph:
        if node.op not in RESIDUAL_OPS:
            continue
        operands = [v for v in node.inputs if not _is_constant(v)]
        if len(operands) < 2:
            continue
        for i, a in enumerate(operands):
            others = [b for j, b in enumerate(operands) if j != i]
            if any(id(a) in _ancestors(b) for b in others):
                found.append(node)
                break
    return found


def values_feeding(graph: Graph, sinks: Iterable[Node]) -> set[int]:
    """Ids of the values from which some node of `sinks` is reachable (through any op)."""
    sink_ids = {id(n) for n in sinks}
    feeding: set[int] = set()
    for node in reversed(graph.nodes):
        if id(node) in sink_ids or any(id(o) in feeding for o in node.outputs):
            feeding.update(id(v) for v in node.inputs if v is not None)
    return feeding


def reaches_output(graph: Graph, node: Node, layer_ids: set[int]) -> bool:
    """Whether a graph output is reached from node's result without passing another weight layer."""
    outputs = {id(v) for v in graph.outputs}
    seen: set[int] = set()
    stack = list(node.outputs)
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if id(v) in outputs:
            return True
        for user in v.users:
            if id(user) not in layer_ids and user.op not in LAYER_OPS:
                stack.extend(user.outputs)
    return False


def output_heads(graph: Graph, layers: list[Node]) -> set[int]:
    """Ids of the output-head layers: those that produce a graph output after the last residual add.

    A layer is the head when a graph output is reached from its result without passing another weight
    layer, and its input feeds no residual add: so o_proj and down_proj (which write into the residual
    stream) and k_proj / v_proj (whose input also feeds the attention block's residual add, even where
    `present` cache outputs are reached) are never heads, while a vocabulary projection or a
    classifier's last layer is. A network without residual adds has its last layer as the head."""
    layer_ids = {id(n) for n in layers}
    feeding = values_feeding(graph, residual_adds(graph))
    return {id(n) for n in layers
            if n.inputs[0] is not None and id(n.inputs[0]) not in feeding and reaches_output(graph, n, layer_ids)}


def embedding_tables(graph: Graph) -> list[tuple[Value, np.ndarray]]:
    """Constant 2-D tables read by a gather along axis 0 (embeddings), with their values."""
    found = []
    for node in graph:
        if node.op != "gather" or node.inputs[0] is None or int(node.attrs.get("axis", 0)) != 0:
            continue
        table = graph.const_value(node.inputs[0])
        if isinstance(table, np.ndarray) and table.ndim == 2:
            found.append((node.inputs[0], table))
    return found


def tied_to_embedding(weight_value: Value, weight: np.ndarray, tables: list[tuple[Value, np.ndarray]]) -> bool:
    """Whether a layer's weight [K, N] is an embedding table: the same value, or equal to a table or its
    transpose (a tied head after fold-constants has transposed it into a constant of its own)."""
    for value, table in tables:
        if value is weight_value:
            return True
        for t in (table, table.T):
            if t.shape == weight.shape and np.array_equal(t.astype(np.float32), weight):
                return True
    return False

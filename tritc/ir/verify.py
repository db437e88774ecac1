"""Structural and type checks of a Graph: the invariants every pass must keep.

`verify(graph)` raises VerificationError with every problem found (up to a limit), each naming
the node. Checked: the node list and use lists agree, values are defined before use (so the
graph is acyclic and in topological order), ops exist with the right operand counts and
attributes, weights and constants match their declared types, and each node's declared result
types agree with its op's type rule wherever both are known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import VerificationError
from . import dims
from .graph import Graph, Node
from .ops import OPS, InferContext, TypeRuleError, check_attr_value
from .types import DType, TensorType, format_type

MAX_REPORTED = 20


def verify(graph: Graph, check_types: bool = True) -> None:
    problems = collect_problems(graph, check_types)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise VerificationError(f"graph @{graph.name} is invalid:\n  " + "\n  ".join(problems[:MAX_REPORTED]) + more)


def collect_problems(graph: Graph, check_types: bool = True) -> list[str]:
    problems: list[str] = []
    defined: set[int] = set()
    v_uses: dict[int, set[tuple[int, int]]] = {}
    for v in graph.inputs:
        if v.producer is not None:
            problems.append(f"graph input %{v.name} has a producer")
        defined.add(id(v))
    count = 0
    prev: Node | None = None
    for node in graph:
        count += 1
        if node.graph is not graph:
            problems.append(f"node {node.describe()} does not point back to the graph")
        if node.prev is not prev:
            problems.append(f"node {node.describe()} has a broken prev link")
        prev = node
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if id(v) not in defined:
                problems.append(f"node {node.describe()} uses %{v.name} before it is defined")
            # Each value's uses as a set, built once: scanning the list per operand is quadratic on a wide fan-out.
            if v_uses.get(id(v)) is None:
                v_uses[id(v)] = {(id(n), j) for n, j in v.uses}
            if (id(node), i) not in v_uses[id(v)]:
                problems.append(f"node {node.describe()} operand {i} is missing from the uses of %{v.name}")
        for i, v in enumerate(node.outputs):
            if v.producer is not node or v.index != i:
                problems.append(f"result %{v.name} of {node.describe()} does not point back to it")
            if id(v) in defined:
                problems.append(f"value %{v.name} is defined twice")
            if v.graph is not graph or not graph.has_value(v.name) or graph.value(v.name) is not v:
                problems.append(f"result %{v.name} of {node.describe()} is not registered in the graph")
            defined.add(id(v))
        problems.extend(_check_node(graph, node, check_types))
    if count != len(graph):
        problems.append(f"node count {len(graph)} does not match the {count} nodes in the list")
    if graph.last is not prev:
        problems.append("the graph's last-node link is broken")
    for v in graph.values():
        for n, i in v.uses:
            if n.graph is not graph or i >= len(n.inputs) or n.inputs[i] is not v:
                problems.append(f"%{v.name} lists a use by {n.describe()} operand {i} that is not there")
    for v in graph.outputs:
        if id(v) not in defined:
            problems.append(f"graph output %{v.name} is never defined")
    problems.extend(_check_value_symbols(graph))
    return problems


def _check_value_symbols(graph: Graph) -> list[str]:
    """An input that names a symbol (Graph.value_symbols) holds one integer, and the symbol is a plain name."""
    problems = []
    inputs = {v.name: v for v in graph.inputs}
    for name, symbol in graph.value_symbols.items():
        v = inputs.get(name)
        if v is None:
            problems.append(f"%{name} gives the size {symbol!r} but is not a graph input")
        elif not v.type.dtype.is_int or not v.type.is_static or v.type.numel() != 1:
            problems.append(f"graph input %{name} gives the size {symbol!r} but is {format_type(v.type)}, not one "
                            f"integer")
        if not isinstance(symbol, str) or dims.symbols(symbol) != {symbol}:
            problems.append(f"graph input %{name} gives the size {symbol!r}, which is not a plain symbol")
    return problems


def _check_node(graph: Graph, node: Node, check_types: bool) -> list[str]:
    where = node.describe()
    opdef = OPS.get(node.op)
    if opdef is None:
        return [f"node {where}: unknown op '{node.op}'"]
    out: list[str] = []
    n_in = len(node.inputs)
    if n_in < opdef.min_inputs() or (opdef.max_inputs() is not None and n_in > opdef.max_inputs()):  # type: ignore[operator]
        out.append(f"node {where}: {n_in} operands, op '{node.op}' takes {_range(opdef.min_inputs(), opdef.max_inputs())}")
    for i, o in enumerate(opdef.inputs):
        if not o.optional and not o.variadic and i < n_in and node.inputs[i] is None:
            out.append(f"node {where}: required operand {o.name} is none")
    n_out = len(node.outputs)
    if n_out < opdef.min_outputs() or (opdef.max_outputs() is not None and n_out > opdef.max_outputs()):  # type: ignore[operator]
        out.append(f"node {where}: {n_out} results, op '{node.op}' gives {_range(opdef.min_outputs(), opdef.max_outputs())}")
    for k, a in opdef.attrs.items():
        if a.required and k not in node.attrs:
            out.append(f"node {where}: missing required attribute '{k}'")
    for k, v in node.attrs.items():
        spec = opdef.attrs.get(k)
        if spec is None:
            out.append(f"node {where}: unknown attribute '{k}' for op '{node.op}'")
        elif not check_attr_value(spec.kind, v):
            out.append(f"node {where}: attribute '{k}' should be {spec.kind}, got {type(v).__name__}")
        elif spec.kind == "float" and float(np.float32(v)) != v and not np.isnan(v):
            out.append(f"node {where}: float attribute '{k}' = {v!r} is not a float32 value")
        elif spec.kind == "floats" and any(float(np.float32(x)) != x and not np.isnan(x) for x in v):
            out.append(f"node {where}: float attribute '{k}' holds values that are not float32")
    if out:
        return out
    if node.op == "weight":
        return _check_weight(graph, node)
    if node.op == "constant":
        value = node.attrs["value"]
        t = node.outputs[0].type
        if value.dtype != t.dtype.np_dtype or t.shape != tuple(value.shape):
            out.append(f"node {where}: constant of {value.dtype}{list(value.shape)} declared {format_type(t)}")
        return out
    if check_types:
        out.extend(_check_types(graph, node, opdef))
    return out


def _check_weight(graph: Graph, node: Node) -> list[str]:
    ref = node.attrs["ref"]
    t = node.outputs[0].type
    if ref not in graph.weights:
        return [f"weight node {node.describe()} references \"{ref}\", which is not in the graph's weights"]
    data = graph.weights[ref]
    shape = getattr(data, "shape", None)
    dtype = getattr(data, "dtype", None)
    if t.dtype is DType.T2:
        pass  # ternary data carries its own trits (and may keep them packed: not unpacked here just to look)
    elif dtype is not None and np.dtype(dtype) != t.dtype.np_dtype:
        return [f"weight \"{ref}\" holds {dtype} data but is declared {format_type(t)}"]
    if shape is not None and t.shape != tuple(shape):
        return [f"weight \"{ref}\" has shape {list(shape)} but is declared {format_type(t)}"]
    return []


def _check_types(graph: Graph, node: Node, opdef: Any) -> list[str]:
    ctx = InferContext(node.op, [None if v is None else v.type for v in node.inputs],
                       opdef.with_defaults(node.attrs), [graph.const_value(v) for v in node.inputs],
                       len(node.outputs), node.name)
    try:
        inferred = opdef.infer(ctx)
    except TypeRuleError as e:
        return [f"node {node.describe()}: {e}"]
    out = []
    for v, t in zip(node.outputs, inferred):
        if not compatible(v.type, t):
            out.append(f"node {node.describe()}: result %{v.name} is declared {format_type(v.type)} "
                       f"but the op gives {format_type(t)}")
    return out


def compatible(declared: TensorType, inferred: TensorType) -> bool:
    """Whether a declared type can hold what a rule inferred (unknown and symbolic dims agree
    with anything that is not provably different)."""
    if declared.dtype != inferred.dtype:
        return False
    if declared.shape is None or inferred.shape is None:
        return True
    if len(declared.shape) != len(inferred.shape):
        return False
    return all(dims.equal(a, b) is not False for a, b in zip(declared.shape, inferred.shape))


def _range(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"at least {lo}"
    return str(lo) if lo == hi else f"{lo} to {hi}"


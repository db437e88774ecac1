"""infer-shapes: re-derive every result type from the op type rules, static and symbolic.

    %y = matmul(%x, %w) : f32[?,?]     ->   %y = matmul(%x, %w) : f32[batch,8]

Shape arithmetic (shape -> gather -> concat -> reshape) is followed symbolically: small integer
values carry symbolic elements (tritc/ir/symvalues.py) that reshape, expand, slice and
constant_of_shape read where a constant would do.

Types only get more precise (static beats symbolic beats unknown); a clash between a declared
and an inferred type is an error naming the node. With `bind`, symbolic input dims are first
replaced by sizes (``infer-shapes{bind=[batch=1,seq=16]}``), which specialises the whole graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelValidationError, OptionError
from ..ir import dims
from ..ir.graph import Graph
from ..ir.ops import OPS, InferContext, TypeRuleError
from ..ir.symvalues import SymValue, input_values, node_value
from ..ir.types import TensorType, format_type, refine_type
from ..ir.verify import compatible
from .pass_manager import Pass, register


def parse_bindings(items: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise OptionError(f"bad dim binding '{item}' (expected name=size)")
        out[name.strip()] = int(value)
    return out


def substitute(t: TensorType, bindings: dict[str, int]) -> TensorType:
    """`t` with every symbolic dim whose symbols are all bound replaced by its value."""
    if t.shape is None or not bindings:
        return t
    shape = []
    for d in t.shape:
        value = dims.evaluate(d, bindings) if isinstance(d, str) else None
        shape.append(value if value is not None else d)
    return TensorType(t.dtype, tuple(shape))


def infer_node_types(graph: Graph, node, syms: dict[int, SymValue] | None = None) -> list[TensorType] | None:
    """The types the op's rule gives this node now, or None when the rule cannot say. `syms` holds the
    symbolic values of small integer values computed so far (shape arithmetic)."""
    opdef = OPS.get(node.op)
    if opdef is None or node.op in ("weight", "constant"):
        return None
    ctx = InferContext(node.op, [None if v is None else v.type for v in node.inputs], opdef.with_defaults(node.attrs),
                       [graph.const_value(v) for v in node.inputs], len(node.outputs), node.name,
                       [None if v is None or syms is None else syms.get(id(v)) for v in node.inputs])
    token = dims.WHERE.set(f"node {node.describe()}") if dims.recording_active() else None
    try:
        return opdef.infer(ctx)
    except TypeRuleError as e:
        raise ModelValidationError(f"node {node.describe()}: {e}") from e
    finally:
        if token is not None:
            dims.WHERE.reset(token)


def assume_declared(node, declared: TensorType, inferred: TensorType) -> None:
    """A declared size where the rule gives a symbolic dim (or the reverse: [N,4] declared, [1,4] inferred) holds for
    some sizes only, and the refined type keeps the size: note the assumption (dims.assume_equal), so that while
    recording the generated code's callers check it at every call instead of reading a result of the wrong shape."""
    if declared.shape is None or inferred.shape is None or not dims.recording_active():
        return
    token = dims.WHERE.set(f"node {node.describe()}")
    try:
        for a, b in zip(declared.shape, inferred.shape):
            if a is not None and b is not None and isinstance(a, int) != isinstance(b, int):
                dims.assume_equal(a, b)
    finally:
        dims.WHERE.reset(token)


@register
@dataclass(frozen=True)
class InferShapes(Pass):
    name = "infer-shapes"
    summary = "recompute result types from the type rules (optionally binding symbolic dims to sizes)"
    bind: tuple[str, ...] = ()

    def run(self, graph: Graph) -> bool:
        bindings = parse_bindings(self.bind)
        changed = False
        syms: dict[int, SymValue] = input_values(graph, bindings)  # inputs holding a size (value_symbols)
        for v in graph.inputs:
            t = substitute(v.type, bindings)
            if t != v.type:
                v.type, changed = t, True
        for node in graph:
            if bindings:
                for v in node.outputs:
                    t = substitute(v.type, bindings)
                    if t != v.type:
                        v.type, changed = t, True
            inferred = infer_node_types(graph, node, syms)
            if inferred is None:
                continue
            for v, t in zip(node.outputs, inferred):
                if not compatible(v.type, t):
                    raise ModelValidationError(f"node {node.describe()}: result %{v.name} is declared "
                                               f"{format_type(v.type)} but the op gives {format_type(t)}")
                assume_declared(node, v.type, t)
                refined = refine_type(v.type, t)
                if refined != v.type:
                    v.type, changed = refined, True
            sv = node_value(graph, node, syms)
            if sv is not None:
                syms[id(node.outputs[0])] = sv
        return changed

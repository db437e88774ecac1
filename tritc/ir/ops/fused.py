"""`fused_elementwise`: several elementwise ops run as one loop over the result.

    %y = fused_elementwise(%a, %b) {body = "graph @f(%in0: f32[*], %in1: f32[*]) -> (%r: f32[*]) {
         %t = mul(%in0, %in1) : f32[*]  %r = relu(%t) : f32[*]  return %r }"} : f32[batch,64]

The body is IR text of a graph over the operands (unknown-rank types: each op applies elementwise
with broadcasting). fuse-elementwise builds it; backends lower the body as one loop nest.
"""

from __future__ import annotations

import functools

import numpy as np

from ..types import TensorType
from . import InferContext, Str, TypeRuleError, defop
from .rules import broadcast_shapes


@functools.lru_cache(maxsize=256)
def parse_body(body: str):
    """The body graph of a fused node (parsed once per distinct body)."""
    from ..text import parse_graph

    return parse_graph(body)


def _infer(ctx: InferContext) -> list[TensorType]:
    body = parse_body(ctx.attrs["body"])
    if len(body.inputs) != len(ctx.input_types):
        raise TypeRuleError(f"body takes {len(body.inputs)} operands, the node has {len(ctx.input_types)}")
    if len(body.outputs) != ctx.num_outputs:
        raise TypeRuleError(f"body returns {len(body.outputs)} results, the node has {ctx.num_outputs}")
    for i, (v, t) in enumerate(zip(body.inputs, ctx.input_types)):
        if t is None or t.dtype != v.type.dtype:
            raise TypeRuleError(f"operand {i} is {t} but the body takes {v.type.dtype}")
    shape = broadcast_shapes(*(t.shape for t in ctx.input_types if t is not None))
    return [TensorType(v.type.dtype, shape) for v in body.outputs]


@defop("fused_elementwise", inputs=["inputs*"], outputs=["outputs*"], attrs={"body": Str()}, infer=_infer,
       wants=("out_types",))
def fused_elementwise(*inputs: np.ndarray, body: str, out_types: list[TensorType]) -> tuple[np.ndarray, ...]:
    from ..interpreter import Interpreter

    g = parse_body(body)
    shape = np.broadcast_shapes(*(a.shape for a in inputs))
    out = Interpreter(g, check_types=False).run({v.name: a for v, a in zip(g.inputs, inputs)})
    # A body whose result does not depend on every operand still has the broadcast shape.
    return tuple(np.broadcast_to(out[v.name], shape).copy() for v in g.outputs)

"""Ops that make values out of data: `weight` (stored beside the graph) and `constant` (inline)."""

from __future__ import annotations

import numpy as np

from ..types import TensorType
from . import InferContext, Int, Str, Tensor, TypeRuleError, defop


def _declared(ctx: InferContext) -> list[TensorType]:
    # A weight's type is checked against its stored data by the verifier, not inferred.
    raise TypeRuleError("a weight's type comes from its data")


def _constant_type(ctx: InferContext) -> list[TensorType]:
    from ..types import DType

    value = ctx.attrs["value"]
    return [TensorType(DType.from_numpy(value.dtype), tuple(value.shape))]


@defop("weight", inputs=[], attrs={"ref": Str(), "scale": Str(None), "group": Int(None), "layout": Str(None)}, infer=_declared)
def weight(*, ref: str, scale: str | None, group: int | None, layout: str | None) -> np.ndarray:
    """A tensor stored in Graph.weights under `ref`. The interpreter resolves it (see run_node)."""
    raise RuntimeError("weight nodes are resolved by the interpreter, not computed")


@defop("constant", inputs=[], attrs={"value": Tensor()}, infer=_constant_type)
def constant(*, value: np.ndarray) -> np.ndarray:
    """A small tensor written inline in the IR."""
    return value

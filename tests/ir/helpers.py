"""Shared by the op-family tests: tensor types in one call and an op's type rule run on types and constants."""

from __future__ import annotations

import numpy as np

from tritc.ir.ops import OPS, InferContext
from tritc.ir.types import DType, TensorType


def tt(dtype: str, *shape) -> TensorType:
    return TensorType(DType.from_name(dtype), tuple(shape))


def infer(op: str, *inputs, n_out: int = 1, **attrs) -> list[TensorType]:
    """Run op's type rule; each input is a TensorType, a numpy array (a constant) or None."""
    types, consts = [], []
    for x in inputs:
        if isinstance(x, np.ndarray):
            types.append(TensorType(DType.from_numpy(x.dtype), x.shape))
            consts.append(x)
        else:
            types.append(x)
            consts.append(None)
    opdef = OPS[op]
    return opdef.infer(InferContext(op, types, opdef.with_defaults(attrs), consts, n_out))


def shape_of(op: str, *inputs, **attrs):
    """The shape of op's one result."""
    (t,) = infer(op, *inputs, **attrs)
    return t.shape

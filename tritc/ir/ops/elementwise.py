"""Elementwise ops: arithmetic, math functions, comparisons, logic, selection and casts.

Binary ops broadcast like numpy (ONNX multidirectional broadcasting). Every function returns
an array of exactly the dtype its type rule declares: numpy's own promotions are undone.
"""

from __future__ import annotations

import numpy as np

from ..types import DType
from . import Float, defop
from .rules import elementwise, same_as

# ---- arithmetic -----------------------------------------------------------------------------


@defop("add", onnx="Add", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=elementwise())
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b).astype(a.dtype, copy=False)


@defop("sub", onnx="Sub", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=elementwise())
def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.subtract(a, b).astype(a.dtype, copy=False)


@defop("mul", onnx="Mul", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=elementwise())
def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.multiply(a, b).astype(a.dtype, copy=False)


@defop("relu", onnx="Relu", since=(6, 13, 14), inputs=["X"], infer=same_as(0))
def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), x.dtype))


@defop("leaky_relu", onnx="LeakyRelu", since=(6, 16), inputs=["X"], attrs={"alpha": Float(0.01)}, infer=same_as(0))
def leaky_relu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    return np.where(x < 0, x * x.dtype.type(alpha), x).astype(x.dtype, copy=False)


@defop("equal", onnx="Equal", since=(7, 11, 13, 19), inputs=["A", "B"], outputs=["C"], infer=elementwise(DType.BOOL))
def equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.equal(a, b)

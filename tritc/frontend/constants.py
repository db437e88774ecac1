"""ONNX Constant nodes (every value_* form) as numpy arrays, and the merging of inferred and declared types.

The frontend folds Constant nodes into `constant` / `weight` values instead of importing them as ops.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..errors import ModelValidationError, UnsupportedError
from ..ir import dims as dimlib
from ..ir.types import TensorType

A = onnx.AttributeProto
# The value forms of Constant and the attribute type each must have.
_FORMS = {"value": A.TENSOR, "sparse_value": A.SPARSE_TENSOR, "value_float": A.FLOAT, "value_floats": A.FLOATS,
          "value_int": A.INT, "value_ints": A.INTS, "value_string": A.STRING, "value_strings": A.STRINGS}


def attr_kind(a: onnx.AttributeProto) -> int:
    """The attribute's type; very old models leave it unset, so then it is read off the field that is set."""
    if a.type:
        return a.type
    for name, kind in (("t", A.TENSOR), ("sparse_tensor", A.SPARSE_TENSOR), ("g", A.GRAPH), ("f", A.FLOAT),
                       ("i", A.INT), ("s", A.STRING)):
        if a.HasField(name):
            return kind
    for name, kind in (("floats", A.FLOATS), ("ints", A.INTS), ("strings", A.STRINGS), ("tensors", A.TENSORS),
                       ("graphs", A.GRAPHS)):
        if len(getattr(a, name)):
            return kind
    return A.UNDEFINED


def constant_value(node: onnx.NodeProto, label: str, node_tensors: Mapping[tuple[int, str], np.ndarray], idx: int,
                   source: str) -> np.ndarray:
    """The value of a Constant node (tensors were loaded and checked beforehand into `node_tensors`)."""
    if len(node.output) != 1 or not node.output[0] or len(node.input) != 0:
        raise ModelValidationError(f"{source}: Constant node {label} needs no inputs and exactly one output")
    if len(node.attribute) != 1:
        names = ", ".join(a.name for a in node.attribute) or "none"
        raise ModelValidationError(f"{source}: Constant node {label} needs exactly one value attribute, it has {names}")
    a = node.attribute[0]
    if a.name not in _FORMS:
        raise ModelValidationError(f"{source}: Constant node {label} has an unknown attribute '{a.name}'")
    kind = attr_kind(a)
    if kind != _FORMS[a.name]:
        raise ModelValidationError(f"{source}: Constant node {label}: attribute '{a.name}' has type "
                                   f"{A.AttributeType.Name(kind) if kind in A.AttributeType.values() else kind}, "
                                   f"expected {A.AttributeType.Name(_FORMS[a.name])}")
    if a.name in ("value", "sparse_value"):
        return node_tensors[(idx, a.name)]
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    raise UnsupportedError(f"{source}: Constant node {label} holds strings ({a.name}); tritc does not support strings")


def refine(mine: TensorType, theirs: TensorType) -> TensorType:
    """The more precise of two types of one value, dim by dim (static beats named beats unknown).

    `mine` is our type rule's result and wins when both are static and differ."""
    if mine.shape is None:
        return theirs.with_dtype(mine.dtype)
    if theirs.shape is None or len(theirs.shape) != len(mine.shape):
        return mine
    out = []
    for a, b in zip(mine.shape, theirs.shape):
        if isinstance(a, int):
            out.append(a)
        elif isinstance(b, int):
            out.append(b)
        elif a is None:
            out.append(b)
        elif b is None:
            out.append(a)
        else:
            # Two symbolic forms: prefer ours (a canonical polynomial) unless it is opaque.
            out.append(a if dimlib.to_poly(a) is not None else b)
    return TensorType(mine.dtype, tuple(out))

"""Adapters for older versions of the reduce ops (see tritc/frontend/adapters/__init__.py).

- Reduce* before opset 13 (ReduceSum) or 18 (the rest): `axes` is an attribute; it becomes the
  constant `axes` input (a missing attribute and a missing input both mean every axis).
- Softmax, LogSoftmax, Hardmax 1 and 11: `axis` defaults to 1 and the input is viewed as 2-D,
  [prod(d[:axis]), prod(d[axis:])]. When `axis` is the last axis that is the same as opset 13's
  single-axis form; otherwise the IR op gets coerce_2d=1, which computes exactly the 2-D view.
- TopK 1: `k` is an attribute; it becomes the constant 1-D `K` input.
"""

from __future__ import annotations

from . import ImportNode, adapter


@adapter("ReduceSum", 1, 11)
@adapter("ReduceMean", 1, 11, 13)
@adapter("ReduceProd", 1, 11, 13)
@adapter("ReduceL1", 1, 11, 13)
@adapter("ReduceL2", 1, 11, 13)
@adapter("ReduceLogSum", 1, 11, 13)
@adapter("ReduceLogSumExp", 1, 11, 13)
@adapter("ReduceSumSquare", 1, 11, 13)
@adapter("ReduceMax", 1, 11, 12, 13)
@adapter("ReduceMin", 1, 11, 12, 13)
def reduce_axes_to_input(imp: ImportNode) -> None:
    imp.attr_to_input("axes", 1)


@adapter("Softmax", 1, 11)
@adapter("LogSoftmax", 1, 11)
@adapter("Hardmax", 1, 11)
def softmax_coerced_to_2d(imp: ImportNode) -> None:
    axis = imp.attrs.get("axis", 1)
    imp.attrs["axis"] = axis
    x = imp.inputs[0] if imp.inputs else None
    rank = x.type.rank if x is not None else None
    if rank is None or (axis + rank if axis < 0 else axis) != rank - 1:
        imp.attrs["coerce_2d"] = 1


@adapter("TopK", 1)
def top_k_k_to_input(imp: ImportNode) -> None:
    if "k" not in imp.attrs:
        raise ValueError("TopK-1 needs the k attribute")
    k = imp.attrs.pop("k")
    imp.pad_inputs(2)
    imp.inputs[1] = imp.const_ints([k], "k")

"""Small ONNX models for the frontend tests, built from ops the table has had from the start (Add, Mul, Relu)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
F = TensorProto.FLOAT


def vi(name: str, shape: Sequence[int | str | None] | None = (2, 3), elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto],
          initializers: Sequence[onnx.TensorProto] = (), *, opset: int = OPSET, name: str = "g",
          value_info: Sequence[onnx.ValueInfoProto] = (), sparse: Sequence[onnx.SparseTensorProto] = (),
          ir_version: int | None = None, extra_opsets: Sequence[tuple[str, int]] = ()) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers), value_info=list(value_info),
                          sparse_initializer=list(sparse))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(g, opset_imports=opsets)
    if ir_version is not None:
        m.ir_version = ir_version
    return m


def relu_model(opset: int = OPSET, shape: Sequence[int | str | None] = (2, 3)) -> onnx.ModelProto:
    """y = relu(x): the smallest valid model."""
    return model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", shape)], [vi("y", shape)], opset=opset)


def weighted_model(w: np.ndarray | None = None, name: str = "w") -> onnx.ModelProto:
    """y = relu(x + w) with w an initializer (16 float32s, so a `weight`, not an inline constant)."""
    w = np.arange(16, dtype=np.float32).reshape(4, 4) if w is None else w
    nodes = [helper.make_node("Add", ["x", name], ["s"], name="add"), helper.make_node("Relu", ["s"], ["y"], name="relu")]
    return model(nodes, [vi("x", w.shape)], [vi("y", w.shape)], [numpy_helper.from_array(w, name)])


def chain_model(n: int, op: str = "Relu", shape: Sequence[int] = (2, 3)) -> onnx.ModelProto:
    """v0 -> op -> v1 -> ... -> vn: a linear chain of n nodes."""
    nodes = [helper.make_node(op, [f"v{i}"], [f"v{i + 1}"]) for i in range(n)]
    return model(nodes, [vi("v0", shape)], [vi(f"v{n}", shape)])


def external_tensor(name: str, shape: Sequence[int], location: str, *, elem: int = F, offset: int | None = None,
                    length: int | None = None, extra: Sequence[tuple[str, str]] = ()) -> onnx.TensorProto:
    """A TensorProto whose data lives in `location` (nothing is written: the test makes the file)."""
    t = onnx.TensorProto(name=name, data_type=elem, dims=list(shape))
    t.data_location = TensorProto.EXTERNAL
    entries = [("location", location)]
    if offset is not None:
        entries.append(("offset", str(offset)))
    if length is not None:
        entries.append(("length", str(length)))
    entries.extend(extra)
    for k, v in entries:
        t.external_data.add(key=k, value=v)
    return t

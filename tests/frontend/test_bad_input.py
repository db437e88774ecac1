"""Bad model files and bad graphs: each gives one clear CompilerError naming the problem.

The cases of HARDENING.md A-C are held to the full contract in tests/hardening/test_{a,b,c}_*.py; these are the
frontend's own further checks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tritc.errors import CompilerError, ModelFormatError, ModelValidationError, ResourceLimitError, UnsupportedError
from tritc.frontend.onnx import Limits, import_model, load_model, load_model_bytes

from .models import F, model, relu_model, vi, weighted_model


def one_line(e: pytest.ExceptionInfo[CompilerError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---- the container ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError) as e:
        load_model(tmp_path / "nope.onnx")
    assert "nope.onnx" in one_line(e) and "no such file" in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="directory"):
        load_model(tmp_path)


def test_fifo_or_device_as_model(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):  # neither is opened: a read would block or never end
        with pytest.raises(ModelFormatError, match="not a regular file"):
            load_model(path)


def test_model_over_the_size_limit(tmp_path):
    p = tmp_path / "big.onnx"
    p.write_bytes(weighted_model().SerializeToString())
    with pytest.raises(ResourceLimitError, match="external data"):
        load_model(p, limits=Limits(max_model_bytes=64))


@pytest.mark.parametrize("ir", range(3, onnx.IR_VERSION + 1))
def test_every_ir_version_up_to_onnx(ir):
    m = relu_model()
    m.ir_version = ir
    assert [v.name for v in import_model(m).outputs] == ["y"]


def test_invalid_utf8_name():
    data = relu_model().SerializeToString().replace(b"relu", b"r\xffl\xfe")
    with pytest.raises(ModelFormatError, match="UTF-8"):
        load_model_bytes(data)


# ---- graph structure --------------------------------------------------------------------------


def test_self_loop():
    with pytest.raises(ModelValidationError, match="cycle.*'me'"):
        import_model(model([helper.make_node("Add", ["x", "y"], ["y"], name="me")], [vi("x")], [vi("y")]))


def test_node_limit():
    with pytest.raises(ResourceLimitError, match="2 nodes"):
        import_model(model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
                           [vi("x")], [vi("y")]), limits=Limits(max_nodes=1))


def test_graph_input_without_type():
    m = relu_model()
    m.graph.input[0].ClearField("type")
    with pytest.raises(ModelValidationError, match="graph input 'x' has no type"):
        import_model(m)


def test_sequence_input():
    seq = helper.make_tensor_sequence_value_info("x", F, [2])
    with pytest.raises(UnsupportedError, match="'x' is a sequence"):
        import_model(model([helper.make_node("Relu", ["x"], ["y"])], [seq], [vi("y")]))


# ---- types, shapes and tensor data ------------------------------------------------------------


def test_typed_data_in_the_wrong_field():
    t = onnx.TensorProto(name="w", data_type=F, dims=[2], int64_data=[1, 2])
    with pytest.raises(ModelValidationError, match="int64_data"):
        import_model(model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", (2,))], [vi("y", (2,))], [t]))


def test_int8_value_out_of_range_in_int32_data():
    t = onnx.TensorProto(name="w", data_type=TensorProto.INT8, dims=[2], int32_data=[1, 300])
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    with pytest.raises(ModelValidationError, match=r"outside \[-128, 127\]"):
        import_model(model(nodes, [vi("x", (2,), TensorProto.INT8)], [vi("y", (2,), TensorProto.INT8)], [t]))


def test_tensor_over_the_size_limit():
    with pytest.raises(ResourceLimitError, match="initializer 'w'.*limit"):
        import_model(weighted_model(), limits=Limits(max_tensor_bytes=32))


def test_every_error_is_one_line_and_a_compiler_error():
    """A sweep of mutations of one model: whatever fails, fails as a CompilerError with one line."""
    base = weighted_model().SerializeToString()
    rng = np.random.default_rng(1)
    failures = 0
    for _ in range(300):
        data = bytearray(base)
        for pos in rng.integers(0, len(data), 3):
            data[pos] = int(rng.integers(0, 256))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                load_model_bytes(bytes(data))
            except CompilerError as e:
                failures += 1
                assert "\n" not in str(e)
    assert failures > 0

"""Bad model files and bad graphs: each gives one clear CompilerError naming the problem (HARDENING.md A-C)."""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

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


def test_type_clash_names_node_and_types():
    nodes = [helper.make_node("Add", ["x", "i"], ["y"], name="mixed")]
    with pytest.raises(ModelValidationError) as e:
        import_model(model(nodes, [vi("x"), vi("i", (2, 3), TensorProto.INT64)], [vi("y")]))
    msg = one_line(e)
    assert "'mixed'" in msg and "f32" in msg and "i64" in msg


def test_broadcast_clash():
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="bad_bcast")]
    with pytest.raises(ModelValidationError, match="'bad_bcast'"):
        import_model(model(nodes, [vi("x", (2, 3)), vi("z", (4, 3))], [vi("y", None)]))


def test_negative_dim_in_initializer():
    t = onnx.TensorProto(name="w", data_type=F, dims=[-1, 4])
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(ModelValidationError, match="initializer 'w' has a negative dim"):
        import_model(m)


def test_negative_dim_in_input_type():
    m = relu_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -3
    with pytest.raises(ModelValidationError, match="negative dim -3"):
        import_model(m)


def test_raw_data_too_short_allocates_nothing():
    """A declared FLOAT[1e6] with 4 bytes of raw_data fails before anything of the declared size exists."""
    t = onnx.TensorProto(name="w", data_type=F, dims=[10**6], raw_data=b"\0\0\0\0")
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    tracemalloc.start()
    try:
        with pytest.raises(ModelValidationError) as e:
            import_model(m)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "4000000 bytes" in one_line(e) and "it has 4" in str(e.value)
    assert peak < 1_000_000, f"peak {peak} bytes"


def test_raw_data_not_a_multiple_of_itemsize():
    t = onnx.TensorProto(name="w", data_type=F, dims=[4, 4], raw_data=bytes(63))
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(ModelValidationError, match="64 bytes"):
        import_model(m)


def test_raw_data_and_float_data_both_set():
    t = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    t.float_data.extend([0.0] * 16)
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(ModelValidationError, match="both raw_data and float_data"):
        import_model(m)


def test_typed_data_count_mismatch():
    t = onnx.TensorProto(name="w", data_type=F, dims=[4, 4], float_data=[1.0] * 15)
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(ModelValidationError, match="needs 16 values, it holds 15"):
        import_model(m)


def test_typed_data_in_the_wrong_field():
    t = onnx.TensorProto(name="w", data_type=F, dims=[2], int64_data=[1, 2])
    with pytest.raises(ModelValidationError, match="int64_data"):
        import_model(model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", (2,))], [vi("y", (2,))], [t]))


def test_int8_value_out_of_range_in_int32_data():
    t = onnx.TensorProto(name="w", data_type=TensorProto.INT8, dims=[2], int32_data=[1, 300])
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    with pytest.raises(ModelValidationError, match=r"outside \[-128, 127\]"):
        import_model(model(nodes, [vi("x", (2,), TensorProto.INT8)], [vi("y", (2,), TensorProto.INT8)], [t]))


def test_dims_overflowing_int64():
    t = onnx.TensorProto(name="w", data_type=F, dims=[2**40, 2**40], raw_data=b"")
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(ModelValidationError, match="int64"):
        import_model(m)


def test_tensor_over_the_size_limit():
    with pytest.raises(ResourceLimitError, match="initializer 'w'.*limit"):
        import_model(weighted_model(), limits=Limits(max_tensor_bytes=32))


@pytest.mark.parametrize("elem, name", [(TensorProto.STRING, "STRING"), (TensorProto.COMPLEX64, "COMPLEX64"),
                                        (TensorProto.FLOAT8E4M3FN, "FLOAT8E4M3FN"), (TensorProto.FLOAT4E2M1, "FLOAT4E2M1")])
def test_unsupported_dtype_of_initializer(elem, name):
    t = onnx.TensorProto(name="w", data_type=elem, dims=[4, 4])
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(UnsupportedError) as e:
        import_model(m)
    assert "'w'" in one_line(e) and name in str(e.value)


@pytest.mark.parametrize("elem, name", [(TensorProto.STRING, "STRING"), (TensorProto.COMPLEX128, "COMPLEX128"),
                                        (TensorProto.FLOAT8E5M2, "FLOAT8E5M2")])
def test_unsupported_dtype_of_input(elem, name):
    with pytest.raises(UnsupportedError) as e:
        import_model(model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", (2,), elem)], [vi("y", (2,), elem)]))
    assert "'x'" in one_line(e) and name in str(e.value)


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

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


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelFormatError) as e:
        load_model(p)
    assert "empty.onnx" in one_line(e) and "empty" in str(e.value)


def test_empty_bytes():
    with pytest.raises(ModelFormatError, match="empty"):
        load_model_bytes(b"")


@pytest.mark.parametrize("data, hint", [
    (np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes(), None),
    (b"\x89PNG\r\n\x1a\n" + bytes(56), "PNG"),
    (b"\x7fELF\x02\x01\x01" + bytes(57), "ELF"),
    (b"PK\x03\x04" + bytes(60), "zip"),
    (b"Hello, this is a text file, not a model.\n", "text"),
], ids=["random", "png", "elf", "zip", "text"])
def test_not_onnx(tmp_path, data, hint):
    p = tmp_path / "bad.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError) as e:
        load_model(p)
    msg = one_line(e)
    assert "bad.onnx" in msg and "not" in msg and "ONNX" in msg
    if hint:
        assert hint in msg


def test_textproto_instead_of_binary(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_text(str(relu_model()))  # the protobuf text format
    with pytest.raises(ModelFormatError, match="text"):
        load_model(p)


@pytest.mark.parametrize("make", [relu_model, weighted_model], ids=["relu", "with_initializer"])
def test_every_prefix_of_a_valid_model(make):
    data = make().SerializeToString()
    assert isinstance(load_model_bytes(data).outputs[0].type.shape, tuple)  # the whole model imports
    for n in range(len(data)):
        with pytest.raises((ModelFormatError, ModelValidationError)) as e:
            load_model_bytes(data[:n], source=f"prefix{n}")
        assert f"prefix{n}" in one_line(e)


def test_model_over_the_size_limit(tmp_path):
    p = tmp_path / "big.onnx"
    p.write_bytes(weighted_model().SerializeToString())
    with pytest.raises(ResourceLimitError, match="external data"):
        load_model(p, limits=Limits(max_model_bytes=64))


def test_missing_ir_version():
    m = relu_model()
    m.ClearField("ir_version")
    with pytest.raises(ModelFormatError, match="ir_version"):
        import_model(m)


def test_ir_version_newer_than_onnx():
    m = relu_model()
    m.ir_version = onnx.IR_VERSION + 1
    with pytest.raises(UnsupportedError, match=f"IR version {onnx.IR_VERSION + 1}"):
        import_model(m)


@pytest.mark.parametrize("ir", range(3, onnx.IR_VERSION + 1))
def test_every_ir_version_up_to_onnx(ir):
    m = relu_model()
    m.ir_version = ir
    assert [v.name for v in import_model(m).outputs] == ["y"]


def test_no_opset_import():
    m = relu_model()
    m.ClearField("opset_import")
    with pytest.raises(ModelFormatError, match="opset_import"):
        import_model(m)


def test_duplicate_opset_domain():
    m = relu_model()
    m.opset_import.add(domain="ai.onnx", version=13)
    with pytest.raises(UnsupportedError, match="'ai.onnx' twice"):
        import_model(m)


def test_opset_999():
    with pytest.raises(UnsupportedError) as e:
        import_model(relu_model(opset=999))
    assert "opset 999" in one_line(e)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@pytest.mark.parametrize("depth", [20, 40, 200])
def test_deeply_nested_subgraphs(depth):
    """If inside If inside If ...: written by hand, since protobuf itself refuses to build the deep ones.

    Each level is three protobuf messages deep, so from about 33 levels on protobuf's depth limit refuses it."""
    graph = helper.make_graph([], "g", [], [vi("c", (1,), TensorProto.BOOL)]).SerializeToString()
    for _ in range(depth):
        attr = _field(1, b"then_branch") + b"\xa0\x01\x05" + _field(6, graph)  # name, type = GRAPH, g
        node = _field(1, b"c") + _field(2, b"c") + _field(4, b"If") + _field(5, attr)
        graph = _field(1, node) + _field(12, vi("c", (1,), TensorProto.BOOL).SerializeToString())
    data = b"\x08\x08" + _field(7, graph) + _field(8, helper.make_opsetid("", 17).SerializeToString())
    with pytest.raises((ModelFormatError, UnsupportedError)) as e:
        load_model_bytes(data, source="deep.onnx")
    assert "deep.onnx" in one_line(e)
    assert e.type is (UnsupportedError if depth == 20 else ModelFormatError)
    assert "If" in str(e.value) if depth == 20 else "depth" in str(e.value).lower()


def test_invalid_utf8_name():
    data = relu_model().SerializeToString().replace(b"relu", b"r\xffl\xfe")
    with pytest.raises(ModelFormatError, match="UTF-8"):
        load_model_bytes(data)


# ---- graph structure --------------------------------------------------------------------------


def test_cycle():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Relu", ["b"], ["y"], name="after")]
    with pytest.raises(ModelValidationError) as e:
        import_model(model(nodes, [vi("x")], [vi("y")]))
    msg = one_line(e)
    assert "cycle" in msg and "'first'" in msg and "'second'" in msg and "'after'" not in msg


def test_self_loop():
    with pytest.raises(ModelValidationError, match="cycle.*'me'"):
        import_model(model([helper.make_node("Add", ["x", "y"], ["y"], name="me")], [vi("x")], [vi("y")]))


def test_input_never_produced():
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]
    with pytest.raises(ModelValidationError) as e:
        import_model(model(nodes, [vi("x")], [vi("y")]))
    assert "'ghost'" in one_line(e) and "'add'" in str(e.value)


def test_output_never_produced():
    m = relu_model()
    m.graph.output.append(vi("nowhere"))
    with pytest.raises(ModelValidationError, match="'nowhere' is never produced"):
        import_model(m)


def test_duplicate_output():
    m = relu_model()
    m.graph.output.append(vi("y"))
    with pytest.raises(ModelValidationError, match="output 'y' is listed twice"):
        import_model(m)


def test_duplicate_initializer():
    m = weighted_model()
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((4, 4), np.float32), "w"))
    with pytest.raises(ModelValidationError, match="initializer 'w' is defined twice"):
        import_model(m)


def test_value_defined_twice():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Relu", ["x"], ["y"], name="b")]
    with pytest.raises(ModelValidationError, match="'y' is defined twice.*'b'"):
        import_model(model(nodes, [vi("x")], [vi("y")]))


def test_node_output_shadows_input():
    nodes = [helper.make_node("Relu", ["x"], ["x"], name="a")]
    with pytest.raises(ModelValidationError, match="'x' is defined twice"):
        import_model(model(nodes, [vi("x")], [vi("x")]))


def test_domain_not_in_opset_import():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")]
    with pytest.raises(ModelValidationError, match="com.example"):
        import_model(model(nodes, [vi("x")], [vi("y")]))


def test_nodes_out_of_order_are_resorted():
    nodes = [helper.make_node("Relu", ["a"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["a"], name="first")]
    with pytest.warns(UserWarning, match="re-sorted"):
        g = import_model(model(nodes, [vi("x")], [vi("y")]))
    assert [n.name for n in g] == ["first", "second"]


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


@pytest.mark.parametrize("op, attrs", [
    ("If", lambda g: {"then_branch": g, "else_branch": g}),
    ("Loop", lambda g: {"body": g}),
])
def test_control_flow_is_unsupported(op, attrs):
    body = helper.make_graph([], "body", [], [vi("x")])
    node = helper.make_node(op, ["c"] if op == "If" else ["", "c"], ["y"], name="cf", **attrs(body))
    with pytest.raises(UnsupportedError) as e:
        import_model(model([node], [vi("c", (), TensorProto.BOOL), vi("x")], [vi("y")]))
    assert op in one_line(e) and "'cf'" in str(e.value)


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

"""Initializers, Constant nodes in every value_* form, sparse tensors, value_info and symbolic dims."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritc.errors import ModelValidationError, UnsupportedError
from tritc.frontend.onnx import INLINE_MAX_ELEMENTS, import_model, load_model
from tritc.ir.interpreter import Interpreter
from tritc.ir.text import parse_graph, print_graph
from tritc.ir.types import DType

from .models import F, model, vi, weighted_model


def producer(g, name):
    return g.value(name).producer


# ---- initializers -----------------------------------------------------------------------------


def test_big_initializer_is_a_weight_small_one_a_constant():
    big = np.arange(16, dtype=np.float32).reshape(4, 4)
    small = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    nodes = [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Mul", ["s", "b"], ["y"])]
    g = import_model(model(nodes, [vi("x", (4, 4))], [vi("y", (4, 4))],
                           [numpy_helper.from_array(big, "w"), numpy_helper.from_array(small, "b")]))
    w, b = producer(g, "w"), producer(g, "b")
    assert w.op == "weight" and w.attrs["ref"] == "w"
    np.testing.assert_array_equal(g.weights["w"], big)
    assert small.size <= INLINE_MAX_ELEMENTS and b.op == "constant"
    np.testing.assert_array_equal(b.attrs["value"], small)
    assert [v.name for v in g.inputs] == ["x"]


def test_imported_model_matches_onnxruntime(tmp_path):
    m = weighted_model()
    m.ir_version = 10  # what this onnxruntime reads
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32) * 10
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = Interpreter(load_model(path)).run({"x": x})["y"]
    np.testing.assert_array_equal(got, expected)


def test_initializer_listed_as_input_is_a_weight():
    """IR 3 required initializers in graph.input; they are weights, not inputs the user feeds."""
    m = weighted_model()
    m.graph.input.append(vi("w", (4, 4)))
    m.ir_version = 3
    g = import_model(m)
    assert [v.name for v in g.inputs] == ["x"] and producer(g, "w").op == "weight"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int8, np.uint8, np.int16,
                                   np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.bool_])
@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_field"])
def test_initializer_of_every_dtype(dtype, raw):
    values = (np.arange(12) % 3 - 1 if dtype is not np.bool_ else np.arange(12) % 2).astype(dtype).reshape(3, 4)
    if raw:
        t = numpy_helper.from_array(values, "w")
    else:
        code = DType.from_numpy(np.dtype(dtype)).onnx_code
        # make_tensor stores f16 / bf16 as their bit patterns in int32_data, bools and small ints as int32s
        t = helper.make_tensor("w", code, [3, 4], values.reshape(-1).astype(np.float64 if code in (10, 16) else dtype).tolist())
        assert not t.raw_data
    m = model([], [], [vi("w", (3, 4), t.data_type)], [t])
    g = import_model(m)
    got = g.weights["w"]
    assert got.dtype == np.dtype(dtype) and got.shape == (3, 4)
    np.testing.assert_array_equal(got, values)


SUB_BYTE = [(TensorProto.INT4, ml_dtypes.int4, -8, 7), (TensorProto.UINT4, ml_dtypes.uint4, 0, 15),
            (TensorProto.INT2, ml_dtypes.int2, -2, 1), (TensorProto.UINT2, ml_dtypes.uint2, 0, 3)]


@pytest.mark.parametrize("code, dtype, lo, hi", SUB_BYTE, ids=["INT4", "UINT4", "INT2", "UINT2"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "int32_data"])
@pytest.mark.parametrize("shape", [(3, 5), (7,), (0, 2)])
def test_sub_byte_initializers_unpack_like_onnx(code, dtype, lo, hi, raw, shape):
    """Packed 4- and 2-bit values (low bits first, an odd count padded) become one value per byte, as onnx's
    to_array gives them (ml_dtypes containers), in raw_data and in int32_data (one packed byte per int32)."""
    values = np.resize(np.arange(lo, hi + 1), shape).astype(dtype)
    t = helper.make_tensor("w", code, shape, values, raw=raw)
    bits = 4 if code in (TensorProto.INT4, TensorProto.UINT4) else 2
    assert bool(t.raw_data) == (raw and values.size > 0) and len(t.int32_data) == (0 if raw else -(-values.size * bits // 8))
    g = import_model(model([], [], [vi("w", shape, code)], [t]))
    got = g.weights["w"] if values.size > 8 else producer(g, "w").attrs["value"]
    expected = numpy_helper.to_array(t)
    assert got.dtype == expected.dtype == np.dtype(dtype) and got.shape == shape
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))  # the same bytes, high bits zero
    np.testing.assert_array_equal(got.astype(np.int64), values.astype(np.int64))


@pytest.mark.parametrize("code, dtype, lo, hi", SUB_BYTE[:3:2], ids=["INT4", "INT2"])
def test_sub_byte_tensor_sizes_are_checked(code, dtype, lo, hi):
    per_byte = 2 if code == TensorProto.INT4 else 4
    bad_raw = onnx.TensorProto(name="w", data_type=code, dims=[9], raw_data=bytes(9 // per_byte))  # one byte short
    with pytest.raises(ModelValidationError, match=f"needs {-(-9 // per_byte)} bytes of raw_data"):
        import_model(model([], [], [vi("w", (9,), code)], [bad_raw]))
    short = onnx.TensorProto(name="w", data_type=code, dims=[9], int32_data=[0] * (9 // per_byte))
    with pytest.raises(ModelValidationError, match=f"needs {-(-9 // per_byte)} values"):
        import_model(model([], [], [vi("w", (9,), code)], [short]))
    wide = onnx.TensorProto(name="w", data_type=code, dims=[2], int32_data=[256])
    with pytest.raises(ModelValidationError, match=r"outside \[0, 255\]"):
        import_model(model([], [], [vi("w", (2,), code)], [wide]))


def test_sub_byte_external_data(tmp_path):
    values = np.resize(np.arange(-8, 8), (5, 7)).astype(ml_dtypes.int4)
    t = helper.make_tensor("w", TensorProto.INT4, values.shape, values, raw=True)
    packed = t.raw_data
    (tmp_path / "w.bin").write_bytes(b"\0" * 3 + packed)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", "3"), ("length", str(len(packed)))):
        t.external_data.add(key=k, value=v)
    onnx.save(model([], [], [vi("w", values.shape, TensorProto.INT4)], [t]), tmp_path / "m.onnx")
    g = load_model(tmp_path / "m.onnx")
    np.testing.assert_array_equal(g.weights["w"].astype(np.int64), values.astype(np.int64))


def test_bool_raw_data_is_normalized():
    t = onnx.TensorProto(name="w", data_type=TensorProto.BOOL, dims=[3, 3], raw_data=bytes([0, 1, 2, 0, 255, 0, 1, 0, 0]))
    g = import_model(model([], [], [vi("w", (3, 3), TensorProto.BOOL)], [t]))
    np.testing.assert_array_equal(g.weights["w"].view(np.uint8), [[0, 1, 1], [0, 1, 0], [1, 0, 0]])


def test_weights_are_not_copied_after_leaving_the_protobuf():
    """raw_data is copied once out of the protobuf; the weight is a view of that copy."""
    m = weighted_model(np.ones((256, 256), np.float32))
    g = import_model(m)
    w = g.weights["w"]
    base = w
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, bytes) and len(base) == w.nbytes


# ---- Constant nodes ---------------------------------------------------------------------------


@pytest.mark.parametrize("attr, value, expected", [
    ("value", numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(4, 5)), np.arange(20, dtype=np.float32).reshape(4, 5)),
    ("value", numpy_helper.from_array(np.array(7, np.int64)), np.array(7, np.int64)),
    ("value_float", 2.5, np.array(2.5, np.float32)),
    ("value_floats", [1.0, 2.0, 3.0], np.array([1, 2, 3], np.float32)),
    ("value_int", -4, np.array(-4, np.int64)),
    ("value_ints", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], np.arange(1, 11, dtype=np.int64)),
    ("sparse_value", helper.make_sparse_tensor(helper.make_tensor("v", F, [2], [5.0, 6.0]),
                                               helper.make_tensor("i", TensorProto.INT64, [2], [1, 4]), [2, 3]),
     np.array([[0, 5, 0], [0, 6, 0]], np.float32)),
], ids=["value", "value_scalar", "value_float", "value_floats", "value_int", "value_ints", "sparse_value"])
def test_constant_forms(attr, value, expected):
    node = helper.make_node("Constant", [], ["c"], name="k", **{attr: value})
    g = import_model(model([node], [], [vi("c", expected.shape, helper.np_dtype_to_tensor_dtype(expected.dtype))]))
    p = producer(g, "c")
    data = p.attrs["value"] if p.op == "constant" else g.weights[p.attrs["ref"]]
    assert data.dtype == expected.dtype
    np.testing.assert_array_equal(data, expected)
    assert g.outputs[0].type.shape == expected.shape


@pytest.mark.parametrize("attr, value", [("value_string", "hi"), ("value_strings", ["a", "b"])])
def test_constant_strings_are_unsupported(attr, value):
    node = helper.make_node("Constant", [], ["c"], name="k", **{attr: value})
    with pytest.raises(UnsupportedError, match="'k'.*strings"):
        import_model(model([node], [], [vi("c", None, TensorProto.STRING)]))


def test_constant_with_two_values():
    node = helper.make_node("Constant", [], ["c"], name="k", value_float=1.0, value_int=2)
    with pytest.raises(ModelValidationError, match="exactly one value attribute"):
        import_model(model([node], [], [vi("c", None)]))


def test_constant_value_of_the_wrong_type():
    node = helper.make_node("Constant", [], ["c"], name="k")
    node.attribute.append(helper.make_attribute("value_float", 3))  # an INT attribute under a float name
    with pytest.raises(ModelValidationError, match="'value_float' has type INT"):
        import_model(model([node], [], [vi("c", None)]))


# ---- sparse initializers ----------------------------------------------------------------------


@pytest.mark.parametrize("indices, shape", [([0, 5, 7], [3]), ([[0, 0], [1, 1], [1, 3]], [3, 2])], ids=["linear", "coords"])
def test_sparse_initializer(indices, shape):
    values = helper.make_tensor("s", F, [3], [1.0, 2.0, 3.0])
    idx = helper.make_tensor("idx", TensorProto.INT64, shape, np.array(indices).reshape(-1).tolist())
    sp = helper.make_sparse_tensor(values, idx, [3, 4])
    g = import_model(model([helper.make_node("Add", ["x", "s"], ["y"])], [vi("x", (3, 4))], [vi("y", (3, 4))], sparse=[sp]))
    np.testing.assert_array_equal(g.weights["s"], [[1, 0, 0, 0], [0, 2, 0, 3], [0, 0, 0, 0]])


@pytest.mark.parametrize("indices, match", [([0, 8], "outside"), ([3, 1], "increasing"), ([-1, 2], "outside")])
def test_bad_sparse_indices(indices, match):
    values = helper.make_tensor("s", F, [2], [1.0, 2.0])
    idx = helper.make_tensor("idx", TensorProto.INT64, [2], indices)
    sp = helper.make_sparse_tensor(values, idx, [2, 4])
    with pytest.raises(ModelValidationError, match=f"sparse initializer 's'.*{match}"):
        import_model(model([helper.make_node("Add", ["x", "s"], ["y"])], [vi("x", (2, 4))], [vi("y", (2, 4))], sparse=[sp]))


# ---- value_info and symbolic dims -------------------------------------------------------------


def test_symbolic_dims_from_dim_param():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    g = import_model(model(nodes, [vi("x", ("batch", "seq", 8))], [vi("y", ("batch", "seq", 8))]))
    assert g.inputs[0].type.shape == ("batch", "seq", 8)
    assert g.outputs[0].type.shape == ("batch", "seq", 8)
    assert "%x: f32[batch,seq,8]" in print_graph(g)


def test_odd_dim_params_round_trip_through_the_text():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    g = import_model(model(nodes, [vi("x", ("batch size", "n/2", 3))], [vi("y", None)]))
    assert g.inputs[0].type.shape == ("batch size", "n/2", 3)
    text = print_graph(g)
    assert print_graph(parse_graph(text, g.weights)) == text


def test_unknown_dims_and_rank():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["z"], ["w"])]
    g = import_model(model(nodes, [vi("x", (None, 4)), vi("z", None)], [vi("y", None), vi("w", None)]))
    # An unnamed input dim is a symbol of its own (tests/frontend/test_unknown_dims.py); an unknown rank stays unknown.
    assert g.inputs[0].type.shape == ("x.0", 4) and g.inputs[1].type.shape is None
    assert g.outputs[0].type.shape == ("x.0", 4) and g.outputs[1].type.shape is None


def test_value_info_names_a_dim_the_rules_cannot_know():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    # x's rank is unknown, so the rules know nothing of a's shape (an unnamed dim of x would be a symbol, x.0)
    g = import_model(model(nodes, [vi("x", None)], [vi("y", None)], value_info=[vi("a", ("n", 4))]))
    assert g.value("a").type.shape == ("n", 4)


def test_value_info_with_a_different_dtype_is_an_error():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Relu", ["a"], ["y"])]
    with pytest.raises(ModelValidationError, match="'r'.*'a' is f64.*f32"):
        import_model(model(nodes, [vi("x", (2, 3))], [vi("y", None)], value_info=[vi("a", (2, 3), TensorProto.DOUBLE)]))


def test_value_names_survive_helper_values():
    """Names the frontend might pick for its own values ("y.unused0", weight keys) never displace the model's."""
    nodes = [helper.make_node("Relu", ["x"], ["w_"]), helper.make_node("Add", ["w_", "w"], ["y"])]
    m = model(nodes, [vi("x", (4, 4))], [vi("y", (4, 4))], [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")])
    g = import_model(m)
    assert [v.name for v in g.outputs] == ["y"] and g.value("w_").producer.op == "relu"


# ---- odd but valid graphs (HARDENING.md B10, B12) ---------------------------------------------


@pytest.mark.parametrize("name", [".", "123", "_", "ünïcødé", "with\x00nul", "a/b/c", "x" * 5000, " ", "%v", "@g"])
def test_odd_names(name):
    nodes = [helper.make_node("Relu", [name], [name + "'"], name=name)]
    g = import_model(model(nodes, [vi(name)], [vi(name + "'")], name=name))
    assert [v.name for v in g.inputs] == [name] and [v.name for v in g.outputs] == [name + "'"]
    text = print_graph(g)
    assert print_graph(parse_graph(text, g.weights)) == text
    y = Interpreter(g).run({name: np.array([[-1, 2, -3], [4, -5, 6]], np.float32)})[name + "'"]
    np.testing.assert_array_equal(y, [[0, 2, 0], [4, 0, 6]])


def test_empty_graph():
    g = import_model(model([], [], []))
    assert len(g) == 0 and g.inputs == [] and g.outputs == []


def test_outputs_that_are_inputs_and_weights():
    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    g = import_model(model([], [vi("x")], [vi("x"), vi("w", (3, 3))], [w]))
    assert g.outputs[0] is g.inputs[0] and g.outputs[1].producer.op == "weight"
    out = Interpreter(g).run({"x": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(out["w"], np.ones((3, 3)))


def test_dead_nodes_are_kept_for_the_passes():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["dead"])]
    g = import_model(model(nodes, [vi("x")], [vi("y")]))
    assert [n.op for n in g] == ["relu", "neg"] and [v.name for v in g.outputs] == ["y"]

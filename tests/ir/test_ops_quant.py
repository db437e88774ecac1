"""The quant op family: half-to-even ties, saturation, per-axis and blocked scales, static validation
(HARDENING D.22/D.23), exact integer products, symbolic type rules, ONNX version coverage, and
agreement with onnxruntime."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx.defs
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh

from tritc.errors import ModelValidationError
from tritc.frontend.onnx import import_model
from tritc.ir.interpreter import run
from tritc.ir.ops import OPS, TypeRuleError, quant
from tritc.ir.types import DType, TensorType

from .helpers import infer, tt

RNG = np.random.default_rng(1234)


def compute(op: str, *arrays, **attrs):
    opdef = OPS[op]
    return opdef.compute(*arrays, **opdef.with_defaults(attrs))


def single_node_model(op_type: str, inputs: dict[str, np.ndarray], outputs: list[tuple[str, int]], opset: int,
                      initializers: dict[str, np.ndarray] | None = None, order: list[str] | None = None,
                      **attrs) -> onnx.ModelProto:
    """One node fed by graph inputs then initializers (or in the given operand `order`)."""
    init = [onnx.numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()]
    names = order or list(inputs) + list(initializers or {})
    node = oh.make_node(op_type, names, [n for n, _ in outputs], **attrs)
    graph = oh.make_graph([node], "g",
                          [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()],
                          [oh.make_tensor_value_info(n, t, None) for n, t in outputs], init)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=10)


def tritc_and_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list, list]:
    ours = run(import_model(model), feeds)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    return list(ours.values()), theirs


# ---- rounding ties (HARDENING J.50) -------------------------------------------------------------


def half_even(x: float, scale: float, zero: int, lo: int, hi: int) -> int:
    """round(x / scale) + zero, saturated; Python's round() on exact fractions is half to even."""
    return max(lo, min(hi, round(Fraction(x) / Fraction(scale)) + zero))


@pytest.mark.parametrize("float_type", [np.float32, np.float16])
@pytest.mark.parametrize("out_type, zero", [(np.int8, 0), (np.int8, -3), (np.uint8, 128), (np.int16, 7), (np.uint16, 40000)])
@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0, 0.25])
def test_quantize_ties_round_half_to_even(float_type, out_type, zero, scale):
    # x / scale is exactly n + 0.5 for even n, odd n, negative n and zero.
    halves = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 11.5, 12.5, -0.5, -1.5, -2.5, -3.5, -12.5, -13.5])
    x = (halves * scale).astype(float_type)
    assert np.array_equal(x.astype(np.float64) / scale, halves)  # the ties are exact in this dtype
    y = compute("quantize_linear", x, np.array(scale, float_type), np.array(zero, out_type))
    info = np.iinfo(out_type)
    expected = [half_even(float(v), scale, zero, info.min, info.max) for v in x]
    assert y.dtype == out_type
    assert y.tolist() == expected


def test_quantize_ties_match_onnxruntime():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, 300.0, -300.0], np.float32)
    model = single_node_model("QuantizeLinear", {"x": x}, [("y", TensorProto.INT8)], 21,
                              {"s": np.array(1.0, np.float32), "z": np.array(0, np.int8)})
    (ours,), (theirs,) = tritc_and_ort(model, {"x": x})
    assert ours.dtype == np.int8
    np.testing.assert_array_equal(ours, theirs)


def test_quantize_saturates_and_maps_nan_to_minimum():
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 254.6], np.float32)
    y = compute("quantize_linear", x, np.array(1.0, np.float32), np.array(3, np.uint8))
    assert y.tolist() == [0, 255, 0, 255, 0, 255]
    y16 = compute("quantize_linear", x, np.array(1.0, np.float32), output_dtype=DType.I16)
    assert y16.dtype == np.int16 and y16.tolist() == [-32768, 32767, -32768, 32767, -32768, 255]


def test_quantize_default_output_is_uint8():
    y = compute("quantize_linear", np.array([-1.0, 3.0], np.float32), np.array(1.0, np.float32))
    assert y.dtype == np.uint8 and y.tolist() == [0, 3]


def test_quantize_bf16_and_int32_inputs():
    import ml_dtypes

    x = np.array([2.5, 3.5, -7.5], ml_dtypes.bfloat16)
    assert compute("quantize_linear", x, np.array(1.0, ml_dtypes.bfloat16), np.array(0, np.int8)).tolist() == [2, 4, -8]
    xi = np.array([5, 7, -5, 2**30 + 1], np.int32)  # int32 / int32 scale: 2.5, 3.5, -2.5, huge
    assert compute("quantize_linear", xi, np.array(2, np.int32), np.array(0, np.int16)).tolist() == [2, 4, -2, 32767]


# ---- per-axis and blocked -------------------------------------------------------------------------


def test_quantize_per_axis_matches_loop():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32) * 10
    scale = np.array([0.5, 0.25, 2.0], np.float32)
    zero = np.array([1, -2, 3], np.int8)
    y = compute("quantize_linear", x, scale, zero, axis=1)
    for c in range(3):
        expected = [half_even(float(v), float(scale[c]), int(zero[c]), -128, 127) for v in x[:, c].reshape(-1)]
        assert y[:, c].reshape(-1).tolist() == expected


def test_blocked_quantize_and_dequantize_with_a_short_last_block():
    x = RNG.normal(size=(2, 5)).astype(np.float32) * 4
    scale = np.array([[0.5, 0.25], [1.0, 0.125]], np.float32)  # blocks of 3 along axis 1: [0:3], [3:5]
    zero = np.array([[0, 1], [2, 3]], np.uint8)
    y = compute("quantize_linear", x, scale, zero, axis=1, block_size=3)
    back = compute("dequantize_linear", y, scale, zero, axis=1, block_size=3)
    for r in range(2):
        for c in range(5):
            s, z = float(scale[r, c // 3]), int(zero[r, c // 3])
            assert y[r, c] == half_even(float(x[r, c]), s, z, 0, 255)
            assert back[r, c] == np.float32((int(y[r, c]) - z) * s)


def test_dequantize_is_exact_for_int32_and_honours_output_dtype():
    x = np.array([2**31 - 1, -(2**31), 123456789], np.int32)
    y = compute("dequantize_linear", x, np.array(1.0, np.float32), np.array(-5, np.int32))
    assert y.tolist() == [np.float32(2**31 - 1 + 5), np.float32(-(2**31) + 5), np.float32(123456789 + 5)]
    h = compute("dequantize_linear", np.array([200, 10], np.uint8), np.array(0.5, np.float32),
                np.array(10, np.uint8), output_dtype=DType.F16)
    assert h.dtype == np.float16 and h.tolist() == [95.0, 0.0]


# ---- static validation (HARDENING D.23) ------------------------------------------------------------


def test_quantize_type_rule_keeps_symbolic_shape():
    assert infer("quantize_linear", tt("f32", "batch", "seq", 64), tt("f32", 64), tt("i8", 64), axis=2) == \
        [tt("i8", "batch", "seq", 64)]
    assert infer("dequantize_linear", tt("u8", "n", 8), tt("f16")) == [tt("f16", "n", 8)]
    assert infer("quantize_linear", tt("f32", "n", 8), tt("f32"), output_dtype=DType.U16) == [tt("u16", "n", 8)]


@pytest.mark.parametrize("op, inputs, attrs, message", [
    ("quantize_linear", [tt("f32", 4, 3), tt("f32", 4), tt("u8", 4)], {"axis": 1}, "has 4 elements but axis 1"),
    ("quantize_linear", [tt("f32", 4, 6), tt("f32", 4, 3)], {"axis": 1, "block_size": 4}, "into 2 blocks"),
    ("quantize_linear", [tt("f32", 4, 6), tt("f32", 3, 2)], {"axis": 1, "block_size": 3}, "differs from x"),
    ("quantize_linear", [tt("f32", 4, 6), tt("f32", 4, 2)], {"axis": 1}, "unless block_size is set"),
    ("quantize_linear", [tt("f32", 4), tt("f32"), tt("u8", 1, 1)], {}, "zero point"),
    ("quantize_linear", [tt("f32", 4), tt("f32"), tt("u8")], {"output_dtype": DType.I8}, "differs from the zero point"),
    ("quantize_linear", [tt("f32", 4), tt("f32")], {"output_dtype": DType.I32}, "cannot quantize to i32"),
    ("quantize_linear", [tt("f32", 4, 3), tt("f32", 3)], {"axis": 2}, "out of range"),
    ("dequantize_linear", [tt("i8", 4), tt("f32"), tt("u8")], {}, "zero point dtype"),
    ("dequantize_linear", [tt("i8", 2, 8), tt("f32", 2, 3)], {"axis": 1, "block_size": 2}, "into 4 blocks"),
    ("dequantize_linear", [tt("f32", 4), tt("f32")], {}, "x must be one of"),
])
def test_invalid_quantization_parameters_are_type_errors(op, inputs, attrs, message):
    with pytest.raises(TypeRuleError, match=message):
        infer(op, *inputs, **attrs)


@pytest.mark.parametrize("bad", [0.0, -0.5, np.nan, np.inf])
def test_bad_constant_scale_is_a_type_error_and_bad_runtime_scale_a_value_error(bad):
    scale = np.array(bad, np.float32)
    with pytest.raises(TypeRuleError, match="y_scale must be positive and finite"):
        infer("quantize_linear", tt("f32", 4), scale)
    with pytest.raises(ValueError, match="y_scale must be positive and finite"):
        compute("quantize_linear", np.ones(4, np.float32), scale)


def test_frontend_rejects_a_model_with_a_zero_scale():
    x = np.ones(4, np.float32)
    model = single_node_model("QuantizeLinear", {"x": x}, [("y", TensorProto.UINT8)], 21,
                              {"s": np.array(0.0, np.float32), "z": np.array(0, np.uint8)})
    with pytest.raises(ModelValidationError, match="y_scale must be positive"):
        import_model(model)


def test_per_axis_length_mismatch_in_compute_is_a_value_error():
    with pytest.raises(ValueError, match="does not fit axis"):
        compute("dequantize_linear", np.zeros((2, 3), np.int8), np.ones(2, np.float32), axis=1)


# ---- DynamicQuantizeLinear ---------------------------------------------------------------------------


@pytest.mark.parametrize("x", [
    RNG.normal(size=(3, 7)).astype(np.float32) * 5,
    np.abs(RNG.normal(size=(10,))).astype(np.float32) + 1,  # min adjusted to 0
    -np.abs(RNG.normal(size=(10,))).astype(np.float32) - 1,  # max adjusted to 0
    np.array([np.nan, 1, 2, -1], np.float32),  # NaN is left out of the range and quantizes to 0
    np.zeros(5, np.float32),
])
def test_dynamic_quantize_matches_onnxruntime(x):
    model = single_node_model("DynamicQuantizeLinear", {"x": x},
                              [("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8)], 11)
    ours, theirs = tritc_and_ort(model, {"x": x})
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_dynamic_quantize_of_zeros_and_empty():
    for x in (np.zeros(4, np.float32), np.zeros((0, 3), np.float32)):
        y, s, z = compute("dynamic_quantize_linear", x)
        assert y.shape == x.shape and not y.any()
        assert s == np.float32(1) and z == 0  # onnxruntime's choice; the spec's formula would divide by 0


# ---- integer products (HARDENING D.22) ----------------------------------------------------------------


def int32_wrap(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


@pytest.mark.parametrize("k", [1024, 65793, 131071, 131072])
def test_matmul_integer_extremes_are_exact_int32_accumulation(k):
    a = np.full((1, k), 255, np.uint8)
    b = np.full((k, 2), 127, np.int8)
    b[:, 1] = -128
    y = compute("matmul_integer", a, b)
    assert y.dtype == np.int32
    # Python ints are exact; ONNX's accumulator is int32, so the sum wraps modulo 2**32.
    assert y.tolist() == [[int32_wrap(255 * 127 * k), int32_wrap(-255 * 128 * k)]]


def test_matmul_integer_zero_points_per_row_and_column_match_int64_reference():
    a = RNG.integers(-128, 128, size=(2, 5, 6), dtype=np.int8)
    b = RNG.integers(0, 256, size=(6, 3), dtype=np.uint8)
    a_zero = RNG.integers(-128, 128, size=(5,), dtype=np.int8)
    b_zero = RNG.integers(0, 256, size=(3,), dtype=np.uint8)
    y = compute("matmul_integer", a, b, a_zero, b_zero)
    expected = (a.astype(np.int64) - a_zero[:, None]) @ (b.astype(np.int64) - b_zero[None, :])
    np.testing.assert_array_equal(y, expected.astype(np.int32))


def test_matmul_integer_matches_onnxruntime_and_types_symbolically():
    a = RNG.integers(0, 256, size=(4, 32), dtype=np.uint8)
    b = RNG.integers(-128, 128, size=(32, 5), dtype=np.int8)
    model = single_node_model("MatMulInteger", {"a": a, "b": b}, [("y", TensorProto.INT32)], 10,
                              {"za": np.array(7, np.uint8), "zb": np.array(-3, np.int8)})
    (ours,), (theirs,) = tritc_and_ort(model, {"a": a, "b": b})
    np.testing.assert_array_equal(ours, theirs)
    assert infer("matmul_integer", tt("u8", "batch", "seq", 64), tt("i8", 64, 32)) == [tt("i32", "batch", "seq", 32)]
    with pytest.raises(TypeRuleError, match="inner dims differ"):
        infer("matmul_integer", tt("u8", 4, 64), tt("i8", 63, 32))


@pytest.mark.parametrize("a_type, b_type", [(np.uint8, np.uint8), (np.int8, np.int8), (np.uint8, np.int8)])
def test_qlinear_matmul_matches_onnxruntime(a_type, b_type):
    info_a, info_b = np.iinfo(a_type), np.iinfo(b_type)
    a = RNG.integers(info_a.min, info_a.max + 1, size=(2, 3, 16), dtype=a_type)
    b = RNG.integers(info_b.min, info_b.max + 1, size=(16, 4), dtype=b_type)
    inits = {"sa": np.array(0.02, np.float32), "za": np.array(info_a.min + 100, a_type),
             "sb": np.array(0.03, np.float32), "zb": np.array(info_b.min + 120, b_type),
             "sy": np.array(0.5, np.float32), "zy": np.array(info_a.min + 110, a_type)}
    model = single_node_model("QLinearMatMul", {"a": a, "b": b}, [("y", oh.np_dtype_to_tensor_dtype(np.dtype(a_type)))],
                              10, inits, order=["a", "sa", "za", "b", "sb", "zb", "sy", "zy"])
    (ours,), (theirs,) = tritc_and_ort(model, {"a": a, "b": b})
    assert ours.dtype == a_type
    np.testing.assert_array_equal(ours, theirs)


def test_qlinear_matmul_per_column_scale_and_bad_y_scale():
    a = np.array([[10, 20]], np.uint8)
    b = np.array([[1, 2], [3, 4]], np.uint8)
    zero = np.array(0, np.uint8)
    b_scale = np.array([1.0, 0.5], np.float32)
    y = compute("qlinear_matmul", a, np.array(1.0, np.float32), zero, b, b_scale, zero, np.array(2.0, np.float32), zero)
    # [70, 100] * [1.0, 0.5] / 2 = [35, 25]
    assert y.tolist() == [[35, 25]]
    with pytest.raises(ValueError, match="y_scale"):
        compute("qlinear_matmul", a, np.array(1.0, np.float32), zero, b, b_scale, zero, np.array(0.0, np.float32), zero)


# ---- integer convolution --------------------------------------------------------------------------


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: int, group: int) -> np.ndarray:
    """A plain loop 2-D convolution in Python ints."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    oh_, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, m, oh_, ow), np.int64)
    for b in range(n):
        for o in range(m):
            g = o // (m // group)
            for i in range(oh_):
                for j in range(ow):
                    patch = xp[b, g * cg:(g + 1) * cg, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    out[b, o, i, j] = int((patch * w[o].astype(np.int64)).sum())
    return out


@pytest.mark.parametrize("stride, pad, group", [(1, 0, 1), (2, 1, 1), (1, 1, 2)])
def test_conv_integer_matches_loop_reference(stride, pad, group):
    x = RNG.integers(0, 256, size=(2, 4, 6, 5), dtype=np.uint8)
    w = RNG.integers(-128, 128, size=(6, 4 // group, 3, 3), dtype=np.int8)
    x_zero, w_zero = np.array(17, np.uint8), RNG.integers(-5, 5, size=(6,), dtype=np.int8)
    y = compute("conv_integer", x, w, x_zero, w_zero, strides=[stride, stride], pads=[pad] * 4, group=group)
    expected = conv_reference(x.astype(np.int64) - 17, w.astype(np.int64) - w_zero[:, None, None, None], stride, pad, group)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, expected)
    (t,) = infer("conv_integer", tt("u8", 2, 4, 6, 5), tt("i8", 6, 4 // group, 3, 3), strides=[stride, stride],
                 pads=[pad] * 4, group=group)
    assert t == TensorType(DType.I32, y.shape)


def test_conv_type_rules():
    assert infer("conv_integer", tt("u8", "n", 3, "h", "w"), tt("u8", 8, 3, 3, 3), pads=[1, 1, 1, 1]) == \
        [tt("i32", "n", 8, "h", "w")]
    assert infer("conv_integer", tt("u8", "n", 3, "h", 9), tt("u8", 8, 3, 3, 3), auto_pad="SAME_UPPER", strides=[1, 2]) == \
        [tt("i32", "n", 8, "h", 5)]
    with pytest.raises(TypeRuleError, match="weight rank"):
        infer("conv_integer", tt("u8", 1, 3, 8, 8), tt("u8", 8, 3, 3, 3, 3))
    with pytest.raises(TypeRuleError, match="channels"):
        infer("conv_integer", tt("u8", 1, 4, 8, 8), tt("u8", 8, 3, 3, 3))
    with pytest.raises(TypeRuleError, match="exceeds"):
        infer("conv_integer", tt("u8", 1, 3, 2, 2), tt("u8", 8, 3, 3, 3))
    with pytest.raises(TypeRuleError, match="x_zero_point must be a scalar"):
        infer("conv_integer", tt("u8", 1, 3, 8, 8), tt("u8", 8, 3, 3, 3), tt("u8", 3))
    with pytest.raises(TypeRuleError, match="y_scale must be a scalar"):
        infer("qlinear_conv", tt("u8", 1, 3, 8, 8), tt("f32"), tt("u8"), tt("u8", 8, 3, 3, 3), tt("f32", 8), tt("u8", 8),
              tt("f32", 8), tt("u8"))
    with pytest.raises(TypeRuleError, match="output channels"):
        infer("qlinear_conv", tt("u8", 1, 3, 8, 8), tt("f32"), tt("u8"), tt("u8", 8, 3, 3, 3), tt("f32", 4), tt("u8", 4),
              tt("f32"), tt("u8"))


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_integer_and_qlinear_conv_match_onnxruntime(auto_pad):
    x = RNG.integers(0, 256, size=(1, 2, 7, 6), dtype=np.uint8)
    w = RNG.integers(0, 256, size=(3, 2, 3, 2), dtype=np.uint8)
    # onnxruntime refuses dilations with SAME_* padding, so those cases run undilated.
    attrs = {"strides": [2, 1], "dilations": [1, 1] if auto_pad.startswith("SAME") else [1, 2], "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["pads"] = [1, 0, 2, 1]
    model = single_node_model("ConvInteger", {"x": x, "w": w}, [("y", TensorProto.INT32)], 10,
                              {"zx": np.array(100, np.uint8), "zw": np.array(90, np.uint8)}, **attrs)
    (ours,), (theirs,) = tritc_and_ort(model, {"x": x, "w": w})
    np.testing.assert_array_equal(ours, theirs)

    inits = {"sx": np.array(0.05, np.float32), "zx": np.array(100, np.uint8), "w": w,
             "sw": np.array([0.01, 0.02, 0.03], np.float32), "zw": np.array([90, 128, 60], np.uint8),
             "sy": np.array(0.25, np.float32), "zy": np.array(128, np.uint8), "B": np.array([1000, -2000, 5], np.int32)}
    qmodel = single_node_model("QLinearConv", {"x": x}, [("y", TensorProto.UINT8)], 10, inits, **attrs)
    (ours,), (theirs,) = tritc_and_ort(qmodel, {"x": x})
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs)


# ---- ONNX version coverage ----------------------------------------------------------------------


@pytest.mark.parametrize("op_name", ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                                     "ConvInteger", "QLinearMatMul", "QLinearConv"])
def test_every_version_from_opset_10_imports_as_is(op_name):
    opdef = next(o for o in OPS.values() if o.onnx == op_name)
    for opset in range(10, onnx.defs.onnx_opset_version() + 1):
        try:
            since = onnx.defs.get_schema(op_name, opset).since_version
        except onnx.defs.SchemaError:
            continue
        assert since in opdef.since, f"{op_name} version {since} (opset {opset}) is not covered"


def test_helpers_are_exported_for_backends():
    # Backends lower quantization with the same rounding and saturation as the interpreter.
    rounded = np.array([np.nan, 3.0, 300.0, -5.0, np.inf])
    assert quant.saturating_cast(rounded, np.dtype(np.uint8)).tolist() == [0, 3, 255, 0, 255]

"""HARDENING.md group D, weight and parameter values (cases 21-23), under the harness contract (harness.py).

21: NaN, +-Inf, -0.0 and denormals in weights compile, and the outputs match onnxruntime with NaN in the same places.
22: int8 extremes at large K: here only that the frontend accepts the models (the accumulator bound is integer
    safety's, tested with the codegen).
23: QuantizeLinear / DequantizeLinear with a bad scale, zero point, axis or block size: ModelValidationError.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tritc
from tritc.errors import ModelValidationError
from tritc.frontend.onnx import import_model, load_model

from ..frontend.models import model, vi
from .harness import refuses

F = TensorProto.FLOAT
DENORMAL = np.float32(1e-40)  # below float32's smallest normal, 1.18e-38
SPECIALS = {"nan": np.float32("nan"), "inf": np.float32("inf"), "-inf": np.float32("-inf"), "-0.0": np.float32(-0.0),
            "denormal": DENORMAL, "-denormal": -DENORMAL}


# ---- 21: special float values in weights -----------------------------------------------------------------------


def _weight(special: str, shape: tuple[int, ...], ternary: bool) -> np.ndarray:
    """A weight holding the special value in a few places; `ternary`: otherwise trits x 0.5, which fold-ternary would
    fold if it took the special value for a trit."""
    rng = np.random.default_rng(21)
    w = (rng.integers(-1, 2, shape) * 0.5 if ternary else rng.standard_normal(shape)).astype(np.float32)
    flat = w.reshape(-1)
    flat[[0, 5, flat.size - 1]] = SPECIALS[special]
    return w


def _special_model(op: str, special: str) -> onnx.ModelProto:
    if op in ("Add", "Mul"):
        w = _weight(special, (4, 8), ternary=False)
        nodes = [helper.make_node(op, ["x", "w"], ["y"], name=op.lower())]
        return model(nodes, [vi("x", (4, 8))], [vi("y", (4, 8))], [numpy_helper.from_array(w, "w")], ir_version=10)
    w = _weight(special, (16, 8), ternary=op == "MatMul_ternary")
    b = _weight(special, (8,), ternary=False)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "b"], ["y"], name="bias")]
    return model(nodes, [vi("x", (4, 16))], [vi("y", (4, 8))],
                 [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], ir_version=10)


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("op", ["Add", "Mul", "MatMul", "MatMul_ternary"])
def test_21_special_values_in_weights_match_onnxruntime(sb, op, special):
    path = sb.save(_special_model(op, special))
    x = np.random.default_rng(0).standard_normal((4, 16 if op.startswith("MatMul") else 8)).astype(np.float32)
    x.reshape(-1)[1] = -0.0
    x.reshape(-1)[2] = DENORMAL
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = tritc.compile(str(path), threads=1).run(None, {"x": x})[0]
    sb.check()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg="NaN in other places than onnxruntime's")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    if op in ("Add", "Mul"):  # one rounding per element: the same bits, the sign of zero and the denormals included
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    else:  # a sum of 16 products: the order of the additions may differ
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---- 22: int8 extremes at large K (the frontend's part) ----------------------------------------------------------

K_VALUES = [1024, 65793, 131071, 131072]


def _extreme_model(op: str, k: int, value: str) -> onnx.ModelProto:
    i8, u8 = TensorProto.INT8, TensorProto.UINT8
    a_type, a_fill = (u8, 255) if value == "u8_255" else (i8, -128 if value == "s8_min" else 127)
    b = numpy_helper.from_array(np.full((k, 2), -128 if value == "s8_min" else 127, np.int8), "b")
    if op == "MatMulInteger":
        nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="mmi")]
        return model(nodes, [vi("a", (1, k), a_type)], [vi("y", (1, 2), TensorProto.INT32)], [b])
    if op == "ConvInteger":
        w = numpy_helper.from_array(np.full((2, k, 1, 1), -128 if value == "s8_min" else 127, np.int8), "w")
        nodes = [helper.make_node("ConvInteger", ["a", "w"], ["y"], name="convi")]
        return model(nodes, [vi("a", (1, k, 1, 1), a_type)], [vi("y", (1, 2, 1, 1), TensorProto.INT32)], [w])
    scales = [numpy_helper.from_array(np.array(s, np.float32), n) for n, s in (("sa", 0.02), ("sb", 0.01), ("sy", 4.0))]
    zeros = [numpy_helper.from_array(np.array(0, np.uint8 if a_type == u8 else np.int8), "za"),
             numpy_helper.from_array(np.array(0, np.int8), "zb"), numpy_helper.from_array(np.array(0, np.int8), "zy")]
    nodes = [helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], name="qlmm")]
    return model(nodes, [vi("a", (1, k), a_type)], [vi("y", (1, 2), i8)], [b, *scales, *zeros])


@pytest.mark.parametrize("value", ["s8_max", "s8_min", "u8_255"])
@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("op", ["MatMulInteger", "QLinearMatMul", "ConvInteger"])
def test_22_int8_extremes_at_large_k_are_accepted_by_the_frontend(sb, op, k, value):
    """The numeric bound (exact against int64 numpy, or ResourceLimitError past the proven accumulator bound) is
    the integer-safety tests' job; the frontend must take these models and keep the weights' extreme values."""
    path = sb.save(_extreme_model(op, k, value))
    g = load_model(path)
    sb.check()
    weight = next(iter(g.weights.values()))
    assert weight.dtype == np.int8 and weight.size == 2 * k
    assert np.all(weight == (-128 if value == "s8_min" else 127))
    assert [v.type.dtype.ir_name for v in g.outputs] == ["i8" if op == "QLinearMatMul" else "i32"]


# ---- 23: bad quantisation parameters ---------------------------------------------------------------------------


def _quantize(scale: np.ndarray, zero: onnx.TensorProto | None = None, *, shape: tuple[int, ...] = (2, 4),
              op: str = "QuantizeLinear", **attrs: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(scale, "scale")] + ([zero] if zero is not None else [])
    names = ["x", "scale"] + (["zero"] if zero is not None else [])
    x_type = TensorProto.INT8 if op == "DequantizeLinear" else F
    y_type = F if op == "DequantizeLinear" else (zero.data_type if zero is not None else TensorProto.UINT8)
    nodes = [helper.make_node(op, names, ["y"], name="q", **attrs)]
    return model(nodes, [vi("x", shape, x_type)], [vi("y", shape, y_type)], inits, opset=21)


QUANT = ["QuantizeLinear"]  # divides by the scale: a zero, negative or non-finite one is refused when constant
BOTH = ["QuantizeLinear", "DequantizeLinear"]  # (DequantizeLinear multiplies: any scale is a valid number there)


def _zero(code: int, value: int) -> onnx.TensorProto:
    return onnx.TensorProto(name="zero", data_type=code, dims=[], int32_data=[value])


QUANT_CASES = {
    "scale_zero": (QUANT, lambda op: _quantize(np.array(0.0, np.float32), op=op), ["'q'", "y_scale", "0.0"]),
    "scale_negative": (QUANT, lambda op: _quantize(np.array(-0.5, np.float32), op=op), ["'q'", "y_scale", "-0.5"]),
    "scale_nan": (QUANT, lambda op: _quantize(np.array(np.nan, np.float32), op=op), ["'q'", "y_scale", "nan"]),
    "scale_inf": (QUANT, lambda op: _quantize(np.array(np.inf, np.float32), op=op), ["'q'", "y_scale", "inf"]),
    "per_axis_scale_too_short": (BOTH, lambda op: _quantize(np.full(3, 0.5, np.float32), op=op, axis=1),
                                 ["'q'", "3 elements", "axis 1"]),
    "per_axis_scale_too_long": (BOTH, lambda op: _quantize(np.full(5, 0.5, np.float32), op=op, axis=1),
                                ["'q'", "5 elements", "axis 1"]),
    # ONNX lets the last block be short (2 blocks of 3 cover an axis of 4); 3 blocks do not fit it.
    "block_size_against_the_scale": (BOTH, lambda op: _quantize(np.full((2, 3), 0.5, np.float32), op=op, axis=1,
                                                                block_size=3), ["'q'", "block_size 3", "2 blocks"]),
    "zero_point_outside_uint8": (QUANT, lambda op: _quantize(np.array(0.5, np.float32), _zero(TensorProto.UINT8, 300),
                                                             op=op), ["zero", "255"]),
    "zero_point_outside_int8": (BOTH, lambda op: _quantize(np.array(0.5, np.float32), _zero(TensorProto.INT8, -129),
                                                           op=op), ["zero", "-128"]),
}


@pytest.mark.parametrize("case, op", [(c, op) for c, (ops, _, _) in QUANT_CASES.items() for op in ops])
def test_23_bad_quantization_parameters(sb, case, op):
    _, make, names = QUANT_CASES[case]
    m = make(op)
    refuses(sb, lambda: import_model(m), ModelValidationError, names=names)


def test_23_short_last_block_is_valid_onnx(sb):
    """block_size 3 on an axis of 4 with ceil(4/3) = 2 scales per row: valid ONNX, so it imports."""
    g = import_model(_quantize(np.full((2, 2), 0.5, np.float32), axis=1, block_size=3))
    sb.check()
    assert g.outputs[0].type.shape == (2, 4)

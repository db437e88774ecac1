"""The elementwise and reduce op families: type rules (symbolic dims, bad operands), the numpy
semantics where ONNX is subtle (rounding, NaN, integer division, empty reductions), ONNX version
coverage, and the adapters of older op versions checked against onnxruntime."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx
import onnx.defs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tritc.errors import ModelValidationError
from tritc.frontend.adapters import find_adapter
from tritc.frontend.onnx import import_model
from tritc.ir import Graph, run
from tritc.ir.ops import OPS, InferContext, TypeRuleError
from tritc.ir.types import DType, TensorType, tensor_type_of
from tritc.onnx_backend import InterpreterBackend

F32, I64 = DType.F32, DType.I64


def infer(op: str, *types: TensorType | None, consts: dict[int, np.ndarray] | None = None, n_out: int = 1,
          **attrs) -> list[TensorType]:
    opdef = OPS[op]
    c = [None] * len(types)
    for i, a in (consts or {}).items():
        c[i] = a
    return opdef.infer(InferContext(op, list(types), opdef.with_defaults(attrs), c, n_out))


def run_op(op: str, *arrays: np.ndarray | None, n_out: int = 1, consts: tuple[int, ...] = (), **attrs) -> list[np.ndarray]:
    """Run one op in the interpreter (which checks results against the inferred types)."""
    g = Graph()
    values = []
    for i, a in enumerate(arrays):
        if a is None:
            values.append(None)
        elif i in consts:
            values.append(g.add_constant(a, tensor_type_of(a), f"c{i}"))
        else:
            values.append(g.add_input(f"x{i}", tensor_type_of(a)))
    types = infer(op, *(v.type if v is not None else None for v in values),
                  consts={i: arrays[i] for i in consts}, n_out=n_out, **attrs)
    node = g.add(op, values, types, attrs)
    g.outputs = list(node.outputs)
    feeds = {v.name: a for v, a in zip(values, arrays) if v is not None and v.is_graph_input}
    with np.errstate(all="ignore"):
        out = run(g, feeds)
    return [out[v.name] for v in node.outputs]


# ---- type rules ---------------------------------------------------------------------------------


def test_symbolic_broadcasting():
    t = lambda *shape: TensorType(F32, shape)  # noqa: E731
    assert infer("add", t("batch", 1, 4), t(3, 1)) == [t("batch", 3, 4)]
    assert infer("mul", t("past+seq", 8), t("seq+past", 1)) == [t("past+seq", 8)]
    assert infer("sub", t(None, 4), t(5, 1)) == [t(5, 4)]  # an unknown dim against 5 is 5 or an error
    assert infer("sub", t("a", 4), t("b", 4)) == [t(None, 4)]  # a or b may be 1 at run time
    assert infer("max", t(2, 1), t(1, 3), t(4, 1, 1)) == [t(4, 2, 3)]
    assert infer("div", TensorType(F32, None), t(3)) == [TensorType(F32, None)]
    assert infer("where", TensorType(DType.BOOL, ("n", 1)), t(1, 7), t(1)) == [t("n", 7)]
    assert infer("equal", t("batch", 3), t(3)) == [TensorType(DType.BOOL, ("batch", 3))]


def test_invalid_operands_name_both_types():
    with pytest.raises(TypeRuleError, match=r"f32.*i64"):
        infer("add", TensorType(F32, (2,)), TensorType(I64, (2,)))
    with pytest.raises(TypeRuleError, match=r"\[2,3\].*\[4,3\]"):
        infer("mul", TensorType(F32, (2, 3)), TensorType(F32, (4, 3)))
    with pytest.raises(TypeRuleError, match="must be float"):
        infer("sqrt", TensorType(DType.I32, (2,)))
    with pytest.raises(TypeRuleError, match="must be one of bool"):
        infer("and", TensorType(F32, (2,)), TensorType(F32, (2,)))
    with pytest.raises(TypeRuleError, match="condition must be one of bool"):
        infer("where", TensorType(F32, (2,)), TensorType(F32, (2,)), TensorType(F32, (2,)))
    with pytest.raises(TypeRuleError, match="min is f64"):
        infer("clip", TensorType(F32, (2,)), TensorType(DType.F64, ()))
    with pytest.raises(TypeRuleError, match="does not broadcast to X"):
        infer("prelu", TensorType(F32, (2, 3)), TensorType(F32, (2, 1, 3)))
    with pytest.raises(TypeRuleError, match="direction"):
        infer("bit_shift", TensorType(DType.U8, (2,)), TensorType(DType.U8, (2,)), direction="UP")


def test_frontend_reports_bad_operands_with_the_node():
    node = helper.make_node("Add", ["a", "b"], ["c"], name="the_add")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                                        helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 3])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    with pytest.raises(ModelValidationError, match=r"the_add"):
        import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_dtype_rules():
    assert infer("cast", TensorType(F32, ("b",)), to=DType.I8) == [TensorType(DType.I8, ("b",))]
    assert infer("cast_like", TensorType(F32, (2,)), TensorType(DType.F16, (5,))) == [TensorType(DType.F16, (2,))]
    assert infer("pow", TensorType(DType.I32, (2,)), TensorType(F32, ())) == [TensorType(DType.I32, (2,))]
    assert infer("is_nan", TensorType(DType.F16, (3,))) == [TensorType(DType.BOOL, (3,))]


def test_reduce_rule():
    x = TensorType(F32, ("batch", 1, 5))
    axes = TensorType(I64, (2,))
    assert infer("reduce_sum", x, axes, consts={1: np.array([0, -1])}) == [TensorType(F32, (1, 1, 1))]
    assert infer("reduce_max", x, axes, consts={1: np.array([2, 1])}, keepdims=0) == [TensorType(F32, ("batch",))]
    assert infer("reduce_mean", x, keepdims=0) == [TensorType(F32, ())]
    assert infer("reduce_l2", x, noop_with_empty_axes=1) == [x]
    assert infer("reduce_prod", x, TensorType(I64, (0,)), consts={1: np.zeros(0, np.int64)}) == [TensorType(F32, (1, 1, 1))]
    # Axes known only at run time: the rank is known when dims are kept, and 1 stays 1.
    assert infer("reduce_min", x, axes) == [TensorType(F32, (None, 1, None))]
    assert infer("reduce_min", x, axes, keepdims=0) == [TensorType(F32, None)]
    assert infer("reduce_sum", TensorType(F32, None), keepdims=0) == [TensorType(F32, ())]
    with pytest.raises(TypeRuleError, match="out of range"):
        infer("reduce_sum", x, axes, consts={1: np.array([3])})
    with pytest.raises(TypeRuleError, match="repeat"):
        infer("reduce_sum", x, axes, consts={1: np.array([1, -2])})
    with pytest.raises(TypeRuleError, match="must be one of i64"):
        infer("reduce_sum", x, TensorType(F32, (1,)))
    with pytest.raises(TypeRuleError, match="must be numeric"):
        infer("reduce_sum", TensorType(DType.BOOL, (2,)))
    assert infer("reduce_max", TensorType(DType.BOOL, (2,)), keepdims=0) == [TensorType(DType.BOOL, ())]


def test_axis_rules():
    x = TensorType(DType.F16, ("batch", "seq", 8))
    assert infer("arg_max", x, axis=1) == [TensorType(I64, ("batch", 1, 8))]
    assert infer("arg_min", x, axis=-1, keepdims=0) == [TensorType(I64, ("batch", "seq"))]
    k = TensorType(I64, (1,))
    assert infer("top_k", x, k, consts={1: np.array([3])}, n_out=2) == [TensorType(DType.F16, ("batch", "seq", 3)),
                                                                         TensorType(I64, ("batch", "seq", 3))]
    assert infer("top_k", x, k, n_out=2, axis=1)[1] == TensorType(I64, ("batch", None, 8))
    with pytest.raises(TypeRuleError, match="larger than axis"):
        infer("top_k", x, k, consts={1: np.array([9])}, n_out=2)
    with pytest.raises(TypeRuleError, match="out of range"):
        infer("softmax", x, axis=3)
    assert infer("cum_sum", x, TensorType(DType.I32, ())) == [x]


# ---- semantics ------------------------------------------------------------------------------------


FLOATS = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
FLOAT_OPS = ["sqrt", "exp", "log", "sin", "tanh", "erf", "sigmoid", "floor", "round", "reciprocal", "softplus",
             "mish", "gelu", "hard_swish", "softsign", "neg", "abs", "relu"]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", FLOAT_OPS)
def test_float_ops_keep_dtype_and_scalars(op, dtype):
    x = np.array([0.25, 1.5, 3.0], dtype)
    (y,) = run_op(op, x)  # the interpreter itself checks the dtype
    assert y.dtype == np.dtype(dtype) and y.shape == (3,)
    (s,) = run_op(op, np.array(0.5, dtype))
    assert isinstance(s, np.ndarray) and s.shape == () and s.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_round_halves_to_even(dtype):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 3.5000001], dtype)
    (y,) = run_op("round", x)
    np.testing.assert_array_equal(y, np.array([0, 2, 2, -0.0, -2, -2, 2, 4], dtype))


def test_nan_propagates_through_max_min_and_relu():
    a = np.array([1, np.nan, 3, np.nan], np.float32)
    b = np.array([np.nan, 2, 1, np.nan], np.float32)
    for op in ("max", "min"):
        (y,) = run_op(op, a, b)
        assert np.isnan(y).tolist() == [True, True, False, True]
    (y,) = run_op("reduce_max", np.array([[1, np.nan, 2], [0, 5, 1]], np.float32), keepdims=0)
    assert np.isnan(y)
    (y,) = run_op("relu", a)
    assert np.isnan(y[1])
    (y,) = run_op("clip", a, np.array(0, np.float32), np.array(2, np.float32))
    assert np.isnan(y[1]) and y[2] == 2


def test_integer_division_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 2**62 + 1, -(2**63)], np.int64)
    b = np.array([2, 2, -2, -2, 1, -1], np.int64)
    (q,) = run_op("div", a, b)
    np.testing.assert_array_equal(q, [3, -3, -3, 3, 2**62 + 1, -(2**63)])  # exact, and the overflow wraps
    (q,) = run_op("div", np.array([-128, 100], np.int8), np.array([3, -7], np.int8))
    np.testing.assert_array_equal(q, np.array([-42, -14], np.int8))


def test_mod_sign_rules():
    a, b = np.array([7, -7, 7, -7], np.int32), np.array([3, 3, -3, -3], np.int32)
    np.testing.assert_array_equal(run_op("mod", a, b)[0], [1, 2, -2, -1])  # the sign of the divisor
    np.testing.assert_array_equal(run_op("mod", a, b, fmod=1)[0], [1, -1, 1, -1])  # the sign of the dividend
    x = np.array([5.5, -5.5, 0.0, 1.0, -1.0, np.inf], np.float32)
    y = np.array([2.0, 2.0, -3.0, np.inf, np.inf, 2.0], np.float32)
    (m,) = run_op("mod", x, y)
    np.testing.assert_array_equal(m[:5], np.array([1.5, 0.5, -0.0, 1.0, np.inf], np.float32))
    assert np.signbit(m[2]) and np.isnan(m[5])


def test_integer_pow_and_bit_shift():
    (p,) = run_op("pow", np.array([2, -2, 1, -1, 3], np.int32), np.array([10, 3, -1, -3, -2], np.int64))
    np.testing.assert_array_equal(p, np.array([1024, -8, 1, -1, 0], np.int32))
    x = np.array([-8, -8, 8, 1, -1, 64], np.int8)
    s = np.array([1, 9, -1, 7, 100, 1], np.int8)
    np.testing.assert_array_equal(run_op("bit_shift", x, s, direction="RIGHT")[0], [-4, -1, 0, 0, -1, 32])
    np.testing.assert_array_equal(run_op("bit_shift", x, s, direction="LEFT")[0], [-16, 0, 0, -128, 0, -128])


def test_cast_edge_cases():
    x = np.array([0.0, -0.0, np.nan, 0.1, -2.7], np.float32)
    np.testing.assert_array_equal(run_op("cast", x, to=DType.BOOL)[0], [False, False, True, True, True])
    np.testing.assert_array_equal(run_op("cast", x[3:], to=DType.I32)[0], [0, -2])  # truncation
    np.testing.assert_array_equal(run_op("cast", np.array([200, -129], np.int16), to=DType.I8)[0], [-56, 127])
    (h,) = run_op("cast", np.array([70000.0, 1 + 2**-11], np.float32), to=DType.F16)
    assert np.isinf(h[0]) and h[1] == 1.0  # overflow to inf; halfway rounds to even
    (b,) = run_op("cast_like", np.array([1.00390625], np.float32), np.zeros(1, ml_dtypes.bfloat16))
    assert b.dtype == DType.BF16.np_dtype and float(b[0]) == 1.0


def test_clip_with_min_above_max_gives_max():
    (y,) = run_op("clip", np.array([-5, 0, 5], np.int8), np.array(3, np.int8), np.array(1, np.int8))
    np.testing.assert_array_equal(y, [1, 1, 1])
    (y,) = run_op("clip", np.array([-5, 0, 5], np.int8), None, np.array(1, np.int8))
    np.testing.assert_array_equal(y, [-5, 0, 1])


def test_reductions_of_nothing_give_the_identity():
    empty = np.zeros((2, 0), np.float32)
    axes = np.array([1], np.int64)
    expect = {"reduce_sum": 0, "reduce_prod": 1, "reduce_max": -np.inf, "reduce_min": np.inf, "reduce_l1": 0,
              "reduce_l2": 0, "reduce_log_sum": -np.inf, "reduce_log_sum_exp": -np.inf, "reduce_sum_square": 0}
    for op, value in expect.items():
        (y,) = run_op(op, empty, axes, consts=(1,), keepdims=0)
        np.testing.assert_array_equal(y, np.full(2, value, np.float32), err_msg=op)
    (y,) = run_op("reduce_max", np.zeros((0, 3), np.int16), np.array([0], np.int64), consts=(1,))
    np.testing.assert_array_equal(y, np.full((1, 3), -(2**15), np.int16))


def test_noop_with_empty_axes_still_applies_the_elementwise_steps():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    assert np.array_equal(run_op("reduce_sum", x, noop_with_empty_axes=1)[0], x)
    assert np.array_equal(run_op("reduce_sum_square", x, noop_with_empty_axes=1)[0], x * x)
    assert np.array_equal(run_op("reduce_l1", x, np.zeros(0, np.int64), consts=(1,), noop_with_empty_axes=1)[0], abs(x))
    assert run_op("reduce_sum", x, np.zeros(0, np.int64), consts=(1,))[0].shape == (1, 1)


def test_reductions_keep_integer_dtypes_and_widen_half_floats():
    x = np.array([[100, 100], [-7, 2]], np.int8)
    np.testing.assert_array_equal(run_op("reduce_sum", x, keepdims=0)[0], np.int8(-61))  # 195 wraps
    np.testing.assert_array_equal(run_op("reduce_mean", x, np.array([1], np.int64), consts=(1,))[0], [[100], [-2]])
    big = np.full(4096, 1.0, np.float16)  # float16 alone would stall at 2048
    assert run_op("reduce_sum", big, keepdims=0)[0] == 4096
    lse = run_op("reduce_log_sum_exp", np.array([1000.0, 1000.0], np.float32), keepdims=0)[0]
    assert lse == pytest.approx(1000 + math.log(2))


def test_arg_max_first_or_last_index():
    x = np.array([[1, 5, 5, 2], [7, 7, 7, 7]], np.float32)
    np.testing.assert_array_equal(run_op("arg_max", x, axis=1, keepdims=0)[0], [1, 0])
    np.testing.assert_array_equal(run_op("arg_max", x, axis=1, keepdims=0, select_last_index=1)[0], [2, 3])
    np.testing.assert_array_equal(run_op("arg_min", x, axis=0, select_last_index=1)[0], [[0, 0, 0, 0]])


def test_top_k_orders_ties_by_index():
    x = np.array([[3, 1, 3, 2, 1, 3]], np.uint8)
    k = np.array([4], np.int64)
    values, indices = run_op("top_k", x, k, n_out=2, consts=(1,))
    np.testing.assert_array_equal(values, [[3, 3, 3, 2]])
    np.testing.assert_array_equal(indices, [[0, 2, 5, 3]])
    values, indices = run_op("top_k", x, k, n_out=2, consts=(1,), largest=0)
    np.testing.assert_array_equal(indices, [[1, 4, 3, 0]])
    values, _ = run_op("top_k", np.array([0, 255, 128], np.uint8), np.array([1], np.int64), n_out=2, consts=(1,))
    assert values.tolist() == [255]  # no negation tricks that break unsigned types


def test_cumulative_exclusive_and_reverse():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    axis = np.array(1, np.int64)
    np.testing.assert_array_equal(run_op("cum_sum", x, axis, exclusive=1)[0], [[0, 1, 3], [0, 4, 9]])
    np.testing.assert_array_equal(run_op("cum_sum", x, axis, reverse=1)[0], [[6, 5, 3], [15, 11, 6]])
    np.testing.assert_array_equal(run_op("cum_prod", x, np.array([0], np.int32), exclusive=1, reverse=1)[0],
                                  [[4, 5, 6], [1, 1, 1]])


def test_softmax_is_stable_and_coerce_2d_is_the_flattened_form():
    x = np.array([[1000.0, 1000.0], [-np.inf, 0.0]], np.float32)
    np.testing.assert_allclose(run_op("softmax", x)[0], [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(run_op("log_softmax", x)[0], [[-math.log(2)] * 2, [-np.inf, 0.0]])
    y = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    flat = y.reshape(2, 12)
    expected = np.exp(flat) / np.exp(flat).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(run_op("softmax", y, axis=1, coerce_2d=1)[0], expected.reshape(y.shape), rtol=1e-6)
    (h,) = run_op("hardmax", y, axis=1, coerce_2d=1)
    assert h.sum() == 2 and h.reshape(2, 12).argmax(axis=1).tolist() == flat.argmax(axis=1).tolist()


SPECIAL = np.array([1.0, np.nan, -np.inf, np.inf, 0.0, -0.0, 2.5, -2.5, 0.5, -1.5, 100.0, -100.0], np.float32)
UNARY_VS_ORT = ["Relu", "Sign", "Round", "Floor", "Ceil", "Abs", "Neg", "Sigmoid", "Softplus", "Softsign", "Exp", "Log", "Sqrt",
                "Tanh", "Erf", "IsNaN", "IsInf", "Reciprocal", "HardSwish", "Mish", "Selu", "Elu", "Celu", "Gelu", "HardSigmoid",
                "ThresholdedRelu", "Shrink", "LeakyRelu", "Sin", "Atan", "Sinh", "Asinh"]
BINARY_VS_ORT = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less", "GreaterOrEqual"]


@pytest.mark.parametrize("op", UNARY_VS_ORT + BINARY_VS_ORT)
def test_special_values_match_onnxruntime(op):
    """nan, +-inf, -0 and halves through every op, as onnxruntime computes them (opset 20)."""
    inputs = [SPECIAL] if op in UNARY_VS_ORT else [SPECIAL, np.roll(SPECIAL, 3)]
    model = _model(op, inputs, 20)
    feeds = {f"x{i}": a for i, a in enumerate(inputs)}
    with np.errstate(all="ignore"):
        (expected,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        (actual,) = InterpreterBackend.prepare(model).run(inputs)
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7, equal_nan=True)


# ---- ONNX versions and adapters -----------------------------------------------------------------


MY_ONNX_OPS = sorted({op.onnx for op in OPS.values() if op.onnx and op.compute.__module__.endswith((".elementwise", ".reduce"))})


@pytest.mark.parametrize("onnx_type", MY_ONNX_OPS)
def test_every_active_version_is_covered(onnx_type):
    """Each since_version active at some opset in 7..28 imports as-is or through an adapter."""
    versions = sorted(s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == onnx_type and s.domain == "")
    active = {max(v for v in versions if v <= opset) for opset in range(7, 29) if any(v <= opset for v in versions)}
    opdef = next(op for op in OPS.values() if op.onnx == onnx_type)
    missing = [v for v in sorted(active) if v not in opdef.since and find_adapter("", onnx_type, v) is None]
    assert not missing, f"{onnx_type} versions {missing} have neither an IR op nor an adapter"
    assert all(v in versions for v in opdef.since), f"{onnx_type} lists since versions that ONNX does not have"


def _model(op: str, inputs: list[np.ndarray], opset: int, n_out: int = 1, **attrs) -> onnx.ModelProto:
    names = [f"x{i}" for i in range(len(inputs))]
    infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in zip(names, inputs)]
    outs = [onnx.ValueInfoProto(name=f"y{i}") for i in range(n_out)]
    node = helper.make_node(op, names, [o.name for o in outs], **attrs)
    return helper.make_model(helper.make_graph([node], "g", infos, outs), opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


X3 = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
OLD_VERSIONS = [  # (op, opset, attrs): older signatures that go through an adapter
    *[(op, opset, {"axes": [0, -1], "keepdims": 0}) for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2",
                                                              "ReduceLogSumExp", "ReduceSumSquare") for opset in (7, 11)],
    ("ReduceMin", 12, {"axes": [1]}), ("ReduceProd", 13, {}), ("ReduceL1", 13, {"axes": [2]}),
    *[(op, opset, attrs) for op in ("Softmax", "LogSoftmax", "Hardmax") for opset in (7, 11)
      for attrs in ({}, {"axis": 0}, {"axis": 2}, {"axis": -1})],
    ("TopK", 9, {"k": 2, "axis": 1}), ("Clip", 7, {"min": -0.5, "max": 0.25}), ("Clip", 9, {"max": 0.0}),
]


@pytest.mark.parametrize("op,opset,attrs", OLD_VERSIONS, ids=lambda v: str(v))
def test_old_versions_match_onnxruntime(op, opset, attrs):
    model = _model(op, [X3], opset, n_out=2 if op == "TopK" else 1, **attrs)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x0": X3})
    actual = InterpreterBackend.prepare(model).run([X3])
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_old_softmax_is_coerced_only_when_the_axis_is_not_the_last():
    def attrs_of(attrs: dict) -> dict:
        g = import_model(_model("Softmax", [X3], 11, **attrs))
        return next(n for n in g if n.op == "softmax").attrs

    assert attrs_of({"axis": 2}) == {"axis": 2} and attrs_of({"axis": -1}) == {"axis": -1}
    assert attrs_of({}) == {"axis": 1, "coerce_2d": 1}

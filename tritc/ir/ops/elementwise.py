"""Elementwise ops: arithmetic, math functions, comparisons, logic, bitwise ops, selection, casts
and activations. Binary ops broadcast like numpy (ONNX multidirectional broadcasting).

Every function returns an array of exactly the dtype its type rule declares: numpy's own
promotions (and its habit of returning scalars for 0-d operands) are undone by `_as`, which
converts by tritc's cast rules (tritc/ir/casts.py), as `cast` does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..casts import as_dtype, convert
from ..types import DType, TensorType
from . import Float, InferContext, Int, Str, Type, TypeRule, TypeRuleError, defop
from .rules import broadcast_shapes, require_dtype, same_dtype

# ---- helpers --------------------------------------------------------------------------------

_NARROW_FLOATS = (np.dtype(np.float16), DType.BF16.np_dtype)


_as = as_dtype  # `result` as an ndarray of exactly `dtype`


def _wide(x: np.ndarray) -> np.ndarray:
    """16-bit floats are computed in float32 and rounded once at the end (as onnxruntime does)."""
    return x.astype(np.float32) if x.dtype in _NARROW_FLOATS else x


def _float_map(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The elementwise function `fn`, computed in float32 for 16-bit floats, in x's dtype."""

    def compute(x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):  # inf and nan results are part of the semantics
            return _as(fn(_wide(x)), x.dtype)

    return compute


def _check_kind(ctx: InferContext, indices: Sequence[int], kind: str | Sequence[DType] | None) -> None:
    if kind is None:
        return
    for i in indices:
        if ctx.has(i):
            require_dtype(ctx.type(i), kind, f"{ctx.op} operand {i}")


def _map(kind: str | Sequence[DType] | None = "numeric", result: DType | None = None) -> TypeRule:
    """A unary op: the result has the operand's shape and its dtype (or `result`)."""

    def rule(ctx: InferContext) -> list[TensorType]:
        _check_kind(ctx, [0], kind)
        t = ctx.type(0)
        return [TensorType(result or t.dtype, t.shape)]

    return rule


def _broadcast(kind: str | Sequence[DType] | None = "numeric", result: DType | None = None) -> TypeRule:
    """Operands of one dtype broadcast together; the result has that dtype (or `result`)."""

    def rule(ctx: InferContext) -> list[TensorType]:
        idx = [i for i in range(len(ctx.input_types)) if ctx.has(i)]
        if not idx:
            raise TypeRuleError(f"{ctx.op} needs at least one operand")
        _check_kind(ctx, idx, kind)
        dtype = same_dtype(ctx, idx)
        return [TensorType(result or dtype, broadcast_shapes(*(ctx.type(i).shape for i in idx)))]

    return rule


# ---- arithmetic -----------------------------------------------------------------------------


@defop("add", onnx="Add", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=_broadcast())
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _as(np.add(a, b), a.dtype)  # integers wrap around


@defop("sub", onnx="Sub", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=_broadcast())
def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _as(np.subtract(a, b), a.dtype)


@defop("mul", onnx="Mul", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=_broadcast())
def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _as(np.multiply(a, b), a.dtype)


@defop("div", onnx="Div", since=(7, 13, 14), inputs=["A", "B"], outputs=["C"], infer=_broadcast())
def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncates toward zero (as in C), computed exactly in integers."""
    with np.errstate(all="ignore"):  # x / 0 is inf or nan for floats, undefined (here 0) for integers
        if a.dtype.kind in "iu":
            q = np.floor_divide(a, b)
            inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
            return _as(q + inexact.astype(q.dtype), a.dtype)
        return _as(np.divide(a, b), a.dtype)


def _pow_rule(ctx: InferContext) -> list[TensorType]:
    _check_kind(ctx, [0, 1], "numeric")
    a, b = ctx.type(0), ctx.type(1)
    return [TensorType(a.dtype, broadcast_shapes(a.shape, b.shape))]


@defop("pow", onnx="Pow", since=(7, 12, 13, 15), inputs=["X", "Y"], outputs=["Z"], infer=_pow_rule)
def pow_(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x ** y in x's dtype; the exponent may have another dtype. Integer x with a float or negative
    exponent: pow in float64 cast back (truncated and saturated to int64, then wrapped to x's dtype;
    numpy refuses negative integer exponents); otherwise the exact power, wrapped."""
    with np.errstate(all="ignore"):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            negative = y < 0
            exact = np.power(x.astype(np.int64), np.where(negative, 0, y).astype(np.int64))
            via_float = convert(np.power(x.astype(np.float64), y.astype(np.float64)), DType.I64)
            return _as(np.where(negative, via_float, exact), x.dtype)
        if x.dtype.kind in "iu":
            return _as(np.trunc(np.power(x.astype(np.float64), y.astype(np.float64))), x.dtype)
        return _as(np.power(_wide(x), y.astype(_wide(x).dtype)), x.dtype)


@defop("mod", onnx="Mod", since=(10, 13, 28), inputs=["A", "B"], outputs=["C"], attrs={"fmod": Int(0)},
       infer=_broadcast())
def mod(a: np.ndarray, b: np.ndarray, *, fmod: int) -> np.ndarray:
    """fmod=0: a - floor(a / b) * b, the sign of b (Python's %); fmod=1: a - trunc(a / b) * b, the
    sign of a (C's fmod). numpy's mod and fmod have exactly ONNX's special cases for inf, nan, +-0."""
    with np.errstate(all="ignore"):
        return _as(np.fmod(a, b) if fmod else np.mod(a, b), a.dtype)


@defop("neg", onnx="Neg", since=(6, 13), inputs=["X"], infer=_map())
def neg(x: np.ndarray) -> np.ndarray:
    return _as(np.negative(x), x.dtype)


@defop("abs", onnx="Abs", since=(6, 13), inputs=["X"], infer=_map())
def abs_(x: np.ndarray) -> np.ndarray:
    return _as(np.abs(x), x.dtype)  # abs(int8 -128) wraps to -128


@defop("sign", onnx="Sign", since=(9, 13), inputs=["X"], infer=_map())
def sign(x: np.ndarray) -> np.ndarray:
    return _as(np.sign(x), x.dtype)  # sign(nan) is nan


@defop("reciprocal", onnx="Reciprocal", since=(6, 13), inputs=["X"], infer=_map("float"))
def reciprocal(x: np.ndarray) -> np.ndarray:
    return _float_map(lambda v: 1 / v)(x)


def _fold(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], xs: Sequence[np.ndarray]) -> np.ndarray:
    return functools.reduce(fn, xs[1:], xs[0])


@defop("max", onnx="Max", since=(6, 8, 12, 13), inputs=["data*"], outputs=["max"], infer=_broadcast())
def max_(*xs: np.ndarray) -> np.ndarray:
    """The elementwise maximum of all operands; a nan operand gives nan (as onnxruntime)."""
    return _as(_fold(np.maximum, xs), xs[0].dtype)


@defop("min", onnx="Min", since=(6, 8, 12, 13), inputs=["data*"], outputs=["min"], infer=_broadcast())
def min_(*xs: np.ndarray) -> np.ndarray:
    return _as(_fold(np.minimum, xs), xs[0].dtype)


@defop("sum", onnx="Sum", since=(6, 8, 13), inputs=["data*"], outputs=["sum"], infer=_broadcast())
def sum_(*xs: np.ndarray) -> np.ndarray:
    return _as(_fold(np.add, [_wide(x) for x in xs]), xs[0].dtype)


@defop("mean", onnx="Mean", since=(6, 8, 13), inputs=["data*"], outputs=["mean"], infer=_broadcast("float"))
def mean(*xs: np.ndarray) -> np.ndarray:
    return _as(_fold(np.add, [_wide(x) for x in xs]) / len(xs), xs[0].dtype)


# ---- math functions: plain numpy functions of one float tensor --------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])

_FLOAT_FUNCTIONS: dict[str, tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]] = {
    # IR name: (ONNX name, since, function)
    "sqrt": ("Sqrt", (6, 13), np.sqrt),
    "exp": ("Exp", (6, 13), np.exp),
    "log": ("Log", (6, 13), np.log),
    "sin": ("Sin", (7, 22), np.sin),
    "cos": ("Cos", (7, 22), np.cos),
    "tan": ("Tan", (7, 22), np.tan),
    "asin": ("Asin", (7, 22), np.arcsin),
    "acos": ("Acos", (7, 22), np.arccos),
    "atan": ("Atan", (7, 22), np.arctan),
    "sinh": ("Sinh", (9, 22), np.sinh),
    "cosh": ("Cosh", (9, 22), np.cosh),
    "tanh": ("Tanh", (6, 13), np.tanh),
    "asinh": ("Asinh", (9, 22), np.arcsinh),
    "acosh": ("Acosh", (9, 22), np.arccosh),
    "atanh": ("Atanh", (9, 22), np.arctanh),
    "erf": ("Erf", (9, 13), lambda x: _erf(x.astype(np.float64))),
    "sigmoid": ("Sigmoid", (6, 13), lambda x: 1 / (1 + np.exp(-x))),
    "floor": ("Floor", (6, 13), np.floor),
    "ceil": ("Ceil", (6, 13), np.ceil),
    "round": ("Round", (11, 22), np.round),  # halves round to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2
}

for _name, (_onnx, _since, _fn) in _FLOAT_FUNCTIONS.items():
    _compute = _float_map(_fn)
    _compute.__doc__ = f"{_onnx}: elementwise, computed in float32 for 16-bit floats."
    defop(_name, onnx=_onnx, since=_since, inputs=["X"], infer=_map("float"))(_compute)


@defop("is_nan", onnx="IsNaN", since=(9, 13, 20), inputs=["X"], infer=_map("float", DType.BOOL))
def is_nan(x: np.ndarray) -> np.ndarray:
    return _as(np.isnan(_wide(x)), np.bool_)


@defop("is_inf", onnx="IsInf", since=(10, 20), inputs=["X"], attrs={"detect_negative": Int(1), "detect_positive": Int(1)},
       infer=_map("float", DType.BOOL))
def is_inf(x: np.ndarray, *, detect_negative: int, detect_positive: int) -> np.ndarray:
    v = _wide(x)
    return _as((np.isneginf(v) & bool(detect_negative)) | (np.isposinf(v) & bool(detect_positive)), np.bool_)


# ---- comparisons, logic and bitwise ops: one numpy function of two broadcast operands ----------

_BOOL = [DType.BOOL]

_BINARY_FUNCTIONS: dict[str, tuple[str, tuple[int, ...], Callable[..., np.ndarray], str | list[DType] | None, bool]] = {
    # IR name: (ONNX name, since, function, operand kind, result is bool)
    "equal": ("Equal", (7, 11, 13, 19), np.equal, None, True),
    "less": ("Less", (7, 9, 13), np.less, None, True),
    "greater": ("Greater", (7, 9, 13), np.greater, None, True),
    "less_or_equal": ("LessOrEqual", (12, 16), np.less_equal, None, True),
    "greater_or_equal": ("GreaterOrEqual", (12, 16), np.greater_equal, None, True),
    "and": ("And", (7,), np.logical_and, _BOOL, True),
    "or": ("Or", (7,), np.logical_or, _BOOL, True),
    "xor": ("Xor", (7,), np.logical_xor, _BOOL, True),
    "bitwise_and": ("BitwiseAnd", (18,), np.bitwise_and, "int", False),
    "bitwise_or": ("BitwiseOr", (18,), np.bitwise_or, "int", False),
    "bitwise_xor": ("BitwiseXor", (18,), np.bitwise_xor, "int", False),
}


def _binary_function(onnx: str, fn: Callable[..., np.ndarray], to_bool: bool) -> Callable[..., np.ndarray]:
    def compute(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _as(fn(a, b), np.bool_ if to_bool else a.dtype)

    compute.__doc__ = f"{onnx}: numpy's {fn.__name__} of the broadcast operands."
    return compute


for _name, (_onnx, _since, _fn2, _kind, _to_bool) in _BINARY_FUNCTIONS.items():
    defop(_name, onnx=_onnx, since=_since, inputs=["A", "B"], outputs=["C"],
          infer=_broadcast(_kind, DType.BOOL if _to_bool else None))(_binary_function(_onnx, _fn2, _to_bool))


@defop("not", onnx="Not", since=(1,), inputs=["X"], infer=_map(_BOOL))
def not_(x: np.ndarray) -> np.ndarray:
    return _as(np.logical_not(x), np.bool_)


@defop("bitwise_not", onnx="BitwiseNot", since=(18,), inputs=["X"], infer=_map("int"))
def bitwise_not(x: np.ndarray) -> np.ndarray:
    return _as(np.invert(x), x.dtype)


def _bit_shift_rule(ctx: InferContext) -> list[TensorType]:
    if ctx.attrs["direction"] not in ("LEFT", "RIGHT"):
        raise TypeRuleError(f"direction must be LEFT or RIGHT, got {ctx.attrs['direction']!r}")
    return _broadcast("int")(ctx)


@defop("bit_shift", onnx="BitShift", since=(11, 28), inputs=["X", "Y"], outputs=["Z"], attrs={"direction": Str()},
       infer=_bit_shift_rule)
def bit_shift(x: np.ndarray, y: np.ndarray, *, direction: str) -> np.ndarray:
    """Right shifts of signed integers are arithmetic; left shifts drop the bits shifted out. A shift
    by a negative amount or by the bit width or more leaves only the sign fill: -1 for a right shift
    of a negative x, 0 otherwise."""
    x, y = np.broadcast_arrays(x, y)
    bits = x.dtype.itemsize * 8
    out_of_range = (y < 0) | (y >= bits)
    amount = np.where(out_of_range, 0, y).astype(np.uint64)
    unsigned = x.view(np.dtype(f"u{x.dtype.itemsize}"))  # shift the bit pattern, not the value
    if direction == "LEFT":
        shifted = np.left_shift(unsigned, amount.astype(unsigned.dtype)).view(x.dtype)
        return _as(np.where(out_of_range, 0, shifted), x.dtype)
    shifted = np.right_shift(x, amount.astype(x.dtype))  # arithmetic for signed dtypes
    fill = np.where(x < 0, -1, 0).astype(x.dtype)  # in x's dtype: an int64 fill would promote uint64 to float64
    return _as(np.where(out_of_range, fill, shifted), x.dtype)


# ---- selection, casts -------------------------------------------------------------------------


def _where_rule(ctx: InferContext) -> list[TensorType]:
    require_dtype(ctx.type(0), _BOOL, "where condition")
    dtype = same_dtype(ctx, [1, 2])
    return [TensorType(dtype, broadcast_shapes(ctx.type(0).shape, ctx.type(1).shape, ctx.type(2).shape))]


@defop("where", onnx="Where", since=(9, 16), inputs=["condition", "X", "Y"], outputs=["output"], infer=_where_rule)
def where(condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _as(np.where(condition, x, y), x.dtype)


def _cast_rule(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.attrs["to"], ctx.type(0).shape)]


# `saturate` and `round_mode` only change casts to float8 types, which tritc does not have.
_CAST_ATTRS = {"saturate": Int(1), "round_mode": Str("up")}


@defop("cast", onnx="Cast", since=(6, 9, 13, 19, 21, 23, 24, 25, 28), inputs=["input"], outputs=["output"],
       attrs={"to": Type(), **_CAST_ATTRS}, infer=_cast_rule)
def cast(x: np.ndarray, *, to: DType, saturate: int, round_mode: str) -> np.ndarray:
    """tritc's cast rules (docs/OPS.md, Casts): floats round once to nearest even (+-inf out of range),
    integers wrap, floats to integers truncate and saturate (NaN -> 0), zero is False and the rest True."""
    return convert(x, to)


def _cast_like_rule(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.type(1).dtype, ctx.type(0).shape)]


@defop("cast_like", onnx="CastLike", since=(15, 19, 21, 23, 24, 25), inputs=["input", "target_type"], outputs=["output"],
       attrs=_CAST_ATTRS, infer=_cast_like_rule)
def cast_like(x: np.ndarray, target: np.ndarray, *, saturate: int, round_mode: str) -> np.ndarray:
    return convert(x, DType.from_numpy(target.dtype))


def _clip_rule(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    _check_kind(ctx, [0], "numeric")
    for i, what in ((1, "min"), (2, "max")):
        if ctx.has(i):
            b = ctx.type(i)
            if b.dtype != t.dtype:
                raise TypeRuleError(f"clip {what} is {b.dtype}, the input is {t.dtype}")
            if b.is_static and b.numel() != 1:
                raise TypeRuleError(f"clip {what} must be a scalar, got shape {list(b.shape or ())}")
    return [t]


@defop("clip", onnx="Clip", since=(11, 12, 13), inputs=["input", "min?", "max?"], outputs=["output"], infer=_clip_rule)
def clip(x: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> np.ndarray:
    """min(max(x, lo), hi): when lo > hi every value becomes hi. A missing bound is no bound."""
    y = x
    if lo is not None:
        y = np.maximum(y, lo.reshape(()))
    if hi is not None:
        y = np.minimum(y, hi.reshape(()))
    return _as(y, x.dtype)


@defop("identity", onnx="Identity", since=(1, 13, 14, 16, 19, 21, 23, 24, 25), inputs=["input"], outputs=["output"],
       infer=_map(None))
def identity(x: np.ndarray) -> np.ndarray:
    return x


# ---- activations ------------------------------------------------------------------------------


@defop("relu", onnx="Relu", since=(6, 13, 14), inputs=["X"], infer=_map())
def relu(x: np.ndarray) -> np.ndarray:
    return _as(np.maximum(x, np.zeros((), x.dtype)), x.dtype)  # relu(nan) is nan


@defop("leaky_relu", onnx="LeakyRelu", since=(6, 16), inputs=["X"], attrs={"alpha": Float(0.01)}, infer=_map("float"))
def leaky_relu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    return _float_map(lambda v: np.where(v < 0, alpha * v, v))(x)


@defop("elu", onnx="Elu", since=(6, 22), inputs=["X"], attrs={"alpha": Float(1.0)}, infer=_map("float"))
def elu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    return _float_map(lambda v: np.where(v < 0, alpha * np.expm1(v), v))(x)


@defop("selu", onnx="Selu", since=(6, 22), inputs=["X"],
       attrs={"alpha": Float(1.67326319217681884765625), "gamma": Float(1.05070102214813232421875)}, infer=_map("float"))
def selu(x: np.ndarray, *, alpha: float, gamma: float) -> np.ndarray:
    return _float_map(lambda v: gamma * np.where(v > 0, v, alpha * np.expm1(v)))(x)


@defop("celu", onnx="Celu", since=(12, 28), inputs=["X"], attrs={"alpha": Float(1.0)}, infer=_map("float"))
def celu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    return _float_map(lambda v: np.maximum(v, 0) + np.minimum(0, alpha * np.expm1(v / alpha)))(x)


def _gelu_rule(ctx: InferContext) -> list[TensorType]:
    if ctx.attrs["approximate"] not in ("none", "tanh"):
        raise TypeRuleError(f"approximate must be 'none' or 'tanh', got {ctx.attrs['approximate']!r}")
    return _map("float")(ctx)


@defop("gelu", onnx="Gelu", since=(20,), inputs=["X"], attrs={"approximate": Str("none")}, infer=_gelu_rule)
def gelu(x: np.ndarray, *, approximate: str) -> np.ndarray:
    """x * Phi(x), Phi the standard normal CDF; "tanh" uses its tanh approximation."""
    if approximate == "tanh":
        return _float_map(lambda v: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))))(x)
    v = x.astype(np.float64)
    return _as(0.5 * v * (1 + _erf(v / math.sqrt(2))), x.dtype)


@defop("hard_sigmoid", onnx="HardSigmoid", since=(6, 22), inputs=["X"], attrs={"alpha": Float(0.2), "beta": Float(0.5)},
       infer=_map("float"))
def hard_sigmoid(x: np.ndarray, *, alpha: float, beta: float) -> np.ndarray:
    return _float_map(lambda v: np.clip(alpha * v + beta, 0, 1))(x)


@defop("hard_swish", onnx="HardSwish", since=(14, 22), inputs=["X"], infer=_map("float"))
def hard_swish(x: np.ndarray) -> np.ndarray:
    return _float_map(lambda v: v * np.clip(v / 6 + 0.5, 0, 1))(x)


@defop("softplus", onnx="Softplus", since=(1, 22), inputs=["X"], infer=_map("float"))
def softplus(x: np.ndarray) -> np.ndarray:
    return _float_map(lambda v: np.logaddexp(0, v))(x)  # log(1 + exp(x)) without overflow


@defop("softsign", onnx="Softsign", since=(1, 22), inputs=["X"], infer=_map("float"))
def softsign(x: np.ndarray) -> np.ndarray:
    return _float_map(lambda v: v / (1 + np.abs(v)))(x)


@defop("mish", onnx="Mish", since=(18, 22), inputs=["X"], infer=_map("float"))
def mish(x: np.ndarray) -> np.ndarray:
    return _float_map(lambda v: v * np.tanh(np.logaddexp(0, v)))(x)


def _prelu_rule(ctx: InferContext) -> list[TensorType]:
    """The slope broadcasts to X in one direction: X's shape is the result's."""
    _check_kind(ctx, [0], "numeric")
    x, slope = ctx.type(0), ctx.type(1)
    same_dtype(ctx, [0, 1])
    out = broadcast_shapes(x.shape, slope.shape)
    if x.shape is not None and out is not None and (len(out) != len(x.shape) or any(
            isinstance(o, int) and isinstance(d, int) and o != d for o, d in zip(out, x.shape))):
        raise TypeRuleError(f"slope {slope} does not broadcast to X {x}")
    return [x]


@defop("prelu", onnx="PRelu", since=(7, 9, 16), inputs=["X", "slope"], infer=_prelu_rule)
def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return _as(np.where(x < 0, x * slope, x), x.dtype)


@defop("thresholded_relu", onnx="ThresholdedRelu", since=(10, 22), inputs=["X"], attrs={"alpha": Float(1.0)},
       infer=_map("float"))
def thresholded_relu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    return _float_map(lambda v: np.where(v > alpha, v, 0))(x)


@defop("shrink", onnx="Shrink", since=(9,), inputs=["input"], outputs=["output"],
       attrs={"bias": Float(0.0), "lambd": Float(0.5)}, infer=_map())
def shrink(x: np.ndarray, *, bias: float, lambd: float) -> np.ndarray:
    v = _wide(x)
    return _as(np.where(v < -lambd, v + bias, np.where(v > lambd, v - bias, 0)), x.dtype)


@defop("swish", onnx="Swish", since=(24,), inputs=["X"], attrs={"alpha": Float(1.0)}, infer=_map("float"))
def swish(x: np.ndarray, *, alpha: float) -> np.ndarray:
    return _float_map(lambda v: v / (1 + np.exp(-alpha * v)))(x)

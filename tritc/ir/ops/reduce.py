"""Reductions along axes: the Reduce* family, arg_max/arg_min, cumulative sums and products,
softmax/log_softmax/hardmax along one axis, and top_k.

Reduce ops take their axes as an optional int64 input (ONNX's newest form); when it is
missing or empty they reduce every axis, or none with noop_with_empty_axes=1. A reduction over
an empty set of values gives the op's identity (0 for sums, 1 for products, -inf for log sums,
the lowest/highest value for max/min). 16-bit floats accumulate in float32. A nan propagates
through max/min reductions and counts as the largest value in arg_max/hardmax/top_k (as in ONNX's
reference; onnxruntime's answer depends on where in the row the nan is).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..casts import as_dtype
from ..types import Dim, DType, TensorType
from . import InferContext, Int, TypeRuleError, defop
from .rules import const_ints, norm_axes, norm_axis, require_dtype

_NARROW_FLOATS = (np.dtype(np.float16), DType.BF16.np_dtype)


_as = as_dtype  # `result` as an ndarray of exactly `dtype` (numpy returns scalars and promotes)


def _wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype in _NARROW_FLOATS else x


def _single_int(ctx: InferContext, i: int, what: str) -> int | None:
    """A constant operand holding one integer (shape [] or [1]), or None when not constant."""
    values = const_ints(ctx, i)
    if values is None:
        return None
    if len(values) != 1:
        raise TypeRuleError(f"{ctx.op} {what} must hold one value, got {values}")
    return values[0]


# ---- Reduce* ----------------------------------------------------------------------------------


def _reduce_rule(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if not (t.dtype is DType.BOOL and ctx.op in ("reduce_max", "reduce_min")):  # False < True
        require_dtype(t, "numeric", f"{ctx.op} input")
    keepdims, noop = ctx.attrs["keepdims"], ctx.attrs["noop_with_empty_axes"]
    axes: list[int] | None = []
    if ctx.has(1):
        a = ctx.type(1)
        require_dtype(a, [DType.I64], f"{ctx.op} axes")
        if a.rank not in (None, 1):
            raise TypeRuleError(f"{ctx.op} axes must be 1-D, got {a}")
        axes = const_ints(ctx, 1)
    if axes is None:  # known at run time only: so is the rank, unless dims are kept
        if keepdims and t.shape is not None:
            return [TensorType(t.dtype, tuple(1 if d == 1 else None for d in t.shape))]
        return [TensorType(t.dtype, None)]
    if not axes and noop:
        return [t]
    if t.shape is None:
        return [TensorType(t.dtype, () if not axes and not keepdims else None)]
    reduced = set(norm_axes(axes, len(t.shape))) if axes else set(range(len(t.shape)))
    shape: list[Dim] = []
    for i, d in enumerate(t.shape):
        if i not in reduced:
            shape.append(d)
        elif keepdims:
            shape.append(1)
    return [TensorType(t.dtype, tuple(shape))]


def _reduce_axes(x: np.ndarray, axes: np.ndarray | None, noop: int) -> tuple[int, ...]:
    if axes is None or axes.size == 0:
        return () if noop else tuple(range(x.ndim))
    return tuple(int(a) + x.ndim if a < 0 else int(a) for a in axes.reshape(-1))


def _lowest(dtype: np.dtype) -> object:
    if dtype == np.bool_:
        return False
    return -np.inf if dtype.kind != "i" and dtype.kind != "u" else np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> object:
    if dtype == np.bool_:
        return True
    return np.inf if dtype.kind != "i" and dtype.kind != "u" else np.iinfo(dtype).max


def _log_sum_exp(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """log(sum(exp(x))) shifted by the largest finite value so that exp does not overflow."""
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


def _mean(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    count = math.prod(x.shape[i] for i in axis)
    return np.sum(_to_float(x), axis=axis, keepdims=keepdims) / count  # 0 / 0 (nan) for no values


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.dtype.kind in "iu" else x


# name: (ONNX name, since, function of (x widened, axes, keepdims)); adapters cover older versions.
_REDUCTIONS: dict[str, tuple[str, tuple[int, ...], Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]]] = {
    "reduce_sum": ("ReduceSum", (13,), lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=x.dtype)),
    "reduce_mean": ("ReduceMean", (18,), _mean),
    "reduce_max": ("ReduceMax", (18, 20), lambda x, a, k: np.max(x, axis=a, keepdims=k, initial=_lowest(x.dtype))),
    "reduce_min": ("ReduceMin", (18, 20), lambda x, a, k: np.min(x, axis=a, keepdims=k, initial=_highest(x.dtype))),
    "reduce_prod": ("ReduceProd", (18,), lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=x.dtype)),
    "reduce_l1": ("ReduceL1", (18,), lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k, dtype=x.dtype)),
    "reduce_l2": ("ReduceL2", (18,), lambda x, a, k: np.sqrt(_to_float(np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype)))),
    "reduce_log_sum": ("ReduceLogSum", (18, 28), lambda x, a, k: np.log(_to_float(np.sum(x, axis=a, keepdims=k, dtype=x.dtype)))),
    "reduce_log_sum_exp": ("ReduceLogSumExp", (18, 28), lambda x, a, k: _log_sum_exp(_to_float(x), a, k)),
    "reduce_sum_square": ("ReduceSumSquare", (18,), lambda x, a, k: np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype)),
}


def _reduction(onnx: str, fn: Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]) -> Callable[..., np.ndarray]:
    def compute(data: np.ndarray, axes: np.ndarray | None = None, *, keepdims: int, noop_with_empty_axes: int) -> np.ndarray:
        axis = _reduce_axes(data, axes, noop_with_empty_axes)
        with np.errstate(all="ignore"):  # log(0), sqrt overflow and mean of nothing are defined results
            return _as(fn(_wide(data), axis, bool(keepdims)), data.dtype)

    compute.__doc__ = f"{onnx} over `axes` (all when missing or empty, none with noop_with_empty_axes=1)."
    return compute


for _name, (_onnx, _since, _fn) in _REDUCTIONS.items():
    defop(_name, onnx=_onnx, since=_since, inputs=["data", "axes?"], outputs=["reduced"],
          attrs={"keepdims": Int(1), "noop_with_empty_axes": Int(0)}, infer=_reduce_rule)(_reduction(_onnx, _fn))


# ---- arg_max / arg_min ------------------------------------------------------------------------


def _arg_rule(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(DType.I64, None)]
    axis = norm_axis(ctx.attrs["axis"], len(t.shape))
    keep = ctx.attrs["keepdims"]
    shape = [1 if i == axis else d for i, d in enumerate(t.shape) if keep or i != axis]
    return [TensorType(DType.I64, tuple(shape))]


def _arg(fn: Callable[..., np.ndarray], x: np.ndarray, axis: int, keepdims: int, select_last_index: int) -> np.ndarray:
    x = _wide(x)
    axis = axis + x.ndim if axis < 0 else axis
    if select_last_index:  # the first match in the reversed axis is the last one
        index = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
    else:
        index = fn(x, axis=axis)
    return _as(np.expand_dims(index, axis) if keepdims else index, np.int64)


_ARG_ATTRS = {"axis": Int(0), "keepdims": Int(1), "select_last_index": Int(0)}


@defop("arg_max", onnx="ArgMax", since=(1, 11, 12, 13), inputs=["data"], outputs=["reduced"], attrs=_ARG_ATTRS,
       infer=_arg_rule)
def arg_max(data: np.ndarray, *, axis: int, keepdims: int, select_last_index: int) -> np.ndarray:
    """The index of the first (or last) largest value along `axis`, as int64; nan counts as largest."""
    return _arg(np.argmax, data, axis, keepdims, select_last_index)


@defop("arg_min", onnx="ArgMin", since=(1, 11, 12, 13), inputs=["data"], outputs=["reduced"], attrs=_ARG_ATTRS,
       infer=_arg_rule)
def arg_min(data: np.ndarray, *, axis: int, keepdims: int, select_last_index: int) -> np.ndarray:
    return _arg(np.argmin, data, axis, keepdims, select_last_index)


# ---- cumulative sum and product ----------------------------------------------------------------


def _cumulative_rule(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    require_dtype(ctx.type(1), [DType.I32, DType.I64], f"{ctx.op} axis")
    axis = _single_int(ctx, 1, "axis")
    if axis is not None and t.shape is not None:
        norm_axis(axis, len(t.shape))
    return [t]


def _cumulative(fn: Callable[..., np.ndarray], identity: int, x: np.ndarray, axis: np.ndarray, exclusive: int,
                reverse: int) -> np.ndarray:
    ax = int(axis.reshape(-1)[0])
    ax = ax + x.ndim if ax < 0 else ax
    y = np.flip(_wide(x), ax) if reverse else _wide(x)
    out = fn(y, axis=ax, dtype=y.dtype)
    if exclusive and out.shape[ax]:  # shift by one along the axis: element i covers elements before i only
        head = np.full_like(np.take(out, [0], axis=ax), identity)
        out = np.concatenate([head, np.take(out, np.arange(out.shape[ax] - 1), axis=ax)], axis=ax)
    return _as(np.flip(out, ax) if reverse else out, x.dtype)


_CUMULATIVE_ATTRS = {"exclusive": Int(0), "reverse": Int(0)}


@defop("cum_sum", onnx="CumSum", since=(11, 14), inputs=["x", "axis"], outputs=["y"], attrs=_CUMULATIVE_ATTRS,
       infer=_cumulative_rule)
def cum_sum(x: np.ndarray, axis: np.ndarray, *, exclusive: int, reverse: int) -> np.ndarray:
    return _cumulative(np.cumsum, 0, x, axis, exclusive, reverse)


@defop("cum_prod", onnx="CumProd", since=(26,), inputs=["x", "axis"], outputs=["y"], attrs=_CUMULATIVE_ATTRS,
       infer=_cumulative_rule)
def cum_prod(x: np.ndarray, axis: np.ndarray, *, exclusive: int, reverse: int) -> np.ndarray:
    return _cumulative(np.cumprod, 1, x, axis, exclusive, reverse)


# ---- softmax, log_softmax, hardmax --------------------------------------------------------------
# One axis (ONNX opset 13). Versions 1 and 11 view the input as 2-D, [prod(d[:axis]), prod(d[axis:])];
# their adapters set coerce_2d=1 for that, unless `axis` is the last axis, where both agree.


def _along_axis_rule(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    require_dtype(t, "float", f"{ctx.op} input")
    if t.shape is not None:
        norm_axis(ctx.attrs["axis"], len(t.shape))
    return [t]


def _along_axis(fn: Callable[[np.ndarray, int], np.ndarray], x: np.ndarray, axis: int, coerce_2d: int) -> np.ndarray:
    axis = axis + x.ndim if axis < 0 else axis
    wide = _wide(x)
    with np.errstate(all="ignore"):  # rows of -inf give nan, as they do in onnxruntime
        if coerce_2d:
            flat = wide.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
            return _as(fn(flat, 1).reshape(x.shape), x.dtype)
        return _as(fn(wide, axis), x.dtype)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    out = np.zeros_like(x)
    if x.size:
        np.put_along_axis(out, np.argmax(x, axis=axis, keepdims=True), 1, axis=axis)
    return out


_SOFTMAX_ATTRS = {"axis": Int(-1), "coerce_2d": Int(0)}


@defop("softmax", onnx="Softmax", since=(13,), inputs=["input"], outputs=["output"], attrs=_SOFTMAX_ATTRS,
       infer=_along_axis_rule)
def softmax(x: np.ndarray, *, axis: int, coerce_2d: int) -> np.ndarray:
    """exp(x) / sum(exp(x)) along `axis`, computed as exp(x - max) / sum(exp(x - max))."""
    return _along_axis(_softmax, x, axis, coerce_2d)


@defop("log_softmax", onnx="LogSoftmax", since=(13,), inputs=["input"], outputs=["output"], attrs=_SOFTMAX_ATTRS,
       infer=_along_axis_rule)
def log_softmax(x: np.ndarray, *, axis: int, coerce_2d: int) -> np.ndarray:
    """(x - max) - log(sum(exp(x - max))) along `axis`."""
    return _along_axis(_log_softmax, x, axis, coerce_2d)


@defop("hardmax", onnx="Hardmax", since=(13,), inputs=["input"], outputs=["output"], attrs=_SOFTMAX_ATTRS,
       infer=_along_axis_rule)
def hardmax(x: np.ndarray, *, axis: int, coerce_2d: int) -> np.ndarray:
    """1 at the first largest value along `axis`, 0 elsewhere."""
    return _along_axis(_hardmax, x, axis, coerce_2d)


# ---- top_k --------------------------------------------------------------------------------------


def _top_k_rule(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    require_dtype(ctx.type(1), [DType.I64], "top_k K")
    k = _single_int(ctx, 1, "K")
    if k is not None and k < 0:
        raise TypeRuleError(f"top_k K must not be negative, got {k}")
    if t.shape is None:
        return [TensorType(t.dtype, None), TensorType(DType.I64, None)]
    axis = norm_axis(ctx.attrs["axis"], len(t.shape))
    n = t.shape[axis]
    if k is not None and isinstance(n, int) and k > n:
        raise TypeRuleError(f"top_k K = {k} is larger than axis {axis} of {t}")
    shape = tuple(k if i == axis else d for i, d in enumerate(t.shape))
    return [TensorType(t.dtype, shape), TensorType(DType.I64, shape)]


@defop("top_k", onnx="TopK", since=(10, 11, 24), inputs=["X", "K"], outputs=["Values", "Indices"],
       attrs={"axis": Int(-1), "largest": Int(1), "sorted": Int(1)}, infer=_top_k_rule)
def top_k(x: np.ndarray, k: np.ndarray, *, axis: int, largest: int, sorted: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest (or smallest) values along `axis`, in order, with their int64 indices; equal
    values keep their index order. Always sorted (sorted=0 leaves the order unspecified)."""
    count = int(k.reshape(-1)[0])
    axis = axis + x.ndim if axis < 0 else axis
    wide = _wide(x)
    if largest:
        # A stable ascending sort of the reversed axis, read backwards, sorts descending while
        # equal values keep ascending index order (negating would overflow unsigned/min ints).
        n = x.shape[axis]
        order = n - 1 - np.flip(np.argsort(np.flip(wide, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(wide, axis=axis, kind="stable")
    indices = np.take(order, np.arange(count), axis=axis)
    return _as(np.take_along_axis(x, indices, axis), x.dtype), _as(indices, np.int64)

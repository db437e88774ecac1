"""Shape-family ops that index or generate: gather/scatter, one_hot, trilu, eye_like, range,
constant_of_shape, reverse_sequence. Imported by `shape.py`; helpers come from there.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dims
from ..types import Dim, DType, TensorType
from . import InferContext, Int, Str, Tensor, Type, TypeRuleError, defop
from .rules import const_ints, norm_axis, require_dtype, sym_ints, unknown_dims
from .shape import INDEX_TYPES, check_budget, fmt, index_input, shape_from_const, vector_length


def _check_indices(ctx: InferContext, i: int, dim: Dim, what: str) -> None:
    """Constant indices must lie in [-dim, dim) when dim is static."""
    values = const_ints(ctx, i)
    if values is None or not isinstance(dim, int):
        return
    bad = [v for v in values if not -dim <= v < dim]
    if bad:
        raise TypeRuleError(f"{what} {bad[0]} is out of range for a dim of {dim}")


def _merge(a: Dim, b: Dim) -> Dim:
    """Two dims that must be equal: the more precise one, or an error if they differ statically."""
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise TypeRuleError(f"dims {a} and {b} must be equal")
    return a if isinstance(a, int) or b is None else b


# ---- gather ---------------------------------------------------------------------------------------


def _gather_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    it = index_input(ctx, 1, "gather indices", INDEX_TYPES, rank=None)
    if t.shape is None or it.shape is None:
        return [t.with_shape(None)]
    axis = norm_axis(ctx.attrs["axis"], len(t.shape), f"gather axis for {fmt(t)}")
    _check_indices(ctx, 1, t.shape[axis], f"gather index into axis {axis} of {fmt(t)}:")
    return [t.with_shape(t.shape[:axis] + it.shape + t.shape[axis + 1:])]


@defop("gather", onnx="Gather", since=(1, 11, 13), inputs=["data", "indices"], outputs=["output"],
       attrs={"axis": Int(0)}, infer=_gather_type)
def gather(data: np.ndarray, indices: np.ndarray, *, axis: int) -> np.ndarray:
    """Entries of `data` along `axis` picked by `indices` (negative counts from the back); the
    indices' dims replace that axis."""
    axis = axis % data.ndim if data.ndim else axis
    check_budget("gather", data.shape[:axis] + indices.shape + data.shape[axis + 1:])  # few indices, big rows
    return np.asarray(np.take(data, indices.astype(np.int64), axis=axis))  # a 0-d index gives a numpy scalar


def _gather_elements_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    it = index_input(ctx, 1, "gather_elements indices", INDEX_TYPES, rank=t.rank)
    if t.shape is not None:
        axis = norm_axis(ctx.attrs["axis"], len(t.shape), f"gather_elements axis for {fmt(t)}")
        _check_indices(ctx, 1, t.shape[axis], f"gather_elements index into axis {axis} of {fmt(t)}:")
        if it.shape is not None:
            for i, (n, d) in enumerate(zip(it.shape, t.shape)):
                if i != axis and isinstance(n, int) and isinstance(d, int) and n > d:
                    raise TypeRuleError(f"indices {fmt(it)} are longer than data {fmt(t)} on axis {i}")
    return [t.with_shape(it.shape)]


@defop("gather_elements", onnx="GatherElements", since=(11, 13), inputs=["data", "indices"], outputs=["output"],
       attrs={"axis": Int(0)}, infer=_gather_elements_type)
def gather_elements(data: np.ndarray, indices: np.ndarray, *, axis: int) -> np.ndarray:
    """out[i][j][k] = data[indices[i][j][k]][j][k] for axis 0 (and likewise for other axes); the
    output has the indices' shape, which may be smaller than the data's on the other axes."""
    where = list(np.indices(indices.shape, sparse=True))  # np.take_along_axis would broadcast instead
    where[axis % data.ndim] = indices.astype(np.int64)
    return data[tuple(where)]


def _gather_nd_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    it = index_input(ctx, 1, "gather_nd indices", (DType.I64,), rank=None)
    b = ctx.attrs["batch_dims"]
    if t.shape is None or it.shape is None:
        return [t.with_shape(None)]
    r, q = len(t.shape), len(it.shape)
    if not 0 <= b < min(r, q):
        raise TypeRuleError(f"batch_dims {b} must be below the ranks of data {fmt(t)} and indices {fmt(it)}")
    k = it.shape[-1]
    if not isinstance(k, int):
        return [t.with_shape(None)]
    if not 1 <= k <= r - b:
        raise TypeRuleError(f"indices {fmt(it)} address {k} dims, data {fmt(t)} has {r - b} after the batch dims")
    try:
        batch = tuple(_merge(t.shape[i], it.shape[i]) for i in range(b))
    except TypeRuleError as e:
        raise TypeRuleError(f"batch dims of data {fmt(t)} and indices {fmt(it)} differ: {e}") from None
    return [t.with_shape(batch + it.shape[b:-1] + t.shape[b + k:])]


@defop("gather_nd", onnx="GatherND", since=(11, 12, 13), inputs=["data", "indices"], outputs=["output"],
       attrs={"batch_dims": Int(0)}, infer=_gather_nd_type)
def gather_nd(data: np.ndarray, indices: np.ndarray, *, batch_dims: int) -> np.ndarray:
    """Slices of `data` addressed by the last axis of `indices` (k leading coordinates), per batch
    element for the first `batch_dims` axes shared by both."""
    b, k = batch_dims, indices.shape[-1]
    batch_shape, mid_shape, rest_shape = data.shape[:b], indices.shape[b:-1], data.shape[b + k:]
    nb, m = math.prod(batch_shape), math.prod(mid_shape)
    check_budget("gather_nd", batch_shape + mid_shape + rest_shape)
    flat = data.reshape((nb,) + data.shape[b:])
    idx = indices.astype(np.int64).reshape(nb, m, k)
    picked = flat[(np.arange(nb)[:, None],) + tuple(idx[..., j] for j in range(k))]  # [nb, m, *rest]
    return picked.reshape(batch_shape + mid_shape + rest_shape)


# ---- scatter --------------------------------------------------------------------------------------

SCATTER_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _check_reduction(ctx: InferContext) -> None:
    red = ctx.attrs["reduction"]
    if red != "none" and red not in SCATTER_REDUCTIONS:
        raise TypeRuleError(f"reduction '{red}' is not one of none, {', '.join(SCATTER_REDUCTIONS)}")


def _scatter_nd_type(ctx: InferContext) -> list[TensorType]:
    t, ut = ctx.type(0), ctx.type(2)
    it = index_input(ctx, 1, "scatter_nd indices", (DType.I64,), rank=None)
    _check_reduction(ctx)
    if ut.dtype != t.dtype:
        raise TypeRuleError(f"updates {fmt(ut)} must have the dtype of data {fmt(t)}")
    if t.shape is not None and it.shape is not None and ut.shape is not None and isinstance(it.shape[-1], int):
        k = it.shape[-1]
        if k > len(t.shape):
            raise TypeRuleError(f"indices {fmt(it)} address {k} dims of data {fmt(t)}")
        want = it.shape[:-1] + t.shape[k:]
        if len(ut.shape) != len(want) or any(not dims.assume_equal(a, b) for a, b in zip(ut.shape, want)):
            raise TypeRuleError(f"updates {fmt(ut)} must have shape {fmt(want)} for data {fmt(t)} and indices {fmt(it)}")
    return [t]


@defop("scatter_nd", onnx="ScatterND", since=(11, 13, 16, 18), inputs=["data", "indices", "updates"],
       outputs=["output"], attrs={"reduction": Str("none")}, infer=_scatter_nd_type)
def scatter_nd(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, *, reduction: str) -> np.ndarray:
    """A copy of `data` with the slices addressed by `indices` (as in gather_nd) replaced by
    `updates`, or combined with them by add / mul / max / min."""
    out = data.copy()
    where = tuple(indices[..., j] for j in range(indices.shape[-1]))
    if reduction == "none":
        out[where] = updates
    else:
        SCATTER_REDUCTIONS[reduction].at(out, where, updates)
    return out


def _scatter_elements_type(ctx: InferContext) -> list[TensorType]:
    t, ut = ctx.type(0), ctx.type(2)
    it = index_input(ctx, 1, "scatter_elements indices", INDEX_TYPES, rank=t.rank)
    _check_reduction(ctx)
    if ut.dtype != t.dtype:
        raise TypeRuleError(f"updates {fmt(ut)} must have the dtype of data {fmt(t)}")
    if it.shape is not None and ut.shape is not None:
        if len(it.shape) != len(ut.shape) or any(not dims.assume_equal(a, b) for a, b in zip(it.shape, ut.shape)):
            raise TypeRuleError(f"updates {fmt(ut)} must have the shape of indices {fmt(it)}")
    if t.shape is not None:
        axis = norm_axis(ctx.attrs["axis"], len(t.shape), f"scatter_elements axis for {fmt(t)}")
        _check_indices(ctx, 1, t.shape[axis], f"scatter_elements index into axis {axis} of {fmt(t)}:")
    return [t]


@defop("scatter_elements", onnx="ScatterElements", since=(11, 13, 16, 18), inputs=["data", "indices", "updates"],
       outputs=["output"], attrs={"axis": Int(0), "reduction": Str("none")}, infer=_scatter_elements_type)
def scatter_elements(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, *, axis: int,
                     reduction: str) -> np.ndarray:
    """A copy of `data` with out[indices[i][j]][j] = updates[i][j] for axis 0 (likewise for other
    axes), or combined with it by add / mul / max / min."""
    out = data.copy()
    where = list(np.indices(indices.shape, sparse=True))
    where[axis % data.ndim] = indices.astype(np.int64)
    if reduction == "none":
        out[tuple(where)] = updates
    else:
        SCATTER_REDUCTIONS[reduction].at(out, tuple(where), updates)
    return out


# ---- one_hot, trilu, eye_like, reverse_sequence ---------------------------------------------------


def _one_hot_type(ctx: InferContext) -> list[TensorType]:
    it, dt, vt = ctx.type(0), ctx.type(1), ctx.type(2)
    require_dtype(it, "numeric", "one_hot indices")
    require_dtype(dt, "numeric", "one_hot depth")
    if vt.shape is not None and (len(vt.shape) != 1 or vt.shape[0] not in (2, None)):
        raise TypeRuleError(f"one_hot values {fmt(vt)} must be [off_value, on_value]")
    depth_c = ctx.const(1)
    depth: Dim = None
    if depth_c is not None:
        if depth_c.size != 1:
            raise TypeRuleError(f"one_hot depth must hold one value, got shape {list(depth_c.shape)}")
        depth = int(depth_c.reshape(-1)[0])
        if depth < 0:
            raise TypeRuleError(f"one_hot depth {depth} is negative")
    if it.shape is None:
        return [TensorType(vt.dtype, None)]
    rank = len(it.shape) + 1
    axis = norm_axis(ctx.attrs["axis"], rank, f"one_hot axis for indices {fmt(it)}")
    return [TensorType(vt.dtype, it.shape[:axis] + (depth,) + it.shape[axis:])]


@defop("one_hot", onnx="OneHot", since=(11, 28), inputs=["indices", "depth", "values"], outputs=["output"],
       attrs={"axis": Int(-1)}, infer=_one_hot_type)
def one_hot(indices: np.ndarray, depth: np.ndarray, values: np.ndarray, *, axis: int) -> np.ndarray:
    """values[1] where the new `axis` (of size `depth`) equals the index, values[0] elsewhere.
    Indices in [-depth, 0) count from the back; ones outside [-depth, depth) match nothing."""
    n = int(np.asarray(depth).reshape(-1)[0])
    off, on = values.reshape(-1)[0], values.reshape(-1)[1]
    axis = axis + indices.ndim + 1 if axis < 0 else axis
    check_budget("one_hot", indices.shape[:axis] + (n,) + indices.shape[axis:])
    idx = indices.astype(np.int64)
    idx = np.expand_dims(np.where(idx < 0, idx + n, idx), axis)
    classes = np.arange(n).reshape([n if i == axis else 1 for i in range(indices.ndim + 1)])
    return np.where(idx == classes, on, off).astype(values.dtype, copy=False)


def _trilu_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.rank is not None and t.rank < 2:
        raise TypeRuleError(f"trilu needs rank 2 or more, got {fmt(t)}")
    if ctx.has(1):
        index_input(ctx, 1, "trilu k", rank=0)
    return [t]


@defop("trilu", onnx="Trilu", since=(14,), inputs=["input", "k?"], outputs=["output"], attrs={"upper": Int(1)},
       infer=_trilu_type)
def trilu(x: np.ndarray, k: np.ndarray | None = None, *, upper: int) -> np.ndarray:
    """The upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes; the rest 0."""
    diagonal = int(k) if k is not None else 0
    return np.triu(x, diagonal) if upper else np.tril(x, diagonal)


def _eye_like_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.rank is not None and t.rank != 2:
        raise TypeRuleError(f"eye_like needs a rank-2 input, got {fmt(t)}")
    return [TensorType(ctx.attrs["dtype"] or t.dtype, t.shape if t.shape is not None else unknown_dims(2))]


@defop("eye_like", onnx="EyeLike", since=(9, 22), inputs=["input"], outputs=["output"],
       attrs={"dtype": Type(None), "k": Int(0)}, infer=_eye_like_type)
def eye_like(x: np.ndarray, *, dtype: DType | None, k: int) -> np.ndarray:
    """A matrix of the input's shape with ones on diagonal k (out[i, i + k] = 1), zeros elsewhere."""
    return np.eye(x.shape[0], x.shape[1], k, dtype=(dtype.np_dtype if dtype is not None else x.dtype))


def _reverse_sequence_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    lt = index_input(ctx, 1, "sequence_lens")
    b, tm = ctx.attrs["batch_axis"], ctx.attrs["time_axis"]
    if {b, tm} != {0, 1}:
        raise TypeRuleError(f"batch_axis {b} and time_axis {tm} must be 0 and 1")
    if t.shape is not None:
        if len(t.shape) < 2:
            raise TypeRuleError(f"reverse_sequence needs rank 2 or more, got {fmt(t)}")
        if lt.shape is not None and not dims.assume_equal(lt.shape[0], t.shape[b]):
            raise TypeRuleError(f"sequence_lens {fmt(lt)} must have one entry per batch of {fmt(t)} (axis {b})")
    return [t]


@defop("reverse_sequence", onnx="ReverseSequence", since=(10, 28), inputs=["input", "sequence_lens"], outputs=["Y"],
       attrs={"batch_axis": Int(1), "time_axis": Int(0)}, infer=_reverse_sequence_type)
def reverse_sequence(x: np.ndarray, sequence_lens: np.ndarray, *, batch_axis: int, time_axis: int) -> np.ndarray:
    """For each batch entry i, the first sequence_lens[i] steps along `time_axis` reversed."""
    out = x.copy()
    for i, n in enumerate(int(v) for v in sequence_lens.reshape(-1)):
        dst = [slice(None)] * x.ndim
        dst[batch_axis], dst[time_axis] = i, slice(0, n)
        src = list(dst)
        src[time_axis] = slice(n - 1, None, -1) if n > 0 else slice(0, 0)
        out[tuple(dst)] = x[tuple(src)]
    return out


# ---- generators -----------------------------------------------------------------------------------

_RANGE_DTYPES = (DType.F32, DType.F64, DType.F16, DType.BF16, DType.I16, DType.I32, DType.I64)
_STASH = {1: np.float32, 11: np.float64}


def range_length(start: float | int, limit: float | int, delta: float | int) -> int:
    """max(ceil((limit - start) / delta), 0): exact for ints, in double for floats (as numpy's arange)."""
    if delta == 0:
        raise ValueError("range delta is 0")
    if all(isinstance(v, (int, np.integer)) for v in (start, limit, delta)):
        return len(range(int(start), int(limit), int(delta)))
    return max(math.ceil((float(limit) - float(start)) / float(delta)), 0)


def _range_type(ctx: InferContext) -> list[TensorType]:
    ts = [ctx.type(i) for i in range(3)]
    if len({t.dtype for t in ts}) != 1 or ts[0].dtype not in _RANGE_DTYPES:
        raise TypeRuleError(f"range start, limit and delta must share one numeric dtype, got {', '.join(map(fmt, ts))}")
    if any(t.rank not in (0, None) for t in ts):
        raise TypeRuleError(f"range start, limit and delta must be scalars, got {', '.join(map(fmt, ts))}")
    if ctx.attrs["stash_type"] not in _STASH:
        raise TypeRuleError(f"stash_type {ctx.attrs['stash_type']} is not float (1) or double (11)")
    consts = [ctx.const(i) for i in range(3)]
    if any(c is None for c in consts):
        # range(start, n, 1) with n from a shape (arange(seq)) has n - start elements, for n >= start (symbolic start
        # too: range(total - seq, total) has seq); n >= start is an assumption the runtime checks when not provable
        syms = [sym_ints(ctx, i) for i in range(3)]
        if all(v is not None and len(v) == 1 for v in syms) and syms[2] == [1] \
                and isinstance(syms[0][0], (int, str)) and isinstance(syms[1][0], (int, str)):  # type: ignore[index]
            n = dims.sub(syms[1][0], syms[0][0])  # type: ignore[index]
            if n is not None:  # limit - start elements when limit >= start: an assumption checked per call
                dims.assume_nonnegative(n)
                return [TensorType(ts[0].dtype, (n,))]
        return [TensorType(ts[0].dtype, (None,))]
    try:
        n = range_length(*(c.reshape(-1)[0].item() for c in consts))  # type: ignore[union-attr]
    except ValueError as e:
        raise TypeRuleError(str(e)) from None
    return [TensorType(ts[0].dtype, (n,))]


@defop("range", onnx="Range", since=(11, 27), inputs=["start", "limit", "delta"], outputs=["output"],
       attrs={"stash_type": Int(1)}, infer=_range_type)
def range_(start: np.ndarray, limit: np.ndarray, delta: np.ndarray, *, stash_type: int) -> np.ndarray:
    """[start, start + delta, ...] while short of `limit`: max(ceil((limit - start) / delta), 0)
    values. f16 and bf16 are computed in the `stash_type` precision, then rounded."""
    dtype = start.dtype
    s, lim, d = start.item(), limit.item(), delta.item()
    n = range_length(s, lim, d)
    check_budget("range", [n])
    if dtype in (np.float16, DType.BF16.np_dtype):
        wide = _STASH[stash_type]
        return np.arange(start.astype(wide).item(), float(lim), float(d), dtype=wide).astype(dtype)
    return np.arange(s, lim, d).astype(dtype)


def _constant_of_shape_type(ctx: InferContext) -> list[TensorType]:
    st = index_input(ctx, 0, "the shape of constant_of_shape")
    value = ctx.attrs["value"]
    if value is not None and value.size != 1:
        raise TypeRuleError(f"constant_of_shape value must hold one element, it has shape {list(value.shape)}")
    dtype = DType.from_numpy(value.dtype) if value is not None else DType.F32
    target = sym_ints(ctx, 0)
    if target is None:
        return [TensorType(dtype, unknown_dims(vector_length(st)))]
    return [TensorType(dtype, shape_from_const(target, "constant_of_shape shape"))]


@defop("constant_of_shape", onnx="ConstantOfShape", since=(9, 20, 21, 23, 24, 25), inputs=["input"],
       outputs=["output"], attrs={"value": Tensor(None)}, infer=_constant_of_shape_type)
def constant_of_shape(shape: np.ndarray, *, value: np.ndarray | None) -> np.ndarray:
    """A tensor of the given shape filled with the one element of `value` (default f32 0)."""
    dims_ = [int(d) for d in shape.reshape(-1)]
    check_budget("constant_of_shape", dims_)
    if value is None:
        return np.zeros(dims_, dtype=np.float32)
    return np.full(dims_, value.reshape(-1)[0], dtype=value.dtype)

"""Shape-manipulation ops: views and rearrangements of one tensor (reshape, transpose, slice, pad, ...).

Type rules keep symbolic dims exact where they can (``batch``, ``past+seq``) and raise TypeRuleError,
naming the shapes, for what is invalid whatever the run-time sizes. Gather/scatter and tensor
generators (range, constant_of_shape, ...) live in `shape_index.py`, imported at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ResourceLimitError
from .. import dims
from ..types import Dim, DType, Shape, TensorType, format_type
from . import InferContext, Int, Ints, Str, TypeRuleError, defop
from .rules import broadcast_shapes, const_ints, norm_axes, norm_axis, same_dtype, unknown_dims

# Largest output, in elements, an op here may allocate. Expand, Tile, Pad, ConstantOfShape and
# Range make huge tensors out of tiny constant inputs (HARDENING.md C.19); they refuse beyond this.
MAX_ELEMENTS = 2**31

# A constant slice bound at or beyond this means "to the end" (exporters write INT64_MAX or INT32_MAX).
_TO_END = 2**31 - 1

_INDEX_TYPES = (DType.I32, DType.I64)


# ---- helpers shared with shape_index.py ---------------------------------------------------------


def check_budget(op: str, shape: Sequence[int]) -> None:
    """Refuse an output shape with a negative dim or more than MAX_ELEMENTS elements, before allocating."""
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"{op}: output shape {[int(d) for d in shape]} has a negative dim")
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_ELEMENTS:
        raise ResourceLimitError(f"{op}: an output of shape {[int(d) for d in shape]} has {n} elements, "
                                 f"over the limit of {MAX_ELEMENTS}")


def fmt(t: TensorType | Shape | None) -> str:
    """A type or shape as in the IR text, for messages."""
    if isinstance(t, TensorType):
        return format_type(t)
    return format_type(TensorType(DType.F32, t)).removeprefix("f32")


def index_input(ctx: InferContext, i: int, what: str, allowed: Sequence[DType] = (DType.I64,),
                rank: int | None = 1) -> TensorType:
    """Input i, checked to be an integer tensor of one of `allowed` dtypes (and of `rank` if known)."""
    t = ctx.type(i)
    if t.dtype not in allowed:
        raise TypeRuleError(f"{what} must be {' or '.join(map(str, allowed))}, got {fmt(t)}")
    if rank is not None and t.rank is not None and t.rank != rank:
        raise TypeRuleError(f"{what} must have rank {rank}, got {fmt(t)}")
    return t


def vector_length(t: TensorType) -> int | None:
    """The static length of a 1-D tensor (a shape, pads, axes), or None."""
    if t.shape is None or len(t.shape) != 1 or not isinstance(t.shape[0], int):
        return None
    return t.shape[0]


def shape_from_const(values: list[int], what: str) -> tuple[int, ...]:
    if any(v < 0 for v in values):
        raise TypeRuleError(f"{what} {values} has a negative dim")
    return tuple(values)


# ---- shape, size ----------------------------------------------------------------------------------


def _shape_type(ctx: InferContext) -> list[TensorType]:
    rank = ctx.type(0).rank
    if rank is None:
        return [TensorType(DType.I64, (None,))]
    start, end = ctx.attrs["start"], ctx.attrs["end"]
    n = len(range(rank)[slice(start, end)])  # ONNX clamps start/end exactly like a Python slice
    return [TensorType(DType.I64, (n,))]


@defop("shape", onnx="Shape", since=(1, 13, 15, 19, 21, 23, 24, 25), inputs=["data"], outputs=["shape"],
       attrs={"start": Int(0), "end": Int(None)}, infer=_shape_type)
def shape(data: np.ndarray, *, start: int, end: int | None) -> np.ndarray:
    """The dims of `data` from `start` to `end` (negative counts from the back; clamped) as i64."""
    return np.array(data.shape[start:end], dtype=np.int64)


@defop("size", onnx="Size", since=(1, 13, 19, 21, 23, 24, 25), inputs=["data"], outputs=["size"],
       infer=lambda ctx: [TensorType(DType.I64, ())])
def size(data: np.ndarray) -> np.ndarray:
    """The number of elements of `data`, an i64 scalar."""
    return np.array(data.size, dtype=np.int64)


# ---- reshape, flatten -----------------------------------------------------------------------------


def reshape_dims(in_shape: Shape | None, target: list[int], allowzero: bool) -> Shape:
    """The output shape of Reshape(in_shape -> target): 0 copies an input dim (unless allowzero),
    one -1 takes what is left. Symbolic dims stay exact when the division is exact."""
    if target.count(-1) > 1:
        raise TypeRuleError(f"shape {target} has more than one -1")
    if any(v < -1 for v in target):
        raise TypeRuleError(f"shape {target} has a dim below -1")
    if allowzero and 0 in target and -1 in target:
        raise TypeRuleError(f"shape {target} has both 0 and -1, which allowzero=1 does not allow")
    out: list[Dim] = []
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            if in_shape is None:
                out.append(None)
            elif i >= len(in_shape):
                raise TypeRuleError(f"shape {target} copies dim {i} (a 0) of an input of rank {len(in_shape)}")
            else:
                out.append(in_shape[i])
        else:
            out.append(v)
    total = None if in_shape is None else dims.product(in_shape)
    if -1 in out:
        i = out.index(-1)
        known = dims.product([d for j, d in enumerate(out) if j != i])
        if known == 0:
            if total not in (0, None) and not isinstance(total, str):
                raise TypeRuleError(f"cannot infer the -1 of shape {target}: the other dims hold no elements")
            out[i] = None
        else:
            out[i] = None if total is None or known is None else dims.div_exact(total, known)
            if isinstance(total, int) and isinstance(known, int) and out[i] is None:
                raise TypeRuleError(f"{total} elements do not divide into shape {target}")
    elif total is not None:
        new_total = dims.product(out)
        if isinstance(total, int) and isinstance(new_total, int) and total != new_total:
            raise TypeRuleError(f"cannot reshape {total} elements to {fmt(tuple(out))} ({new_total} elements)")
        ratio = dims.div_exact(total, new_total) if new_total not in (0, None) else None
        if isinstance(ratio, int) and ratio != 1 and not isinstance(total, int):
            raise TypeRuleError(f"cannot reshape {fmt(in_shape)} to {fmt(tuple(out))}: they differ by a factor of {ratio}")
    return tuple(out)


def _reshape_type(ctx: InferContext) -> list[TensorType]:
    data = ctx.type(0)
    st = index_input(ctx, 1, "the shape of reshape")
    target = const_ints(ctx, 1)
    if target is None:
        n = vector_length(st)
        return [data.with_shape(unknown_dims(n))]
    try:
        return [data.with_shape(reshape_dims(data.shape, target, bool(ctx.attrs["allowzero"])))]
    except TypeRuleError as e:
        raise TypeRuleError(f"reshape of {fmt(data)}: {e}") from None


@defop("reshape", onnx="Reshape", since=(5, 13, 14, 19, 21, 23, 24, 25), inputs=["data", "shape"],
       outputs=["reshaped"], attrs={"allowzero": Int(0)}, infer=_reshape_type)
def reshape(data: np.ndarray, shape: np.ndarray, *, allowzero: int) -> np.ndarray:
    """`data` with dims `shape`: a 0 copies the input dim at its position (a literal 0 with
    allowzero=1), and one -1 takes the remaining elements."""
    target = [int(v) for v in shape.reshape(-1)]
    if not allowzero:
        target = [data.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return data.reshape(target)


def _flatten_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.shape is None:
        return [t.with_shape((None, None))]
    rank = len(t.shape)
    axis = ctx.attrs["axis"]
    if not -rank <= axis <= rank:
        raise TypeRuleError(f"flatten axis {axis} is out of range for {fmt(t)}")
    axis = axis + rank if axis < 0 else axis
    return [t.with_shape((dims.product(t.shape[:axis]), dims.product(t.shape[axis:])))]


@defop("flatten", onnx="Flatten", since=(1, 9, 11, 13, 21, 23, 24, 25), inputs=["input"], outputs=["output"],
       attrs={"axis": Int(1)}, infer=_flatten_type)
def flatten(x: np.ndarray, *, axis: int) -> np.ndarray:
    """A 2-D view: the dims before `axis` form the rows, the rest the columns."""
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return x.reshape(outer, inner)


# ---- transpose, squeeze, unsqueeze ---------------------------------------------------------------


def _transpose_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    perm = ctx.attrs["perm"]
    if t.shape is None:
        return [t.with_shape(unknown_dims(len(perm)) if perm is not None else None)]
    rank = len(t.shape)
    if perm is None:
        perm = list(range(rank))[::-1]
    if sorted(perm) != list(range(rank)):
        raise TypeRuleError(f"perm {perm} is not a permutation of the {rank} axes of {fmt(t)}")
    return [t.with_shape(tuple(t.shape[p] for p in perm))]


@defop("transpose", onnx="Transpose", since=(1, 13, 21, 23, 24, 25), inputs=["data"], outputs=["transposed"],
       attrs={"perm": Ints(None)}, infer=_transpose_type)
def transpose(data: np.ndarray, *, perm: list[int] | None) -> np.ndarray:
    """Axes permuted: output axis i is input axis perm[i] (default: reversed)."""
    return np.transpose(data, perm)


def _squeeze_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if ctx.has(1):
        index_input(ctx, 1, "the axes of squeeze")
    axes = const_ints(ctx, 1) if ctx.has(1) else None
    if t.shape is None:
        return [t]
    if ctx.has(1) and axes is None:
        n = vector_length(ctx.type(1))
        return [t.with_shape(None if n is None else unknown_dims(len(t.shape) - n))]
    if axes is None:
        if not all(isinstance(d, int) for d in t.shape):
            return [t.with_shape(None)]  # which symbolic dims are 1 is known only at run time
        return [t.with_shape(tuple(d for d in t.shape if d != 1))]
    axes = norm_axes(axes, len(t.shape), "squeeze axes")
    for a in axes:
        if isinstance(t.shape[a], int) and t.shape[a] != 1:
            raise TypeRuleError(f"cannot squeeze axis {a} of {fmt(t)}: its dim is {t.shape[a]}, not 1")
    return [t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in axes))]


@defop("squeeze", onnx="Squeeze", since=(13, 21, 23, 24, 25), inputs=["data", "axes?"], outputs=["squeezed"],
       infer=_squeeze_type)
def squeeze(data: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    """`data` without the given dims of size 1 (without every dim of size 1 when `axes` is absent)."""
    if axes is None:
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(int(a) for a in axes.reshape(-1)))


def _unsqueeze_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    at = index_input(ctx, 1, "the axes of unsqueeze")
    axes = const_ints(ctx, 1)
    if t.shape is None:
        return [t]
    if axes is None:
        n = vector_length(at)
        return [t.with_shape(None if n is None else unknown_dims(len(t.shape) + n))]
    rank = len(t.shape) + len(axes)
    axes = norm_axes(axes, rank, f"unsqueeze axes (of the rank-{rank} result)")
    rest = iter(t.shape)
    return [t.with_shape(tuple(1 if i in axes else next(rest) for i in range(rank)))]


@defop("unsqueeze", onnx="Unsqueeze", since=(13, 21, 23, 24, 25), inputs=["data", "axes"], outputs=["expanded"],
       infer=_unsqueeze_type)
def unsqueeze(data: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """`data` with dims of size 1 inserted at `axes` (indices into the result)."""
    return np.expand_dims(data, tuple(int(a) for a in axes.reshape(-1)))


# ---- concat, split --------------------------------------------------------------------------------


def _concat_type(ctx: InferContext) -> list[TensorType]:
    present = [i for i in range(len(ctx.input_types)) if ctx.has(i)]
    if not present:
        raise TypeRuleError("concat needs at least one input")
    dtype = same_dtype(ctx, present)
    shapes = [ctx.type(i).shape for i in present]
    ranked = [s for s in shapes if s is not None]
    if not ranked:
        return [TensorType(dtype, None)]
    rank = len(ranked[0])
    listed = ", ".join(fmt(s) for s in shapes)
    if any(len(s) != rank for s in ranked):
        raise TypeRuleError(f"concat inputs {listed} differ in rank")
    axis = norm_axis(ctx.attrs["axis"], rank, "concat axis")
    out: list[Dim] = []
    for i in range(rank):
        column = [s[i] for s in ranked]
        if i == axis:
            total: Dim = 0
            for d in column:
                total = dims.add(total, d)
            out.append(None if len(ranked) < len(shapes) else total)
            continue
        static = {d for d in column if isinstance(d, int)}
        if len(static) > 1:
            raise TypeRuleError(f"concat inputs {listed} differ in dim {i} (concatenating on axis {axis})")
        known = [d for d in column if d is not None]
        out.append(static.pop() if static else known[0] if known else None)
    return [TensorType(dtype, tuple(out))]


@defop("concat", onnx="Concat", since=(4, 11, 13), inputs=["inputs*"], outputs=["concat_result"],
       attrs={"axis": Int()}, infer=_concat_type)
def concat(*inputs: np.ndarray, axis: int) -> np.ndarray:
    """The inputs joined along `axis`; every other dim must agree."""
    return np.concatenate(inputs, axis=axis)


def split_sizes(dim: Dim, n: int) -> list[Dim]:
    """Sizes of `n` chunks of `dim` without a `split` input: ceil(dim / n) each, the last one smaller."""
    if isinstance(dim, int):
        chunk = -(-dim // n)
        sizes: list[Dim] = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:  # type: ignore[operator]
            raise TypeRuleError(f"a dim of {dim} does not split into {n} chunks of {chunk}")
        return sizes
    return [dims.div_exact(dim, n)] * n


def _split_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    n = ctx.num_outputs
    num_outputs = ctx.attrs.get("num_outputs")
    sizes_in = None
    if ctx.has(1):
        index_input(ctx, 1, "the split sizes")
        sizes_in = const_ints(ctx, 1)
        if num_outputs is not None:
            raise TypeRuleError("split takes either a split input or num_outputs, not both")
    if num_outputs is not None and num_outputs != n:
        raise TypeRuleError(f"num_outputs is {num_outputs} but the node has {n} outputs")
    if t.shape is None:
        return [t] * n
    axis = norm_axis(ctx.attrs["axis"], len(t.shape), "split axis")
    dim = t.shape[axis]
    if sizes_in is not None:
        if len(sizes_in) != n or any(s < 0 for s in sizes_in):
            raise TypeRuleError(f"split sizes {sizes_in} do not give {n} outputs of non-negative size")
        if isinstance(dim, int) and sum(sizes_in) != dim:
            raise TypeRuleError(f"split sizes {sizes_in} do not add up to dim {axis} of {fmt(t)}")
        sizes: list[Dim] = list(sizes_in)
    elif ctx.has(1):
        sizes = [None] * n
    else:
        sizes = split_sizes(dim, n)
    return [t.with_shape(t.shape[:axis] + (s,) + t.shape[axis + 1:]) for s in sizes]


@defop("split", onnx="Split", since=(13, 18), inputs=["input", "split?"], outputs=["outputs*"],
       attrs={"axis": Int(0), "num_outputs": Int(None)}, infer=_split_type, wants=("num_outputs",))
def split(x: np.ndarray, split: np.ndarray | None = None, *, axis: int, num_outputs: int | None) -> tuple[np.ndarray, ...]:
    """`x` cut along `axis` into pieces of the sizes in `split`, or into one piece per output
    (ceil(dim / n) each, the last one smaller) when `split` is absent."""
    if split is not None:
        sizes = [int(s) for s in split.reshape(-1)]
    else:
        sizes = [int(s) for s in split_sizes(x.shape[axis], num_outputs)]  # type: ignore[arg-type]
    if sum(sizes) != x.shape[axis]:
        raise ValueError(f"split sizes {sizes} do not add up to dim {axis} of shape {list(x.shape)}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


# ---- slice ----------------------------------------------------------------------------------------


def slice_dim(d: Dim, start: int, end: int, step: int) -> Dim:
    """The length of d[start:end:step] with ONNX's (= Python's) clamping. For a symbolic d the
    result assumes d is at least as large as the constant bounds, as exporters do."""
    if isinstance(d, int):
        return len(range(*slice(start, end, step).indices(d)))
    if d is None:
        return None
    if step == 1:
        if start >= _TO_END or end <= -_TO_END or 0 <= end <= start or end <= start < 0:
            return 0
        if start < 0 <= end < _TO_END:
            return None  # d[-3:2] depends on d itself
        lo = start if start >= 0 else dims.add(d, start)
        hi = d if end >= _TO_END else end if end >= 0 else dims.add(d, end)
        return dims.sub(hi, lo)
    if step == -1 and (start >= _TO_END or start == -1) and end <= -_TO_END:
        return d  # a full reversal
    return None


def _slice_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
        if ctx.has(i):
            index_input(ctx, i, f"slice {what}", _INDEX_TYPES)
    if t.shape is None:
        return [t]
    rank = len(t.shape)
    starts, ends = const_ints(ctx, 1), const_ints(ctx, 2)
    axes = const_ints(ctx, 3) if ctx.has(3) else None
    steps = const_ints(ctx, 4) if ctx.has(4) else None
    if ctx.has(3) and axes is None:
        return [t.with_shape(unknown_dims(rank))]
    n = len(starts) if starts is not None else len(ends) if ends is not None else vector_length(ctx.type(1))
    if axes is None:
        if n is None:
            return [t.with_shape(unknown_dims(rank))]
        axes = list(range(n))
    axes = norm_axes(axes, rank, "slice axes")
    for what, vals in (("starts", starts), ("ends", ends), ("steps", steps)):
        if vals is not None and len(vals) != len(axes):
            raise TypeRuleError(f"slice of {fmt(t)}: {what} {vals} and axes {axes} differ in length")
    if steps is not None and 0 in steps:
        raise TypeRuleError(f"slice of {fmt(t)}: steps {steps} contain 0")
    out = list(t.shape)
    for k, a in enumerate(axes):
        if starts is None or ends is None or (ctx.has(4) and steps is None):
            out[a] = None
        else:
            out[a] = slice_dim(t.shape[a], starts[k], ends[k], steps[k] if steps is not None else 1)
    return [t.with_shape(tuple(out))]


@defop("slice", onnx="Slice", since=(10, 11, 13), inputs=["data", "starts", "ends", "axes?", "steps?"],
       outputs=["output"], infer=_slice_type)
def slice_(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, axes: np.ndarray | None = None,
           steps: np.ndarray | None = None) -> np.ndarray:
    """data[starts:ends:steps] on `axes` (default: the first len(starts) axes). Negative bounds
    count from the back and all bounds clamp, exactly as Python slices do."""
    n = starts.size
    axes_l = [int(a) for a in axes.reshape(-1)] if axes is not None else list(range(n))
    steps_l = [int(s) for s in steps.reshape(-1)] if steps is not None else [1] * n
    index = [slice(None)] * data.ndim
    for a, s, e, st in zip(axes_l, starts.reshape(-1), ends.reshape(-1), steps_l):
        index[a] = slice(int(s), int(e), st)
    return data[tuple(index)].copy()


# ---- expand, tile, pad ----------------------------------------------------------------------------


def _expand_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    st = index_input(ctx, 1, "the shape of expand")
    target = const_ints(ctx, 1)
    if target is None:
        n = vector_length(st)
        if n is None or t.shape is None:
            return [t.with_shape(None)]
        target_dims: Shape = unknown_dims(n)  # type: ignore[assignment]
    else:
        target_dims = shape_from_const(target, "expand shape")
    if t.shape is None:
        return [t.with_shape(unknown_dims(len(target_dims)))]
    try:
        return [t.with_shape(broadcast_shapes(t.shape, target_dims))]
    except TypeRuleError:
        raise TypeRuleError(f"cannot expand {fmt(t)} to shape {list(target_dims)}") from None


@defop("expand", onnx="Expand", since=(8, 13), inputs=["input", "shape"], outputs=["output"], infer=_expand_type)
def expand(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """`x` broadcast against `shape` (numpy rules; a 1 in `shape` keeps the input dim)."""
    out_shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape.reshape(-1)))
    check_budget("expand", out_shape)
    return np.broadcast_to(x, out_shape).copy()


def _tile_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    index_input(ctx, 1, "the repeats of tile")
    repeats = const_ints(ctx, 1)
    if t.shape is None:
        return [t]
    if repeats is None:
        return [t.with_shape(tuple(0 if d == 0 else None for d in t.shape))]
    if len(repeats) != len(t.shape) or any(r < 0 for r in repeats):
        raise TypeRuleError(f"tile repeats {repeats} must be {len(t.shape)} non-negative counts for {fmt(t)}")
    return [t.with_shape(tuple(dims.mul(d, r) for d, r in zip(t.shape, repeats)))]


@defop("tile", onnx="Tile", since=(6, 13), inputs=["input", "repeats"], outputs=["output"], infer=_tile_type)
def tile(x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """`x` repeated repeats[i] times along each axis i."""
    reps = [int(r) for r in repeats.reshape(-1)]
    if len(reps) != x.ndim:
        raise ValueError(f"tile: {len(reps)} repeats for an input of rank {x.ndim}")
    check_budget("tile", [d * r for d, r in zip(x.shape, reps)])
    return np.tile(x, reps)


PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    mode = ctx.attrs["mode"]
    if mode not in PAD_MODES:
        raise TypeRuleError(f"pad mode '{mode}' is not one of {', '.join(PAD_MODES)}")
    index_input(ctx, 1, "the pads of pad")
    if ctx.has(2) and ctx.type(2).dtype != t.dtype:
        raise TypeRuleError(f"the pad value {fmt(ctx.type(2))} must have the dtype of the data {fmt(t)}")
    if ctx.has(3):
        index_input(ctx, 3, "the axes of pad", _INDEX_TYPES)
    if t.shape is None:
        return [t]
    rank = len(t.shape)
    pads = const_ints(ctx, 1)
    axes = const_ints(ctx, 3) if ctx.has(3) else list(range(rank))
    if axes is None:
        return [t.with_shape(unknown_dims(rank))]
    axes = norm_axes(axes, rank, "pad axes")
    if pads is None:
        return [t.with_shape(tuple(None if i in axes else d for i, d in enumerate(t.shape)))]
    if len(pads) != 2 * len(axes):
        raise TypeRuleError(f"pads {pads} must hold 2 values for each of the axes {axes} of {fmt(t)}")
    out = list(t.shape)
    for k, a in enumerate(axes):
        begin, end = pads[k], pads[k + len(axes)]
        out[a] = dims.add(dims.add(t.shape[a], begin), end)
        if isinstance(out[a], int) and out[a] < 0:
            raise TypeRuleError(f"pads {pads} remove more than dim {a} of {fmt(t)} holds")
        if mode != "constant" and t.shape[a] == 0 and (begin > 0 or end > 0):
            raise TypeRuleError(f"{mode} padding cannot extend the empty axis {a} of {fmt(t)}")
    return [t.with_shape(tuple(out))]


@defop("pad", onnx="Pad", since=(11, 13, 18, 19, 21, 23, 24, 25), inputs=["data", "pads", "constant_value?", "axes?"],
       outputs=["output"], attrs={"mode": Str("constant")}, infer=_pad_type)
def pad(data: np.ndarray, pads: np.ndarray, constant_value: np.ndarray | None = None, axes: np.ndarray | None = None,
        *, mode: str) -> np.ndarray:
    """`data` grown by pads = [begin_0, ..., begin_k, end_0, ..., end_k] on `axes` (default all),
    filled per `mode`: constant (constant_value, default 0), reflect, edge or wrap. Negative pads
    remove elements; they are applied first."""
    axes_l = [int(a) % data.ndim for a in axes.reshape(-1)] if axes is not None else list(range(data.ndim))
    p = [int(v) for v in pads.reshape(-1)]
    if len(p) != 2 * len(axes_l):
        raise ValueError(f"pad: {len(p)} pads for {len(axes_l)} axes")
    width = [(0, 0)] * data.ndim
    crop = [slice(None)] * data.ndim
    for k, a in enumerate(axes_l):
        begin, end = p[k], p[k + len(axes_l)]
        crop[a] = slice(max(-begin, 0), data.shape[a] - max(-end, 0))
        if crop[a].stop < crop[a].start:
            raise ValueError(f"pad: pads {p} remove more than axis {a} of shape {list(data.shape)} holds")
        width[a] = (max(begin, 0), max(end, 0))
    x = data[tuple(crop)]
    check_budget("pad", [d + b + e for d, (b, e) in zip(x.shape, width)])
    if mode == "constant":
        value = constant_value.reshape(-1)[0] if constant_value is not None and constant_value.size else 0
        return np.pad(x, width, mode="constant", constant_values=value).astype(data.dtype, copy=False)
    return np.pad(x, width, mode=mode)


def _center_crop_pad_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    index_input(ctx, 1, "the shape of center_crop_pad", _INDEX_TYPES)
    if t.shape is None:
        return [t]
    rank = len(t.shape)
    axes = norm_axes(ctx.attrs["axes"] if ctx.attrs["axes"] is not None else range(rank), rank, "center_crop_pad axes")
    target = const_ints(ctx, 1)
    if target is None:
        return [t.with_shape(tuple(None if i in axes else d for i, d in enumerate(t.shape)))]
    if len(target) != len(axes):
        raise TypeRuleError(f"center_crop_pad shape {target} needs one dim for each of the axes {axes} of {fmt(t)}")
    out = list(t.shape)
    for a, d in zip(axes, shape_from_const(target, "center_crop_pad shape")):
        out[a] = d
    return [t.with_shape(tuple(out))]


@defop("center_crop_pad", onnx="CenterCropPad", since=(18,), inputs=["input_data", "shape"], outputs=["output_data"],
       attrs={"axes": Ints(None)}, infer=_center_crop_pad_type)
def center_crop_pad(x: np.ndarray, shape: np.ndarray, *, axes: list[int] | None) -> np.ndarray:
    """`x` cropped or zero-padded, centred, to `shape` on `axes`; an odd difference leaves the
    extra element at the end."""
    axes_l = [a % x.ndim for a in axes] if axes is not None else list(range(x.ndim))
    out_shape = list(x.shape)
    crop = [slice(None)] * x.ndim
    place = [slice(None)] * x.ndim
    for a, size in zip(axes_l, (int(s) for s in shape.reshape(-1))):
        d = x.shape[a]
        out_shape[a] = size
        if size < d:
            crop[a] = slice((d - size) // 2, (d - size) // 2 + size)
        elif size > d:
            place[a] = slice((size - d) // 2, (size - d) // 2 + d)
    check_budget("center_crop_pad", out_shape)
    out = np.zeros(out_shape, dtype=x.dtype)
    out[tuple(place)] = x[tuple(crop)]
    return out


# ---- depth_to_space, space_to_depth ---------------------------------------------------------------


def _block_type(ctx: InferContext, to_space: bool) -> list[TensorType]:
    t = ctx.type(0)
    b = ctx.attrs["blocksize"]
    if b <= 0:
        raise TypeRuleError(f"blocksize {b} must be positive")
    if ctx.attrs["mode"] not in ("DCR", "CRD"):
        raise TypeRuleError(f"mode '{ctx.attrs['mode']}' is not DCR or CRD")
    if t.shape is None:
        return [t.with_shape(unknown_dims(4))]
    if len(t.shape) != 4:
        raise TypeRuleError(f"the input {fmt(t)} must have rank 4 (N, C, H, W)")
    n, c, h, w = t.shape
    if to_space:
        if isinstance(c, int) and c % (b * b):
            raise TypeRuleError(f"channels of {fmt(t)} do not divide by blocksize^2 = {b * b}")
        return [t.with_shape((n, dims.div_exact(c, b * b), dims.mul(h, b), dims.mul(w, b)))]
    for d in (h, w):
        if isinstance(d, int) and d % b:
            raise TypeRuleError(f"height and width of {fmt(t)} must divide by blocksize {b}")
    return [t.with_shape((n, dims.mul(c, b * b), dims.div_exact(h, b), dims.div_exact(w, b)))]


@defop("depth_to_space", onnx="DepthToSpace", since=(1, 11, 13, 28), inputs=["input"], outputs=["output"],
       attrs={"blocksize": Int(), "mode": Str("DCR")}, infer=lambda ctx: _block_type(ctx, True))
def depth_to_space(x: np.ndarray, *, blocksize: int, mode: str) -> np.ndarray:
    """[N, C, H, W] -> [N, C/b², H·b, W·b]: channel blocks become b×b spatial tiles. DCR takes the
    block index from the high channel bits (depth, column, row), CRD from the low ones."""
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@defop("space_to_depth", onnx="SpaceToDepth", since=(1, 13, 28), inputs=["input"], outputs=["output"],
       attrs={"blocksize": Int(), "mode": Str("DCR")}, infer=lambda ctx: _block_type(ctx, False))
def space_to_depth(x: np.ndarray, *, blocksize: int, mode: str) -> np.ndarray:
    """[N, C, H, W] -> [N, C·b², H/b, W/b], the inverse of depth_to_space in the same mode."""
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


from . import shape_index  # noqa: E402,F401 - registers the gather/scatter and generator ops

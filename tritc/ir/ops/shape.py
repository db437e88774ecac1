"""Shape-manipulation ops: views and rearrangements of one tensor (reshape, transpose, slice, pad, ...).

Type rules keep symbolic dims exact where they can (``batch``, ``past+seq``) and raise TypeRuleError,
naming the shapes, for what is invalid whatever the run-time sizes. Expand/tile/pad/re-blocking
live in `shape_expand.py`, gather/scatter and generators in `shape_index.py`, imported at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ResourceLimitError
from .. import dims
from ..types import Dim, DType, Shape, TensorType, format_type
from . import InferContext, Int, Ints, TypeRuleError, defop
from .rules import const_ints, norm_axes, norm_axis, same_dtype, sym_ints, unknown_dims

# Largest output, in elements, an op here may allocate. Expand, Tile, Pad, ConstantOfShape and
# Range make huge tensors out of tiny constant inputs (HARDENING.md C.19); they refuse beyond this.
MAX_ELEMENTS = 2**31

# A constant slice bound at or beyond this means "to the end" (exporters write INT64_MAX or INT32_MAX).
_TO_END = 2**31 - 1

INDEX_TYPES = (DType.I32, DType.I64)


# ---- helpers shared with shape_expand.py and shape_index.py -------------------------------------


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


def shape_from_const(values: list[Dim], what: str) -> tuple[Dim, ...]:
    """A shape from constant (or symbolic) values; a negative constant is an error."""
    if any(isinstance(v, int) and v < 0 for v in values):
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
    if any(isinstance(v, int) and v < -1 for v in target):
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
        if _differ_by_a_factor(total, new_total) or not dims.assume_equal(total, new_total):
            raise TypeRuleError(f"cannot reshape {fmt(in_shape)} to {fmt(tuple(out))}: "
                                f"{total} elements are not {new_total}")
    return tuple(out)


def _differ_by_a_factor(a: Dim, b: Dim) -> bool:
    """Whether two element counts are c1*m and c2*m for one monomial m and c1 != c2 (e.g.
    128*batch and 100*batch): unequal for every non-empty tensor."""
    pa, pb = dims.to_poly(a), dims.to_poly(b)
    if not pa or not pb or len(pa) != 1 or len(pb) != 1:
        return False
    ((ma, ca),), ((mb, cb),) = pa.items(), pb.items()
    return ma == mb and ca != cb


def _reshape_type(ctx: InferContext) -> list[TensorType]:
    data = ctx.type(0)
    st = index_input(ctx, 1, "the shape of reshape")
    target = sym_ints(ctx, 1)  # constant values, or symbolic ones computed from shapes
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
    return np.asarray(data.reshape(target))  # numpy hands back a scalar, not an array, for rank 0


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
    return np.asarray(np.transpose(data, perm))


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
        return np.asarray(np.squeeze(data))
    # An empty `axes` squeezes nothing, as ONNX's reference and shape inference read the spec.
    return np.asarray(np.squeeze(data, axis=tuple(int(a) for a in axes.reshape(-1))))


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
        start = 0 if start <= -_TO_END else start
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
            index_input(ctx, i, f"slice {what}", INDEX_TYPES)
    if t.shape is None:
        return [t]
    rank = len(t.shape)
    # Bounds may be computed from shapes (x[..., :d // 2]): symbolic values count like constants.
    starts, ends = sym_ints(ctx, 1), sym_ints(ctx, 2)
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
        step = steps[k] if steps is not None else 1
        if starts is None or ends is None or (ctx.has(4) and steps is None):
            out[a] = None
        elif isinstance(starts[k], int) and isinstance(ends[k], int):
            out[a] = slice_dim(t.shape[a], starts[k], ends[k], step)
        elif isinstance(starts[k], int) and 0 <= starts[k] and step == 1:
            # An end computed from a shape (x[:, :seq]): like symbolic dims, assume it is in bounds.
            out[a] = dims.sub(ends[k], starts[k])
        else:
            out[a] = None
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


from . import shape_expand, shape_index  # noqa: E402,F401 - register expand/tile/pad/... and gather/scatter/generators

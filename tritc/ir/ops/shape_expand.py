"""Shape-family ops that replicate, pad or re-block a tensor: expand, tile, pad, center_crop_pad,
depth_to_space, space_to_depth. Imported by `shape.py`; helpers come from there.
"""

from __future__ import annotations

import numpy as np

from .. import dims
from ..types import Shape, TensorType
from . import InferContext, Int, Ints, Str, TypeRuleError, defop
from .rules import broadcast_shapes, const_ints, norm_axes, sym_ints, unknown_dims
from .shape import INDEX_TYPES, check_budget, fmt, index_input, shape_from_const, vector_length

# ---- expand, tile, pad ----------------------------------------------------------------------------


def _expand_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    st = index_input(ctx, 1, "the shape of expand")
    target = sym_ints(ctx, 1)
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
        index_input(ctx, 3, "the axes of pad", INDEX_TYPES)
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
        d = t.shape[a]
        if isinstance(d, int) and d + min(begin, 0) + min(end, 0) < 0:
            raise TypeRuleError(f"pads {pads} remove more than dim {a} of {fmt(t)} holds")
        if mode != "constant" and d == -min(begin, 0) - min(end, 0) and (begin > 0 or end > 0):
            raise TypeRuleError(f"{mode} padding cannot extend axis {a} of {fmt(t)} once pads {pads} leave it empty")
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
    if data.ndim == 0:
        return data.copy()
    x = data[tuple(crop)]
    check_budget("pad", [d + b + e for d, (b, e) in zip(x.shape, width)])
    if mode == "constant":
        value = constant_value.reshape(-1)[0] if constant_value is not None and constant_value.size else 0
        return np.pad(x, width, mode="constant", constant_values=value).astype(data.dtype, copy=False)
    return np.pad(x, width, mode=mode)


def _center_crop_pad_type(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    index_input(ctx, 1, "the shape of center_crop_pad", INDEX_TYPES)
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

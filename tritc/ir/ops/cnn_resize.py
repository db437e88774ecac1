"""Resize (ONNX Resize-19): nearest, N-linear and N-cubic interpolation, one axis at a time.

Every mode is separable, so the op resizes each axis in turn: map output coordinates to input
coordinates (coordinate_transformation_mode), then take a weighted sum of neighbouring input
values along that axis. Part of the cnn family (imported by cnn.py).
"""

from __future__ import annotations

import math

import numpy as np

from ..types import Dim, DType, TensorType
from . import BY_ONNX, OPS, Float, InferContext, Int, Ints, Str, TypeRuleError, defop
from .nn import fmt
from .rules import norm_axes
from .shape import check_budget

MODES = ("nearest", "linear", "cubic")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_crop_and_resize", "tf_half_pixel_for_nn")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _present(a: np.ndarray | None) -> bool:
    """Resize-11 passes an empty tensor for an unused scales or roi operand."""
    return a is not None and a.size > 0


def _targets(in_shape: tuple[int, ...], axes: list[int], scales: np.ndarray | None, sizes: np.ndarray | None,
             policy: str) -> tuple[list[float], list[int]]:
    """Per resized axis (in `axes` order): the scale factor and the output length."""
    lengths = [in_shape[a] for a in axes]
    if _present(scales):
        factors = [float(s) for s in scales]
        return factors, [math.floor(n * f) for n, f in zip(lengths, factors)]
    assert sizes is not None
    wanted = [int(s) for s in sizes]
    if policy == "stretch":
        return [w / n if n else 0.0 for w, n in zip(wanted, lengths)], wanted
    ratios = [w / n for w, n in zip(wanted, lengths)]
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    out = [math.floor(scale * n + 0.5) for n in lengths]  # round half up
    return [scale] * len(axes), out


def _source_coords(mode: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Input coordinate of each output position along one axis (float64).

    `target` is in_len * scale, the output length before rounding down. Like ONNX's reference
    implementation (which made the conformance data) align_corners and tf_crop_and_resize divide
    by target - 1; onnxruntime divides by out_len - 1, which differs when scales downsample to a
    fractional length."""
    y = np.arange(out_len, dtype=np.float64)
    target = in_len * scale
    if mode == "align_corners":
        return np.zeros(out_len) if target == 1 else y * (in_len - 1) / (target - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if target == 1:
            return np.full(out_len, (end - start) * (in_len - 1) / 2 + start * (in_len - 1))
        return start * (in_len - 1) + y * (end - start) * (in_len - 1) / (target - 1)
    if mode == "pytorch_half_pixel":
        return np.zeros(out_len) if out_len == 1 else (y + 0.5) / scale - 0.5
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if mode == "half_pixel_symmetric":
        # Centre the sampled region when the output length was rounded down from target.
        offset = in_len / 2 * (1 - out_len / target)
        return offset + (y + 0.5) / scale - 0.5
    return (y + 0.5) / scale - 0.5  # half_pixel


def _nearest(x: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if rounding == "round_prefer_ceil":
        return np.floor(x + 0.5)
    return np.floor(x) if rounding == "floor" else np.ceil(x)


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _taps(coords: np.ndarray, in_len: int, scale: float, mode: str, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Input indices [out, taps] and their weights for linear or cubic interpolation along one axis."""
    radius = 1 if mode == "linear" else 2
    # Antialiasing stretches the kernel by 1 / scale when downsampling, so more inputs contribute.
    stretch = min(scale, 1.0) if attrs["antialias"] else 1.0
    n = -2 * math.floor(-radius / stretch)
    # The taps are the n inputs nearest each coordinate, ties going to the lower index.
    first = np.ceil(coords).astype(np.int64) - n // 2
    index = first[:, None] + np.arange(n)
    distance = (index - coords[:, None]) * stretch
    if mode == "linear":
        weight = np.clip(1 - np.abs(distance), 0, None)
    else:
        weight = _cubic(distance, attrs["cubic_coeff_a"])
    if attrs["antialias"]:
        weight = weight / weight.sum(axis=1, keepdims=True)
    if attrs["exclude_outside"]:
        weight = np.where((index < 0) | (index >= in_len), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight = weight / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, in_len - 1), weight  # outside indices repeat the edge value


def _resize_axis(x: np.ndarray, axis: int, out_len: int, scale: float, roi: tuple[float, float], attrs: dict) -> np.ndarray:
    in_len = x.shape[axis]
    coords = _source_coords(attrs["coordinate_transformation_mode"], out_len, in_len, scale, roi)
    if attrs["mode"] == "nearest":
        index = np.clip(_nearest(coords, attrs["nearest_mode"]), 0, in_len - 1).astype(np.intp)
        y = np.take(x, index, axis=axis)
    else:
        index, weight = _taps(coords, in_len, scale, attrs["mode"], attrs)
        check_budget("resize", x.shape[:axis] + index.shape + x.shape[axis + 1:])  # antialiasing widens the taps
        gathered = np.take(x, index, axis=axis)  # the axis becomes [out, taps]
        shape = (1,) * axis + weight.shape + (1,) * (x.ndim - axis - 1)
        y = (gathered * weight.reshape(shape)).sum(axis=axis + 1)
    if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > in_len - 1)
        y = np.where(outside.reshape((-1,) + (1,) * (x.ndim - axis - 1)), attrs["extrapolation_value"], y)
    return y


def _resize_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    a = ctx.attrs
    for name, allowed in (("mode", MODES), ("nearest_mode", NEAREST_MODES),
                          ("coordinate_transformation_mode", COORDINATE_MODES),
                          ("keep_aspect_ratio_policy", ASPECT_POLICIES)):
        if a[name] not in allowed:
            raise TypeRuleError(f"Resize: {name} must be one of {', '.join(allowed)}, got '{a[name]}'")
    if ctx.has(2) and not ctx.type(2).dtype.is_float:
        raise TypeRuleError(f"Resize: scales must be float, got {ctx.type(2).dtype}")
    if ctx.has(3) and ctx.type(3).dtype is not DType.I64:
        raise TypeRuleError(f"Resize: sizes must be i64, got {ctx.type(3).dtype}")
    if x.shape is None:
        return [x]
    rank = len(x.shape)
    axes = norm_axes(a["axes"], rank) if a["axes"] is not None else list(range(rank))
    scales, sizes = ctx.const(2), ctx.const(3)
    scales_given = ctx.has(2) and (scales is None or scales.size > 0)
    sizes_given = ctx.has(3) and (sizes is None or sizes.size > 0)
    if scales_given == sizes_given:
        raise TypeRuleError("Resize needs exactly one of scales and sizes")
    for what, c in (("scales", scales), ("sizes", sizes)):
        if _present(c) and c.size != len(axes):
            raise TypeRuleError(f"Resize: {what} has {c.size} values for input {fmt(x.shape)} and axes {axes}")
    if _present(scales) and (scales <= 0).any():
        raise TypeRuleError(f"Resize: scales {scales.tolist()} must be positive")
    out: list[Dim] = list(x.shape)
    static = all(isinstance(x.shape[ax], int) for ax in axes)
    if static and (_present(scales) or _present(sizes)):
        _, lengths = _targets(x.shape, axes, scales, sizes, a["keep_aspect_ratio_policy"])  # type: ignore[arg-type]
        for ax, n in zip(axes, lengths):
            out[ax] = n
    elif _present(scales):
        for ax, f in zip(axes, scales.tolist()):
            n = x.shape[ax]
            out[ax] = n if f == 1.0 else math.floor(n * f) if isinstance(n, int) else None
    elif _present(sizes) and a["keep_aspect_ratio_policy"] == "stretch":
        for ax, n in zip(axes, sizes.tolist()):
            out[ax] = int(n)
    else:
        for ax in axes:
            out[ax] = None
    return [TensorType(x.dtype, tuple(out))]


@defop("resize", onnx="Resize", since=(11, 13, 18, 19), inputs=["X", "roi?", "scales?", "sizes?"],
       attrs={"antialias": Int(0), "axes": Ints(None), "coordinate_transformation_mode": Str("half_pixel"),
              "cubic_coeff_a": Float(-0.75), "exclude_outside": Int(0), "extrapolation_value": Float(0.0),
              "keep_aspect_ratio_policy": Str("stretch"), "mode": Str("nearest"),
              "nearest_mode": Str("round_prefer_floor")}, infer=_resize_type)
def resize(x: np.ndarray, roi: np.ndarray | None = None, scales: np.ndarray | None = None,
           sizes: np.ndarray | None = None, **attrs) -> np.ndarray:
    """Resize X along `axes` (default all) to sizes, or by scales (output length floor(n * scale)).
    Each output value interpolates the inputs around its source coordinate; see the module doc."""
    rank = x.ndim
    axes = [a % rank for a in attrs["axes"]] if attrs["axes"] is not None else list(range(rank))
    factors, lengths = _targets(x.shape, axes, scales, sizes, attrs["keep_aspect_ratio_policy"])
    final = list(x.shape)
    for axis, length in zip(axes, lengths):
        final[axis] = length
    check_budget("resize", final)  # scales and sizes come from the model (HARDENING.md C.19)
    boxes = np.asarray(roi, dtype=np.float64).reshape(-1) if _present(roi) else None
    y = x.astype(np.float64) if attrs["mode"] != "nearest" else x
    for i, (axis, scale, length) in enumerate(zip(axes, factors, lengths)):
        box = (boxes[i], boxes[i + len(axes)]) if boxes is not None else (0.0, 1.0)
        if length == y.shape[axis] and scale == 1.0 and box == (0.0, 1.0):
            continue  # nothing to do along this axis
        y = _resize_axis(y, axis, length, scale, box, attrs)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return np.asarray(y).astype(x.dtype, copy=False)


# Upsample (deprecated since opset 10) has no IR op of its own: its adapter turns Upsample-7/9
# nodes into `resize` (tritc/frontend/adapters/nn.py), so the ONNX name maps to resize too.
BY_ONNX[("", "Upsample")] = OPS["resize"]

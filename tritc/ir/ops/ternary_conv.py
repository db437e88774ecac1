"""`ternary_conv`: a convolution with a ternary weight, in float or int8 activation mode (what fold-ternary makes of a Conv).

    y = ternary_conv(x: f32[N, C, D...], w: t2[C/group * prod(kernel_shape), M], bias?: f32[M])
            {act = "float" | "int8", kernel_shape, strides, pads, dilations, auto_pad, group} : f32[N, M, D'...]

The weight is the conv's im2col matrix: row (c, k) = input channel c of the group (c-major) and kernel
offset k (row-major over kernel_shape), column m = output channel; W_onnx[m, c, k...] = trits[(c, k), m] *
scale. Output channel m belongs to group m // (M / group) and reads the group's C / group input channels.
Per group, y[n, :, p] = ternary_matmul semantics on the window of x at output position p:

act = "float": (window @ trits) * scale in float32 (per group of K rows: partial sums scaled, then summed).
act = "int8": every image is quantised by its absolute maximum (one factor per batch element, not per
window, so that a window's products share one rescale): s[n] = act_max / max(max|x[n]|, act_eps) in
float32 (act_scale "div"; "mul_reciprocal": act_max * (1 / ...)), q = clip(round_half_even(x * s), -128,
127) as int8, padding is code 0; acc = window(q) @ trits exactly in int32; y = acc * scale / s[n] in
float32 (per group of K rows: (acc_g * scale_g) summed over groups, then / s[n]). Then y + bias.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .. import dims
from ..ternary import TernaryWeight
from ..types import DType, TensorType
from . import Float, InferContext, Int, Ints, Str, TypeRuleError, defop
from .cnn import Window, _pad_for, _slices
from .nn import check_dim, fmt
from .ternary import ACT_MODES, ACT_SCALE_FORMS, float_product, int8_product, quantize_activations

WINDOW_ATTRS = ("auto_pad", "dilations", "pads", "strides")


def _infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    a = ctx.attrs
    if w.dtype is not DType.T2 or w.shape is None or len(w.shape) != 2:
        raise TypeRuleError(f"weight must be a 2-D t2 matrix [C/group * prod(kernel), M], got {w}")
    if not x.dtype.is_float:
        raise TypeRuleError(f"activations must be float, got {x.dtype}")
    if a["act"] not in ACT_MODES:
        raise TypeRuleError(f"act must be one of {', '.join(ACT_MODES)}, got '{a['act']}'")
    if a["act_scale"] not in ACT_SCALE_FORMS:
        raise TypeRuleError(f"act_scale must be one of {', '.join(ACT_SCALE_FORMS)}, got '{a['act_scale']}'")
    kernel, g = list(a["kernel_shape"]), a["group"]
    win = Window.of(a, kernel, "ternary_conv")
    if g < 1:
        raise TypeRuleError(f"group must be positive, got {g}")
    k, m = w.shape
    if isinstance(m, int) and m % g:
        raise TypeRuleError(f"the {m} output channels of weight {w} do not split into {g} groups")
    if ctx.has(2) and ctx.type(2).shape is not None:
        b = ctx.type(2).shape
        if len(b) != 1 or not dims.assume_equal(b[0], m):
            raise TypeRuleError(f"bias {fmt(b)} must be [M] = [{m}]")
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) != 2 + len(kernel):
        raise TypeRuleError(f"input {fmt(x.shape)} must be [N, C, D1..D{len(kernel)}] for kernel_shape {kernel}")
    c = x.shape[1]
    if isinstance(c, int) and c % g:
        raise TypeRuleError(f"the {c} channels of input {fmt(x.shape)} do not split into {g} groups")
    check_dim(dims.mul(c, math.prod(kernel)), dims.mul(k, g),
              f"input {fmt(x.shape)} with kernel_shape {kernel} and group {g} needs {c} / {g} * {math.prod(kernel)} "
              f"weight rows, the weight {w} has {k}")
    return [TensorType(x.dtype, (x.shape[0], m, *(win.out_dim(i, n) for i, n in enumerate(x.shape[2:]))))]


def im2col(x: np.ndarray, win: Window) -> tuple[np.ndarray, list[int]]:
    """cols[n, p, (c, k)]: the value of x (0 in the padding) that kernel offset k meets at output position p;
    with the output's spatial shape."""
    padded, out, _ = _pad_for(x, win, 0, "ternary_conv")
    offsets = list(itertools.product(*(range(k) for k in win.kernel)))
    n, c = x.shape[:2]
    cols = np.empty((n, c, len(offsets), *out), dtype=x.dtype)
    for j, offset in enumerate(offsets):
        cols[:, :, j] = padded[(..., *_slices(win, offset, out))]
    return cols.reshape(n, c * len(offsets), math.prod(out)).transpose(0, 2, 1), out


def group_weight(w: TernaryWeight, g: int, groups: int) -> TernaryWeight:
    """The columns (output channels) of conv group g, with their scales."""
    if groups == 1:
        return w
    mg = w.trits.shape[1] // groups
    cols = slice(g * mg, (g + 1) * mg)
    scale = w.scale if w.scale.ndim == 0 else w.scale[..., cols].copy()
    return TernaryWeight(np.ascontiguousarray(w.trits[:, cols]), scale, w.group_size)


@defop("ternary_conv", inputs=["X", "W", "B?"],
       attrs={"act": Str("float"), "act_max": Float(127.0), "act_eps": Float(1e-5), "act_scale": Str("div"),
              "auto_pad": Str("NOTSET"), "dilations": Ints(None), "group": Int(1), "kernel_shape": Ints(),
              "pads": Ints(None), "strides": Ints(None)},
       infer=_infer)
def ternary_conv(x: np.ndarray, w: TernaryWeight, bias: np.ndarray | None = None, *, act: str, act_max: float,
                 act_eps: float, act_scale: str, group: int, kernel_shape: list[int], **window) -> np.ndarray:
    """A convolution with ternary weights: per group, ternary_matmul's float or int8 product on each window."""
    win = Window.of({k: window[k] for k in WINDOW_ATTRS}, kernel_shape, "ternary_conv")
    n = x.shape[0]
    if act == "int8":
        q, s = quantize_activations(x.reshape(n, -1), act_max, act_eps, act_scale)  # one factor per image
        cols, out = im2col(q.reshape(x.shape), win)
        s = s.reshape(n, 1, 1)
    else:
        cols, out = im2col(x.astype(np.float32, copy=False), win)
    kg = w.trits.shape[0]
    parts = []
    for g in range(group):
        wg = group_weight(w, g, group)
        cg = cols[..., g * kg:(g + 1) * kg]
        parts.append(int8_product(cg, s, wg) if act == "int8" else float_product(cg, wg))
    y = np.concatenate(parts, axis=-1).astype(np.float32, copy=False)  # [n, p, M]
    if bias is not None:
        y = y + bias
    m = y.shape[-1]
    return np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(n, m, *out).astype(x.dtype, copy=False)

"""Convolution and pooling ops over [N, C, D1, ..., Dk] tensors (k = 1, 2, 3, ...), plus LRN.

Windows are computed the same way everywhere (`Window`): explicit pads or auto_pad, strides,
dilations and, for pools, ceil_mode. Convolutions are im2col plus one batched matmul per call;
pools reduce one strided slice per kernel offset. Resize lives in cnn_resize.py.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import dims
from ..types import Dim, DType, TensorType
from . import Float, InferContext, Int, Ints, Str, TypeRuleError, defop
from .nn import check_dim, fmt, widen
from .rules import require_dtype, same_dtype
from .shape import check_budget

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# ---- window geometry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Sliding-window attributes of one node, normalized to one entry per spatial dim."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # [begin_1, ..., begin_k, end_1, ..., end_k] as given (ignored for auto_pad)
    auto_pad: str
    ceil_mode: bool = False

    @staticmethod
    def of(attrs: dict, kernel: Sequence[int], what: str) -> Window:
        """A Window from a node's attributes; TypeRuleError on ill-formed values."""
        k = len(kernel)

        def per_dim(name: str, default: int, n: int = k) -> tuple[int, ...]:
            v = attrs.get(name)
            if v is None:
                return (default,) * n
            if len(v) != n:
                raise TypeRuleError(f"{what}: {name} {list(v)} should have {n} values for {k} spatial dims")
            return tuple(int(x) for x in v)

        w = Window(tuple(int(x) for x in kernel), per_dim("strides", 1), per_dim("dilations", 1), per_dim("pads", 0, 2 * k),
                   attrs.get("auto_pad", "NOTSET"), bool(attrs.get("ceil_mode", 0)))
        if w.auto_pad not in AUTO_PADS:
            raise TypeRuleError(f"{what}: auto_pad must be one of {', '.join(AUTO_PADS)}, got '{w.auto_pad}'")
        if min(w.kernel, default=1) < 1 or min(w.strides, default=1) < 1 or min(w.dilations, default=1) < 1:
            raise TypeRuleError(f"{what}: kernel {list(w.kernel)}, strides {list(w.strides)} and dilations "
                                f"{list(w.dilations)} must be positive")
        if min(w.pads, default=0) < 0:
            raise TypeRuleError(f"{what}: pads {list(w.pads)} must not be negative")
        return w

    def dim(self, i: int, n: int) -> tuple[int, int, int]:
        """Output length, begin pad and end pad along spatial dim i of input length n."""
        k, s = (self.kernel[i] - 1) * self.dilations[i] + 1, self.strides[i]  # k: the dilated kernel's extent
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-n // s)
            total = max(0, (out - 1) * s + k - n)
            begin = total // 2 if self.auto_pad == "SAME_UPPER" else total - total // 2
            return out, begin, total - begin
        begin, end = (0, 0) if self.auto_pad == "VALID" else (self.pads[i], self.pads[i + len(self.kernel)])
        span = n + begin + end - k
        if span < 0:
            raise TypeRuleError(f"window of extent {k} does not fit spatial dim {i} of length {n} padded by {begin}+{end}")
        if self.ceil_mode and self.auto_pad != "VALID":
            out = -(-span // s) + 1
            if (out - 1) * s >= n + begin:  # a window may not start in the end padding
                out -= 1
        else:
            out = span // s + 1
        return out, begin, end

    def out_dim(self, i: int, n: Dim) -> Dim:
        """Output length along dim i for a possibly symbolic input length."""
        if isinstance(n, int):
            return self.dim(i, n)[0]
        if n is None or self.strides[i] != 1:
            return None
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            return n
        pads = 0 if self.auto_pad == "VALID" else self.pads[i] + self.pads[i + len(self.kernel)]
        return dims.add(n, pads - (self.kernel[i] - 1) * self.dilations[i])


def _slices(w: Window, offset: Sequence[int], out: Sequence[int]) -> tuple[slice, ...]:
    """Index of the input values that kernel position `offset` meets, for every output position."""
    return tuple(slice(o * d, o * d + (m - 1) * s + 1, s) for o, d, s, m in zip(offset, w.dilations, w.strides, out))


def _pad_for(x: np.ndarray, w: Window, value: float | int, op: str) -> tuple[np.ndarray, list[int], list[int]]:
    """x padded with `value` so that every window is in bounds; with the output and begin-pad sizes."""
    geometry = [w.dim(i, n) for i, n in enumerate(x.shape[2:])]
    out = [g[0] for g in geometry]
    begins = [g[1] for g in geometry]
    widths = [(0, 0), (0, 0)]
    for i, (m, b, e) in enumerate(geometry):
        needed = (m - 1) * w.strides[i] + (w.kernel[i] - 1) * w.dilations[i] + 1  # ceil_mode may reach past the end pad
        widths.append((b, max(e, needed - b - x.shape[2 + i])))
    if any(b or e for b, e in widths):
        check_budget(op, [n + b + e for n, (b, e) in zip(x.shape, widths)])  # pads come from the model
        x = np.pad(x, widths, constant_values=value)
    return x, out, begins


def _spatial_rank(x: TensorType, what: str) -> int | None:
    if x.shape is None:
        return None
    if len(x.shape) < 3:
        raise TypeRuleError(f"{what} input must be [N, C, D1, ...] (rank >= 3), got {fmt(x.shape)}")
    return len(x.shape) - 2


# ---- convolution -------------------------------------------------------------------------------


def _conv_type(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    transposed = ctx.op == "conv_transpose"
    what = "ConvTranspose" if transposed else "Conv"
    dtype = same_dtype(ctx, [0, 1, 2])
    require_dtype(x, "float", f"{what} input")
    g = ctx.attrs["group"]
    if g < 1:
        raise TypeRuleError(f"{what}: group must be positive, got {g}")
    if x.shape is not None and w.shape is not None and len(w.shape) != len(x.shape):
        raise TypeRuleError(f"{what}: weight {fmt(w.shape)} has rank {len(w.shape)}, input {fmt(x.shape)} has rank "
                            f"{len(x.shape)}; they must match")
    k = _spatial_rank(x, what)
    if w.shape is not None and len(w.shape) < 3:
        raise TypeRuleError(f"{what}: weight must be [M, C/group, k1, ...] (rank >= 3), got {fmt(w.shape)}")
    if k is None:
        k = len(w.shape) - 2 if w.shape is not None else None
    if k is None:
        return [TensorType(dtype, None)]
    xs = x.shape or (None,) * (k + 2)
    ws = w.shape or (None,) * (k + 2)
    c = xs[1]
    # Conv weights are [M, C/group, k...]; ConvTranspose weights are [C, M/group, k...].
    if transposed:
        check_dim(ws[0], c, f"ConvTranspose: weight {fmt(w.shape)} does not match the {c} channels of input {fmt(x.shape)}")
        m = dims.mul(ws[1], g)
    else:
        m = ws[0]
        check_dim(dims.mul(ws[1], g), c, f"Conv: input {fmt(x.shape)} has {c} channels, weight {fmt(w.shape)} with "
                                         f"group {g} expects {dims.mul(ws[1], g)}")
        if isinstance(m, int) and m % g:
            raise TypeRuleError(f"Conv: the {m} output channels of weight {fmt(w.shape)} do not split into {g} groups")
    if isinstance(c, int) and c % g:
        raise TypeRuleError(f"{what}: the {c} channels of input {fmt(x.shape)} do not split into {g} groups")
    kernel = ctx.attrs.get("kernel_shape")
    if kernel is not None:
        if len(kernel) != k:
            raise TypeRuleError(f"{what}: kernel_shape {kernel} has {len(kernel)} dims, input {fmt(x.shape)} has {k} spatial dims")
        for a, b in zip(kernel, ws[2:]):
            check_dim(a, b, f"{what}: kernel_shape {kernel} does not match weight {fmt(w.shape)}")
    else:
        kernel = list(ws[2:])
    if ctx.has(2) and ctx.type(2).shape is not None:
        b = ctx.type(2).shape
        if len(b) != 1 or not dims.assume_equal(b[0], m):
            raise TypeRuleError(f"{what}: bias {fmt(b)} must be [M] = [{m}]")
    if any(not isinstance(d, int) for d in kernel):
        return [TensorType(dtype, (xs[0], m) + (None,) * k)]
    win = Window.of(ctx.attrs, kernel, what)
    spatial = [_transposed_out_dim(ctx.attrs, win, i, n) if transposed else win.out_dim(i, n) for i, n in enumerate(xs[2:])]
    return [TensorType(dtype, (xs[0], m, *spatial))]


@defop("conv", onnx="Conv", since=(1, 11, 22), inputs=["X", "W", "B?"],
       attrs={"auto_pad": Str("NOTSET"), "dilations": Ints(None), "group": Int(1), "kernel_shape": Ints(None),
              "pads": Ints(None), "strides": Ints(None)}, infer=_conv_type)
def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, **attrs) -> np.ndarray:
    """Cross-correlation of X [N, C, D...] with W [M, C/group, K...], plus bias B [M]; input and
    output channels are split into `group` independent groups."""
    win = Window.of(attrs, w.shape[2:], "Conv")
    g = attrs["group"]
    wx, ww, wb = widen(x, w, b)
    padded, out, _ = _pad_for(wx, win, 0, "conv")
    n, c = x.shape[:2]
    m = w.shape[0]
    positions = math.prod(out)
    # im2col: cols[n, c, j, p] = the input value kernel offset j meets at output position p.
    offsets = list(itertools.product(*(range(k) for k in win.kernel)))
    check_budget("conv", (n, c, len(offsets), *out))
    cols = np.empty((n, c, len(offsets), *out), dtype=wx.dtype)
    for j, offset in enumerate(offsets):
        cols[:, :, j] = padded[(..., *_slices(win, offset, out))]
    # One batched matmul over (N, group): W_g [M/g, C/g * K] @ cols_g [C/g * K, P].
    y = np.matmul(ww.reshape(g, m // g, -1), cols.reshape(n, g, (c // g) * len(offsets), positions))
    y = y.reshape(n, m, *out)
    if wb is not None:
        y += wb.reshape((m,) + (1,) * len(out))
    return y.astype(x.dtype, copy=False)


def _transposed_geometry(attrs: dict, win: Window, i: int, n: int) -> tuple[int, int]:
    """ConvTranspose output length and begin pad along spatial dim i (input length n)."""
    k = len(win.kernel)
    s, extent = win.strides[i], (win.kernel[i] - 1) * win.dilations[i] + 1
    out_pad = (attrs.get("output_padding") or [0] * k)[i]
    full = s * (n - 1) + out_pad + extent
    shape = attrs.get("output_shape")
    if shape is not None or win.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = shape[-k:][i] if shape is not None else n * s
        total = full - out
        # Python floor division, as the spec's reference does, also for a negative total.
        begin = total // 2 if win.auto_pad == "SAME_UPPER" else total - total // 2
        return out, begin
    begin, end = (0, 0) if win.auto_pad == "VALID" else (win.pads[i], win.pads[i + k])
    return full - begin - end, begin


def _transposed_out_dim(attrs: dict, win: Window, i: int, n: Dim) -> Dim:
    if isinstance(n, int):
        out = _transposed_geometry(attrs, win, i, n)[0]
        if out < 0:
            raise TypeRuleError(f"ConvTranspose: output length {out} along spatial dim {i} is negative")
        return out
    shape = attrs.get("output_shape")
    return shape[-len(win.kernel):][i] if shape is not None else None


@defop("conv_transpose", onnx="ConvTranspose", since=(1, 11, 22), inputs=["X", "W", "B?"],
       attrs={"auto_pad": Str("NOTSET"), "dilations": Ints(None), "group": Int(1), "kernel_shape": Ints(None),
              "output_padding": Ints(None), "output_shape": Ints(None), "pads": Ints(None), "strides": Ints(None)},
       infer=_conv_type)
def conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, **attrs) -> np.ndarray:
    """The gradient of Conv with respect to its input: every input value scatters W [C, M/group, K...]
    times itself into the output, `strides` apart; the full result is then cropped by the pads
    (or to output_shape) and output_padding extends it at the end."""
    win = Window.of(attrs, w.shape[2:], "ConvTranspose")
    g = attrs["group"]
    wx, ww, wb = widen(x, w, b)
    n, c, *spatial = x.shape
    m = w.shape[1] * g
    offsets = list(itertools.product(*(range(k) for k in win.kernel)))
    # col2im: cols[n, g, m, j, p] = W[c, m, j] summed with X[n, c, p] over the group's channels c.
    wt = ww.reshape(g, c // g, (m // g) * len(offsets)).transpose(0, 2, 1)
    cols = np.matmul(wt, wx.reshape(n, g, c // g, -1)).reshape(n, m, len(offsets), *spatial)
    full_shape = [(sp - 1) * s + (k - 1) * d + 1 for sp, s, k, d in zip(spatial, win.strides, win.kernel, win.dilations)]
    geometry = [_transposed_geometry(attrs, win, i, sp) for i, sp in enumerate(spatial)]
    check_budget("conv_transpose", (n, m, *full_shape))
    check_budget("conv_transpose", (n, m, *(out for out, _ in geometry)))  # output_shape comes from the model
    full = np.zeros((n, m, *full_shape), dtype=wx.dtype)
    for j, offset in enumerate(offsets):
        full[(..., *_slices(win, offset, spatial))] += cols[:, :, j]
    # Crop (positive begin pad) or extend with zeros (negative begin pad, output_padding) to the output.
    y = np.zeros((n, m, *(out for out, _ in geometry)), dtype=wx.dtype)
    src, dst = [], []
    for (out, begin), length in zip(geometry, full_shape):
        lo, hi = max(begin, 0), min(begin + out, length)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - begin, max(lo, hi) - begin))
    y[(..., *dst)] = full[(..., *src)]
    if wb is not None:
        y += wb.reshape((m,) + (1,) * len(spatial))
    return y.astype(x.dtype, copy=False)


# ---- pooling -----------------------------------------------------------------------------------


def _pool_type(what: str, dtypes: Sequence[DType] | str = "float"):
    def rule(ctx: InferContext) -> list[TensorType]:
        x = ctx.type(0)
        require_dtype(x, dtypes, f"{what} input")
        k = _spatial_rank(x, what)
        kernel = ctx.attrs["kernel_shape"]
        if k is not None and len(kernel) != k:
            raise TypeRuleError(f"{what}: kernel_shape {kernel} has {len(kernel)} dims, input {fmt(x.shape)} has {k} spatial dims")
        if ctx.attrs.get("p", 1) < 1:
            raise TypeRuleError(f"{what}: p must be positive, got {ctx.attrs['p']}")
        win = Window.of(ctx.attrs, kernel, what)
        if x.shape is None:
            shape = None
        else:
            shape = (*x.shape[:2], *(win.out_dim(i, n) for i, n in enumerate(x.shape[2:])))
        return [TensorType(x.dtype, shape), TensorType(DType.I64, shape)][: ctx.num_outputs]

    return rule


_POOL_ATTRS = {"auto_pad": Str("NOTSET"), "ceil_mode": Int(0), "dilations": Ints(None), "kernel_shape": Ints(),
               "pads": Ints(None), "strides": Ints(None)}


@defop("max_pool", onnx="MaxPool", since=(1, 8, 10, 11, 12, 22), inputs=["X"], outputs=["Y", "Indices?"],
       attrs={**_POOL_ATTRS, "storage_order": Int(0)},
       infer=_pool_type("MaxPool", (DType.F16, DType.BF16, DType.F32, DType.F64, DType.I8, DType.U8)))
def max_pool(x: np.ndarray, *, storage_order: int, **attrs) -> tuple[np.ndarray, np.ndarray]:
    """The maximum of each window (padding never wins). Indices: where each maximum was, as a flat
    index into X (the first one on ties), spatial dims row-major or, with storage_order 1, column-major."""
    win = Window.of(attrs, attrs["kernel_shape"], "MaxPool")
    lowest = -np.inf if x.dtype.kind == "f" or x.dtype.name == "bfloat16" else np.iinfo(x.dtype).min
    padded, out, begins = _pad_for(x, win, lowest, "max_pool")
    y = np.full((*x.shape[:2], *out), lowest, dtype=x.dtype)
    best = np.zeros(y.shape, dtype=np.int64)  # the kernel offset number of each maximum so far
    offsets = list(itertools.product(*(range(k) for k in win.kernel)))
    for j, offset in enumerate(offsets):
        values = padded[(..., *_slices(win, offset, out))]
        better = values > y if j else np.ones(y.shape, dtype=bool)
        y = np.where(better, values, y)
        best = np.where(better, j, best)
    # The input coordinate of the maximum along each spatial dim, then its flat index.
    spatial = x.shape[2:]
    chosen = np.asarray(offsets, dtype=np.int64)[best]  # [..., k]: the kernel offset of each maximum
    index = np.zeros(y.shape, dtype=np.int64)
    stride = 1
    order = range(len(spatial)) if storage_order else reversed(range(len(spatial)))
    for i in order:
        pos = np.arange(out[i]) * win.strides[i] - begins[i]
        coord = pos.reshape((-1,) + (1,) * (len(spatial) - 1 - i)) + chosen[..., i] * win.dilations[i]
        index += coord * stride
        stride *= spatial[i]
    channel = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2] + (1,) * len(spatial))
    return y, index + channel * math.prod(spatial)


def _window_counts(x_shape: Sequence[int], win: Window, out: Sequence[int], begins: Sequence[int],
                   include_pad: bool) -> np.ndarray:
    """How many values each window averages: those inside X, or inside X and its explicit pads."""
    counts = np.ones((), dtype=np.float64)
    for i, n in enumerate(x_shape):
        lo, hi = (-begins[i], n + win.dim(i, n)[2]) if include_pad else (0, n)
        start = np.arange(out[i]) * win.strides[i] - begins[i]
        taps = start[:, None] + np.arange(win.kernel[i]) * win.dilations[i]
        counts = np.multiply.outer(counts, ((taps >= lo) & (taps < hi)).sum(axis=1))
    return counts


def _window_sum(x: np.ndarray, win: Window, op: str) -> tuple[np.ndarray, list[int], list[int]]:
    padded, out, begins = _pad_for(x, win, 0, op)
    total = np.zeros((*x.shape[:2], *out), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in win.kernel)):
        total += padded[(..., *_slices(win, offset, out))]
    return total, out, begins


@defop("average_pool", onnx="AveragePool", since=(7, 10, 11, 19, 22), inputs=["X"],
       attrs={**_POOL_ATTRS, "count_include_pad": Int(0)}, infer=_pool_type("AveragePool"))
def average_pool(x: np.ndarray, *, count_include_pad: int, **attrs) -> np.ndarray:
    """The mean of each window: over the values inside X, or with count_include_pad over the values
    inside X and its explicit pads (pads that ceil_mode adds are never counted)."""
    win = Window.of(attrs, attrs["kernel_shape"], "AveragePool")
    (wx,) = widen(x)
    total, out, begins = _window_sum(wx, win, "average_pool")
    counts = _window_counts(x.shape[2:], win, out, begins, bool(count_include_pad))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / counts.astype(wx.dtype)).astype(x.dtype, copy=False)


@defop("lp_pool", onnx="LpPool", since=(2, 11, 18, 22), inputs=["X"], attrs={**_POOL_ATTRS, "p": Int(2)},
       infer=_pool_type("LpPool"))
def lp_pool(x: np.ndarray, *, p: int, **attrs) -> np.ndarray:
    """(sum |x|^p) ^ (1/p) over each window; padding adds nothing."""
    win = Window.of(attrs, attrs["kernel_shape"], "LpPool")
    (wx,) = widen(x)
    total, _, _ = _window_sum(np.abs(wx) ** p, win, "lp_pool")
    return (total ** (1.0 / p)).astype(x.dtype, copy=False)


def _global_pool_type(what: str, dtypes: Sequence[DType] | str = "float"):
    def rule(ctx: InferContext) -> list[TensorType]:
        x = ctx.type(0)
        require_dtype(x, dtypes, f"{what} input")
        k = _spatial_rank(x, what)
        return [x.with_shape(None if k is None else (*x.shape[:2], *(1,) * k))]  # type: ignore[index]

    return rule


@defop("global_average_pool", onnx="GlobalAveragePool", since=(1, 22), inputs=["X"],
       infer=_global_pool_type("GlobalAveragePool"))
def global_average_pool(x: np.ndarray) -> np.ndarray:
    """The mean over all spatial dims, kept as dims of 1."""
    (wx,) = widen(x)
    return wx.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype, copy=False)


@defop("global_max_pool", onnx="GlobalMaxPool", since=(1, 22), inputs=["X"],
       infer=_global_pool_type("GlobalMaxPool"))
def global_max_pool(x: np.ndarray) -> np.ndarray:
    """The maximum over all spatial dims, kept as dims of 1."""
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@defop("global_lp_pool", onnx="GlobalLpPool", since=(2, 22), inputs=["X"], attrs={"p": Int(2)},
       infer=_global_pool_type("GlobalLpPool"))
def global_lp_pool(x: np.ndarray, *, p: int) -> np.ndarray:
    """(sum |x|^p) ^ (1/p) over all spatial dims, kept as dims of 1."""
    (wx,) = widen(x)
    total = (np.abs(wx) ** p).sum(axis=tuple(range(2, x.ndim)), keepdims=True)
    return (total ** (1.0 / p)).astype(x.dtype, copy=False)


# ---- local response normalization --------------------------------------------------------------


def _lrn_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    require_dtype(x, "float", "LRN input")
    _spatial_rank(x, "LRN")
    if ctx.attrs["size"] < 1:
        raise TypeRuleError(f"LRN: size must be positive, got {ctx.attrs['size']}")
    return [x]


@defop("lrn", onnx="LRN", since=(1, 13), inputs=["X"],
       attrs={"alpha": Float(0.0001), "beta": Float(0.75), "bias": Float(1.0), "size": Int()}, infer=_lrn_type)
def lrn(x: np.ndarray, *, alpha: float, beta: float, bias: float, size: int) -> np.ndarray:
    """x / (bias + alpha / size * square_sum) ^ beta, where square_sum adds x^2 over the channels
    c - floor((size-1)/2) .. c + ceil((size-1)/2) that exist."""
    (wx,) = widen(x)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.pad(wx * wx, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    channels = x.shape[1]
    square_sum = sum(squares[:, i:i + channels] for i in range(size))
    return (wx / (bias + alpha / size * square_sum) ** beta).astype(x.dtype, copy=False)


from . import cnn_resize  # noqa: E402,F401 - registers resize (kept in its own file for length)

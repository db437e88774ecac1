"""Quantization ops: QuantizeLinear / DequantizeLinear (per-tensor, per-axis, blocked), DynamicQuantizeLinear
and the integer matmul and conv ops (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv).

Rounding is half to even (np.rint), results saturate to the target type, NaN quantizes to the type's
minimum (as onnxruntime does). Integer products accumulate exactly in int64 and wrap to int32 where
ONNX's result is int32 ("the accumulation may overflow if and only if in 32 bits").
"""

from __future__ import annotations

import numpy as np

from .. import dims
from ..casts import convert, float_to_int, float_values, int_range, int_values
from ..types import DType, Shape, TensorType
from . import InferContext, Int, Ints, Str, Type, TypeRuleError, defop
from .rules import broadcast_shapes, norm_axis, require_dtype

QUANT_TYPES = (DType.I8, DType.U8, DType.I16, DType.U16, DType.I4, DType.U4, DType.I2, DType.U2)
SCALE_TYPES = (DType.F32, DType.F16, DType.BF16)
INT8_TYPES = (DType.I8, DType.U8)


# ---- shared numerics ------------------------------------------------------------------------


def saturating_cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rounded float values saturated to an integer dtype's range (the float -> int cast of tritc/ir/casts.py),
    except that NaN becomes the range minimum, as onnxruntime quantizes it."""
    to = DType.from_numpy(dtype)
    v = np.asarray(values, dtype=np.float64)
    return float_to_int(np.where(np.isnan(v), float(int_range(to)[0]), v), to)


def check_scale(scale: np.ndarray, what: str) -> None:
    """A scale that is divided by must be positive and finite (tritc refuses the rest: x/0 has no integer)."""
    s = np.asarray(scale, dtype=np.float64)
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        raise ValueError(f"{what} must be positive and finite, got {s[bad].reshape(-1)[0]!r}")


def expand_param(p: np.ndarray, x_shape: tuple[int, ...], axis: int, block_size: int, what: str) -> np.ndarray:
    """A scale or zero point made broadcastable to x: per-tensor, per-axis or blocked."""
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    rank = len(x_shape)
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for x of shape {list(x_shape)}")
    axis %= rank
    if block_size <= 0:
        if p.ndim != 1 or p.shape[0] != x_shape[axis]:
            raise ValueError(f"per-axis {what} of shape {list(p.shape)} does not fit axis {axis} of x {list(x_shape)}")
        return p.reshape([-1 if i == axis else 1 for i in range(rank)])
    blocks = -(-x_shape[axis] // block_size)
    expected = x_shape[:axis] + (blocks,) + x_shape[axis + 1:]
    if p.shape != expected:
        raise ValueError(f"blocked {what} of shape {list(p.shape)} does not fit x {list(x_shape)} with axis {axis} and "
                         f"block_size {block_size} (expected {list(expected)})")
    # Repeat every scale block_size times; the last block may be short (ONNX allows it).
    return np.repeat(p, block_size, axis=axis).take(np.arange(x_shape[axis]), axis=axis)


def _division_dtype(scale: np.ndarray, precision: DType | None) -> np.dtype:
    dt = precision.np_dtype if precision is not None else scale.dtype
    # An integer scale divides exactly enough in float64 (int32 / int32 never mis-rounds a tie there).
    return dt if np.issubdtype(dt, np.floating) or dt == DType.BF16.np_dtype else np.dtype(np.float64)


# ---- type rules -------------------------------------------------------------------------------


def check_quant_params(x: TensorType, scale: TensorType, zero: TensorType | None, axis: int, block_size: int) -> None:
    """Static checks of a scale / zero point against x (HARDENING D.23): shapes, granularity, block size."""
    if block_size < 0:
        raise TypeRuleError(f"block_size must be positive, got {block_size}")
    if zero is not None and scale.shape is not None and zero.shape is not None:
        per_tensor = {(), (1,)}  # a scalar or a one-element vector: the same per-tensor parameter (ONNX's tests mix them)
        same = len(zero.shape) == len(scale.shape) and all(dims.assume_equal(a, b) for a, b in zip(zero.shape, scale.shape))
        same = same or zero.shape in per_tensor and scale.shape in per_tensor
        if not same:
            raise TypeRuleError(f"zero point {zero} must have the shape of the scale {scale}")
    if scale.shape is None or x.shape is None:
        return
    if block_size == 0:
        if len(scale.shape) == 0 or scale.shape == (1,):
            return  # per tensor
        if len(scale.shape) != 1:
            raise TypeRuleError(f"scale {scale} must be a scalar or 1-D (per axis) unless block_size is set")
        ax = norm_axis(axis, len(x.shape))
        if not dims.assume_equal(scale.shape[0], x.shape[ax]):
            raise TypeRuleError(f"per-axis scale {scale} has {scale.shape[0]} elements but axis {axis} of x {x} "
                                f"has {x.shape[ax]}")
        return
    if len(scale.shape) != len(x.shape):
        raise TypeRuleError(f"blocked quantization needs a scale of the rank of x, got scale {scale} for x {x}")
    ax = norm_axis(axis, len(x.shape))
    for i, (d, s) in enumerate(zip(x.shape, scale.shape)):
        if i != ax:
            if not dims.assume_equal(d, s):
                raise TypeRuleError(f"blocked scale {scale} differs from x {x} in dim {i}")
        elif isinstance(d, int) and isinstance(s, int) and s != -(-d // block_size):
            raise TypeRuleError(f"block_size {block_size} cuts axis {axis} of x {x} into {-(-d // block_size)} blocks, "
                                f"but the scale has {s}")


def _check_const_scale(ctx: InferContext, i: int, what: str) -> None:
    c = ctx.const(i)
    if c is not None:
        try:
            check_scale(c, what)
        except ValueError as e:
            raise TypeRuleError(str(e)) from None


def _quantize_type(ctx: InferContext) -> list[TensorType]:
    x, scale = ctx.type(0), ctx.type(1)
    zero = ctx.type(2) if ctx.has(2) else None
    require_dtype(x, (*SCALE_TYPES, DType.I32), "x")
    require_dtype(scale, (*SCALE_TYPES, DType.I32), "y_scale")
    out = ctx.attrs["output_dtype"]
    if zero is not None:
        if out is not None and out != zero.dtype:
            raise TypeRuleError(f"output_dtype {out} differs from the zero point's dtype {zero.dtype}")
        out = zero.dtype
    out = out or DType.U8
    if out not in QUANT_TYPES:
        raise TypeRuleError(f"cannot quantize to {out}: tritc quantizes to {', '.join(map(str, QUANT_TYPES))}")
    if ctx.attrs["precision"] is not None:
        require_dtype(TensorType(ctx.attrs["precision"], ()), (*SCALE_TYPES, DType.I32), "precision")
    check_quant_params(x, scale, zero, ctx.attrs["axis"], ctx.attrs["block_size"])
    _check_const_scale(ctx, 1, "y_scale")
    return [TensorType(out, x.shape)]


def _dequantize_type(ctx: InferContext) -> list[TensorType]:
    x, scale = ctx.type(0), ctx.type(1)
    zero = ctx.type(2) if ctx.has(2) else None
    require_dtype(x, (*QUANT_TYPES, DType.I32), "x")
    require_dtype(scale, SCALE_TYPES, "x_scale")
    if zero is not None and zero.dtype != x.dtype:
        raise TypeRuleError(f"zero point dtype {zero.dtype} differs from x's {x.dtype}")
    out = ctx.attrs["output_dtype"] or scale.dtype
    require_dtype(TensorType(out, ()), SCALE_TYPES, "output_dtype")
    check_quant_params(x, scale, zero, ctx.attrs["axis"], ctx.attrs["block_size"])
    return [TensorType(out, x.shape)]


# ---- QuantizeLinear / DequantizeLinear ---------------------------------------------------------

_QDQ_ATTRS = {"axis": Int(1), "block_size": Int(0), "output_dtype": Type(None)}


@defop("quantize_linear", onnx="QuantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28),
       inputs=["x", "y_scale", "y_zero_point?"], outputs=["y"],
       attrs={**_QDQ_ATTRS, "precision": Type(None), "saturate": Int(1)}, infer=_quantize_type)
def quantize_linear(x: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None = None, *, axis: int,
                    block_size: int, output_dtype: DType | None, precision: DType | None, saturate: int) -> np.ndarray:
    """y = saturate(round_half_even(x / y_scale) + y_zero_point); `saturate` only matters for float8 (not a tritc dtype)."""
    out = y_zero_point.dtype if y_zero_point is not None else (output_dtype or DType.U8).np_dtype
    check_scale(y_scale, "y_scale")
    dt = _division_dtype(y_scale, precision)
    to = DType.from_numpy(dt)
    scale = convert(expand_param(y_scale, x.shape, axis, block_size, "y_scale"), to)
    q = np.rint(float_values(convert(x, to) / scale))
    if y_zero_point is not None:
        q = q + int_values(expand_param(y_zero_point, x.shape, axis, block_size, "y_zero_point"))
    return saturating_cast(q, out)


@defop("dequantize_linear", onnx="DequantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28),
       inputs=["x", "x_scale", "x_zero_point?"], outputs=["y"], attrs=_QDQ_ATTRS, infer=_dequantize_type)
def dequantize_linear(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None = None, *, axis: int,
                      block_size: int, output_dtype: DType | None) -> np.ndarray:
    """y = (x - x_zero_point) * x_scale: the difference is exact, the product float32, then cast to the output type."""
    out = output_dtype.np_dtype if output_dtype is not None else x_scale.dtype
    diff = int_values(x)
    if x_zero_point is not None:
        diff = diff - int_values(expand_param(x_zero_point, x.shape, axis, block_size, "x_zero_point"))
    scale = convert(expand_param(x_scale, x.shape, axis, block_size, "x_scale"), DType.F32)
    return convert(convert(diff, DType.F32) * scale, DType.from_numpy(out))


def _dynamic_quantize_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    require_dtype(x, (DType.F32,), "x")
    return [TensorType(DType.U8, x.shape), TensorType(DType.F32, ()), TensorType(DType.U8, ())]


@defop("dynamic_quantize_linear", onnx="DynamicQuantizeLinear", since=(11,), inputs=["x"],
       outputs=["y", "y_scale", "y_zero_point"], infer=_dynamic_quantize_type)
def dynamic_quantize_linear(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 quantization over the range of x widened to include 0; NaNs are left out of the range."""
    f32 = np.float32
    hi = np.fmax.reduce(x.reshape(-1), initial=f32(0))
    lo = np.fmin.reduce(x.reshape(-1), initial=f32(0))
    # All zeros: a scale of 1 (as onnxruntime gives) rather than 0, whose reciprocal would be infinite.
    scale = f32(1) if hi == lo else f32(hi - lo) / f32(255)
    zero = np.rint(np.clip(f32(0) - lo / scale, f32(0), f32(255)))
    y = saturating_cast(np.rint(x / scale).astype(np.float64) + np.float64(zero), np.dtype(np.uint8))
    return y, np.array(scale, dtype=np.float32), np.array(zero, dtype=np.uint8)


# ---- integer matmul -----------------------------------------------------------------------------


def matmul_shape(a: Shape | None, b: Shape | None) -> Shape | None:
    """numpy.matmul's result shape for possibly symbolic shapes (1-D operands promoted and dropped)."""
    if a is None or b is None:
        return None
    if len(a) == 0 or len(b) == 0:
        raise TypeRuleError("matmul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if not dims.assume_equal(a2[-1], b2[-2]):
        raise TypeRuleError(f"matmul inner dims differ: {a2[-1]} and {b2[-2]} (shapes {list(a)} and {list(b)})")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])  # type: ignore[misc]
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _rows(p: np.ndarray | None, a: np.ndarray) -> np.ndarray | int:
    """A per-tensor or per-row parameter of a matmul's left operand, broadcastable to it."""
    if p is None:
        return 0
    if p.size == 1:
        return p.reshape(())
    return p.reshape(-1, 1) if p.ndim == 1 and a.ndim >= 2 else p


def _cols(p: np.ndarray | None) -> np.ndarray | int:
    """A per-tensor or per-column parameter of a matmul's right operand (1-D runs along the last axis)."""
    if p is None:
        return 0
    return p.reshape(()) if p.size == 1 else p


def _int_matmul(a: np.ndarray, a_zero: np.ndarray | None, b: np.ndarray, b_zero: np.ndarray | None) -> np.ndarray:
    """(a - a_zero) @ (b - b_zero), exact in int64, wrapped to int32 as ONNX's int32 accumulation does."""
    lhs = a.astype(np.int64) - np.asarray(_rows(a_zero, a), dtype=np.int64)
    rhs = b.astype(np.int64) - np.asarray(_cols(b_zero), dtype=np.int64)
    return np.matmul(lhs, rhs).astype(np.int32)


def _matmul_integer_type(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.type(0), ctx.type(1)
    require_dtype(a, INT8_TYPES, "A")
    require_dtype(b, INT8_TYPES, "B")
    for i, name, of in ((2, "a_zero_point", a), (3, "b_zero_point", b)):
        if ctx.has(i) and ctx.type(i).dtype != of.dtype:
            raise TypeRuleError(f"{name} dtype {ctx.type(i).dtype} differs from its operand's {of.dtype}")
    return [TensorType(DType.I32, matmul_shape(a.shape, b.shape))]


@defop("matmul_integer", onnx="MatMulInteger", since=(10,), inputs=["A", "B", "a_zero_point?", "b_zero_point?"],
       infer=_matmul_integer_type)
def matmul_integer(a: np.ndarray, b: np.ndarray, a_zero_point: np.ndarray | None = None,
                   b_zero_point: np.ndarray | None = None) -> np.ndarray:
    """int32 (A - a_zero_point) @ (B - b_zero_point); zero points per tensor, per row of A, per column of B."""
    return _int_matmul(a, a_zero_point, b, b_zero_point)


def _requantize(acc: np.ndarray, multiplier: np.ndarray, y_zero_point: np.ndarray) -> np.ndarray:
    """int32 accumulator * (in_scale * w_scale / y_scale) rounded half to even, plus the zero point, saturated."""
    real = acc.astype(np.float64) * multiplier.astype(np.float64)
    return saturating_cast(np.rint(real) + y_zero_point.astype(np.float64), y_zero_point.dtype)


def _qlinear_matmul_type(ctx: InferContext) -> list[TensorType]:
    a, b, y_zero = ctx.type(0), ctx.type(3), ctx.type(7)
    require_dtype(a, INT8_TYPES, "a")
    require_dtype(b, INT8_TYPES, "b")
    require_dtype(y_zero, INT8_TYPES, "y_zero_point")
    scales = [ctx.type(i) for i in (1, 4, 6)]
    for t, name in zip(scales, ("a_scale", "b_scale", "y_scale")):
        require_dtype(t, SCALE_TYPES, name)
    if len({t.dtype for t in scales}) > 1:
        raise TypeRuleError(f"scales must share one dtype, got {', '.join(str(t.dtype) for t in scales)}")
    for zi, of, name in ((2, a, "a_zero_point"), (5, b, "b_zero_point")):
        if ctx.type(zi).dtype != of.dtype:
            raise TypeRuleError(f"{name} dtype {ctx.type(zi).dtype} differs from its operand's {of.dtype}")
    _check_const_scale(ctx, 6, "y_scale")
    return [TensorType(y_zero.dtype, matmul_shape(a.shape, b.shape))]


@defop("qlinear_matmul", onnx="QLinearMatMul", since=(10, 21),
       inputs=["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"],
       infer=_qlinear_matmul_type)
def qlinear_matmul(a: np.ndarray, a_scale: np.ndarray, a_zero_point: np.ndarray, b: np.ndarray, b_scale: np.ndarray,
                   b_zero_point: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray) -> np.ndarray:
    """Quantized matmul: the int32 product requantized with a_scale * b_scale / y_scale (in the scales' dtype)."""
    check_scale(y_scale, "y_scale")
    acc = _int_matmul(a, a_zero_point, b, b_zero_point)
    multiplier = _rows(a_scale, a) * _cols(b_scale) / y_scale.reshape(())
    return _requantize(acc, np.asarray(multiplier), y_zero_point.reshape(()))


# ---- convolution geometry and an exact N-D conv (shared by ConvInteger and QLinearConv) ----------


def _conv_params(rank: int, kernel: list[int], attrs: dict, in_sizes: list) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and [begin..., end...] pads, resolving auto_pad when the input sizes are known."""
    strides = list(attrs.get("strides") or [1] * rank)
    dilations = list(attrs.get("dilations") or [1] * rank)
    pads = list(attrs.get("pads") or [0] * (2 * rank))
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise TypeRuleError(f"strides {strides}, dilations {dilations} and pads {pads} do not fit {rank} spatial dims")
    if min(strides + dilations) < 1 or min(pads) < 0:
        raise TypeRuleError(f"strides {strides} and dilations {dilations} must be >= 1 and pads {pads} >= 0")
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        pads = [0] * (2 * rank)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for i, size in enumerate(in_sizes):
            if not isinstance(size, int):
                continue
            total = max(0, (-(-size // strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small = total // 2
            pads[i], pads[i + rank] = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
    elif auto_pad != "NOTSET":
        raise TypeRuleError(f"auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got {auto_pad!r}")
    return strides, dilations, pads


def conv_output_shape(x: Shape | None, w: Shape | None, attrs: dict) -> Shape | None:
    """(N, M, out...) of a convolution of x (N, C, in...) with w (M, C/group, k...), symbolic where possible."""
    if x is None and w is None:
        return None
    rank = len(x) if x is not None else len(w)  # type: ignore[arg-type]
    if x is not None and w is not None and len(x) != len(w):
        raise TypeRuleError(f"conv weight rank {len(w)} differs from input rank {len(x)}")
    if rank < 3:
        raise TypeRuleError(f"conv needs rank >= 3 (N, C, spatial...), got rank {rank}")
    group = attrs.get("group", 1)
    if group < 1:
        raise TypeRuleError(f"group must be >= 1, got {group}")
    kernel = attrs.get("kernel_shape")
    if w is not None:
        if kernel is not None and any(not dims.assume_equal(k, d) for k, d in zip(kernel, w[2:])):
            raise TypeRuleError(f"kernel_shape {kernel} differs from the weight's spatial dims {list(w[2:])}")
        if x is not None and isinstance(x[1], int) and isinstance(w[1], int) and x[1] != w[1] * group:
            raise TypeRuleError(f"input has {x[1]} channels but weight expects {w[1]} x group {group}")
        if isinstance(w[0], int) and w[0] % group:
            raise TypeRuleError(f"{w[0]} output channels do not split into {group} groups")
        kernel = kernel or list(w[2:])
    n, m = (x[0] if x is not None else None), (w[0] if w is not None else None)
    if x is None or kernel is None or any(not isinstance(k, int) for k in kernel):
        return (n, m, *[None] * (rank - 2))
    in_sizes = list(x[2:])
    strides, dilations, pads = _conv_params(rank - 2, list(kernel), attrs, in_sizes)
    out: list = []
    for i, size in enumerate(in_sizes):
        span = dilations[i] * (kernel[i] - 1) + 1 - pads[i] - pads[i + rank - 2]
        if isinstance(size, int):
            if size - span < 0:
                raise TypeRuleError(f"conv kernel span {span + pads[i] + pads[i + rank - 2]} exceeds padded input "
                                    f"size {size + pads[i] + pads[i + rank - 2]} in spatial dim {i}")
            out.append((size - span) // strides[i] + 1)
        elif attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER") and strides[i] == 1:
            out.append(size)
        elif strides[i] == 1:
            out.append(dims.add(dims.sub(size, span), 1))
        else:
            out.append(None)
    return (n, m, *out)


def conv_nd(x: np.ndarray, w: np.ndarray, *, group: int, strides: list[int] | None, pads: list[int] | None,
            dilations: list[int] | None, kernel_shape: list[int] | None, auto_pad: str) -> np.ndarray:
    """Direct N-D cross-correlation (ONNX Conv) in x's dtype: one einsum per kernel offset and group."""
    rank = x.ndim - 2
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "auto_pad": auto_pad}
    strides, dilations, pads = _conv_params(rank, list(w.shape[2:]), attrs, list(x.shape[2:]))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)])
    kernel = w.shape[2:]
    out_sizes = [(xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(rank)]
    c_in, m_out = w.shape[1], w.shape[0] // group
    y = np.zeros((x.shape[0], w.shape[0], *out_sizes), dtype=np.result_type(x, w))
    for g in range(group):
        xg = xp[:, g * c_in:(g + 1) * c_in]
        wg = w[g * m_out:(g + 1) * m_out]
        for offset in np.ndindex(*kernel):
            window = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offset, dilations, strides, out_sizes))
            patch = xg[(slice(None), slice(None), *window)]  # (N, C/group, out...)
            y[:, g * m_out:(g + 1) * m_out] += np.einsum("nc...,mc->nm...", patch, wg[(slice(None), slice(None), *offset)])
    return y

# ---- integer conv -------------------------------------------------------------------------------

_CONV_ATTRS = {"auto_pad": Str("NOTSET"), "dilations": Ints(None), "group": Int(1), "kernel_shape": Ints(None),
               "pads": Ints(None), "strides": Ints(None)}


def _conv_integer_type(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    require_dtype(x, INT8_TYPES, "x")
    require_dtype(w, INT8_TYPES, "w")
    for i, name, of in ((2, "x_zero_point", x), (3, "w_zero_point", w)):
        if ctx.has(i) and ctx.type(i).dtype != of.dtype:
            raise TypeRuleError(f"{name} dtype {ctx.type(i).dtype} differs from its operand's {of.dtype}")
    if ctx.has(2):
        _require_one_value(ctx.type(2), "x_zero_point")
    return [TensorType(DType.I32, conv_output_shape(x.shape, w.shape, ctx.attrs))]


def _require_one_value(t: TensorType, what: str) -> None:
    """A per-tensor parameter: a scalar or a one-element tensor."""
    if t.shape is not None and any(isinstance(d, int) and d != 1 for d in t.shape):
        raise TypeRuleError(f"{what} must be a scalar (per tensor), got {t}")


def _per_channel(p: np.ndarray | None, rank: int, what: str, channels: int) -> np.ndarray | int:
    """A per-tensor or per-output-channel parameter, shaped to broadcast over (M, C/group, k...) or (N, M, ...)."""
    if p is None:
        return 0
    if p.size == 1:
        return p.reshape(())
    if p.ndim != 1 or p.shape[0] != channels:
        raise ValueError(f"{what} of shape {list(p.shape)} must be a scalar or have one value per output channel ({channels})")
    return p.reshape([-1] + [1] * (rank - 1))


def _int_conv(x: np.ndarray, x_zero: np.ndarray | None, w: np.ndarray, w_zero: np.ndarray | None,
              bias: np.ndarray | None, attrs: dict) -> np.ndarray:
    if x_zero is not None and x_zero.size != 1:
        raise ValueError(f"x_zero_point must be a scalar (per tensor), got shape {list(x_zero.shape)}")
    xs = x.astype(np.int64) - (0 if x_zero is None else np.int64(x_zero.reshape(())))
    ws = w.astype(np.int64) - np.asarray(_per_channel(w_zero, w.ndim, "w_zero_point", w.shape[0]), dtype=np.int64)
    acc = conv_nd(xs, ws, **attrs)
    if bias is not None:
        acc = acc + bias.astype(np.int64).reshape([1, -1] + [1] * (acc.ndim - 2))
    return acc.astype(np.int32)


@defop("conv_integer", onnx="ConvInteger", since=(10,), inputs=["x", "w", "x_zero_point?", "w_zero_point?"],
       outputs=["y"], attrs=_CONV_ATTRS, infer=_conv_integer_type)
def conv_integer(x: np.ndarray, w: np.ndarray, x_zero_point: np.ndarray | None = None,
                 w_zero_point: np.ndarray | None = None, **attrs: object) -> np.ndarray:
    """int32 convolution of (x - x_zero_point) with (w - w_zero_point); w's zero point per tensor or per output channel."""
    return _int_conv(x, x_zero_point, w, w_zero_point, None, attrs)


def _qlinear_conv_type(ctx: InferContext) -> list[TensorType]:
    x, w, y_zero = ctx.type(0), ctx.type(3), ctx.type(7)
    require_dtype(x, INT8_TYPES, "x")
    require_dtype(w, INT8_TYPES, "w")
    require_dtype(y_zero, INT8_TYPES, "y_zero_point")
    for i, name in ((1, "x_scale"), (4, "w_scale"), (6, "y_scale")):
        require_dtype(ctx.type(i), (DType.F32,), name)
    for zi, of, name in ((2, x, "x_zero_point"), (5, w, "w_zero_point")):
        if ctx.type(zi).dtype != of.dtype:
            raise TypeRuleError(f"{name} dtype {ctx.type(zi).dtype} differs from its operand's {of.dtype}")
    for i, name in ((1, "x_scale"), (2, "x_zero_point"), (6, "y_scale"), (7, "y_zero_point")):
        _require_one_value(ctx.type(i), name)
    if ctx.has(8):
        require_dtype(ctx.type(8), (DType.I32,), "B")
    if w.shape is not None:
        for i, name in ((4, "w_scale"), (5, "w_zero_point")):
            s = ctx.type(i).shape
            if s is not None and len(s) == 1 and s[0] != 1 and not dims.assume_equal(s[0], w.shape[0]):
                raise TypeRuleError(f"{name} has {s[0]} values but w has {w.shape[0]} output channels")
    _check_const_scale(ctx, 6, "y_scale")
    return [TensorType(y_zero.dtype, conv_output_shape(x.shape, w.shape, ctx.attrs))]


@defop("qlinear_conv", onnx="QLinearConv", since=(10,),
       inputs=["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "B?"],
       outputs=["y"], attrs=_CONV_ATTRS, infer=_qlinear_conv_type)
def qlinear_conv(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray, w: np.ndarray, w_scale: np.ndarray,
                 w_zero_point: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray, b: np.ndarray | None = None,
                 **attrs: object) -> np.ndarray:
    """Quantized conv: int32 accumulation (+ int32 bias), requantized per tensor or per output channel."""
    check_scale(y_scale, "y_scale")
    acc = _int_conv(x, x_zero_point, w, w_zero_point, b, attrs)
    w_s = _per_channel(w_scale, acc.ndim - 1, "w_scale", w.shape[0])
    multiplier = x_scale.reshape(()) * w_s / y_scale.reshape(())
    return _requantize(acc, np.asarray(multiplier), y_zero_point.reshape(()))

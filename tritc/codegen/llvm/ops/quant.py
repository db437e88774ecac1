"""Lowerings of the quantization ops: QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked),
DynamicQuantizeLinear, and the integer matmul and conv ops (MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv).

Integer results match tritc/ir/ops/quant.py bit for bit: round half to even (llvm.roundeven), saturation with
NaN -> the range minimum, int32 accumulation that wraps like the interpreter's int64 -> int32 cast, and the
requantization multiplier applied in float64. The float helpers at the top are shared with attention and qonnx.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import llvmlite.ir as ir
import numpy as np

from ....errors import UnsupportedError
from ....ir.accumulators import Span, check_int32_sum, product_range
from ....ir.casts import int_range
from ....ir.ops.quant import _conv_params
from ....ir.types import DType
from ..builder import (
    F16,
    F32,
    F64,
    I32,
    I64,
    broadcast_strides,
    contiguous_strides,
    for_nest,
    for_range,
    gep,
    intrinsic,
    linear_index,
    load,
    suffix,
)
from ..context import Buf, NodeCtx
from ..elementwise import to_compute, to_storage
from ..kernels.vec import entry_alloca
from . import lowering
from .elementwise_cast import convert

# ---- float helpers: values live in their dtype's compute type (half, f32, f64; bf16 as a rounded f32) ----------


def ftype(dtype: DType) -> ir.Type:
    """The LLVM type a float dtype is computed in (bf16 in f32, rounded back after every operation)."""
    return {DType.F16: F16, DType.F64: F64}.get(dtype, F32)


def fix(b: ir.IRBuilder, v: ir.Value, dtype: DType) -> ir.Value:
    """v (any float compute type) rounded once to dtype's precision, in dtype's compute type: for a v already of
    that type a no-op except for bf16, which is computed in f32."""
    return convert(b, v, _FLOAT_OF[v.type], dtype)


def fcast(b: ir.IRBuilder, v: ir.Value, src: DType, dst: DType) -> ir.Value:
    """A value held in src's compute type (ints as iN) cast to the float dtype dst, in dst's compute type."""
    return convert(b, v, src, dst)


_FLOAT_OF = {F16: DType.F16, F32: DType.F32, F64: DType.F64}


def _width(t: ir.Type) -> int:
    return {F16: 16, F32: 32, F64: 64}[t]


def widen(b: ir.IRBuilder, v: ir.Value, t: ir.Type) -> ir.Value:
    """A float compute value converted (exactly when widening) to the float type t."""
    if v.type == t:
        return v
    return b.fpext(v, t) if _width(v.type) < _width(t) else b.fptrunc(v, t)


def load_f(b: ir.IRBuilder, buf: Buf, index: ir.Value | int, dst: DType) -> ir.Value:
    """Element `index` of buf as numpy's buf.astype(dst), in dst's compute type."""
    raw = load(b, buf.ptr, index, buf.elem)
    return fcast(b, to_compute(b, raw, buf.dtype), buf.dtype, dst)


def store_f(b: ir.IRBuilder, v: ir.Value, buf: Buf, index: ir.Value | int) -> None:
    """Store a float value (any float compute type) into buf, rounded to buf's dtype."""
    b.store(to_storage(b, fix(b, v, buf.dtype), buf.dtype), gep(b, buf.ptr, index, buf.elem))


def load_i32(b: ir.IRBuilder, buf: Buf, index: ir.Value | int) -> ir.Value:
    """A 2/4/8/16/32-bit integer element widened to i32 (sign- or zero-extended by its dtype)."""
    raw = to_compute(b, load(b, buf.ptr, index, buf.elem), buf.dtype)
    if raw.type == I32:
        return raw
    return b.sext(raw, I32) if buf.dtype.is_signed else b.zext(raw, I32)


def call(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """An LLVM intrinsic overloaded on its first operand: call(b, "llvm.roundeven", x)."""
    return intrinsic(b, f"{name}.{suffix(args[0].type)}", args[0].type, list(args))


def saturate(b: ir.IRBuilder, v: ir.Value, out: DType) -> ir.Value:
    """An integral float (or NaN / inf) saturated to out's range, as out's storage integer: the float -> int cast,
    except that NaN becomes the minimum (the interpreter's saturating_cast)."""
    lowest = ir.Constant(v.type, float(int_range(out)[0]))
    v = b.select(b.fcmp_unordered("uno", v, v), lowest, v)
    return to_storage(b, convert(b, v, _FLOAT_OF[v.type], out), out)


def requantize(b: ir.IRBuilder, acc: ir.Value, multiplier: ir.Value, zero: ir.Value, out: DType) -> ir.Value:
    """saturate(rint(f64(acc) * multiplier) + zero): int32 accumulator back to out (multiplier, zero in f64)."""
    real = b.fmul(b.sitofp(acc, F64), multiplier)
    return saturate(b, b.fadd(call(b, "llvm.roundeven", real), zero), out)


def scratch(b: ir.IRBuilder, t: ir.Type, n: int, name: str) -> ir.Value:
    """A stack array of n elements of t (n >= 1), allocated once in the function's entry block."""
    return entry_alloca(b, ir.ArrayType(t, max(n, 1)), name)


# ---- QuantizeLinear / DequantizeLinear ------------------------------------------------------------------------


def _qdq_loop(ctx: NodeCtx, x: Buf, param: Buf, body: Callable[[ir.Value, ir.Value], None]) -> None:
    """body(x_index, param_index) over x, with the scale / zero point laid out per tensor, per axis or blocked
    (tritc.ir.ops.quant.expand_param decides the same way)."""
    b, a = ctx.b, ctx.attrs
    shape, p = x.shape, param.shape
    if x.numel == 0:
        return
    if param.numel == 1 and len(p) <= 1:
        with for_range(b, x.numel, name="e") as i:
            body(i, I64(0))
        return
    rank, axis, block = len(shape), a["axis"], a["block_size"]
    if not -rank <= axis < rank:
        raise UnsupportedError(f"node {ctx.node.describe()}: axis {axis} is out of range for x {list(shape)}")
    axis %= rank
    outer, length, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    blocks = -(-length // block) if block > 0 else 0
    expected = (length,) if block <= 0 else (*shape[:axis], blocks, *shape[axis + 1:])
    if tuple(p) != expected:
        raise UnsupportedError(f"node {ctx.node.describe()}: scale / zero point of shape {list(p)} does not fit x "
                               f"{list(shape)} (axis {axis}, block_size {block})")
    with for_range(b, outer, name="o") as o:
        with for_range(b, length, name="a") as ai:
            base = b.mul(b.add(b.mul(o, I64(length)), ai), I64(inner))
            if block <= 0:
                with for_range(b, inner, name="e") as i:
                    body(b.add(base, i), ai)
            else:
                pbase = b.mul(b.add(b.mul(o, I64(blocks)), b.udiv(ai, I64(block))), I64(inner))
                with for_range(b, inner, name="e") as i:
                    body(b.add(base, i), b.add(pbase, i))


def _division_dtype(scale: DType, precision: DType | None) -> DType:
    dt = precision or scale
    return dt if dt.is_float else DType.F64  # an integer scale divides in float64 (see the interpreter)


@lowering("quantize_linear")
def quantize_linear(ctx: NodeCtx) -> None:
    b, x, scale, zero, y = ctx.b, ctx.ins[0], ctx.ins[1], ctx.ins[2] if len(ctx.ins) > 2 else None, ctx.outs[0]
    assert x is not None and scale is not None
    dt = _division_dtype(scale.dtype, ctx.attrs["precision"])
    # The rounded quotient is an integer-valued float; adding a 16-bit zero point to it is exact in f32
    # whenever the sum is inside the target range (larger values saturate either way), so f32 suffices.
    wide = F64 if dt is DType.F64 else F32

    def body(i: ir.Value, p: ir.Value) -> None:
        q = fix(b, b.fdiv(load_f(b, x, i, dt), load_f(b, scale, p, dt)), dt)
        r = widen(b, call(b, "llvm.roundeven", q), wide)
        if zero is not None:
            r = b.fadd(r, b.sitofp(load_i32(b, zero, p), wide))
        b.store(saturate(b, r, y.dtype), gep(b, y.ptr, i, y.elem))

    _qdq_loop(ctx, x, scale, body)


@lowering("dequantize_linear")
def dequantize_linear(ctx: NodeCtx) -> None:
    b, x, scale, zero, y = ctx.b, ctx.ins[0], ctx.ins[1], ctx.ins[2] if len(ctx.ins) > 2 else None, ctx.outs[0]
    assert x is not None and scale is not None
    it = I64 if x.dtype is DType.I32 else I32  # (x - zero) is exact in int64 for int32 x

    def value(buf: Buf, i: ir.Value) -> ir.Value:
        v = load_i32(b, buf, i)
        return b.sext(v, I64) if it == I64 else v

    def body(i: ir.Value, p: ir.Value) -> None:
        diff = value(x, i) if zero is None else b.sub(value(x, i), value(zero, p))
        store_f(b, b.fmul(b.sitofp(diff, F32), load_f(b, scale, p, DType.F32)), y, i)

    _qdq_loop(ctx, x, scale, body)


@lowering("dynamic_quantize_linear")
def dynamic_quantize_linear(ctx: NodeCtx) -> None:
    b, x = ctx.b, ctx.ins[0]
    y, y_scale, y_zero = ctx.outs
    assert x is not None
    zero_f, one = ir.Constant(F32, 0.0), ir.Constant(F32, 1.0)
    hi_slot, lo_slot = entry_alloca(b, F32, "hi"), entry_alloca(b, F32, "lo")
    b.store(zero_f, hi_slot)
    b.store(zero_f, lo_slot)
    with for_range(b, x.numel, name="r") as i:  # fmax / fmin (maxnum / minnum) skip NaNs, as numpy's do
        v = load(b, x.ptr, i, F32)
        b.store(call(b, "llvm.maxnum", b.load(hi_slot, typ=F32), v), hi_slot)
        b.store(call(b, "llvm.minnum", b.load(lo_slot, typ=F32), v), lo_slot)
    hi, lo = b.load(hi_slot, typ=F32), b.load(lo_slot, typ=F32)
    scale = b.select(b.fcmp_ordered("==", hi, lo), one, b.fdiv(b.fsub(hi, lo), ir.Constant(F32, 255.0)))
    z = b.fsub(zero_f, b.fdiv(lo, scale))
    z = b.select(b.fcmp_ordered("<", z, zero_f), zero_f, z)
    z = b.select(b.fcmp_ordered(">", z, ir.Constant(F32, 255.0)), ir.Constant(F32, 255.0), z)
    z = call(b, "llvm.roundeven", b.select(b.fcmp_unordered("uno", z, z), zero_f, z))
    b.store(scale, y_scale.ptr)
    b.store(b.trunc(b.fptoui(z, I32), y_zero.elem), y_zero.ptr)
    with for_range(b, x.numel, name="e") as i:
        q = call(b, "llvm.roundeven", b.fdiv(load(b, x.ptr, i, F32), scale))
        b.store(saturate(b, b.fadd(q, z), DType.U8), gep(b, y.ptr, i, y.elem))


# ---- integer matmul ---------------------------------------------------------------------------------------------


def _fit(ctx: NodeCtx, small: Sequence[int], big: Sequence[int], what: str) -> list[int]:
    """Strides of a tensor of shape `small` read at the indices of `big` (numpy broadcasting, no growth)."""
    if len(small) > len(big) or any(s not in (1, d) for s, d in zip(small[::-1], big[::-1])):
        raise UnsupportedError(f"node {ctx.node.describe()}: {what} of shape {list(small)} does not broadcast to "
                               f"{list(big)}")
    return broadcast_strides(small, big)


class _MatmulView:
    """Where element (batch..., m, k) of A (or (batch..., k, n) of B, or a parameter read at those places) lives:
    1-D operands are promoted as numpy.matmul does, size-1 and missing batch dims broadcast."""

    def __init__(self, shape: Sequence[int], strides: Sequence[int], lhs: bool, batch: Sequence[int]):
        if len(shape) == 1:
            shape, strides = ((1, shape[0]), (0, strides[0])) if lhs else ((shape[0], 1), (strides[0], 0))
        own = list(zip(shape[:-2], strides[:-2]))
        pad = len(batch) - len(own)
        self.batch = [0 if d < pad or own[d - pad][0] == 1 else own[d - pad][1] for d in range(len(batch))]
        self.row, self.col = strides[-2], strides[-1]

    def at(self, b: ir.IRBuilder, bidx: Sequence[ir.Value], i: ir.Value, j: ir.Value) -> ir.Value:
        return b.add(linear_index(b, bidx, self.batch), linear_index(b, [i, j], [self.row, self.col]))


def _zero_point_view(ctx: NodeCtx, p: Buf | None, operand: Buf, lhs: bool, batch: Sequence[int]) -> _MatmulView | None:
    """A zero point read at the operand's places: per tensor, per row of A (1-D), per column of B, or broadcast."""
    if p is None:
        return None
    shape = p.shape
    if p.numel == 1:
        shape = ()
    elif lhs and len(p.shape) == 1 and len(operand.shape) >= 2:
        shape = (p.shape[0], 1)
    strides = _fit(ctx, shape, operand.shape, "zero point")
    return _MatmulView(operand.shape, strides, lhs, batch)


def _matmul_geometry(a: Buf, bm: Buf) -> tuple[list[int], int, int, int]:
    a2 = (1, *a.shape) if a.rank == 1 else a.shape
    b2 = (*bm.shape, 1) if bm.rank == 1 else bm.shape
    batch = list(np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2])))
    return batch, a2[-2], a2[-1], b2[-1]


def operand_span(ctx: NodeCtx, i: int, zero: int | None) -> Span:
    """What operand i less its zero point (operand `zero`) may be: a constant's range when it is one (a weight), else
    its dtype's range."""
    def values(j: int) -> tuple[int, int]:
        v = ctx.node.inputs[j]
        c = ctx.m.graph.const_value(v)  # (not ctx.const: the code does not depend on the value, only this check)
        if isinstance(c, np.ndarray) and c.size:
            return int(c.min()), int(c.max())
        return int_range(v.type.dtype)

    z = ctx.ins[zero] if zero is not None and len(ctx.ins) > zero else None
    return Span.of(values(i), values(zero) if z is not None else (0, 0))  # type: ignore[arg-type]


def check_accumulator(ctx: NodeCtx, k: int, a: int, a_zero: int | None, w: int, w_zero: int | None,
                      bias: int | None = None) -> None:
    """The int32 accumulator of this node cannot wrap: else ResourceLimitError naming the node, K and the bound
    (docs/INTEGER.md). Shapes are static here (these lowerings are not symbolic)."""
    b_range = (0, 0)
    if bias is not None and len(ctx.ins) > bias and ctx.ins[bias] is not None:
        c = ctx.m.graph.const_value(ctx.node.inputs[bias])
        b_range = (int(c.min()), int(c.max())) if isinstance(c, np.ndarray) and c.size else (0, 0)
    check_int32_sum(f"node {ctx.node.describe()}", k, product_range(operand_span(ctx, a, a_zero),
                                                                   operand_span(ctx, w, w_zero)), b_range)


def _int_matmul(ctx: NodeCtx, a: Buf, za: Buf | None, bm: Buf, zb: Buf | None,
                finish: Callable[[list[ir.Value], ir.Value, ir.Value, ir.Value, ir.Value, ir.Value], None]) -> None:
    """acc[n] = sum_k (a[m,k] - za) * (b[k,n] - zb) in wrapping i32, one row tile of columns [n0, n0 + width) at
    a time; finish(batch_index, m, n0, width, acc_ptr, out_row_base) consumes each tile."""
    b = ctx.b
    batch, m_len, k_len, n_len = _matmul_geometry(a, bm)
    if ctx.outs[0].numel == 0:
        return
    va, vb = _MatmulView(a.shape, a.strides, True, batch), _MatmulView(bm.shape, bm.strides, False, batch)
    vza, vzb = _zero_point_view(ctx, za, a, True, batch), _zero_point_view(ctx, zb, bm, False, batch)
    tile = min(n_len, 1024)
    acc = scratch(b, I32, tile, "acc")
    zero = ir.Constant(I32, 0)
    with for_nest(b, batch, name="bt") as bidx:
        flat = linear_index(b, bidx, contiguous_strides(batch))
        with for_range(b, m_len, name="m") as m:
            row = b.mul(b.add(b.mul(flat, I64(m_len)), m), I64(n_len))
            with for_range(b, n_len, step=tile, name="n0") as n0:
                width = b.select(b.icmp_signed("<", b.sub(I64(n_len), n0), I64(tile)), b.sub(I64(n_len), n0), I64(tile))
                with for_range(b, width, name="z") as n:
                    b.store(zero, gep(b, acc, n, I32))
                with for_range(b, k_len, name="k") as k:
                    av = load_i32(b, a, va.at(b, bidx, m, k))
                    if vza is not None:
                        av = b.sub(av, load_i32(b, za, vza.at(b, bidx, m, k)))
                    with for_range(b, width, name="n") as n:
                        col = b.add(n0, n)
                        bv = load_i32(b, bm, vb.at(b, bidx, k, col))
                        if vzb is not None:
                            bv = b.sub(bv, load_i32(b, zb, vzb.at(b, bidx, k, col)))
                        slot = gep(b, acc, n, I32)
                        b.store(b.add(b.load(slot, typ=I32), b.mul(av, bv)), slot)  # wraps, like the int32 cast
                finish(bidx, m, n0, width, acc, row)


@lowering("matmul_integer")
def matmul_integer(ctx: NodeCtx) -> None:
    a, bm = ctx.ins[0], ctx.ins[1]
    za, zb = (ctx.ins[i] if len(ctx.ins) > i else None for i in (2, 3))
    out, b = ctx.outs[0], ctx.b
    assert a is not None and bm is not None

    def finish(bidx, m, n0, width, acc, row) -> None:
        with for_range(b, width, name="s") as n:
            b.store(load(b, acc, n, I32), gep(b, out.ptr, b.add(row, b.add(n0, n)), I32))

    check_accumulator(ctx, _matmul_geometry(a, bm)[2], 0, 2, 1, 3)
    _int_matmul(ctx, a, za, bm, zb, finish)


@lowering("qlinear_matmul")
def qlinear_matmul(ctx: NodeCtx) -> None:
    a, a_scale, za, bm, b_scale, zb, y_scale, y_zero = ctx.ins
    out, b = ctx.outs[0], ctx.b
    assert a is not None and bm is not None and a_scale is not None and b_scale is not None and y_scale is not None
    assert y_zero is not None
    sdt = a_scale.dtype
    batch, _, _, _ = _matmul_geometry(a, bm)
    # multiplier = rows(a_scale) * cols(b_scale) / y_scale, in the scales' dtype, broadcast to the result
    a_shape = () if a_scale.numel == 1 else ((a_scale.shape[0], 1) if a_scale.rank == 1 and a.rank >= 2 else a_scale.shape)
    b_shape = () if b_scale.numel == 1 else b_scale.shape

    def view(shape: Sequence[int]) -> _MatmulView:
        strides = _fit(ctx, shape, out.shape, "scale")
        o_shape = list(out.shape)
        if a.rank == 1:  # the result has no row dim: give it a broadcast one back
            o_shape.insert(len(o_shape) - (0 if bm.rank == 1 else 1), 1)
            strides.insert(len(strides) - (0 if bm.rank == 1 else 1), 0)
        if bm.rank == 1:
            o_shape.append(1)
            strides.append(0)
        return _MatmulView(o_shape, strides, True, batch)

    sa, sb = view(a_shape), view(b_shape)
    ys = load_f(b, y_scale, 0, sdt)
    yz = b.sitofp(load_i32(b, y_zero, 0), F64)

    def finish(bidx, m, n0, width, acc, row) -> None:
        with for_range(b, width, name="q") as n:
            col = b.add(n0, n)
            mult = fix(b, b.fmul(load_f(b, a_scale, sa.at(b, bidx, m, col), sdt), load_f(b, b_scale, sb.at(b, bidx, m, col), sdt)), sdt)
            mult = widen(b, fix(b, b.fdiv(mult, ys), sdt), F64)
            q = requantize(b, load(b, acc, n, I32), mult, yz, out.dtype)
            b.store(q, gep(b, out.ptr, b.add(row, col), out.elem))

    check_accumulator(ctx, _matmul_geometry(a, bm)[2], 0, 2, 3, 5)
    _int_matmul(ctx, a, za, bm, zb, finish)


# ---- integer convolution ----------------------------------------------------------------------------------------


def _int_conv(ctx: NodeCtx, x: Buf, xz: Buf | None, w: Buf, wz: Buf | None,
              finish: Callable[[ir.Value, ir.Value, ir.Value, ir.Value], None]) -> None:
    """Direct convolution in wrapping i32, one output row (the last spatial dim) at a time:
    acc[ow] = sum_{kernel offset, c} (x[...] - xz) * (w[m, c, offset] - wz[m]); padded places add nothing.
    finish(m, out_row_base, acc_ptr, n) consumes each row. The valid output range of every kernel offset is a
    compile-time table (shapes are static), so the inner loop over ow has no bounds checks."""
    b, out = ctx.b, ctx.outs[0]
    if out.numel == 0:
        return
    n_len, c_len, in_sizes = x.shape[0], x.shape[1], list(x.shape[2:])
    m_len, cg, kernel = w.shape[0], w.shape[1], list(w.shape[2:])
    out_sizes, rank, group = list(out.shape[2:]), len(kernel), ctx.attrs["group"]
    if wz is not None and wz.numel not in (1, m_len):
        raise UnsupportedError(f"node {ctx.node.describe()}: w_zero_point of shape {list(wz.shape)} must be a scalar "
                               f"or have one value per output channel ({m_len})")
    strides, dilations, pads = _conv_params(rank, kernel, dict(ctx.attrs), in_sizes)
    offsets = list(np.ndindex(*kernel))
    # per kernel offset r and spatial dim i: input index = o * stride + koff, valid for lo <= o < hi
    koff = np.array([[k[i] * dilations[i] - pads[i] for i in range(rank)] for k in offsets], dtype=np.int64).reshape(-1, rank)
    lo = np.clip(-(koff // np.array(strides)), 0, out_sizes)  # ceil(-koff / s)
    hi = np.clip(-((koff - np.array(in_sizes)) // np.array(strides)), lo, out_sizes)  # ceil((size - koff) / s)
    tables = [ctx.global_array(t.reshape(-1), name) for t, name in ((koff, "koff"), (lo, "lo"), (hi, "hi"))]
    in_strides, out_plane, in_plane = contiguous_strides(in_sizes), int(np.prod(out_sizes)), int(np.prod(in_sizes))
    width, m_group = out_sizes[-1], m_len // group
    acc = scratch(b, I32, width, "acc")
    xzero = load_i32(b, xz, 0) if xz is not None else ir.Constant(I32, 0)
    zero = ir.Constant(I32, 0)

    def table(t: int, r: ir.Value, i: int) -> ir.Value:
        return load(b, tables[t], b.add(b.mul(r, I64(rank)), I64(i)), I64)

    with for_range(b, n_len, name="n") as n, for_range(b, m_len, name="m") as m:
        x_group = b.mul(b.add(b.mul(n, I64(c_len)), b.mul(b.udiv(m, I64(m_group)), I64(cg))), I64(in_plane))
        wzero = load_i32(b, wz, m if wz.numel > 1 else 0) if wz is not None else zero
        out_base = b.mul(b.add(b.mul(n, I64(m_len)), m), I64(out_plane))
        with for_nest(b, out_sizes[:-1], name="p") as pos:
            with for_range(b, width, name="z") as ow:
                b.store(zero, gep(b, acc, ow, I32))
            with for_range(b, len(offsets), name="r") as r:
                x_row = x_group
                ok = ir.Constant(ir.IntType(1), 1)
                for i, o in enumerate(pos):  # the outer spatial dims of this offset: in range or skipped
                    ok = b.and_(ok, b.and_(b.icmp_signed(">=", o, table(1, r, i)), b.icmp_signed("<", o, table(2, r, i))))
                    x_row = b.add(x_row, b.mul(b.add(b.mul(o, I64(strides[i])), table(0, r, i)), I64(in_strides[i])))
                with b.if_then(ok):
                    last = rank - 1
                    x_row = b.add(x_row, table(0, r, last))
                    lo_w, hi_w = table(1, r, last), table(2, r, last)
                    with for_range(b, cg, name="c") as c:
                        wv = b.sub(load_i32(b, w, b.add(b.mul(b.add(b.mul(m, I64(cg)), c), I64(len(offsets))), r)), wzero)
                        x_c = b.add(x_row, b.mul(c, I64(in_plane)))
                        with for_range(b, hi_w, start=lo_w, name="ow") as ow:
                            xv = b.sub(load_i32(b, x, b.add(x_c, b.mul(ow, I64(strides[last])))), xzero)
                            slot = gep(b, acc, ow, I32)
                            b.store(b.add(b.load(slot, typ=I32), b.mul(xv, wv)), slot)
            finish(m, b.add(out_base, linear_index(b, pos, contiguous_strides(out_sizes)[:-1])), acc, n)


def conv_k(w: Buf) -> int:
    """The products one output of a conv sums: input channels per group times the kernel's size."""
    return int(np.prod(w.shape[1:]))


def _per_channel(ctx: NodeCtx, p: Buf | None, channels: int, what: str) -> Callable[[ir.Value], ir.Value] | None:
    """The index of an output channel's value in a per-tensor or per-channel parameter."""
    if p is None:
        return None
    if p.numel != 1 and p.numel != channels:
        raise UnsupportedError(f"node {ctx.node.describe()}: {what} of shape {list(p.shape)} must be a scalar or have "
                               f"one value per output channel ({channels})")
    return (lambda m: I64(0)) if p.numel == 1 else (lambda m: m)


@lowering("conv_integer")
def conv_integer(ctx: NodeCtx) -> None:
    x, w = ctx.ins[0], ctx.ins[1]
    xz, wz = (ctx.ins[i] if len(ctx.ins) > i else None for i in (2, 3))
    out, b = ctx.outs[0], ctx.b
    assert x is not None and w is not None

    def finish(m, row, acc, n) -> None:
        with for_range(b, out.shape[-1], name="s") as ow:
            b.store(load(b, acc, ow, I32), gep(b, out.ptr, b.add(row, ow), I32))

    check_accumulator(ctx, conv_k(w), 0, 2, 1, 3)
    _int_conv(ctx, x, xz, w, wz, finish)


@lowering("qlinear_conv")
def qlinear_conv(ctx: NodeCtx) -> None:
    x, x_scale, xz, w, w_scale, wz, y_scale, y_zero = ctx.ins[:8]
    bias = ctx.ins[8] if len(ctx.ins) > 8 else None
    out, b = ctx.outs[0], ctx.b
    assert x is not None and w is not None and x_scale is not None and w_scale is not None and y_scale is not None
    assert y_zero is not None
    m_len = w.shape[0]
    ws_at = _per_channel(ctx, w_scale, m_len, "w_scale")
    bias_at = _per_channel(ctx, bias, m_len, "B")
    xs, ys = load(b, x_scale.ptr, 0, F32), load(b, y_scale.ptr, 0, F32)
    yz = b.sitofp(load_i32(b, y_zero, 0), F64)

    def finish(m, row, acc, n) -> None:
        assert ws_at is not None
        mult = b.fpext(b.fdiv(b.fmul(xs, load(b, w_scale.ptr, ws_at(m), F32)), ys), F64)
        add = load(b, bias.ptr, bias_at(m), I32) if bias is not None and bias_at is not None else ir.Constant(I32, 0)
        with for_range(b, out.shape[-1], name="q") as ow:
            q = requantize(b, b.add(load(b, acc, ow, I32), add), mult, yz, out.dtype)
            b.store(q, gep(b, out.ptr, b.add(row, ow), out.elem))

    check_accumulator(ctx, conv_k(w), 0, 2, 3, 5, bias=8)
    _int_conv(ctx, x, xz, w, wz, finish)

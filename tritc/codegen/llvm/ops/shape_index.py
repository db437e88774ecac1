"""Lowerings of the shape-family ops that index or generate: gather, gather_elements, gather_nd, scatter_nd,
scatter_elements, one_hot, reverse_sequence; shape, size, range, constant_of_shape, eye_like, trilu.

Indices are data, read at run time. Negative indices wrap as in the interpreter. An index still outside
[0, dim) after wrapping (the interpreter raises) is clamped into range here: compiled code has no
error channel per element, and clamping keeps every access inside the buffers. Sequence lengths of
reverse_sequence are clamped to [0, time] likewise. one_hot needs no clamping: out-of-range indices
match no class, exactly as in the interpreter. Shapes are static, so shape/size/range results are
computed at compile time (range with the interpreter's own numpy semantics) and written as constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.ops import OPS
from ....ir.types import DType
from ..builder import F32, I64, for_nest, for_range, gep, intrinsic
from ..context import Buf, NodeCtx
from ..elementwise import compute_type, to_compute, to_storage
from ..symbolic import Size, is_static
from .shape import Axis, emit_copy, fill, ints, memcpy, memset, out_of_line, raw_bits, raw_type


def load_index(b: ir.IRBuilder, buf: Buf, i: ir.Value) -> ir.Value:
    """Element i of an index tensor of any numeric dtype as i64 (floats truncate toward 0, as numpy's
    astype(int64); NaN becomes INT64_MIN so it matches nothing)."""
    raw = b.load(gep(b, buf.ptr, i, buf.elem), typ=buf.elem)
    dt = buf.dtype
    if dt.is_float:
        x = to_compute(b, raw, dt)
        if isinstance(x.type, ir.HalfType):
            x = b.fpext(x, F32)
        name = "llvm.fptosi.sat.i64." + ("f64" if isinstance(x.type, ir.DoubleType) else "f32")
        v = intrinsic(b, name, I64, [x])
        return b.select(b.fcmp_unordered("uno", x, x), I64(-(2**63)), v)
    if raw.type.width == 64:
        return raw
    return b.sext(raw, I64) if dt.is_signed else b.zext(raw, I64)


def wrap_clamp(b: ir.IRBuilder, k: ir.Value, n: Size) -> ir.Value:
    """A negative index counts from the back; then clamp into [0, n - 1]."""
    k = b.select(b.icmp_signed("<", k, I64(0)), b.add(k, I64(n)), k)
    k = b.select(b.icmp_signed("<", k, I64(0)), I64(0), k)
    return b.select(b.icmp_signed(">", k, I64(n - 1)), I64(n - 1), k)


def _data(ctx: NodeCtx, i: int) -> Buf:
    buf = ctx.ins[i]
    assert buf is not None
    return buf


# ---- gather family --------------------------------------------------------------------------------


def empty_guard(ctx: NodeCtx, dims: Sequence[Size], dst: Buf, body: Callable[[], None]) -> None:
    """body(), except when one of `dims` (the indexed data dims) is 0: then only invalid indices exist (the
    interpreter raises) and dst is zeros. Static dims decide now; symbolic ones at run time."""
    if any(is_static(d) and d == 0 for d in dims):
        fill(ctx, dst.ptr, dst.numel, 0, dst.dtype.itemsize)
        return
    dynamic = [d for d in dims if not is_static(d)]
    if not dynamic:
        body()
        return
    b = ctx.b
    zero = b.icmp_signed("<=", dynamic[0], I64(0))
    for d in dynamic[1:]:
        zero = b.or_(zero, b.icmp_signed("<=", d, I64(0)))
    with b.if_else(zero, likely=False) as (empty, full):
        with empty:
            fill(ctx, dst.ptr, dst.numel, 0, dst.dtype.itemsize)
        with full:
            body()


@out_of_line("gather", symbolic=True)
def gather(ctx: NodeCtx) -> None:
    data, dst = _data(ctx, 0), ctx.outs[0]
    axis = ctx.attrs["axis"] % data.rank
    empty_guard(ctx, [data.shape[axis]], dst, lambda: _gather(ctx))


def _gather(ctx: NodeCtx) -> None:
    """out[o, j, i] = data[o, idx[j], i] with data viewed as [outer, dim, inner]. Constant indices become
    a table axis of the copy engine; run-time ones are read per row, each row one memcpy."""
    data, idx, dst = _data(ctx, 0), _data(ctx, 1), ctx.outs[0]
    axis = ctx.attrs["axis"] % data.rank
    outer, dim, inner = math.prod(data.shape[:axis]), data.shape[axis], math.prod(data.shape[axis + 1:])
    m, size = idx.numel, data.dtype.itemsize
    if dst.numel == 0:
        return
    c = ctx.const(1)
    if c is not None and is_static(dim):
        k = np.clip(np.where(c < 0, c + dim, c), 0, dim - 1).astype(np.int64).reshape(-1)
        loops = [Axis(outer, m * inner, dim * inner), Axis(m, inner, table=k * inner), Axis(inner, 1, 1)]
        emit_copy(ctx, dst.ptr, data.ptr, loops, size)
        return
    b = ctx.b
    et = raw_type(size)
    with for_range(b, outer, name="o") as o:
        with for_range(b, m, name="j") as j:
            k = wrap_clamp(b, load_index(b, idx, j), dim)
            s = b.add(b.mul(o, I64(dim * inner)), b.mul(k, I64(inner)))
            d = b.mul(b.add(b.mul(o, I64(m)), j), I64(inner))
            memcpy(b, gep(b, dst.ptr, d, et), gep(b, data.ptr, s, et), inner * size)


def _element_offset(b: ir.IRBuilder, ix: list[ir.Value], strides: list[int], axis: int, k: ir.Value) -> ir.Value:
    """sum(ix[d] * strides[d]) with ix[axis] replaced by k."""
    acc: ir.Value = b.mul(k, I64(strides[axis]))
    for d, (i, s) in enumerate(zip(ix, strides)):
        if d != axis:
            acc = b.add(acc, b.mul(i, I64(s)))
    return acc


def _linear(b: ir.IRBuilder, ix: list[ir.Value], shape: tuple[int, ...]) -> ir.Value:
    acc: ir.Value = I64(0)
    for i, n in zip(ix, shape):
        acc = b.add(b.mul(acc, I64(n)), i)
    return acc


@out_of_line("gather_elements", symbolic=True)
def gather_elements(ctx: NodeCtx) -> None:
    data, dst = _data(ctx, 0), ctx.outs[0]
    empty_guard(ctx, [data.shape[ctx.attrs["axis"] % data.rank]], dst, lambda: _gather_elements(ctx))


def _gather_elements(ctx: NodeCtx) -> None:
    data, idx, dst = _data(ctx, 0), _data(ctx, 1), ctx.outs[0]
    axis = ctx.attrs["axis"] % data.rank
    dim, size = data.shape[axis], data.dtype.itemsize
    if dst.numel == 0:
        return
    b, et = ctx.b, raw_type(size)
    with for_nest(b, list(idx.shape), name="g") as ix:
        lin = _linear(b, ix, idx.shape)
        s = _element_offset(b, ix, data.strides, axis, wrap_clamp(b, load_index(b, idx, lin), dim))
        b.store(b.load(gep(b, data.ptr, s, et), typ=et), gep(b, dst.ptr, lin, et))


def _nd_offset(b: ir.IRBuilder, idx: Buf, row: ir.Value, dims_: tuple[int, ...], strides: list[int]) -> ir.Value:
    """The element offset addressed by the k = len(dims_) coordinates idx[row, :]."""
    k = len(dims_)
    acc: ir.Value = I64(0)
    for j, (n, s) in enumerate(zip(dims_, strides)):
        v = wrap_clamp(b, load_index(b, idx, b.add(b.mul(row, I64(k)), I64(j))), n)
        acc = b.add(acc, b.mul(v, I64(s)))
    return acc


@out_of_line("gather_nd", symbolic=True)
def gather_nd(ctx: NodeCtx) -> None:
    data, idx, dst = _data(ctx, 0), _data(ctx, 1), ctx.outs[0]
    bd, k = ctx.attrs["batch_dims"], idx.shape[-1]
    empty_guard(ctx, list(data.shape[bd:bd + k]), dst, lambda: _gather_nd(ctx))


def _gather_nd(ctx: NodeCtx) -> None:
    data, idx, dst = _data(ctx, 0), _data(ctx, 1), ctx.outs[0]
    bd, k = ctx.attrs["batch_dims"], idx.shape[-1]
    nb = math.prod(data.shape[:bd])
    m = math.prod(idx.shape[bd:-1])
    rest = math.prod(data.shape[bd + k:])
    per_batch = math.prod(data.shape[bd:])
    size = data.dtype.itemsize
    if dst.numel == 0:
        return
    b, et = ctx.b, raw_type(size)
    with for_range(b, nb, name="bt") as bi:
        with for_range(b, m, name="r") as r:
            row = b.add(b.mul(bi, I64(m)), r)
            s = b.add(b.mul(bi, I64(per_batch)), _nd_offset(b, idx, row, data.shape[bd:bd + k], data.strides[bd:bd + k]))
            memcpy(b, gep(b, dst.ptr, b.mul(row, I64(rest)), et), gep(b, data.ptr, s, et), rest * size)


# ---- scatter family -------------------------------------------------------------------------------


def combine(b: ir.IRBuilder, old: ir.Value, new: ir.Value, dtype: DType, reduction: str) -> ir.Value:
    """Raw bits of reduction(old, new) as numpy's ufuncs compute it (NaN-propagating max/min, bool
    add/mul as or/and, integer arithmetic wrapping)."""
    if reduction == "none":
        return new
    a, c = to_compute(b, old, dtype), to_compute(b, new, dtype)
    if dtype is DType.BOOL:
        r = b.or_(a, c) if reduction in ("add", "max") else b.and_(a, c)
    elif dtype.is_float:
        if reduction in ("add", "mul"):
            r = b.fadd(a, c) if reduction == "add" else b.fmul(a, c)
        else:  # numpy: a if a is NaN, else (a >= b ? a : b) (NaN b loses the comparison and wins)
            keep = b.fcmp_ordered(">=" if reduction == "max" else "<=", a, c)
            r = b.select(b.or_(keep, b.fcmp_unordered("uno", a, a)), a, c)
    elif reduction in ("add", "mul"):
        r = b.add(a, c) if reduction == "add" else b.mul(a, c)
    else:
        cmp = b.icmp_signed if dtype.is_signed else b.icmp_unsigned
        r = b.select(cmp(">=" if reduction == "max" else "<=", a, c), a, c)
    return to_storage(b, r, dtype)


def _copy_data(ctx: NodeCtx, data: Buf, dst: Buf) -> None:
    if dst.numel:
        memcpy(ctx.b, dst.ptr, data.ptr, dst.numel * dst.dtype.itemsize)


@out_of_line("scatter_nd")
def scatter_nd(ctx: NodeCtx) -> None:
    """A copy of data, then the index rows in order: each updates one contiguous slice of `rest` elements."""
    data, idx, upd, dst = _data(ctx, 0), _data(ctx, 1), _data(ctx, 2), ctx.outs[0]
    _copy_data(ctx, data, dst)
    k = idx.shape[-1]
    rows, rest = math.prod(idx.shape[:-1]), math.prod(data.shape[k:])
    if rows == 0 or rest == 0 or 0 in data.shape[:k]:
        return
    size, red = data.dtype.itemsize, ctx.attrs["reduction"]
    b, et = ctx.b, raw_type(size)
    with for_range(b, rows, name="r") as r:
        d = _nd_offset(b, idx, r, data.shape[:k], data.strides[:k])
        u = b.mul(r, I64(rest))
        if red == "none":
            memcpy(b, gep(b, dst.ptr, d, et), gep(b, upd.ptr, u, et), rest * size)
        else:
            with for_range(b, rest, name="e") as e:
                dp = gep(b, dst.ptr, b.add(d, e), data.elem)
                new = b.load(gep(b, upd.ptr, b.add(u, e), data.elem), typ=data.elem)
                b.store(combine(b, b.load(dp, typ=data.elem), new, data.dtype, red), dp)


@out_of_line("scatter_elements")
def scatter_elements(ctx: NodeCtx) -> None:
    data, idx, upd, dst = _data(ctx, 0), _data(ctx, 1), _data(ctx, 2), ctx.outs[0]
    _copy_data(ctx, data, dst)
    axis = ctx.attrs["axis"] % data.rank
    dim = data.shape[axis]
    if idx.numel == 0 or dim == 0:
        return
    b, red = ctx.b, ctx.attrs["reduction"]
    with for_nest(b, list(idx.shape), name="s") as ix:
        lin = _linear(b, ix, idx.shape)
        dp = gep(b, dst.ptr, _element_offset(b, ix, data.strides, axis, wrap_clamp(b, load_index(b, idx, lin), dim)),
                 data.elem)
        new = b.load(gep(b, upd.ptr, lin, data.elem), typ=data.elem)
        b.store(combine(b, b.load(dp, typ=data.elem), new, data.dtype, red) if red != "none" else new, dp)


# ---- one_hot, reverse_sequence --------------------------------------------------------------------


@out_of_line("one_hot", const_operands=(1,))
def one_hot(ctx: NodeCtx) -> None:
    """Fill with off_value, then store on_value at each index's class (indices outside [-depth, depth)
    match no class)."""
    idx, values, dst = _data(ctx, 0), _data(ctx, 2), ctx.outs[0]
    depth_c = ctx.const(1)
    assert depth_c is not None
    depth = int(depth_c.reshape(-1)[0])
    axis = ctx.attrs["axis"] % (idx.rank + 1)
    inner = math.prod(idx.shape[axis:])
    if dst.numel == 0:
        return
    b, et = ctx.b, raw_type(dst.dtype.itemsize)
    off = b.load(gep(b, values.ptr, 0, et), typ=et)
    on = b.load(gep(b, values.ptr, 1, et), typ=et)
    fill(ctx, dst.ptr, dst.numel, off, dst.dtype.itemsize)
    with for_range(b, idx.numel, name="e") as e:
        k = load_index(b, idx, e)
        k = b.select(b.icmp_signed("<", k, I64(0)), b.add(k, I64(depth)), k)
        hit = b.icmp_unsigned("<", k, I64(depth))  # 0 <= k < depth
        with b.if_then(hit):
            o = b.udiv(e, I64(inner)) if inner != 1 else e
            i = b.urem(e, I64(inner)) if inner != 1 else I64(0)
            b.store(on, gep(b, dst.ptr, b.add(b.mul(b.add(b.mul(o, I64(depth)), k), I64(inner)), i), et))


@out_of_line("reverse_sequence")
def reverse_sequence(ctx: NodeCtx) -> None:
    """For batch entry i, time step t < n_i reads step n_i - 1 - t; one memcpy per (i, t) slab."""
    x, lens, dst = _data(ctx, 0), _data(ctx, 1), ctx.outs[0]
    ba, ta = ctx.attrs["batch_axis"], ctx.attrs["time_axis"]
    nb, nt = x.shape[ba], x.shape[ta]
    inner, size = math.prod(x.shape[2:]), x.dtype.itemsize
    if dst.numel == 0:
        return
    b, et = ctx.b, raw_type(size)
    sb, st = x.strides[ba], x.strides[ta]
    with for_range(b, nb, name="bt") as i:
        n = load_index(b, lens, i)
        n = b.select(b.icmp_signed("<", n, I64(0)), I64(0), n)
        n = b.select(b.icmp_signed(">", n, I64(nt)), I64(nt), n)
        with for_range(b, nt, name="t") as t:
            src_t = b.select(b.icmp_signed("<", t, n), b.sub(b.sub(n, I64(1)), t), t)
            base = b.mul(i, I64(sb))
            d = b.add(base, b.mul(t, I64(st)))
            s = b.add(base, b.mul(src_t, I64(st)))
            memcpy(b, gep(b, dst.ptr, d, et), gep(b, x.ptr, s, et), inner * size)


# ---- shape, size and generators -------------------------------------------------------------------

SMALL = 16  # constants up to this many elements are stored one by one; larger ones are copied from a global


def store_constant(ctx: NodeCtx, dst: Buf, array: np.ndarray) -> None:
    """Write a compile-time array (of dst's dtype and size) into dst."""
    flat = np.ascontiguousarray(np.asarray(array, dtype=dst.dtype.np_dtype).reshape(-1))
    if flat.size == 0:
        return
    size = dst.dtype.itemsize
    bits = flat.view(f"u{size}")
    if (bits == bits[0]).all():
        fill(ctx, dst.ptr, flat.size, int(bits[0]), size)
    elif flat.size <= SMALL:
        et = raw_type(size)
        for i, v in enumerate(bits):
            ctx.b.store(ir.Constant(et, int(v)), gep(ctx.b, dst.ptr, i, et))
    else:
        memcpy(ctx.b, dst.ptr, ctx.global_array(flat), flat.size * size)


def _consts(ctx: NodeCtx) -> list[np.ndarray | None]:
    return [ctx.const(i) if v is not None else None for i, v in enumerate(ctx.node.inputs)]


def store_sizes(ctx: NodeCtx, dst: Buf, sizes: Sequence[Size]) -> None:
    """Write sizes (ints, or symbolic dims computed at run time) into the i64 buffer dst."""
    if all(is_static(n) for n in sizes):
        store_constant(ctx, dst, np.array([int(n) for n in sizes], dtype=np.int64))
        return
    for i, n in enumerate(sizes):
        ctx.b.store(I64(n) if is_static(n) else n, gep(ctx.b, dst.ptr, i, I64))


@out_of_line("shape", symbolic=True)
def shape(ctx: NodeCtx) -> None:
    src = ctx.ins[0]
    assert src is not None
    store_sizes(ctx, ctx.outs[0], list(src.shape)[ctx.attrs["start"]:ctx.attrs["end"]])  # Python's slice: ONNX's clamping


@out_of_line("size", symbolic=True)
def size(ctx: NodeCtx) -> None:
    src = ctx.ins[0]
    assert src is not None
    store_sizes(ctx, ctx.outs[0], [src.numel])


@out_of_line("range", const_operands=(0, 1, 2), symbolic=True, runtime_operands=(0, 1, 2))
def range_(ctx: NodeCtx) -> None:
    """Constant operands: the interpreter's result, embedded. Otherwise (a length that is a symbolic dim, as
    `arange(past, past + seq)`), element i = start + i * delta with start and delta read at run time (the
    length, from the result's inferred type, already accounts for the limit)."""
    consts = _consts(ctx)
    if all(c is not None for c in consts):
        store_constant(ctx, ctx.outs[0], OPS["range"].compute(*consts, **ctx.attrs))
        return
    b, dst = ctx.b, ctx.outs[0]
    start_buf, delta_buf = ctx.ins[0], ctx.ins[2]
    assert start_buf is not None and delta_buf is not None
    ct = compute_type(dst.dtype)
    start = to_compute(b, b.load(gep(b, start_buf.ptr, 0, start_buf.elem), typ=start_buf.elem), dst.dtype)
    delta = to_compute(b, b.load(gep(b, delta_buf.ptr, 0, delta_buf.elem), typ=delta_buf.elem), dst.dtype)
    with for_range(b, dst.numel, name="i") as i:
        if dst.dtype.is_float:
            x = b.fadd(start, b.fmul(b.sitofp(i, ct), delta))
        else:
            x = b.add(start, b.mul(b.trunc(i, ct) if ct.width < 64 else i, delta))
        b.store(to_storage(b, x, dst.dtype), gep(b, dst.ptr, i, dst.elem))


@out_of_line("constant_of_shape", const_operands=(0,))
def constant_of_shape(ctx: NodeCtx) -> None:
    dst = ctx.outs[0]
    value = ctx.attrs["value"]
    fill(ctx, dst.ptr, dst.numel, raw_bits(value.reshape(-1)[0], dst.dtype) if value is not None else 0,
         dst.dtype.itemsize)


@out_of_line("eye_like")
def eye_like(ctx: NodeCtx) -> None:
    dst = ctx.outs[0]
    h, w = dst.shape
    k = ctx.attrs["k"]
    size = dst.dtype.itemsize
    fill(ctx, dst.ptr, dst.numel, 0, size)
    lo, hi = max(0, -k), min(h, w - k)
    if hi > lo:
        one = ir.Constant(raw_type(size), raw_bits(1, dst.dtype))
        with for_range(ctx.b, hi, start=lo, name="d") as i:
            ctx.b.store(one, gep(ctx.b, dst.ptr, ctx.b.add(ctx.b.mul(i, I64(w + 1)), I64(k)), one.type))


@out_of_line("trilu", const_operands=(1,))
def trilu(ctx: NodeCtx) -> None:
    """Per row i of each matrix, the kept columns are one run: [i + k, w) (upper) or [0, i + k] (lower);
    copied with memcpy and the rest zeroed with memset."""
    src, dst = ctx.ins[0], ctx.outs[0]
    assert src is not None
    h, w = dst.shape[-2:]
    if dst.numel == 0:
        return
    k = (ints(ctx, 1) or [0])[0]
    upper = bool(ctx.attrs["upper"])
    size = dst.dtype.itemsize
    et = raw_type(size)
    b = ctx.b
    with for_range(b, dst.numel // (h * w), name="m") as m:
        with for_range(b, h, name="r") as r:
            base = b.mul(b.add(b.mul(m, I64(h)), r), I64(w))
            # Columns [0, edge) are zeroed (upper) or kept (lower): edge = r + k, or r + k + 1, within [0, w].
            edge = b.add(r, I64(k if upper else k + 1))
            edge = b.select(b.icmp_signed("<", edge, I64(0)), I64(0), edge)
            edge = b.select(b.icmp_signed(">", edge, I64(w)), I64(w), edge)
            rest = b.sub(I64(w), edge)
            at_edge = b.add(base, edge)
            if upper:
                memset(b, gep(b, dst.ptr, base, et), 0, b.mul(edge, I64(size)))
                memcpy(b, gep(b, dst.ptr, at_edge, et), gep(b, src.ptr, at_edge, et), b.mul(rest, I64(size)))
            else:
                memcpy(b, gep(b, dst.ptr, base, et), gep(b, src.ptr, base, et), b.mul(edge, I64(size)))
                memset(b, gep(b, dst.ptr, at_edge, et), 0, b.mul(rest, I64(size)))

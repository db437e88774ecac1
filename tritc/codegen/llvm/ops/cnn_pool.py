"""Lowerings of the pools (max with Indices, average, lp, the global ones) and LRN. Part of the cnn family.

A window pool runs per (image, channel, output row): a row of accumulators, then for every kernel offset
whose input row exists, one loop over the output columns that offset reaches (the column range is
computed at compile time), so the inner loop has no bounds checks and LLVM vectorises it. Kernel
offsets are visited in the interpreter's order, so sums round the same way and ties go to the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.ops.cnn import Window
from ....ir.ops.cnn import _window_counts as window_counts
from ....ir.types import DType
from ..builder import F32, F64, I1, I64, contiguous_strides, for_nest, for_range, gep, intrinsic, suffix
from ..context import Buf, NodeCtx
from ..elementwise import compute_type
from ..kernels.vec import entry_alloca
from . import lowering
from .nn_values import Vals, float_ct, shared_body, vsum

Update = Callable[[list[ir.Value], ir.Value, ir.Value, ir.Value, ir.Value], None]


def _column_ranges(n: int, out: int, begin: int, stride: int, dilation: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each kernel offset along the last dim: the output columns [lo, hi) whose input column is inside X."""
    lo, hi = np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)
    for kw in range(k):
        cols = np.arange(out) * stride - begin + kw * dilation
        inside = np.nonzero((cols >= 0) & (cols < n))[0]
        if inside.size:
            lo[kw], hi[kw] = inside[0], inside[-1] + 1
    return lo, hi


def pool_loop(ctx: NodeCtx, x: Buf, out: Sequence[int], win: Window, begins: Sequence[int],
              rows: Sequence[tuple[ir.Type, ir.Constant]], update: Update,
              finish: Callable[[ir.Value, ir.Value, list[ir.Value], ir.Value], None]) -> None:
    """The loop nest of every window pool.

    rows: (type, initial value) of each accumulator row; update(slots, value, first, j, col) folds the
    input value that kernel offset number j meets at output column col into the slots (pointers to
    the accumulators of that column); finish(plane, out_row, slots, col) writes one output."""
    b = ctx.b
    sp = x.shape[2:]
    d = len(sp)
    ow = out[-1]
    bufs = [entry_alloca(b, ir.ArrayType(t, max(ow, 1)), "row") for t, _ in rows]
    in_strides = contiguous_strides(sp)
    k_strides = contiguous_strides(win.kernel)
    lo, hi = _column_ranges(sp[-1], ow, begins[-1], win.strides[-1], win.dilations[-1], win.kernel[-1])
    lo_g, hi_g = ctx.global_array(lo, "pool_lo"), ctx.global_array(hi, "pool_hi")
    n_planes = x.shape[0] * x.shape[1]
    plane = math.prod(sp)

    def slots(col: ir.Value) -> list[ir.Value]:
        return [b.gep(buf, [I64(0), col], inbounds=True, source_etype=buf.allocated_type) for buf in bufs]

    with for_range(b, n_planes, name="nc") as nc:
        with for_nest(b, list(out[:-1]), name="o") as orow:
            with for_range(b, ow, name="c") as col:
                for s, (_, init) in zip(slots(col), rows):
                    b.store(init, s)
            with for_nest(b, list(win.kernel), name="k") as ks:
                j = _lin(b, ks, k_strides)
                inside: ir.Value = ir.Constant(I1, 1)
                base = b.mul(nc, I64(plane))
                for dd in range(d - 1):
                    coord = b.add(b.mul(orow[dd], I64(win.strides[dd])), I64(-begins[dd]))
                    coord = b.add(coord, b.mul(ks[dd], I64(win.dilations[dd])))
                    inside = b.and_(inside, b.icmp_unsigned("<", coord, I64(sp[dd])))
                    base = b.add(base, b.mul(coord, I64(in_strides[dd])))
                base = b.add(base, b.sub(b.mul(ks[-1], I64(win.dilations[-1])), I64(begins[-1])))
                with b.if_then(inside):
                    c_lo = b.load(gep(b, lo_g, ks[-1], I64), typ=I64)
                    c_hi = b.load(gep(b, hi_g, ks[-1], I64), typ=I64)
                    first = b.icmp_unsigned("==", j, I64(0))
                    with for_range(b, c_hi, start=c_lo, name="col") as col:
                        v = Vals(b, x.dtype, compute_type(x.dtype) if x.dtype is not DType.F16 else F32)
                        value = v.load(x.ptr, b.add(base, b.mul(col, I64(win.strides[-1]))))
                        update(slots(col), value, first, j, col)
            out_row = _lin(b, orow, contiguous_strides(out[:-1]))
            with for_range(b, ow, name="c") as col:
                finish(nc, out_row, slots(col), col)


def _lin(b: ir.IRBuilder, idx: Sequence[ir.Value], strides: Sequence[int]) -> ir.Value:
    acc: ir.Value = I64(0)
    for i, s in zip(idx, strides):
        acc = b.add(acc, b.mul(i, I64(s)) if s != 1 else i)
    return acc


def _geometry(x: Buf, win: Window) -> tuple[list[int], list[int]]:
    g = [win.dim(i, n) for i, n in enumerate(x.shape[2:])]
    return [o for o, _, _ in g], [bg for _, bg, _ in g]


# ---- max pool -------------------------------------------------------------------------------------------------


@lowering("max_pool")
@shared_body
def max_pool(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    at = ctx.attrs
    win = Window.of(at, at["kernel_shape"], "MaxPool")
    out, begins = _geometry(x, win)
    if y.numel == 0:
        return
    b = ctx.b
    v = Vals(b, x.dtype, compute_type(x.dtype) if x.dtype is not DType.F16 else F32)
    lowest = ir.Constant(v.ct, -math.inf) if v.is_float else ir.Constant(v.ct, int(np.iinfo(x.dtype.np_dtype).min))
    want_index = len(ctx.outs) > 1 and len(ctx.node.outputs) > 1 and ctx.node.outputs[1] is not None
    rows = [(v.ct, lowest)] + ([(I64, I64(0))] if want_index else [])
    spatial = x.shape[2:]
    out_plane = math.prod(out)

    def update(s: list[ir.Value], value: ir.Value, first: ir.Value, j: ir.Value, col: ir.Value) -> None:
        best = b.load(s[0], typ=v.ct)
        greater = b.fcmp_ordered(">", value, best) if v.is_float else (
            b.icmp_signed(">", value, best) if x.dtype.is_signed else b.icmp_unsigned(">", value, best))
        take = b.or_(first, greater)  # offset 0 is taken as it is (NaN included), later ones only if larger
        b.store(b.select(take, value, best), s[0])
        if want_index:
            b.store(b.select(take, j, b.load(s[1], typ=I64)), s[1])

    # Indices: the flat position in X of each maximum, from its kernel offset number
    order = list(range(len(spatial))) if at["storage_order"] else list(reversed(range(len(spatial))))
    flat_strides = [0] * len(spatial)
    acc = 1
    for i in order:
        flat_strides[i] = acc
        acc *= spatial[i]
    k_strides = contiguous_strides(win.kernel)
    out_strides = contiguous_strides(out)

    def finish(nc: ir.Value, out_row: ir.Value, s: list[ir.Value], col: ir.Value) -> None:
        pos = b.add(b.add(b.mul(nc, I64(out_plane)), b.mul(out_row, I64(out[-1]))), col)
        v.store(b.load(s[0], typ=v.ct), y.ptr, pos)
        if not want_index:
            return
        j = b.load(s[1], typ=I64)
        index = b.mul(nc, I64(math.prod(spatial)))
        o_rem = b.sub(pos, b.mul(nc, I64(out_plane)))
        for dd in range(len(spatial)):
            o = b.urem(b.udiv(o_rem, I64(out_strides[dd])), I64(out[dd]))
            k = b.urem(b.udiv(j, I64(k_strides[dd])), I64(win.kernel[dd]))
            coord = b.add(b.sub(b.mul(o, I64(win.strides[dd])), I64(begins[dd])), b.mul(k, I64(win.dilations[dd])))
            index = b.add(index, b.mul(coord, I64(flat_strides[dd])))
        b.store(index, gep(b, ctx.outs[1].ptr, pos, I64))

    pool_loop(ctx, x, out, win, begins, rows, update, finish)


# ---- average and lp pools ----------------------------------------------------------------------------------------


@lowering("average_pool", "lp_pool")
@shared_body
def sum_pool(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    at = ctx.attrs
    what = "AveragePool" if ctx.node.op == "average_pool" else "LpPool"
    win = Window.of(at, at["kernel_shape"], what)
    out, begins = _geometry(x, win)
    if y.numel == 0:
        return
    b = ctx.b
    v = Vals(b, x.dtype, float_ct(x.dtype))
    p = at.get("p", 1)
    counts = None
    if ctx.node.op == "average_pool":
        counts = window_counts(x.shape[2:], win, out, begins, bool(at["count_include_pad"]))
        counts = ctx.global_array(np.ascontiguousarray(counts.astype(np.float64 if v.ct == F64 else np.float32)), "counts")
    out_plane = math.prod(out)

    def update(s: list[ir.Value], value: ir.Value, first: ir.Value, j: ir.Value, col: ir.Value) -> None:
        term = value
        if ctx.node.op == "lp_pool":
            term = _power(b, _call(b, "llvm.fabs", value), p)
        b.store(b.fadd(b.load(s[0], typ=v.ct), term), s[0])

    def finish(nc: ir.Value, out_row: ir.Value, s: list[ir.Value], col: ir.Value) -> None:
        within = b.add(b.mul(out_row, I64(out[-1])), col)
        total = b.load(s[0], typ=v.ct)
        if counts is not None:
            res = b.fdiv(total, b.load(gep(b, counts, within, v.ct), typ=v.ct))
        else:
            res = _root(b, total, p)
        v.store(res, y.ptr, b.add(b.mul(nc, I64(out_plane)), within))

    pool_loop(ctx, x, out, win, begins, [(v.ct, v.zero())], update, finish)


def _call(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    return intrinsic(b, f"{name}.{suffix(args[0].type)}", args[0].type, list(args))


def _power(b: ir.IRBuilder, x: ir.Value, p: int) -> ir.Value:
    """x ** p for a positive integer p, as numpy computes a float array to an int power."""
    if p == 1:
        return x
    if p == 2:
        return b.fmul(x, x)
    return _call(b, "llvm.pow", x, _const_like(x, float(p)))


def _root(b: ir.IRBuilder, x: ir.Value, p: int) -> ir.Value:
    """x ** (1 / p) (numpy: sqrt for p = 2, pow with the exponent rounded to x's type otherwise)."""
    return scalar_power(b, x, 1.0 / p)


def scalar_power(b: ir.IRBuilder, x: ir.Value, e: float) -> ir.Value:
    """x ** e for a float array and a Python float, as numpy computes it (its fast paths included)."""
    if e == 1.0:
        return x
    if e == 2.0:
        return b.fmul(x, x)
    if e == 0.5:
        return _call(b, "llvm.sqrt", x)
    if e == -1.0:
        return b.fdiv(_const_like(x, 1.0), x)
    return _call(b, "llvm.pow", x, _const_like(x, e))


def _const_like(x: ir.Value, v: float) -> ir.Constant:
    """A constant of x's (scalar or vector) type; an f32 exponent is rounded to f32 as numpy's weak scalars are."""
    t = x.type
    elem = t.element if isinstance(t, ir.VectorType) else t
    c = ir.Constant(elem, float(np.float32(v)) if elem == F32 else v)
    return ir.Constant(t, [c] * t.count) if isinstance(t, ir.VectorType) else c


# ---- global pools --------------------------------------------------------------------------------------------------


@lowering("global_average_pool", "global_lp_pool")
@shared_body
def global_sum_pool(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    b = ctx.b
    v = Vals(b, x.dtype, float_ct(x.dtype))
    n = math.prod(x.shape[2:])
    p = ctx.attrs.get("p", 1)
    lp = ctx.node.op == "global_lp_pool"
    with for_range(b, x.shape[0] * x.shape[1], name="nc") as nc:
        fn = None
        if lp:
            def fn(vec: ir.Value) -> ir.Value:
                return _power(b, _call(b, "llvm.fabs", vec), p)
        total = vsum(b, x.ptr, x.dtype, b.mul(nc, I64(n)), n, v.ct, fn)
        res = _root(b, total, p) if lp else b.fdiv(total, ir.Constant(v.ct, float(n)))
        v.store(res, y.ptr, nc)


@lowering("global_max_pool")
@shared_body
def global_max_pool(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    b = ctx.b
    v = Vals(b, x.dtype, compute_type(x.dtype) if x.dtype is not DType.F16 else F32)
    n = math.prod(x.shape[2:])
    if y.numel == 0:
        return
    best = b.alloca(v.ct)
    with for_range(b, x.shape[0] * x.shape[1], name="nc") as nc:
        base = b.mul(nc, I64(n))
        b.store(v.load(x.ptr, base), best)
        with for_range(b, n, start=1, name="p") as i:
            e = v.load(x.ptr, b.add(base, i))
            cur = b.load(best, typ=v.ct)
            if v.is_float:  # numpy's max propagates NaN
                nxt = _call(b, "llvm.maximum", cur, e)
            else:
                nxt = b.select(b.icmp_signed(">", e, cur) if x.dtype.is_signed else b.icmp_unsigned(">", e, cur), e, cur)
            b.store(nxt, best)
        v.store(b.load(best, typ=v.ct), y.ptr, nc)


# ---- local response normalization ----------------------------------------------------------------------------------


@lowering("lrn")
@shared_body
def lrn(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    at = ctx.attrs
    size = at["size"]
    before = (size - 1) // 2
    n, c = x.shape[:2]
    spatial = math.prod(x.shape[2:])
    b = ctx.b
    v = Vals(b, x.dtype, float_ct(x.dtype))
    if y.numel == 0:
        return
    acc = b.alloca(v.ct)
    scale, bias = v.const(at["alpha"] / size), v.const(at["bias"])
    with for_nest(b, [n, c, spatial], name="e") as (ni, ci, pi):
        b.store(v.zero(), acc)
        for i in range(size):  # squares of the existing channels ci - before + i, in order
            ch = b.add(ci, I64(i - before))
            with b.if_then(b.icmp_unsigned("<", ch, I64(c))):
                e = v.load(x.ptr, b.add(b.mul(b.add(b.mul(ni, I64(c)), ch), I64(spatial)), pi))
                b.store(b.fadd(b.load(acc, typ=v.ct), b.fmul(e, e)), acc)
        k = b.add(b.mul(b.add(b.mul(ni, I64(c)), ci), I64(spatial)), pi)
        base = b.fadd(bias, b.fmul(scale, b.load(acc, typ=v.ct)))
        v.store(b.fdiv(v.load(x.ptr, k), scalar_power(b, base, float(at["beta"]))), y.ptr, k)


__all__ = ["pool_loop"]

"""softmax, log_softmax and hardmax along one axis (or the coerce_2d view of opsets 1 and 11).

Numerically stable as in the interpreter: m = max(x), e = exp(x - m), softmax = e / sum(e),
log_softmax = (x - m) - log(sum(e)); 16-bit floats are computed in f32 and rounded once. Rows
along a contiguous last axis run three vectorised passes (max, exp+sum, scale by 1 / sum: within
an ulp of the division); an inner axis is processed a tile of columns at a time so that the
innermost loop stays contiguous.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import I64, for_range, gep, i64
from ..context import Buf, NodeCtx
from ..elementwise import compute_type, parallel_range, store_compute
from . import lowering
from .elementwise_cast import convert
from .reduce import TILE, axis_split, better, tiles
from .reduce_runs import acc_dtype, combine, const_like, entry_alloca, exp, load_wide, log, reduce_run, store_vec, vsplat


def _view(ctx: NodeCtx, x: Buf) -> tuple[int, int, int]:
    axis = ctx.attrs["axis"] + x.rank if ctx.attrs["axis"] < 0 else ctx.attrs["axis"]
    if ctx.attrs["coerce_2d"]:
        return math.prod(x.shape[:axis]), math.prod(x.shape[axis:]), 1
    return axis_split(x.shape, axis)


@lowering("softmax", "log_softmax")
def softmax(ctx: NodeCtx) -> None:
    x, out = ctx.ins[0], ctx.outs[0]
    assert x is not None
    if out.numel == 0:
        return
    outer, n, inner = _view(ctx, x)
    if inner == 1:
        _rows(ctx, x, out, outer, n)
    else:
        _columns(ctx, x, out, outer, n, inner)


def _rows(ctx: NodeCtx, x: Buf, out: Buf, outer: int, n: int) -> None:
    """Contiguous rows, split over the node's threads (x and out are read at emission time: a task's own)."""
    cd = acc_dtype(x.dtype)
    ct = compute_type(cd)
    log_form = ctx.node.op == "log_softmax"
    in_place = not log_form and out.dtype is cd  # e is stored, then scaled; 16-bit results recompute e instead
    vec_exp = cd is DType.F32  # f64 exp is libm: scalar

    def store_e(b: ir.IRBuilder, i: ir.Value, e: ir.Value) -> None:
        if isinstance(e.type, ir.VectorType):
            store_vec(b, e, out.ptr, i)
        else:
            b.store(e, gep(b, out.ptr, i, ct))

    def rows(lo: ir.Value, hi: ir.Value) -> None:
        b = ctx.b
        m_slot, s_slot = entry_alloca(b, ct), entry_alloca(b, ct)
        with for_range(b, hi, start=lo, name="row") as o:
            _row(b, o, m_slot, s_slot)

    def _row(b: ir.IRBuilder, o: ir.Value, m_slot: ir.Value, s_slot: ir.Value) -> None:
        base = b.mul(o, i64(n))
        b.store(const_like(ct, -math.inf), m_slot)
        reduce_run(b, m_slot, x.ptr, x.dtype, base, n, "fmax")  # a nan is skipped here but still makes the row nan
        m = b.load(m_slot, typ=ct)
        b.store(const_like(ct, 0.0), s_slot)
        reduce_run(b, s_slot, x.ptr, x.dtype, base, n, "add", pre=lambda b, v: exp(b, b.fsub(v, vsplat(b, m, v))),
                   store=store_e if in_place else None, vectorize=vec_exp)
        s = b.load(s_slot, typ=ct)
        log_s = log(b, s) if log_form else None
        inv_s = b.fdiv(const_like(ct, 1.0), s)
        with for_range(b, n, name="i") as i:
            k = b.add(base, i)
            if in_place:  # e * (1 / sum): within an ulp of the interpreter's e / sum, and no division per element
                b.store(b.fmul(b.load(gep(b, out.ptr, k, ct), typ=ct), inv_s), gep(b, out.ptr, k, ct))
            else:
                shifted = b.fsub(load_wide(b, x.ptr, k, x.dtype), m)
                y = b.fsub(shifted, log_s) if log_s is not None else b.fdiv(exp(b, shifted), s)
                store_compute(b, convert(b, y, cd, out.dtype), out.ptr, k, out.dtype)

    parallel_range(ctx, outer, n * 10, rows)


def _columns(ctx: NodeCtx, x: Buf, out: Buf, outer: int, n: int, inner: int) -> None:
    """Softmax along a strided axis: a tile of neighbouring columns at a time, columns innermost."""
    cd = acc_dtype(x.dtype)
    ct = compute_type(cd)
    log_form = ctx.node.op == "log_softmax"
    tile = min(inner, TILE)

    def blocks(lo: ir.Value, hi: ir.Value) -> None:
        b = ctx.b
        m_arr, s_arr = entry_alloca(b, ir.ArrayType(ct, tile)), entry_alloca(b, ir.ArrayType(ct, tile))
        with for_range(b, hi, start=lo, name="o") as o:
            _block(b, o, m_arr, s_arr)

    def _block(b: ir.IRBuilder, o: ir.Value, m_arr: ir.Value, s_arr: ir.Value) -> None:
        def at(arr: ir.Value, j: ir.Value) -> ir.Value:
            return gep(b, arr, j, ct)

        obase = b.mul(o, i64(n * inner))

        def one_tile(t: ir.Value, nt: ir.Value) -> None:
            def each(body) -> None:  # body(j, element index) for the tile's columns along the axis
                with for_range(b, n, name="k") as k:
                    row = b.add(b.add(obase, b.mul(k, i64(inner))), t)
                    with for_range(b, nt, name="j") as j:
                        body(j, b.add(row, j))

            with for_range(b, nt, name="j") as j:
                b.store(const_like(ct, -math.inf), at(m_arr, j))
                b.store(const_like(ct, 0.0), at(s_arr, j))
            each(lambda j, i: b.store(combine(b, "fmax", b.load(at(m_arr, j), typ=ct), load_wide(b, x.ptr, i, x.dtype)),
                                      at(m_arr, j)))

            def shifted(j: ir.Value, i: ir.Value) -> ir.Value:
                return b.fsub(load_wide(b, x.ptr, i, x.dtype), b.load(at(m_arr, j), typ=ct))

            each(lambda j, i: b.store(b.fadd(b.load(at(s_arr, j), typ=ct), exp(b, shifted(j, i))), at(s_arr, j)))
            if log_form:
                with for_range(b, nt, name="j") as j:
                    b.store(log(b, b.load(at(s_arr, j), typ=ct)), at(s_arr, j))

            def result(j: ir.Value, i: ir.Value) -> None:
                s = b.load(at(s_arr, j), typ=ct)
                y = b.fsub(shifted(j, i), s) if log_form else b.fdiv(exp(b, shifted(j, i)), s)
                store_compute(b, convert(b, y, cd, out.dtype), out.ptr, i, out.dtype)

            each(result)

        tiles(b, inner, tile, one_tile)

    parallel_range(ctx, outer, n * inner * 20, blocks)


@lowering("hardmax")
def hardmax(ctx: NodeCtx) -> None:
    """1 at the first largest value along the axis (nan counts as largest), 0 elsewhere."""
    b, x, out = ctx.b, ctx.ins[0], ctx.outs[0]
    assert x is not None
    if out.numel == 0:
        return
    outer, n, inner = _view(ctx, x)
    ct = compute_type(out.dtype)
    zero, one = const_like(ct, 0.0), const_like(ct, 1.0)
    with for_range(b, out.numel, name="z") as i:
        store_compute(b, zero, out.ptr, i, out.dtype)
    wide_t = compute_type(acc_dtype(x.dtype))
    best, index = entry_alloca(b, wide_t), entry_alloca(b, I64)
    with for_range(b, outer, name="o") as o, for_range(b, inner, name="j") as j:
        base = b.add(b.mul(o, i64(n * inner)), j)
        b.store(load_wide(b, x.ptr, base, x.dtype), best)
        b.store(base, index)
        with for_range(b, n, start=1, name="k") as k:
            i = b.add(base, b.mul(k, i64(inner)))
            v, cur = load_wide(b, x.ptr, i, x.dtype), b.load(best, typ=wide_t)
            win = better(b, v, cur, True, True)
            b.store(b.select(win, v, cur), best)
            b.store(b.select(win, i, b.load(index, typ=I64)), index)
        store_compute(b, one, out.ptr, b.load(index, typ=I64), out.dtype)

"""cum_sum / cum_prod (exclusive, reverse) and top_k along one axis.

Cumulative ops walk the axis with a running value per column, a tile of neighbouring columns at
a time (innermost and contiguous), accumulating in order exactly as numpy does (16-bit floats in
f32). top_k keeps the best K of each row sorted in the results by insertion: a value enters only
if it beats the current K-th, equal values keep index order, and nan counts as the largest.
"""

from __future__ import annotations

import llvmlite.ir as ir

from ..builder import I64, for_range, gep, i64
from ..context import NodeCtx
from ..elementwise import compute_type, load_compute, to_storage
from . import lowering
from .elementwise_cast import convert
from .reduce import TILE, axis_split, better, tiles
from .reduce_runs import acc_dtype, combine, entry_alloca, identity, load_wide


def _axis(ctx: NodeCtx, operand: int, rank: int) -> int:
    a = int(ctx.const(operand).reshape(-1)[0])
    return a + rank if a < 0 else a


@lowering("cum_sum", "cum_prod", const_operands=(1,))
def cumulative(ctx: NodeCtx) -> None:
    b, x, out = ctx.b, ctx.ins[0], ctx.outs[0]
    assert x is not None
    if out.numel == 0:
        return
    outer, n, inner = axis_split(x.shape, _axis(ctx, 1, x.rank))
    how = "add" if ctx.node.op == "cum_sum" else "mul"
    exclusive, reverse = bool(ctx.attrs["exclusive"]), bool(ctx.attrs["reverse"])
    acc_d = acc_dtype(x.dtype)
    ct = compute_type(acc_d)
    tile = min(inner, TILE)
    acc = entry_alloca(b, ir.ArrayType(ct, tile))
    signed = x.dtype.is_signed

    with for_range(b, outer, name="o") as o:
        obase = b.mul(o, i64(n * inner))

        def one_tile(t: ir.Value, nt: ir.Value) -> None:
            with for_range(b, nt, name="j") as j:
                b.store(identity(how, acc_d), gep(b, acc, j, ct))
            with for_range(b, -1 if reverse else n, start=n - 1 if reverse else 0, step=-1 if reverse else 1, name="k") as k:
                row = b.add(b.add(obase, b.mul(k, i64(inner))), t)
                with for_range(b, nt, name="j") as j:
                    i, slot = b.add(row, j), gep(b, acc, j, ct)
                    before = b.load(slot, typ=ct)
                    after = combine(b, how, before, load_wide(b, x.ptr, i, x.dtype), signed)
                    b.store(after, slot)
                    value = convert(b, before if exclusive else after, acc_d, out.dtype)
                    b.store(to_storage(b, value, out.dtype), gep(b, out.ptr, i, out.elem))

        tiles(b, inner, tile, one_tile)


@lowering("top_k", const_operands=(1,))
def top_k(ctx: NodeCtx) -> None:
    b, x = ctx.b, ctx.ins[0]
    values, indices = ctx.outs
    assert x is not None
    k = int(ctx.const(1).reshape(-1)[0])
    if values.numel == 0 or k == 0:
        return
    axis = ctx.attrs["axis"] + x.rank if ctx.attrs["axis"] < 0 else ctx.attrs["axis"]
    outer, n, inner = axis_split(x.shape, axis)
    largest = bool(ctx.attrs["largest"])
    wide_t = compute_type(acc_dtype(x.dtype))
    count, pos = entry_alloca(b, I64), entry_alloca(b, I64)
    signed = x.dtype.is_signed

    def beats(v: ir.Value, w: ir.Value) -> ir.Value:
        return better(b, v, w, True, signed) if largest else better(b, w, v, True, signed)

    with for_range(b, outer, name="o") as o, for_range(b, inner, name="j") as j:
        xbase = b.add(b.mul(o, i64(n * inner)), j)
        obase = b.add(b.mul(o, i64(k * inner)), j)

        def vat(p: ir.Value) -> ir.Value:  # &values[o, p, j]
            return gep(b, values.ptr, b.add(obase, b.mul(p, i64(inner))), values.elem)

        def iat(p: ir.Value) -> ir.Value:
            return gep(b, indices.ptr, b.add(obase, b.mul(p, i64(inner))), I64)

        def kept(p: ir.Value) -> ir.Value:  # the compute value of the p-th best so far
            v = load_compute(b, values.ptr, b.add(obase, b.mul(p, i64(inner))), values.dtype)
            return b.fpext(v, wide_t) if v.type != wide_t else v

        b.store(i64(0), count)
        with for_range(b, n, name="i") as i:
            xi = b.add(xbase, b.mul(i, i64(inner)))
            v = load_wide(b, x.ptr, xi, x.dtype)
            c = b.load(count, typ=I64)
            full = b.icmp_signed("==", c, i64(k))
            fn = b.function
            insert, shift_head, shift_body, place, done = (fn.append_basic_block(f"topk.{s}") for s in
                                                           ("insert", "head", "shift", "place", "done"))
            # full and not better than the current K-th: skip (ties keep the earlier index)
            check = fn.append_basic_block("topk.check")
            b.cbranch(full, check, insert)
            b.position_at_end(check)
            b.cbranch(beats(v, kept(i64(k - 1))), insert, done)
            b.position_at_end(insert)
            start = b.select(full, i64(k - 1), c)
            b.store(start, pos)
            b.branch(shift_head)
            b.position_at_end(shift_head)  # move entries down while v beats the one above
            p = b.load(pos, typ=I64)
            above = b.sub(p, i64(1))
            can = b.icmp_signed(">", p, i64(0))
            probe = fn.append_basic_block("topk.probe")
            b.cbranch(can, probe, place)
            b.position_at_end(probe)
            b.cbranch(beats(v, kept(above)), shift_body, place)
            b.position_at_end(shift_body)
            b.store(b.load(vat(above), typ=values.elem), vat(p))
            b.store(b.load(iat(above), typ=I64), iat(p))
            b.store(above, pos)
            b.branch(shift_head)
            b.position_at_end(place)
            p = b.load(pos, typ=I64)
            b.store(b.load(gep(b, x.ptr, xi, x.elem), typ=x.elem), vat(p))  # the raw element: bits kept exactly
            b.store(i, iat(p))
            b.store(b.select(full, c, b.add(c, i64(1))), count)
            b.branch(done)
            b.position_at_end(done)

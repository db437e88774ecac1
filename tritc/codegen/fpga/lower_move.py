"""Data movement: reshape and its kin are aliases (the same DRAM bytes, no instruction); transpose, slice, concat,
split and expand are strided copies DRAM -> VEC -> DRAM.

A copy is described by the output's shape and, per output dim, the element strides of the source and of the
destination; dims that both sides step evenly along are merged. The last two dims form one 2-D transfer on each
side (LOAD with the source strides, STORE with the destination's), the rest are loops. A dim the source is
broadcast along (expand) is not fetched again: the block is loaded once and a vector COPY with stride 0 repeats
it. Blocks alternate between two VEC areas, so loads of the next block overlap stores of the last.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.types import DType
from .config import FpgaConfig
from .isa import Buf, VFunc
from .lower_ctx import DTensor, LowerCtx, View, attrs_of, lowering, shape_of
from .lower_image import Placement
from .lower_operands import broadcast_strides
from .lower_vector import lower_elementwise, merge_dims

ALIAS_OPS = ("reshape", "squeeze", "unsqueeze", "flatten", "identity")


def lower_alias(ctx: LowerCtx, node: Node) -> None:
    """The result is the input's bytes seen with the result's shape."""
    src = node.inputs[0]
    if node.op == "cast" and src.type.dtype != node.output.type.dtype:
        lower_elementwise(ctx, node)   # bool -> f32
        return
    t = ctx.tensor(src)
    ctx.dram.add(node.output.name, Placement(t.addr, shape_of(node.output), t.dtype))
    if t.readonly:
        ctx.readonly.add(node.output.name)  # the weight image or a preload: reading it needs no token


def strided_copy(ctx: LowerCtx, src: DTensor, src_off: int, src_st: Sequence[int], dst: DTensor, dst_off: int,
                 dst_st: Sequence[int], shape: Sequence[int]) -> None:
    """dst[dst_off + sum(i_k * dst_st[k])] = src[src_off + sum(i_k * src_st[k])] over the index space `shape`
    (offsets and strides in elements)."""
    if math.prod(shape) == 0:
        return
    dims, (ss, ds) = merge_dims(shape, [src_st, dst_st])
    if len(dims) == 1:
        dims, ss, ds = [1] + dims, [0] + ss, [0] + ds
    rows, cols = dims[-2], dims[-1]
    outer = dims[:-2]
    e = src.itemsize
    vec = ctx.arena(Buf.VEC)
    budget = (ctx.half[Buf.VEC] - 64) // ctx.slots() // 2
    c_t = min(cols, budget)
    r_t = max(1, min(rows, budget // c_t))
    areas = [(vec.alloc(r_t * c_t, "block"), vec.alloc(r_t * c_t, "block")) for _ in range(ctx.slots())]
    k = 0
    for idx in itertools.product(*(range(d) for d in outer)):
        s0 = src_off + sum(i * st for i, st in zip(idx, ss[:-2]))
        d0 = dst_off + sum(i * st for i, st in zip(idx, ds[:-2]))
        for r0 in range(0, rows, r_t):
            rn = min(r_t, rows - r0)
            for c0 in range(0, cols, c_t):
                cn = min(c_t, cols - c0)
                raw, full = areas[k % len(areas)]
                k += 1
                srs, scs = ss[-2], ss[-1]
                lr, lc = (rn if srs else 1), (cn if scs else 1)
                offset = (s0 + r0 * srs + c0 * scs) * e
                on_chip = ctx.resident_at(src, offset)
                if on_chip is not None:    # the previous node left the source in VEC: no LOAD
                    at = View(Buf.VEC, on_chip, srs, scs)
                    if (lr, lc) == (rn, cn) and scs == 1 and srs >= 0:
                        ctx.store(Buf.VEC, at.addr, dst, (d0 + r0 * ds[-2] + c0 * ds[-1]) * e, rn, cn, ds[-2] * e,
                                  ds[-1] * e, srs)
                        continue
                    ctx.vop(VFunc.COPY, rn, cn, View(Buf.VEC, full, cn, 1), at)
                    ctx.store(Buf.VEC, full, dst, (d0 + r0 * ds[-2] + c0 * ds[-1]) * e, rn, cn, ds[-2] * e, ds[-1] * e, cn)
                    continue
                ctx.load(Buf.VEC, raw, src, offset, lr, lc, srs * e, scs * e if lc > 1 else e, lc)
                at = raw
                if (lr, lc) != (rn, cn):   # broadcast: repeat what was loaded
                    ctx.vop(VFunc.COPY, rn, cn, View(Buf.VEC, full, cn, 1),
                            View(Buf.VEC, raw, lc if lr > 1 else 0, 1 if lc > 1 else 0))
                    at = full
                ctx.store(Buf.VEC, at, dst, (d0 + r0 * ds[-2] + c0 * ds[-1]) * e, rn, cn, ds[-2] * e, ds[-1] * e, cn)


def lower_transpose(ctx: LowerCtx, node: Node) -> None:
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.output)
    perm = attrs_of(node)["perm"] or list(reversed(range(len(x.shape))))
    strided_copy(ctx, x, 0, [x.strides[p] for p in perm], out, 0, out.strides, out.shape)


def _slice_params(node: Node, graph: Graph, rank: int, shape: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Per dim (start, step) of a slice with constant bounds, or None."""
    ins = (list(node.inputs[1:5]) + [None] * 4)[:4]
    vals = [graph.const_value(v) if v is not None else None for v in ins]
    if any(v is not None and c is None for v, c in zip(ins, vals)) or vals[0] is None or vals[1] is None:
        return None
    starts = [int(s) for s in np.asarray(vals[0]).reshape(-1)]
    ends = [int(s) for s in np.asarray(vals[1]).reshape(-1)]
    axes = [int(a) % rank for a in np.asarray(vals[2]).reshape(-1)] if vals[2] is not None else list(range(len(starts)))
    steps = [int(s) for s in np.asarray(vals[3]).reshape(-1)] if vals[3] is not None else [1] * len(starts)
    begin, step = [0] * rank, [1] * rank
    for a, s, en, st in zip(axes, starts, ends, steps):
        begin[a] = range(*slice(s, en, st).indices(shape[a])).start
        step[a] = st
    return begin, step


def lower_slice(ctx: LowerCtx, node: Node) -> None:
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.output)
    begin, step = _slice_params(node, ctx.graph, len(x.shape), x.shape)  # type: ignore[misc]
    off = sum(b * s for b, s in zip(begin, x.strides))
    strided_copy(ctx, x, off, [s * st for s, st in zip(x.strides, step)], out, 0, out.strides, out.shape)


def lower_concat(ctx: LowerCtx, node: Node) -> None:
    out = ctx.output(node.output)
    axis = attrs_of(node)["axis"] % len(out.shape)
    pos = 0
    for v in node.inputs:
        x = ctx.tensor(v)
        strided_copy(ctx, x, 0, x.strides, out, pos * out.strides[axis], out.strides, x.shape)
        pos += x.shape[axis]


def lower_split(ctx: LowerCtx, node: Node) -> None:
    x = ctx.tensor(node.inputs[0])
    axis = attrs_of(node)["axis"] % len(x.shape)
    pos = 0
    for v in node.outputs:
        out = ctx.output(v)
        strided_copy(ctx, x, pos * x.strides[axis], x.strides, out, 0, out.strides, out.shape)
        pos += out.shape[axis]


def lower_expand(ctx: LowerCtx, node: Node) -> None:
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.output)
    strided_copy(ctx, x, 0, broadcast_strides(x.shape, out.shape), out, 0, out.strides, out.shape)


def support_move(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    src = node.inputs[0]
    if node.op == "cast":
        if src.type.dtype is DType.BOOL or src.type.dtype == node.output.type.dtype:
            return None
        return f"cast from {src.type.dtype}"
    if src.type.dtype not in (DType.F32, DType.BOOL) or src.type.dtype != node.outputs[0].type.dtype:
        return f"{src.type.dtype} data"
    if node.op == "slice" and _slice_params(node, graph, len(src.type.shape), shape_of(src)) is None:
        return "slice bounds are not constants"
    if node.op == "split" and node.inputs[1:] and node.inputs[1] is not None and graph.const_value(node.inputs[1]) is None:
        return "split sizes are not constants"
    if src.type.dtype is DType.BOOL and node.op not in ALIAS_OPS:
        return "copies of booleans"
    return None


lowering(*ALIAS_OPS, "cast", support=support_move)(lower_alias)
lowering("transpose", support=support_move)(lower_transpose)
lowering("slice", support=support_move)(lower_slice)
lowering("concat", support=support_move)(lower_concat)
lowering("split", support=support_move)(lower_split)
lowering("expand", support=support_move)(lower_expand)

"""Ops along the last axis, a whole row in VEC at a time: reductions (sum, mean, max, min), softmax, RMSNorm and
LayerNorm (the dedicated ops; their decomposed forms are elementwise ops and reductions already).

A row program works on a tile of rows: its inputs are rows [r, C] (loaded), vectors [C] shared by every row (a
norm's weight, loaded once) and per-row columns [r] it computes (a max, a sum); the row reductions are RSUM and
RMAX of the vector unit, whose lane-and-tree summation order (docs/ISA.md) is not numpy's pairwise one: sums and
means agree with the interpreter to a few ulp, maxima exactly. Tiles alternate between two VEC areas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ...ir.graph import Graph, Node
from .config import FpgaConfig
from .isa import Buf, VFunc
from .lower_ctx import DTensor, LowerCtx, View, attrs_of, lowering, shape_of

Body = Callable[[int, list[View], list[View | float], list[View], list[View], list[View]], None]


def row_program(ctx: LowerCtx, rows: int, cols: int, inputs: Sequence[DTensor], vectors: Sequence[DTensor | float],
                outputs: Sequence[DTensor], col_outputs: Sequence[DTensor], temps: int, columns: int,
                body: Body) -> None:
    """For each tile of rows: load `inputs` ([rows, cols] each), run body(n, X, W, O, T, K) (X the inputs, W the
    vectors, O the outputs [n, cols], T temporaries [n, cols], K columns [n]: the first len(col_outputs) are
    stored as those outputs), store O and the column outputs."""
    vec = ctx.arena(Buf.VEC)
    w_views: list[View | float] = []
    for w in vectors:
        if isinstance(w, float):
            w_views.append(w)
            continue
        cs = 1 if w.numel == cols else 0
        width = cols if cs else 1
        area = vec.alloc(width, "row vector")
        ctx.load(Buf.VEC, area, w, 0, 1, width, 0)
        w_views.append(View(Buf.VEC, area, 0, cs))
    full = len(inputs) + len(outputs) + temps
    per_slot = vec.free // ctx.slots()
    r_t = max(1, min(rows, per_slot // (full * cols + columns)))
    slots = []
    for _ in range(ctx.slots()):
        slots.append(([vec.alloc(r_t * cols, "rows") for _ in range(full)], [vec.alloc(r_t, "column") for _ in range(columns)]))
    for k, r0 in enumerate(range(0, rows, r_t)):
        n = min(r_t, rows - r0)
        areas, cols_at = slots[k % len(slots)]
        views = [View(Buf.VEC, a, cols, 1) for a in areas]
        for i, x in enumerate(inputs):
            on_chip = ctx.resident_at(x, r0 * cols * 4)
            if on_chip is not None:
                views[i] = View(Buf.VEC, on_chip, cols, 1)
            else:
                ctx.load(Buf.VEC, views[i].addr, x, r0 * cols * 4, n, cols, cols * 4)
        kv = [View(Buf.VEC, a, 1, 0) for a in cols_at]
        xs, os, ts = views[:len(inputs)], views[len(inputs):len(inputs) + len(outputs)], views[len(inputs) + len(outputs):]
        body(n, xs, w_views, os, ts, kv)
        for o, v in zip(outputs, os):
            ctx.store(Buf.VEC, v.addr, o, r0 * cols * 4, n, cols, cols * 4)
        for o, v in zip(col_outputs, kv):
            ctx.store(Buf.VEC, v.addr, o, r0 * 4, 1, n, 0)
    if rows <= r_t:
        for o, v in zip(outputs, slots[0][0][len(inputs):]):
            ctx.keep(o, v)
        for o, v in zip(col_outputs, slots[0][1]):
            ctx.keep(o, v)


def _rows_cols(shape: Sequence[int]) -> tuple[int, int]:
    cols = int(shape[-1]) if shape else 1
    return (int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1), cols


# ---- reductions --------------------------------------------------------------------------------------------

def lower_reduce(ctx: LowerCtx, node: Node) -> None:
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.output)
    rows, cols = _rows_cols(x.shape)
    op = node.op

    def body(n: int, X: list, W: list, O: list, T: list, K: list) -> None:
        if op == "reduce_min":   # min = -max(-x)
            ctx.vop(VFunc.NEG, n, cols, T[0], X[0])
            ctx.vop(VFunc.RMAX, n, cols, K[0], T[0])
            ctx.vop(VFunc.NEG, n, 1, K[0], K[0])
        else:
            ctx.vop(VFunc.RMAX if op == "reduce_max" else VFunc.RSUM, n, cols, K[0], X[0])
        if op == "reduce_mean":
            ctx.vop(VFunc.DIV, n, 1, K[0], K[0], float(cols))

    row_program(ctx, rows, cols, [x], [], [], [out], 1 if op == "reduce_min" else 0, 1, body)


def support_reduce(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    x = shape_of(node.inputs[0])
    attrs = attrs_of(node)
    axes = None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        c = graph.const_value(node.inputs[1])
        if c is None:
            return "reduction axes are not constants"
        axes = [int(a) % len(x) for a in np.asarray(c).reshape(-1)] if len(x) else []
    if not axes:
        if attrs["noop_with_empty_axes"]:
            return "a reduction over no axes (a copy)"
        axes = list(range(len(x)))
    if not x or sorted(axes) != [len(x) - 1] or x[-1] == 0:
        return "a reduction over other than the last axis"
    return _row_fits(ctx_free(config), x[-1], 3)


# ---- softmax, norms ----------------------------------------------------------------------------------------

def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    """exp(x - max) / sum, per row."""
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.output)
    rows, cols = _rows_cols(x.shape)

    def body(n: int, X: list, W: list, O: list, T: list, K: list) -> None:
        ctx.vop(VFunc.RMAX, n, cols, K[0], X[0])
        ctx.vop(VFunc.SUB, n, cols, O[0], X[0], K[0])
        ctx.vop(VFunc.EXP, n, cols, O[0], O[0])
        ctx.vop(VFunc.RSUM, n, cols, K[1], O[0])
        ctx.vop(VFunc.DIV, n, cols, O[0], O[0], K[1])

    row_program(ctx, rows, cols, [x], [], [out], [], 0, 2, body)


def lower_rms_norm(ctx: LowerCtx, node: Node) -> None:
    """x * (1 / sqrt(mean(x * x) + eps)) * scale."""
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.output)
    rows, cols = _rows_cols(x.shape)
    eps = float(np.float32(attrs_of(node)["epsilon"]))
    scale = _vector(ctx, node, 1)

    def body(n: int, X: list, W: list, O: list, T: list, K: list) -> None:
        ctx.vop(VFunc.MUL, n, cols, O[0], X[0], X[0])
        _mean(ctx, n, cols, K[0], O[0])
        ctx.vop(VFunc.ADD, n, 1, K[0], K[0], eps)
        ctx.vop(VFunc.SQRT, n, 1, K[0], K[0])
        ctx.vop(VFunc.RECIP, n, 1, K[0], K[0])
        ctx.vop(VFunc.MUL, n, cols, O[0], X[0], K[0])
        ctx.vop(VFunc.MUL, n, cols, O[0], O[0], W[0])

    row_program(ctx, rows, cols, [x], [scale], [out], [], 0, 1, body)


def lower_layer_norm(ctx: LowerCtx, node: Node) -> None:
    """(x - mean) * (1 / sqrt(mean((x - mean)^2) + eps)) * scale + bias; Mean and InvStdDev when asked for."""
    x, out = ctx.tensor(node.inputs[0]), ctx.output(node.outputs[0])
    rows, cols = _rows_cols(x.shape)
    eps = float(np.float32(attrs_of(node)["epsilon"]))
    vectors = [_vector(ctx, node, 1)]
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    if has_bias:
        vectors.append(_vector(ctx, node, 2))
    extra = [ctx.output(v) for v in node.outputs[1:]]

    def body(n: int, X: list, W: list, O: list, T: list, K: list) -> None:
        _mean(ctx, n, cols, K[0], X[0])
        ctx.vop(VFunc.SUB, n, cols, O[0], X[0], K[0])
        ctx.vop(VFunc.MUL, n, cols, T[0], O[0], O[0])
        _mean(ctx, n, cols, K[1], T[0])
        ctx.vop(VFunc.ADD, n, 1, K[1], K[1], eps)
        ctx.vop(VFunc.SQRT, n, 1, K[1], K[1])
        ctx.vop(VFunc.RECIP, n, 1, K[1], K[1])
        ctx.vop(VFunc.MUL, n, cols, O[0], O[0], K[1])
        ctx.vop(VFunc.MUL, n, cols, O[0], O[0], W[0])
        if has_bias:
            ctx.vop(VFunc.ADD, n, cols, O[0], O[0], W[1])

    row_program(ctx, rows, cols, [x], vectors, [out], extra, 1, 2, body)


def _mean(ctx: LowerCtx, n: int, cols: int, dst: View, x: View) -> None:
    ctx.vop(VFunc.RSUM, n, cols, dst, x)
    ctx.vop(VFunc.DIV, n, 1, dst, dst, float(cols))


def _vector(ctx: LowerCtx, node: Node, i: int) -> DTensor | float:
    imm = ctx.scalar(node.inputs[i])
    return imm if imm is not None else ctx.tensor(node.inputs[i])


def ctx_free(config: FpgaConfig) -> int:
    """VEC words a node's row program may use (per slot, with double buffering)."""
    return config.vector_buffer_bytes // 4 // 2 // 2


def _row_fits(free: int, cols: int, rows_per: int) -> str | None:
    if rows_per * cols + 4 > free:
        return f"a row of {cols} does not fit the vector buffer"
    return None


def support_last_axis(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    x = shape_of(node.inputs[0])
    if not x or x[-1] == 0:
        return "an empty row"
    axis = attrs_of(node)["axis"] % len(x)
    if axis != len(x) - 1:
        return f"{node.op} over other than the last axis"
    for i in (1, 2):
        if len(node.inputs) > i and node.inputs[i] is not None:
            s = shape_of(node.inputs[i])
            if s and (int(np.prod(s)) not in (1, x[-1]) or s[-1] not in (1, x[-1])):
                return f"{node.op} with a scale or bias that is not one value per column"
    if node.op == "layer_normalization" and attrs_of(node)["stash_type"] != 1:
        return "layer_normalization with a stash type other than f32"
    if node.op == "rms_normalization" and attrs_of(node)["stash_type"] != 1:
        return "rms_normalization with a stash type other than f32"
    return _row_fits(ctx_free(config), x[-1], 4)


lowering("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", support=support_reduce)(lower_reduce)
lowering("softmax", support=support_last_axis)(lower_softmax)
lowering("rms_normalization", support=support_last_axis)(lower_rms_norm)
lowering("layer_normalization", support=support_last_axis)(lower_layer_norm)

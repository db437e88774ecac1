"""ternary_conv (int8 activations, 2 spatial dims) as an im2col GEMM on the matrix unit, bit for bit the interpreter's.

Per image: LOAD it -> VEC; quantise it as one row (absmax over the whole image, as tritc/ir/ops/ternary_conv.py
does) -> int8 in ACT; build the im2col rows in ACT with one vector COPY per (channel, kernel offset) over the
output positions where that offset meets the image (the rest stays 0, the padding's code); then per conv group
and tile of output channels GEMM -> ACC, and the epilogue acc * scale / s + bias written transposed, so that the
STORE of a channel block writes NCHW rows. Blocks of output rows keep the im2col rows within ACT.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...ir.accumulators import TERNARY_INT8_PRODUCTS, check_int32_sum
from ...ir.graph import Graph, Node
from ...ir.ops.cnn import Window
from ...ir.ternary import TernaryWeight
from .config import TRIT_GROUP, FpgaConfig
from .isa import Buf, VFunc, padded_kw
from .lower_ctx import MAX_CS, LowerCtx, View, attrs_of, lowering, shape_of, wgt_half_bytes
from .lower_weights import load_weight_tile, weight_tiles


def _geometry(node: Node, x_shape: tuple[int, ...], w: tuple[int, int]) -> dict:
    a = attrs_of(node)
    win = Window.of({k: a[k] for k in ("auto_pad", "dilations", "pads", "strides")}, a["kernel_shape"], "ternary_conv")
    n, c, h, wd = x_shape
    (oh, pt, _), (ow, pl, _) = win.dim(0, h), win.dim(1, wd)
    groups = a["group"]
    kg, m = w
    kwords = -(-kg // TRIT_GROUP)
    return dict(n=n, c=c, h=h, w=wd, oh=oh, ow=ow, pt=pt, pl=pl, kh=win.kernel[0], kw=win.kernel[1],
                sy=win.strides[0], sx=win.strides[1], dy=win.dilations[0], dx=win.dilations[1], groups=groups,
                cg=c // groups, kg=kg, m=m, mg=m // groups, kwords=kwords, row=groups * kwords * TRIT_GROUP)


def _rows_per_block(ctx_half_act: int, g: dict) -> int:
    """Output rows (of ow positions) per im2col block."""
    free = ctx_half_act - g["c"] * g["h"] * g["w"]
    return max(0, min(g["oh"], free // (g["ow"] * g["row"]), MAX_CS // g["ow"]))


def lower_ternary_conv(ctx: LowerCtx, node: Node) -> None:
    a = attrs_of(node)
    x = ctx.tensor(node.inputs[0])
    e = ctx.weights.entries[node.inputs[1].name]
    bias = ctx.tensor(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    out = ctx.output(node.output)
    g = _geometry(node, x.shape, e.shape)
    image = g["c"] * g["h"] * g["w"]
    p_all = g["oh"] * g["ow"]
    check_int32_sum(f"node {node.describe()}", g["kwords"] * TRIT_GROUP, TERNARY_INT8_PRODUCTS, what="int8 x trit products")
    vec, act, acc_a = ctx.arena(Buf.VEC), ctx.arena(Buf.ACT), ctx.arena(Buf.ACC)
    q = act.alloc(image, "int8 image")
    yb = _rows_per_block(ctx.half[Buf.ACT], g)
    cols = act.alloc(yb * g["ow"] * g["row"], "im2col rows")
    pt_max = yb * g["ow"]
    xa, ta = vec.alloc(image, "image"), vec.alloc(image, "image")
    s = vec.alloc(1, "factor")
    scales = vec.alloc(g["m"], "scales") if e.granularity == "per_channel" else None
    if scales is not None:
        ctx.load(Buf.VEC, scales, ctx.image(e), e.scale_addr - e.addr, 1, g["m"], 0)
    bvec = vec.alloc(g["m"], "bias") if bias is not None else None
    if bias is not None:
        ctx.load(Buf.VEC, bvec, bias, 0, 1, g["m"], 0)
    max_cols = wgt_half_bytes(ctx.config) // e.block_bytes * e.rows      # whole blocks in a WGT half
    n_t = max(1, min(g["mg"], acc_a.free // pt_max, vec.free // (ctx.slots() * pt_max), max_cols))
    acc = acc_a.alloc(pt_max * n_t, "accumulators")
    ys = [vec.alloc(pt_max * n_t, "results") for _ in range(ctx.slots())]
    eps, act_max = float(np.float32(a["act_eps"])), float(np.float32(a["act_max"]))
    turn = 0
    for n in range(g["n"]):
        # quantise the image: one factor s
        ctx.load(Buf.VEC, xa, x, n * image * 4, 1, image, 0)
        xv, tv, sv = View(Buf.VEC, xa, 0, 1), View(Buf.VEC, ta, 0, 1), View(Buf.VEC, s, 0, 0)
        ctx.vop(VFunc.AMAX, 1, image, sv, xv, eps)       # max(absmax, eps) in one pass
        if a["act_scale"] == "mul_reciprocal":
            ctx.vop(VFunc.RECIP, 1, 1, sv, sv)
            ctx.vop(VFunc.MUL, 1, 1, sv, sv, act_max)
        else:
            ctx.vop(VFunc.FILL, 1, 1, tv, None, act_max)
            ctx.vop(VFunc.DIV, 1, 1, sv, tv, sv)
        ctx.vop(VFunc.MUL, 1, image, View(Buf.ACT, q, 0, 1), xv, sv)
        for y0 in range(0, g["oh"], yb):
            ny = min(yb, g["oh"] - y0)
            pn = ny * g["ow"]
            _im2col(ctx, g, q, cols, y0, ny)
            for grp in range(g["groups"]):
                # a conv group's output channels from its first block boundary on in whole blocks (lower_weights.py)
                for m0, mn in weight_tiles(grp * g["mg"], (grp + 1) * g["mg"], n_t, e.rows):
                    wgt = load_weight_tile(ctx, e, 0, m0, mn, 0, e.kw)
                    ctx.gemm(acc, cols + grp * g["kwords"] * TRIT_GROUP, wgt, pn, g["kwords"], mn, g["row"], n_t, True)
                    y = ys[turn % len(ys)]
                    turn += 1
                    yt = View(Buf.VEC, y, 1, pn)             # element (p, m) at y + m * pn + p: NCHW rows
                    scale = float(e.scale) if scales is None else View(Buf.VEC, scales + m0, 0, 1)
                    ctx.vop(VFunc.MUL, pn, mn, yt, View(Buf.ACC, acc, n_t, 1), scale)
                    ctx.vop(VFunc.DIV, pn, mn, yt, yt, sv)
                    if bvec is not None:
                        ctx.vop(VFunc.ADD, pn, mn, yt, yt, View(Buf.VEC, bvec + m0, 0, 1))
                    ctx.store(Buf.VEC, y, out, ((n * g["m"] + m0) * p_all + y0 * g["ow"]) * 4, mn, pn, p_all * 4, 4, pn)


def _im2col(ctx: LowerCtx, g: dict, q: int, cols: int, y0: int, ny: int) -> None:
    """Rows (y0..y0+ny) x ow of im2col in ACT: row p, column grp * kwords * 64 + (c * kh + ky) * kw + kx."""
    row = g["row"]
    ctx.vop(VFunc.FILL, ny * g["ow"], row, View(Buf.ACT, cols, row, 1), None, 0.0)
    for c in range(g["c"]):
        grp, cl = divmod(c, g["cg"])
        for ky in range(g["kh"]):
            iy = [oy * g["sy"] + ky * g["dy"] - g["pt"] for oy in range(y0, y0 + ny)]
            ys = [i for i, v in enumerate(iy) if 0 <= v < g["h"]]
            if not ys:
                continue
            for kx in range(g["kw"]):
                ix = [ox * g["sx"] + kx * g["dx"] - g["pl"] for ox in range(g["ow"])]
                xs = [i for i, v in enumerate(ix) if 0 <= v < g["w"]]
                if not xs:
                    continue
                col = grp * g["kwords"] * TRIT_GROUP + (cl * g["kh"] + ky) * g["kw"] + kx
                dst = View(Buf.ACT, cols + (ys[0] * g["ow"] + xs[0]) * row + col, g["ow"] * row, row)
                src = View(Buf.ACT, q + (c * g["h"] + iy[ys[0]]) * g["w"] + ix[xs[0]], g["sy"] * g["w"], g["sx"])
                ctx.vop(VFunc.COPY, len(ys), len(xs), dst, src)


def support_ternary_conv(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    a = attrs_of(node)
    w = graph.const_value(node.inputs[1])
    if not isinstance(w, TernaryWeight) or w.granularity == "per_group":
        return "a ternary_conv weight that is not per tensor or per channel"
    if a["act"] != "int8":
        return "float activations: the matrix unit takes int8 (the quantize-activations pass makes them int8)"
    x = shape_of(node.inputs[0])
    if len(x) != 4:
        return "ternary_conv over other than 2 spatial dims"
    g = _geometry(node, x, tuple(int(d) for d in w.shape))
    half = {b: v // 2 for b, v in {Buf.ACT: config.activation_buffer_bytes, Buf.VEC: config.vector_buffer_bytes // 4,
                                   Buf.ACC: config.accumulator_buffer_bytes // 4}.items()}
    image = g["c"] * g["h"] * g["w"]
    if g["row"] > MAX_CS:
        return f"im2col rows of {g['row']} bytes (at most {MAX_CS})"
    if _rows_per_block(half[Buf.ACT], g) < 1 or g["ow"] > MAX_CS:
        return "an image and a row of im2col do not fit the activation buffer"
    if 2 * image + 2 * g["m"] + 4 * g["ow"] + 16 > half[Buf.VEC] or g["ow"] > half[Buf.ACC]:
        return "an image does not fit the vector buffer"
    if g["cg"] * g["kh"] * g["kw"] != g["kg"]:
        return "weight rows do not match channels x kernel"
    block = padded_kw(g["kwords"], config.words_per_beat) * config.matrix_rows * config.word_bytes
    if block > wgt_half_bytes(config):
        return f"a block of {config.matrix_rows} output channels' weights ({block} bytes) does not fit half of WGT"
    return None


lowering("ternary_conv", support=support_ternary_conv)(lower_ternary_conv)

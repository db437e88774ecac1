"""matmul of two activations (attention's Q K^T and P V when they are not fused) on the vector unit's MM, batched
over the leading dims; and rotary_embedding (the ONNX op), a few vector ops per tile of rows.

matmul: per batch index, B's columns in blocks of at most 2047 (MM reads B[k, j] at column stride N: its field is 12
bits) and A's rows in blocks that fit VEC: LOAD, MM (products rounded, summed in lanes then a tree: not numpy's
BLAS order, so within a tolerance), STORE. A matmul whose B is a constant (a float LM head left float by
--fpga-float-layers host) is the host's: the matrix unit takes trits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.types import DType
from .config import FpgaConfig
from .isa import Buf, VFunc
from .lower_ctx import MAX_CS, LowerCtx, View, attrs_of, lowering, shape_of
from .lower_operands import RowOperand, broadcast_strides, load_run, row_offsets, split_runs


def lower_matmul(ctx: LowerCtx, node: Node) -> None:
    a, b = ctx.tensor(node.inputs[0]), ctx.tensor(node.inputs[1])
    out = ctx.output(node.output)
    if out.numel == 0:
        return
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = tuple(out.shape[:-2])
    a_st = broadcast_strides(a.shape[:-2], batch)      # in matrices
    b_st = broadcast_strides(b.shape[:-2], batch)
    vec = ctx.arena(Buf.VEC)
    n_t = min(n, MAX_CS)
    words = vec.free // ctx.slots() - 8
    b_words = k * n_t
    if b_words > words // 2:
        n_t = max(1, min(n_t, words // 2 // k))
        b_words = k * n_t
    m_t = max(1, min(m, (words - b_words) // (k + n_t)))
    slots = [(vec.alloc(k * n_t, "B"), vec.alloc(m_t * k, "A"), vec.alloc(m_t * n_t, "C")) for _ in range(ctx.slots())]
    turn = 0
    for idx in itertools.product(*(range(d) for d in batch)):
        ao = sum(i * s for i, s in zip(idx, a_st)) * m * k
        bo = sum(i * s for i, s in zip(idx, b_st)) * k * n
        oo = (int(np.ravel_multi_index(idx, batch)) if batch else 0) * m * n
        for n0 in range(0, n, n_t):
            nn = min(n_t, n - n0)
            for m0 in range(0, m, m_t):
                mn = min(m_t, m - m0)
                bs, as_, cs = slots[turn % len(slots)]
                turn += 1
                ctx.load(Buf.VEC, bs, b, (bo + n0) * 4, k, nn, n * 4, 4, nn)
                ctx.load(Buf.VEC, as_, a, (ao + m0 * k) * 4, mn, k, k * 4)
                ctx.vop(VFunc.MM, mn, nn, View(Buf.VEC, cs, nn, 1), View(Buf.VEC, as_, k, 1), View(Buf.VEC, bs, 1, nn),
                        depth=k)
                ctx.store(Buf.VEC, cs, out, (oo + m0 * n + n0) * 4, mn, nn, n * 4, 4, nn)


def support_matmul(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    if any(graph.const_value(v) is not None for v in node.inputs):
        return "float matmul with a constant weight (LM head): host (or --fpga-float-layers radix3)"
    a, b = (shape_of(v) for v in node.inputs)
    if len(a) < 2 or len(b) < 2:
        return "matmul of vectors"
    k = a[-1]
    if 4 * k + 16 > config.vector_buffer_bytes // 4 // 2 // 2:
        return f"an inner dim of {k} does not fit the vector buffer"
    return None


# ---- rotary_embedding --------------------------------------------------------------------------------------------

def lower_rotary(ctx: LowerCtx, node: Node) -> None:
    """out = [cos x1 - sin x2, sin x1 + cos x2, x_pass] per head (halves, or interleaved pairs)."""
    a = attrs_of(node)
    x, cos_t, sin_t = (ctx.tensor(v) for v in node.inputs[:3])
    out = ctx.output(node.output)
    if x.numel == 0:
        return
    b_stride = 0 if cos_t.shape[0] == 1 else cos_t.shape[1] * cos_t.shape[2]
    if len(x.shape) == 4:      # (batch, heads, seq, head): row (b, h, s) reads cos row (b, s)
        batch, heads, seq, hd = x.shape
        order, st = (batch, heads, seq), (b_stride, 0, cos_t.shape[2])
    else:                      # (batch, seq, hidden) = (batch, seq, heads, head): row (b, s, h) reads (b, s)
        batch, seq, hidden = x.shape
        heads = a["num_heads"]
        hd = hidden // heads
        order, st = (batch, seq, heads), (b_stride, cos_t.shape[2], 0)
    rot = a["rotary_embedding_dim"] or hd
    half = rot // 2
    rows = math.prod(order)
    offs = row_offsets(order, st)
    cos_op, sin_op = RowOperand(cos_t, offs, 1), RowOperand(sin_t, offs, 1)
    vec = ctx.arena(Buf.VEC)
    per_row = 2 * hd + 4 * half
    r_t = max(1, min(rows, (vec.free // ctx.slots() - 8) // per_row))
    slots = [tuple(vec.alloc(r_t * w, "rows") for w in (hd, hd, half, half, half, half)) for _ in range(ctx.slots())]
    inter = bool(a["interleaved"])
    c1 = 2 if inter else 1                                   # the column stride of x1, x2 and of real, imag
    second = 1 if inter else half                            # where x2 (and imag) start
    for k, r0 in enumerate(range(0, rows, r_t)):
        rn = min(r_t, rows - r0)
        xa, oa, ca, sa, t1, t2 = slots[k % len(slots)]
        on_chip = ctx.resident_at(x, r0 * hd * 4)
        if on_chip is None:
            ctx.load(Buf.VEC, xa, x, r0 * hd * 4, rn, hd, hd * 4)
        else:
            xa = on_chip
        for ra, n in split_runs([cos_op], r0, rn):
            row = ra - r0
            cv = load_run(ctx, cos_op, ca, row, ra, n, 0, half)
            sv = load_run(ctx, sin_op, sa, row, ra, n, 0, half)
            xv = View(Buf.VEC, xa + row * hd, hd, c1)
            ov = View(Buf.VEC, oa + row * hd, hd, c1)
            a1, a2 = View(Buf.VEC, t1 + row * half, half, 1), View(Buf.VEC, t2 + row * half, half, 1)
            x1, x2 = xv, View(Buf.VEC, xv.addr + second, hd, c1)
            ctx.vop(VFunc.MUL, n, half, a1, cv, x1)
            ctx.vop(VFunc.MUL, n, half, a2, sv, x2)
            ctx.vop(VFunc.SUB, n, half, ov, a1, a2)
            ctx.vop(VFunc.MUL, n, half, a1, sv, x1)
            ctx.vop(VFunc.MUL, n, half, a2, cv, x2)
            ctx.vop(VFunc.ADD, n, half, View(Buf.VEC, ov.addr + second, hd, c1), a1, a2)
            if rot < hd:
                ctx.vop(VFunc.COPY, n, hd - rot, View(Buf.VEC, ov.addr + rot, hd, 1), View(Buf.VEC, xv.addr + rot, hd, 1))
        ctx.store(Buf.VEC, oa, out, r0 * hd * 4, rn, hd, hd * 4)
    if rows <= r_t:
        ctx.keep(out, slots[0][1])


def support_rotary(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        return "rotary tables indexed by run-time position ids"
    c = shape_of(node.inputs[1])
    if len(c) != 3 or any(v.type.dtype is not DType.F32 for v in node.inputs[:3]):
        return "rotary tables that are not [batch, seq, rot / 2] fp32"
    return None


lowering("matmul", support=support_matmul)(lower_matmul)
lowering("rotary_embedding", support=support_rotary)(lower_rotary)

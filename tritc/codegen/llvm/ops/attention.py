"""Lowerings of the transformer ops: Attention (GQA, masks, causal / windowed with a KV cache, softcap, qk output
modes, present key / value), RotaryEmbedding, SwiGLU and LinearAttention.

f32 Attention without softcap or qk output runs the vectorised, threaded kernel of attention_kernels.py. Every other
case is a plain loop nest (batch, head, query row: scores over keys, stable softmax, weighted sum of V) with f32
accumulation (f64 for f64); every step the interpreter runs in Q's dtype is rounded to it here too, so f16 and bf16
results agree with tritc/ir/ops/attention.py to the last place in almost every element.
"""

from __future__ import annotations

from collections.abc import Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import F32, F64, I1, I8, I64, broadcast_strides, elem_type, for_range, gep, intrinsic, linear_index, load, store
from ..context import Buf, NodeCtx
from ..elementwise import to_compute
from ..kernels.vec import entry_alloca
from . import attention_kernels, lowering
from .core import copy_buffer
from .quant import call, fix, ftype, load_f, scratch, store_f, widen

NEG_INF = float("-inf")


def round_to(b: ir.IRBuilder, v: ir.Value, dtype: DType) -> ir.Value:
    """v (f32 or f64) rounded to dtype's precision, kept in v's type: a numpy step computed in dtype."""
    if dtype is DType.F64 or (dtype is DType.F32 and v.type == F32):
        return v
    if dtype is DType.BF16:
        return widen(b, fix(b, v, dtype), v.type)
    return widen(b, widen(b, v, ftype(dtype)), v.type)


def load_as(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value | int, dtype: DType, t: ir.Type) -> ir.Value:
    """A float element of dtype at ptr[index], exactly widened to t (f32 or f64)."""
    return widen(b, to_compute(b, load(b, ptr, index, elem_type(dtype)), dtype), t)


def head_strides(buf: Buf, heads: int) -> tuple[list[int], int]:
    """Element strides of (batch, head, seq, feature) in a 4-D (B, H, S, D) or 3-D (B, S, H * D) tensor, and D."""
    if buf.rank == 4:
        return buf.strides, buf.shape[3]
    _, seq, hidden = buf.shape
    d = hidden // heads
    return [seq * hidden, d, hidden, 1], d


def accumulate(b: ir.IRBuilder, slot: ir.Value, v: ir.Value) -> None:
    b.store(b.fadd(b.load(slot, typ=v.type), v), slot)


def _opt(ctx: NodeCtx, i: int) -> Buf | None:
    return ctx.ins[i] if i < len(ctx.ins) else None


# ---- Attention --------------------------------------------------------------------------------------------------


@lowering("attention")
def attention(ctx: NodeCtx) -> None:
    at = _Attention(ctx)
    at.write_present()
    if attention_kernels.fits(at):
        attention_kernels.emit(ctx, at)  # vectorised and threaded: f32, no softcap, no qk output
    else:
        at.emit()


class _Attention:
    """The loop nest of one Attention node: for each (batch, head, query row), scores over every key, a stable
    softmax, then the probability-weighted sum of V rows. `scores` holds one row of scores / probabilities."""

    def __init__(self, ctx: NodeCtx):
        self.ctx, self.b, a = ctx, ctx.b, ctx.attrs
        self.q, self.k, self.v = ctx.ins[0], ctx.ins[1], ctx.ins[2]
        self.mask, self.past_k, self.past_v, self.nonpad = (_opt(ctx, i) for i in (3, 4, 5, 6))
        self.y, self.present_k, self.present_v, self.qk_out = (ctx.outs[i] if i < len(ctx.outs) else None for i in range(4))
        q, k, v = self.q, self.k, self.v
        assert q is not None and k is not None and v is not None
        if q.rank == 4:
            self.batch, self.hq, self.sq = q.shape[:3]
            self.hkv, kv_len = k.shape[1], k.shape[2]
        else:
            self.batch, self.sq = q.shape[:2]
            self.hq, self.hkv, kv_len = a["q_num_heads"], a["kv_num_heads"], k.shape[1]
        self.qs, self.dk = head_strides(q, self.hq)
        self.ks, _ = head_strides(k, self.hkv)
        self.vs, self.dv = head_strides(v, self.hkv)
        self.ys, _ = head_strides(self.y, self.hq)
        self.past = self.past_k.shape[2] if self.past_k is not None else 0
        self.total = self.past + kv_len
        self.dt = dt = q.dtype
        self.at = F64 if dt is DType.F64 else F32  # accumulation type
        self.sp = a["softmax_precision"] or dt
        self.st = F64 if self.sp is DType.F64 else F32  # softmax type
        # numpy's steps, in Q's dtype: Q * sqrt(scale), K * sqrt(scale), softcap * tanh(logits / softcap)
        self.root = float(dt.np_dtype.type(np.sqrt(a["scale"] if a["scale"] is not None else 1 / np.sqrt(self.dk))))
        self.softcap = float(dt.np_dtype.type(a["softcap"])) if a["softcap"] > 0 else 0.0
        self.mode = a["qk_matmul_output_mode"]
        self.masked = self.mask is not None or self.nonpad is not None or bool(a["is_causal"]) \
            or a["left_window_size"] >= 0 or a["right_window_size"] >= 0
        self.mask_strides = _mask_strides(self.mask.shape, (self.batch, self.hq, self.sq)) if self.mask is not None else None

    def write_present(self) -> None:
        for src_past, src, strides, dst, d in ((self.past_k, self.k, self.ks, self.present_k, self.dk),
                                               (self.past_v, self.v, self.vs, self.present_v, self.dv)):
            if dst is not None:
                _write_present(self.ctx, src_past, src, strides, dst, d, self.hkv, self.past)

    def emit(self) -> None:
        b = self.b
        if self.y.numel == 0 and (self.qk_out is None or self.qk_out.numel == 0):
            return
        self.qrow = scratch(b, self.at, self.dk, "qrow")
        self.scores = scratch(b, self.st, self.total, "scores")
        self.yacc = scratch(b, self.at, self.dv, "yacc")
        self.dot = entry_alloca(b, self.at, "dot")
        self.row_max, self.row_sum = entry_alloca(b, self.st, "max"), entry_alloca(b, self.st, "sum")
        self.fully = entry_alloca(b, I1, "fully")
        group = self.hq // self.hkv
        with for_range(b, self.batch, name="b") as bi:
            # query i sits at absolute position i + offset (after the past cache, or after nonpad - q_len valid keys)
            limit = load(b, self.nonpad.ptr, bi, I64) if self.nonpad is not None else None
            offset = b.sub(limit, I64(self.sq)) if limit is not None and self.past == 0 else I64(self.past)
            with for_range(b, self.hq, name="h") as h:
                kh = b.udiv(h, I64(group))  # grouped-query: query heads [g * group, (g + 1) * group) share kv head g
                with for_range(b, self.sq, name="i") as i:
                    qk_row = b.mul(b.add(b.mul(b.add(b.mul(bi, I64(self.hq)), h), I64(self.sq)), i), I64(self.total))
                    self.scale_query(bi, h, i)
                    self.score_row(bi, h, i, kh, b.add(i, offset), limit, qk_row)
                    self.softmax_row(qk_row)
                    self.weighted_sum(bi, h, i, kh)

    def kv_row(self, src_past: Buf | None, src: Buf, strides: Sequence[int], d: int, bi: ir.Value, kh: ir.Value,
               j: ir.Value) -> ir.Value:
        """Pointer to key / value row j of kv head kh: from the past cache, then from the new K / V."""
        b, past = self.b, self.past
        new = gep(b, src.ptr, linear_index(b, [bi, kh, b.sub(j, I64(past))], strides[:3]), src.elem)
        if src_past is None:
            return new
        row = b.add(b.mul(b.add(b.mul(bi, I64(self.hkv)), kh), I64(past)), j)
        return b.select(b.icmp_signed("<", j, I64(past)), gep(b, src_past.ptr, b.mul(row, I64(d)), src_past.elem), new)

    def scale_query(self, bi: ir.Value, h: ir.Value, i: ir.Value) -> None:
        """qrow = Q[b, h, i] * sqrt(scale), rounded to Q's dtype."""
        b, at = self.b, self.at
        with for_range(b, self.dk, name="d") as d:
            x = load_as(b, self.q.ptr, linear_index(b, [bi, h, i, d], self.qs), self.dt, at)
            store(b, round_to(b, b.fmul(x, ir.Constant(at, self.root)), self.dt), self.qrow, d)

    def score_row(self, bi: ir.Value, h: ir.Value, i: ir.Value, kh: ir.Value, position: ir.Value,
                  limit: ir.Value | None, qk_row: ir.Value) -> None:
        """scores[j] = softcap(qrow . K[j] * sqrt(scale)) + bias[j] for every key j; notes whether any key is allowed."""
        b, at, dt, qk_out = self.b, self.at, self.dt, self.qk_out
        b.store(ir.Constant(I1, int(self.masked)), self.fully)  # no mask at all: never fully masked
        with for_range(b, self.total, name="j") as j:
            krow = self.kv_row(self.past_k, self.k, self.ks, self.dk, bi, kh, j)
            b.store(ir.Constant(at, 0.0), self.dot)
            with for_range(b, self.dk, name="d") as d:
                kx = round_to(b, b.fmul(load_as(b, krow, d, dt, at), ir.Constant(at, self.root)), dt)
                accumulate(b, self.dot, b.fmul(load(b, self.qrow, d, at), kx))
            logit = capped = round_to(b, b.load(self.dot, typ=at), dt)
            if self.softcap:
                c = ir.Constant(at, self.softcap)
                capped = round_to(b, b.fmul(round_to(b, call_libm(b, "tanh", round_to(b, b.fdiv(logit, c), dt)), dt), c), dt)
            score = capped
            if self.masked:
                bias = _bias(self.ctx, self.mask, self.mask_strides, [bi, h, i], j, position, limit, at)
                neg_inf = ir.Constant(at, NEG_INF)
                b.store(b.and_(b.load(self.fully, typ=I1), b.fcmp_ordered("==", bias, neg_inf)), self.fully)
                score = round_to(b, b.fadd(capped, bias), dt)
            if qk_out is not None and self.mode < 3:
                store_f(b, (logit, capped, score)[self.mode], qk_out, b.add(qk_row, j))
            store(b, round_to(b, widen(b, score, self.st), self.sp), self.scores, j)

    def softmax_row(self, qk_row: ir.Value) -> None:
        """Stable softmax of scores in place: minus the row max (0 when it is -inf); a zero sum divides by 1; a row
        with no allowed key gives zeros (not NaN). Steps round to softmax_precision as numpy's do."""
        b, st, sp, scores = self.b, self.st, self.sp, self.scores
        zero = ir.Constant(st, 0.0)
        b.store(ir.Constant(st, NEG_INF), self.row_max)
        with for_range(b, self.total, name="j") as j:  # llvm.maximum propagates NaN like np.max
            b.store(call(b, "llvm.maximum", b.load(self.row_max, typ=st), load(b, scores, j, st)), self.row_max)
        m = b.load(self.row_max, typ=st)
        m = b.select(b.fcmp_ordered("==", m, ir.Constant(st, NEG_INF)), zero, m)
        b.store(zero, self.row_sum)
        with for_range(b, self.total, name="j") as j:
            e = round_to(b, call_libm(b, "exp", round_to(b, b.fsub(load(b, scores, j, st), m), sp)), sp)
            store(b, e, scores, j)
            s = b.fadd(b.load(self.row_sum, typ=st), e)
            b.store(round_to(b, s, sp) if sp is DType.BF16 else s, self.row_sum)  # ml_dtypes sums bf16 step by step
        s = round_to(b, b.load(self.row_sum, typ=st), sp)
        s = b.select(b.fcmp_ordered("==", s, zero), ir.Constant(st, 1.0), s)
        none_allowed = b.load(self.fully, typ=I1)
        with for_range(b, self.total, name="j") as j:
            p = b.select(none_allowed, zero, round_to(b, b.fdiv(load(b, scores, j, st), s), sp))
            store(b, p, scores, j)
            if self.qk_out is not None and self.mode == 3:
                store_f(b, p, self.qk_out, b.add(qk_row, j))

    def weighted_sum(self, bi: ir.Value, h: ir.Value, i: ir.Value, kh: ir.Value) -> None:
        """Y[b, h, i] = sum_j probs[j] (in Q's dtype) * V[j]: an axpy per key over a contiguous V row."""
        b, at = self.b, self.at
        with for_range(b, self.dv, name="d") as d:
            store(b, ir.Constant(at, 0.0), self.yacc, d)
        with for_range(b, self.total, name="j") as j:
            p = round_to(b, widen(b, load(b, self.scores, j, self.st), at), self.dt)
            vrow = self.kv_row(self.past_v, self.v, self.vs, self.dv, bi, kh, j)
            with for_range(b, self.dv, name="d") as d:
                slot = gep(b, self.yacc, d, at)
                b.store(b.fadd(b.load(slot, typ=at), b.fmul(p, load_as(b, vrow, d, self.v.dtype, at))), slot)
        with for_range(b, self.dv, name="d") as d:
            store_f(b, load(b, self.yacc, d, at), self.y, linear_index(b, [bi, h, i, d], self.ys))


def call_libm(b: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """expf / exp (tanhf / tanh ...) by operand type."""
    return intrinsic(b, name + ("f" if x.type == F32 else ""), x.type, [x])


def _mask_strides(shape: Sequence[int], lead: Sequence[int]) -> list[int]:
    """Strides of a mask (rank 1..4, last dim over keys) read at (batch, head, query, key)."""
    strides = broadcast_strides(shape[:-1], lead) if len(shape) > 1 else [0] * len(lead)
    return [s * shape[-1] for s in strides] + [1]


def _bias(ctx: NodeCtx, mask: Buf | None, strides: list[int] | None, bhi: list[ir.Value], j: ir.Value,
          position: ir.Value, limit: ir.Value | None, at: ir.Type) -> ir.Value:
    """The additive bias of key j for query row (b, h, i): the mask (bool: 0 / -inf; float: its value; -inf past its
    end) plus -inf where causality, the window or the valid length forbid the key."""
    b, a = ctx.b, ctx.attrs
    zero, neg_inf = ir.Constant(at, 0.0), ir.Constant(at, NEG_INF)
    value: ir.Value = zero
    if mask is not None and strides is not None:
        covered = mask.shape[-1]
        idx = linear_index(b, [*bhi, b.select(b.icmp_signed("<", j, I64(covered)), j, I64(0))], strides)
        if mask.dtype is DType.BOOL:
            m = b.select(b.icmp_unsigned("!=", load(b, mask.ptr, idx, I8), ir.Constant(I8, 0)), zero, neg_inf)
        else:
            m = load_as(b, mask.ptr, idx, mask.dtype, at)
        value = b.select(b.icmp_signed("<", j, I64(covered)), m, neg_inf)
    allowed: ir.Value = ir.Constant(I1, 1)
    if a["is_causal"]:
        allowed = b.and_(allowed, b.icmp_signed("<=", j, position))
    if a["left_window_size"] >= 0:
        allowed = b.and_(allowed, b.icmp_signed("<=", b.sub(position, j), I64(a["left_window_size"])))
    if a["right_window_size"] >= 0:
        allowed = b.and_(allowed, b.icmp_signed("<=", b.sub(j, position), I64(a["right_window_size"])))
    if limit is not None:
        allowed = b.and_(allowed, b.icmp_signed("<", j, limit))
    return b.fadd(value, b.select(allowed, zero, neg_inf))


def _write_present(ctx: NodeCtx, src_past: Buf | None, src: Buf, strides: Sequence[int], dst: Buf, d: int,
                   hkv: int, past: int) -> None:
    """present = concat(past, new) along the sequence: (batch, kv_heads, past + new, d), one memcpy per run."""
    b = ctx.b
    batch, _, total, _ = dst.shape
    size = dst.dtype.itemsize
    with for_range(b, batch, name="pb") as bi, for_range(b, hkv, name="ph") as kh:
        base = b.mul(b.add(b.mul(bi, I64(hkv)), kh), I64(total * d))
        if src_past is not None:
            old = b.mul(b.add(b.mul(bi, I64(hkv)), kh), I64(past * d))
            copy_buffer(ctx, gep(b, src_past.ptr, old, dst.elem), gep(b, dst.ptr, base, dst.elem), past * d * size)
        rows = total - past
        new_at = gep(b, dst.ptr, b.add(base, I64(past * d)), dst.elem)
        if strides[2] == d:  # 4-D K / V: the new rows of a head are contiguous
            copy_buffer(ctx, gep(b, src.ptr, linear_index(b, [bi, kh], strides[:2]), dst.elem), new_at, rows * d * size)
        else:
            with for_range(b, rows, name="pj") as j:
                at = gep(b, src.ptr, linear_index(b, [bi, kh, j], strides[:3]), dst.elem)
                copy_buffer(ctx, at, gep(b, new_at, b.mul(j, I64(d)), dst.elem), d * size)


# ---- RotaryEmbedding ----------------------------------------------------------------------------------------------


@lowering("rotary_embedding", symbolic=True)
def rotary_embedding(ctx: NodeCtx) -> None:
    b, a = ctx.b, ctx.attrs
    x, cos, sin, pos = ctx.ins[0], ctx.ins[1], ctx.ins[2], _opt(ctx, 3)
    out = ctx.outs[0]
    assert x is not None and cos is not None and sin is not None
    dt = x.dtype
    if x.rank == 4:
        batch, heads, seq = x.shape[:3]
    else:
        batch, seq = x.shape[:2]
        heads = a["num_heads"]
    strides, d = head_strides(x, heads)
    rot = a["rotary_embedding_dim"] or d
    half = rot // 2
    if out.numel == 0:
        return
    # where (batch, seq) finds its cache row: through position_ids (clamped: never read outside the cache) or directly
    src = pos if pos is not None else cos
    row_strides = broadcast_strides(src.shape[:2], (batch, seq))
    limit = cos.shape[0] - 1

    def op(v: ir.Value) -> ir.Value:
        return fix(b, v, dt)

    with for_range(b, batch, name="b") as bi, for_range(b, seq, name="s") as s:
        r = linear_index(b, [bi, s], row_strides)
        if pos is not None:
            p = load(b, pos.ptr, r, I64)
            r = b.select(b.icmp_signed("<", p, I64(0)), I64(0), b.select(b.icmp_signed(">", p, I64(limit)), I64(limit), p))
        cbase = b.mul(r, I64(half))
        with for_range(b, heads, name="h") as h:
            base = linear_index(b, [bi, h, s], strides[:3])
            with for_range(b, half, name="p") as p:
                i1, i2 = (b.mul(p, I64(2)), b.add(b.mul(p, I64(2)), I64(1))) if a["interleaved"] else (p, b.add(p, I64(half)))
                x1, x2 = load_f(b, x, b.add(base, i1), dt), load_f(b, x, b.add(base, i2), dt)
                c, sn = load_f(b, cos, b.add(cbase, p), dt), load_f(b, sin, b.add(cbase, p), dt)
                store_f(b, op(b.fsub(op(b.fmul(c, x1)), op(b.fmul(sn, x2)))), out, b.add(base, i1))
                store_f(b, op(b.fadd(op(b.fmul(sn, x1)), op(b.fmul(c, x2)))), out, b.add(base, i2))
            with for_range(b, d, start=rot, name="e") as e:
                store(b, load(b, x.ptr, b.add(base, e), x.elem), out.ptr, b.add(base, e))


# ---- SwiGLU -------------------------------------------------------------------------------------------------------


@lowering("swiglu")
def swiglu(ctx: NodeCtx) -> None:
    b, x, g, out = ctx.b, ctx.ins[0], ctx.ins[1], ctx.outs[0]
    assert x is not None and g is not None
    dt = x.dtype
    t = ftype(dt)
    neg_alpha, one = ir.Constant(t, float(dt.np_dtype.type(-ctx.attrs["alpha"]))), ir.Constant(t, 1.0)
    wide = F64 if dt is DType.F64 else F32

    def op(v: ir.Value) -> ir.Value:
        return fix(b, v, dt)

    with for_range(b, out.numel, name="e") as i:
        av, bv = load_f(b, x, i, dt), load_f(b, g, i, dt)
        e = fix(b, widen(b, call_libm(b, "exp", widen(b, op(b.fmul(neg_alpha, av)), wide)), t), dt)
        gate = op(b.fdiv(one, op(b.fadd(one, e))))
        store_f(b, op(b.fmul(op(b.fmul(av, gate)), bv)), out, i)


# ---- LinearAttention ----------------------------------------------------------------------------------------------


@lowering("linear_attention")
def linear_attention(ctx: NodeCtx) -> None:
    b, a = ctx.b, ctx.attrs
    q, k, v = ctx.ins[0], ctx.ins[1], ctx.ins[2]
    past, decay, beta = (_opt(ctx, i) for i in (3, 4, 5))
    assert q is not None and k is not None and v is not None
    out, present = ctx.outs[0], ctx.outs[1] if len(ctx.outs) > 1 else None
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    batch, steps = q.shape[:2]
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    group = hq // hkv
    scale = ir.Constant(F32, float(np.float32(a["scale"] if a["scale"] != 0.0 else 1.0 / np.sqrt(dk))))
    per_head = decay is not None and decay.shape[-1] == hkv
    f32 = DType.F32
    state = scratch(b, F32, dk * dv, "state")
    vt = scratch(b, F32, dv, "vt")
    orow = scratch(b, F32, dv, "orow")
    zero = ir.Constant(F32, 0.0)
    if batch * hkv == 0:
        return

    def times_state(x: Buf, x_at: ir.Value) -> None:
        """orow = x[x_at : x_at + dk]^T S (a row of k or q times the state), summed over d in order."""
        with for_range(b, dv, name="r0") as m:
            store(b, zero, orow, m)
        with for_range(b, dk, name="rd") as d:
            xd = load_f(b, x, b.add(x_at, d), f32)
            with for_range(b, dv, name="rm") as m:
                slot = gep(b, orow, m, F32)
                b.store(b.fadd(b.load(slot, typ=F32), b.fmul(xd, load(b, state, b.add(b.mul(d, I64(dv)), m), F32))), slot)

    with for_range(b, batch, name="b") as bi, for_range(b, hkv, name="kh") as kh:
        state_base = b.mul(b.add(b.mul(bi, I64(hkv)), kh), I64(dk * dv))
        with for_range(b, dk * dv, name="s0") as e:
            store(b, load_f(b, past, b.add(state_base, e), f32) if past is not None else zero, state, e)
        with for_range(b, steps, name="t") as t:
            token = b.add(b.mul(bi, I64(steps)), t)
            k_at = b.add(b.mul(token, I64(hkv * dk)), b.mul(kh, I64(dk)))
            v_at = b.add(b.mul(token, I64(hkv * dv)), b.mul(kh, I64(dv)))
            if decay is not None:  # S *= exp(g_t), per head or per key feature
                with for_range(b, dk, name="gd") as d:
                    gi = b.add(b.mul(token, I64(decay.shape[-1])), kh if per_head else b.add(b.mul(kh, I64(dk)), d))
                    gate = call_libm(b, "exp", load_f(b, decay, gi, f32))
                    with for_range(b, dv, name="gm") as m:
                        slot = gep(b, state, b.add(b.mul(d, I64(dv)), m), F32)
                        b.store(b.fmul(b.load(slot, typ=F32), gate), slot)
            with for_range(b, dv, name="vm") as m:
                store(b, load_f(b, v, b.add(v_at, m), f32), vt, m)
            if beta is not None:  # delta rule: v_t = beta (v_t - S^T k_t)
                times_state(k, k_at)
                nb = beta.shape[-1]
                bt = load_f(b, beta, b.add(b.mul(token, I64(nb)), kh if nb > 1 else I64(0)), f32)
                with for_range(b, dv, name="bm") as m:
                    store(b, b.fmul(bt, b.fsub(load(b, vt, m, F32), load(b, orow, m, F32))), vt, m)
            with for_range(b, dk, name="sd") as d:  # S += k_t (x) v_t
                kd = load_f(b, k, b.add(k_at, d), f32)
                with for_range(b, dv, name="sm") as m:
                    slot = gep(b, state, b.add(b.mul(d, I64(dv)), m), F32)
                    b.store(b.fadd(b.load(slot, typ=F32), b.fmul(kd, load(b, vt, m, F32))), slot)
            with for_range(b, group, name="g") as gq:  # o_t = scale q_t^T S for each query head of this kv head
                h = b.add(b.mul(kh, I64(group)), gq)
                q_at = b.add(b.mul(token, I64(hq * dk)), b.mul(h, I64(dk)))
                times_state(q, q_at)
                o_at = b.add(b.mul(token, I64(hq * dv)), b.mul(h, I64(dv)))
                with for_range(b, dv, name="os") as m:
                    store_f(b, b.fmul(scale, load(b, orow, m, F32)), out, b.add(o_at, m))
        if present is not None:
            with for_range(b, dk * dv, name="ps") as e:
                store_f(b, load(b, state, e, F32), present, b.add(state_base, e))


__all__ = ["attention", "head_strides", "linear_attention", "load_as", "rotary_embedding", "round_to", "swiglu"]

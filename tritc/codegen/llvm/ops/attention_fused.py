"""Lowering of fused_attention: present K / V written (in place when the cache buffer is the past one), then the
online-softmax kernel of attention_tiled.py, one function per distinct geometry shared by every node that has it.

Symbolic: batch, queries, past length, keys and the mask's strides are run-time values (dyn-api Syms in the node
function, i64 arguments of the kernel, which loops to them); heads, head sizes and the attributes are compiled in.
One kernel serves prefill and decode: it chooses per call how many query rows a unit takes and whether to split the
keys (docs/ATTENTION.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from ....errors import UnsupportedError
from ....ir.ops.attention_fused import partial_floats, scratch_floats, task_floats
from ....ir.types import DType
from ..builder import F32, I1, I64, PTR, VOID, broadcast_strides, for_range, gep, i64, intrinsic
from ..context import Buf, NodeCtx
from . import attention_tiled, lowering

L = 16  # f32 lanes of a head-dim chunk
DEFAULT_Q_BLOCK, DEFAULT_KV_BLOCK = 32, 64  # without tile-attention's attributes


def pad(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class Geometry:
    """What the kernel compiles in: the static part of one fused_attention node (the key of its shared function)."""

    heads: int
    kv_heads: int
    d: int  # query / key head size
    dv: int  # value head size
    scale: float
    softcap: float
    causal: bool
    nan_to_zero: bool
    mask_value: float  # -inf, or what a false entry of a boolean mask adds (rows with no true key then take every key)
    mask: DType | None  # bool or f32 mask, or none (its strides and length are run-time arguments)
    two_sources: bool  # keys from the past cache then the new K / V (no present written); else one buffer
    q_block: int  # query rows per work unit (rows of a unit share a kv head)
    kv_block: int  # keys per online-softmax step, a multiple of 16
    tasks: int  # work items run on the thread pool, each with its own scratch slot
    scratch: bool  # scratch comes from the node's scratch result (else task-local stack arrays, no split-K)

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    @property
    def dp(self) -> int:
        return pad(self.d, L)

    @property
    def dvp(self) -> int:
        return pad(self.dv, L)

    def task_floats(self) -> int:
        return task_floats(self.q_block, self.kv_block, self.d, self.dv)

    def partial_floats(self) -> int:
        return partial_floats(self.q_block, self.dv)

    def scratch_floats(self, split_k: bool) -> int:
        return scratch_floats(self.q_block, self.kv_block, self.d, self.dv, self.tasks, split_k)


def _opt(ctx: NodeCtx, i: int) -> Buf | None:
    return ctx.ins[i] if i < len(ctx.ins) else None


@lowering("fused_attention", symbolic=True)
def fused_attention(ctx: NodeCtx) -> None:
    a, b = ctx.attrs, ctx.b
    q, k, v, mask, past_k, past_v, past_len = (_opt(ctx, i) for i in range(7))
    y = ctx.outs[0]
    scratch = ctx.outs[1] if ctx.outs[1].numel > 0 else None
    present_k, present_v = (ctx.outs[i] if i < len(ctx.outs) else None for i in (2, 3))
    batch, heads, sq, d = q.shape
    kv_heads, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    if past_len is not None:  # cache buffers of capacity `cap`: rows [past, past + sk) are appended in place
        cap = past_k.shape[2]
        past = b.load(past_len.ptr, typ=I64)
        ctx.fail_if(b.or_(b.icmp_signed("<", past, i64(0)), b.icmp_signed(">", past, i64(cap - sk))), "value",
                    f"past_len plus the {sk} new rows must fit the cache's {cap} rows")
    else:
        cap = (past_k.shape[2] if past_k is not None else 0) + sk
        past = i64(past_k.shape[2] if past_k is not None else 0)
    total = b.add(past, i64(sk))
    if present_k is not None:
        _write_present(ctx, past_k, k, present_k, d, past, past_len is not None)
    if present_v is not None:
        _write_present(ctx, past_v, v, present_v, dv, past, past_len is not None)
    # keys from the present buffers when written; else from the past cache then the new rows
    from_present = present_k is not None and present_v is not None
    two = past_k is not None and not from_present
    if mask is not None:  # strides of (batch, head, query) in mask elements (0 where broadcast); keys contiguous
        lead = list(broadcast_strides(mask.shape[:-1], (batch, heads, sq))) if mask.rank > 1 else [0, 0, 0]
        mstrides = [st * mask.shape[-1] for st in [0] * (3 - len(lead)) + lead]
    else:
        mstrides = [0, 0, 0]
    tasks = a["tasks"] or max(1, ctx.m.threads * 4)
    geometry = Geometry(heads, kv_heads, d, dv, float(a["scale"]), float(a["softcap"]), bool(a["causal"]),
                        bool(a["nan_to_zero"]), float(a["mask_value"]), mask.dtype if mask is not None else None, two,
                        a["q_block"] or DEFAULT_Q_BLOCK, pad(a["kv_block"] or DEFAULT_KV_BLOCK, L), tasks, scratch is not None)
    if scratch is not None and scratch.numel < geometry.scratch_floats(False):
        raise UnsupportedError(f"node {ctx.node.describe()}: a scratch of {scratch.numel} floats is too small for its "
                               f"tiling ({geometry.scratch_floats(False)}); run tile-attention to size it")
    splits_max = 2 * tasks if scratch is not None and scratch.numel >= geometry.scratch_floats(True) else 1
    kbuf, vbuf = (present_k, present_v) if from_present else (k, v)
    args = [q.ptr, kbuf.ptr, vbuf.ptr,
            past_k.ptr if two else ir.Constant(PTR, None), past_v.ptr if two else ir.Constant(PTR, None),
            mask.ptr if mask is not None else ir.Constant(PTR, None), y.ptr,
            scratch.ptr if scratch is not None else ir.Constant(PTR, None),
            i64(batch), i64(sq), past, total, i64(cap if from_present else sk), i64(splits_max),
            *(i64(st) for st in mstrides), i64(mask.shape[-1] if mask is not None else 0)]
    fn = attention_tiled.kernel(ctx, geometry)
    b.call(fn, args)


def _write_present(ctx: NodeCtx, past: Buf | None, new: Buf, present: Buf, d: int, past_rows: ir.Value,
                   in_place: bool) -> None:
    """present = concat(past, new) along the rows, or (in place) the cache buffer with rows [past, past + new)
    replaced. When present already is the past buffer (the runtime bound both to one array) the past rows are not
    copied: a decode step writes only its new rows."""
    b = ctx.b
    batch, kv_heads, rows, _ = present.shape
    sk = new.shape[2]
    size = present.dtype.itemsize
    if past is not None:
        same = b.icmp_unsigned("==", b.ptrtoint(past.ptr, I64), b.ptrtoint(present.ptr, I64))
        with b.if_then(b.not_(same)):
            if in_place:  # a different array: the whole buffer, then the new rows over it
                _memcpy(b, present.ptr, past.ptr, i64(present.numel * size))
            else:
                with for_range(b, batch * kv_heads, name="pbh") as bh:
                    dst = gep(b, present.ptr, b.mul(bh, i64(rows * d)), F32)
                    src = gep(b, past.ptr, b.mul(bh, b.mul(past_rows, i64(d))), F32)
                    _memcpy(b, dst, src, b.mul(past_rows, i64(d * size)))
    with for_range(b, batch * kv_heads, name="nbh") as bh:
        dst = gep(b, present.ptr, b.add(b.mul(bh, i64(rows * d)), b.mul(past_rows, i64(d))), F32)
        _memcpy(b, dst, gep(b, new.ptr, b.mul(bh, i64(sk * d)), F32), i64(sk * d * size))


def _memcpy(b: ir.IRBuilder, dst: ir.Value, src: ir.Value, nbytes: ir.Value) -> None:
    intrinsic(b, "llvm.memcpy.p0.p0.i64", VOID, [dst, src, nbytes, ir.Constant(I1, 0)])


__all__ = ["Geometry", "fused_attention"]

"""Lowerings of the nn family: matmul and gemm (the GEMM kernel of kernels/matmul.py), einsum, dropout.

The normalizations live in nn_norm.py. Semantics are tritc/ir/ops/nn.py: f16 and bf16 are computed in
f32 and rounded once at the end, integer products wrap like numpy's.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir
import numpy as np

from ....errors import UnsupportedError
from ....ir.ops.nn import _einsum_terms
from ..builder import I64, broadcast_strides, contiguous_strides, for_nest, for_range, gep
from ..context import NodeCtx
from ..kernels.matmul import BSource, GemmSpec, StridedB, compute_type
from ..kernels.matmul import call_gemm as emit_gemm_call
from ..symbolic import is_static
from . import lowering
from .core import copy_buffer
from .nn_values import Vals, shared_body


def kernel_threads(ctx: NodeCtx) -> int:
    """Threads the node's kernels may split work over (the runtime starts the pool before loading the code)."""
    return max(1, ctx.m.threads)


def call_gemm(ctx: NodeCtx, spec: GemmSpec, source: BSource, a: ir.Value, b: ir.Value, bias: ir.Value | None,
              c: ir.Value) -> None:
    """Call the GEMM kernel for spec: one kernel per module and signature, the node's sizes as parameters."""
    emit_gemm_call(ctx.b, ctx.m.cache, ctx.target.isa, spec, source, ctx.global_array, a, b, bias, c)


@lowering("matmul", symbolic=True)
def matmul(ctx: NodeCtx) -> None:
    a, bm, y = ctx.ins[0], ctx.ins[1], ctx.outs[0]
    assert a is not None and bm is not None
    sa = (1, *a.shape) if a.rank == 1 else a.shape
    sb = (*bm.shape, 1) if bm.rank == 1 else bm.shape
    M, K, N = sa[-2], sa[-1], sb[-1]
    if not all(is_static(d) for d in (*sa, *sb)) and len(sb) == 2 and len(sa) > 2:
        # A [..., M, K] times a matrix: one GEMM of prod(...) * M rows (the rows are contiguous), M a run-time value
        spec = GemmSpec(math.prod(sa[:-1]), N, (K,), a.dtype, a_m=K, a_k=(1,), ldc=N, threads=kernel_threads(ctx))
        call_gemm(ctx, spec, StridedB(N, 1), a.ptr, bm.ptr, None, y.ptr)
        return
    batch = tuple(y.shape[:y.rank - (a.rank > 1) - (bm.rank > 1)])  # the result's leading dims: the broadcast batch
    a_batch = tuple(s * M * K for s in broadcast_strides(sa[:-2], batch))
    b_batch = tuple(s * K * N for s in broadcast_strides(sb[:-2], batch))
    c_batch = tuple(s * M * N for s in contiguous_strides(batch))
    threads = kernel_threads(ctx)
    if N == 1 and is_static(M) and M > 1:
        # A matrix times a vector: computed as the vector's row times A transposed, whose
        # rows are A's (contiguous along k), so the dot-product loops apply.
        spec = GemmSpec(1, M, (K,), a.dtype, a_m=0, a_k=(1,), ldc=M, batch=batch, a_batch=b_batch, b_batch=a_batch,
                        c_batch=c_batch, threads=threads)
        call_gemm(ctx, spec, StridedB(1, K), bm.ptr, a.ptr, None, y.ptr)
        return
    spec = GemmSpec(M, N, (K,), a.dtype, a_m=K, a_k=(1,), ldc=N, batch=batch, a_batch=a_batch, b_batch=b_batch,
                    c_batch=c_batch, threads=threads)
    call_gemm(ctx, spec, StridedB(N, 1), a.ptr, bm.ptr, None, y.ptr)


@lowering("gemm")
def gemm(ctx: NodeCtx) -> None:
    a, bm, c, y = ctx.ins[0], ctx.ins[1], ctx.ins[2] if len(ctx.ins) > 2 else None, ctx.outs[0]
    assert a is not None and bm is not None
    at = ctx.attrs
    M, N = y.shape
    K = a.shape[0] if at["transA"] else a.shape[1]
    a_m, a_k = (1, M) if at["transA"] else (K, 1)
    source = StridedB(1, K) if at["transB"] else StridedB(N, 1)
    bias = None
    if c is not None and c.numel:
        s0, s1 = broadcast_strides(c.shape, (M, N)) if c.rank else (0, 0)
        bias = (s0, s1)
    spec = GemmSpec(M, N, (K,), a.dtype, a_m=a_m, a_k=(a_k,), ldc=N, bias=bias, alpha=float(at["alpha"]),
                    beta=float(at["beta"]), threads=kernel_threads(ctx))
    call_gemm(ctx, spec, source, a.ptr, bm.ptr, c.ptr if bias is not None else None, y.ptr)


# ---- einsum -------------------------------------------------------------------------------------------------


@lowering("einsum")
@shared_body
def einsum(ctx: NodeCtx) -> None:
    """A loop over the output's labels, and inside it one over the summed labels: out += prod(operands)."""
    ins = [x for x in ctx.ins if x is not None]
    out = ctx.outs[0]
    terms, rhs = _einsum_terms(ctx.attrs["equation"], len(ins))
    ell_rank = max((x.rank - len(t.replace(".", "")) for x, t in zip(ins, terms) if "." in t), default=0)
    ell = [chr(0x100 + i) for i in range(ell_rank)]  # labels for the ellipsis dims, aligned to the right
    sizes: dict[str, int] = {}
    operand_labels = []
    for x, t in zip(ins, terms):
        labels: list[str] = []
        for ch in t:
            labels.extend(ell[ell_rank - (x.rank - len(t.replace(".", ""))):] if ch == "." else [ch])
        operand_labels.append(labels)
        for ch, d in zip(labels, x.shape):
            sizes[ch] = max(sizes.get(ch, 1), d)  # ellipsis dims of 1 broadcast
    out_labels = [c for ch in rhs for c in (ell if ch == "." else [ch])]
    summed = [ch for ch in dict.fromkeys(c for labels in operand_labels for c in labels) if ch not in out_labels]
    order = out_labels + summed
    strides = []
    for x, labels in zip(ins, operand_labels):
        st = dict.fromkeys(order, 0)
        for ch, d, s in zip(labels, x.shape, contiguous_strides(x.shape)):
            if d != 1 or sizes[ch] == 1:
                st[ch] += s  # a label repeated in one term walks the diagonal
        strides.append([st[ch] for ch in order])
    out_strides = contiguous_strides([sizes[ch] for ch in out_labels])
    b = ctx.b
    ct = compute_type(out.dtype)
    v = Vals(b, out.dtype)
    if out.numel == 0:
        return
    acc = b.alloca(ct)
    with for_nest(b, [sizes[ch] for ch in out_labels], name="o") as oi:
        b.store(v.zero(), acc)
        with for_nest(b, [sizes[ch] for ch in summed], name="s") as si:
            idx = list(oi) + list(si)
            prod = None
            for x, st in zip(ins, strides):
                off = _dot_index(b, idx, st)
                val = v.load(x.ptr, off)
                prod = val if prod is None else v.mul(prod, val)
            b.store(v.add(b.load(acc, typ=ct), prod), acc)
        v.store(b.load(acc, typ=ct), out.ptr, _dot_index(b, list(oi), out_strides))


def _dot_index(b: ir.IRBuilder, idx: list[ir.Value], strides: list[int]) -> ir.Value:
    acc: ir.Value = I64(0)
    for i, s in zip(idx, strides):
        if s:
            acc = b.add(acc, b.mul(i, I64(s)) if s != 1 else i)
    return acc


# ---- dropout ---------------------------------------------------------------------------------------------------


@lowering("dropout", const_operands=(1, 2))
def dropout(ctx: NodeCtx) -> None:
    """Inference: the data copied and a mask of ones; training with a ratio above 0 is random, not modelled."""
    ratio, training = ctx.const(1), ctx.const(2)
    r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    if training is not None and bool(np.asarray(training).reshape(-1)[0]) and r > 0:
        raise UnsupportedError(f"node {ctx.node.describe()}: Dropout in training mode (ratio {r}) is random; "
                               f"tritc runs inference graphs only")
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    copy_buffer(ctx, x.ptr, y.ptr, y.numel * y.dtype.itemsize)
    if len(ctx.outs) > 1 and ctx.outs[1].numel:
        mask = ctx.outs[1]
        # ones of the mask's dtype (bool since Dropout-10, the data's dtype before), stored as raw bits
        bits = np.ones(1, dtype=mask.dtype.np_dtype).view(f"u{mask.dtype.itemsize}")[0]
        et = ir.IntType(8 * mask.dtype.itemsize)
        with for_range(ctx.b, mask.numel, name="m") as i:
            ctx.b.store(ir.Constant(et, int(bits)), gep(ctx.b, mask.ptr, i, et))


__all__ = ["call_gemm", "kernel_threads"]

from . import nn_norm  # noqa: E402,F401 - registers the normalizations (kept in their own file for length)

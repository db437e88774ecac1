"""ternary_matmul: a call to the ternary kernel (kernels/ternary.py) specialised for this node's shapes.

    %y = ternary_matmul(%x: f32[..., K], %w: t2[K, N], %bias?: f32[N], %residual?) {act = "int8"} : f32[..., N]

The weight operand points at the packed trits in the weight blob; its scales follow at the blob
offset the layout recorded. Leading dims of x are flattened into M tokens: one token takes the
GEMV kernel, several the register-tiled GEMM kernel. Threads come from the model's setting.
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np

from ....errors import UnsupportedError
from ....ir.types import DType
from ..builder import F32, I8, I64, VOID, for_range, gep, intrinsic
from ..context import NodeCtx
from ..kernels.ternary import emit_ternary_matmul
from ..kernels.vec import activation as epilogue_activation
from . import lowering


def _granularity(scale_shape: tuple[int, ...], group_size: int) -> str:
    if group_size:
        return "per_group"
    return "per_tensor" if len(scale_shape) == 0 else "per_channel"


@lowering("ternary_matmul")
def ternary_matmul(ctx: NodeCtx) -> None:
    x, w = ctx.ins[0], ctx.ins[1]
    bias = ctx.ins[2] if len(ctx.ins) > 2 else None
    residual = ctx.ins[3] if len(ctx.ins) > 3 else None
    out = ctx.outs[0]
    entry = ctx.weights[1]
    assert x is not None and w is not None
    if entry is None or entry.kind != "ternary":
        raise UnsupportedError(f"node {ctx.node.describe()}: the ternary weight is not in the weight blob")
    if x.dtype is not DType.F32 or out.dtype is not DType.F32:
        raise UnsupportedError(f"node {ctx.node.describe()}: ternary_matmul is compiled for f32 activations, "
                               f"not {x.dtype}")
    K, N = entry.shape
    M = int(np.prod(x.shape[:-1], dtype=np.int64)) if x.rank > 1 else 1
    if bias is not None and tuple(bias.shape) not in ((N,), (1, N)) and bias.numel != N:
        raise UnsupportedError(f"node {ctx.node.describe()}: bias of shape {list(bias.shape)} is not per output")
    if residual is not None and (residual.dtype is not DType.F32 or residual.numel != out.numel):
        raise UnsupportedError(f"node {ctx.node.describe()}: residual of type {residual.type} does not match the result "
                               f"{out.type}")
    b = ctx.b
    if M == 0 or N == 0:
        return
    if K == 0:  # nothing to accumulate: the result is the epilogue of zeros
        with for_range(b, M * N) as i:
            v = ir.Constant(F32, 0.0)
            if bias is not None:
                v = b.fadd(v, b.load(gep(b, bias.ptr, b.urem(i, I64(N)), F32), typ=F32))
            if residual is not None:
                v = b.fadd(v, b.load(gep(b, residual.ptr, i, F32), typ=F32))
            b.store(epilogue_activation(b, ctx.attrs["activation"], v), gep(b, out.ptr, i, F32))
        return
    a = ctx.attrs
    spec = dict(M=M, K=K, N=N, act=a["act"], granularity=_granularity(entry.scale_shape, entry.group_size),
                group_size=entry.group_size, bias=bias is not None, residual=residual is not None,
                activation=None if a["activation"] == "none" else a["activation"], threads=ctx.m.threads,
                act_max=a["act_max"], act_eps=a["act_eps"], act_scale=a["act_scale"])
    # Layers of the same shape and mode share one kernel: models repeat them (every decoder layer).
    key = ("ternary_matmul", tuple(sorted(spec.items())))
    fn = ctx.m.cache.get(key)
    if fn is None:
        fn = emit_ternary_matmul(ctx.module, ctx.target, name=f"ternary.{len(ctx.m.cache)}", **spec)
        fn.linkage = "internal"
        ctx.m.cache[key] = fn
    scales = gep(b, w.ptr, entry.scale_offset - entry.offset, I8)
    args = [x.ptr, w.ptr, scales] + ([bias.ptr] if bias is not None else []) + \
        ([residual.ptr] if residual is not None else []) + [out.ptr]
    status = b.call(fn, args)
    # The kernel returns 1 when it could not allocate its quantisation scratch: abort loudly, never
    # return garbage.
    failed = b.icmp_signed("!=", status, ir.Constant(status.type, 0))
    with b.if_then(failed, likely=False):
        intrinsic(b, "llvm.trap", VOID, [])

"""ternary_matmul: a call to the ternary kernel (kernels/ternary.py) specialised for this node's shapes.

    %y = ternary_matmul(%x: f32[..., K], %w: t2[K, N], %bias?: f32[N], %residual?) {act = "int8"} : f32[..., N]

The weight operand points at the packed trits in the weight blob; its scales follow at the blob
offset the layout recorded. Leading dims of x are flattened into M tokens: one token takes the
GEMV kernel, several the register-tiled GEMM kernel. Threads come from the model's setting.
The kernel computes in f32, as the interpreter does: f16 and bf16 operands are converted to f32
scratch at its edge and the result rounded back once. That scratch and the int8 kernel's activation
quantisation scratch are the node's scratch slot in the arena (NodeCtx.scratch): nothing is allocated
at run time, so nothing can fail.
"""

from __future__ import annotations

import math
from typing import Any

import llvmlite.ir as ir

from ....errors import UnsupportedError
from ....ir.accumulators import refuse_past
from ....ir.types import DType, TensorType
from ..builder import F32, I64, for_range, gep
from ..context import Buf, NodeCtx
from ..kernels.ternary import MAX_K, MatmulSpec, emit_ternary_matmul
from ..kernels.ternary_quant import scratch_bytes
from ..kernels.vec import activation as epilogue_activation
from ..packing import padded
from ..symbolic import is_static
from . import lowering
from .quant import load_f, store_f

# The kernel reads and writes f32; these are converted to f32 at its edge (exactly: both widen without rounding).
EDGE_DTYPES = (DType.F32, DType.F16, DType.BF16)


def _granularity(scale_shape: tuple[int, ...], group_size: int) -> str:
    if group_size:
        return "per_group"
    return "per_tensor" if len(scale_shape) == 0 else "per_channel"


def _check(ctx: NodeCtx, x: Buf, bias: Buf | None, residual: Buf | None, out: Buf, N: int) -> None:
    where = f"node {ctx.node.describe()}"
    for what, buf in (("activations", x), ("bias", bias), ("residual", residual), ("result", out)):
        if buf is not None and buf.dtype not in EDGE_DTYPES:
            raise UnsupportedError(f"{where}: ternary_matmul {what} of type {buf.dtype} (compiled: f32, f16, bf16)")
    # The kernel adds bias[n] to output n: a bias of any other shape (per row, [N, 1], ...) would be read wrongly.
    if bias is not None and (bias.rank == 0 or bias.shape[-1] != N or bias.numel != N):
        raise UnsupportedError(f"{where}: bias of shape {list(bias.shape)} is not one value per output (f32[{N}])")
    if residual is not None and (residual.dtype is not x.dtype or residual.numel != out.numel):
        raise UnsupportedError(f"{where}: residual of type {residual.type} does not match the result {out.type}")


class _Edge:
    """f32 stand-ins for the operands and result that are not f32, in the node's scratch (sizes may be symbolic)."""

    def __init__(self, ctx: NodeCtx, bufs: list[Buf | None], out: Buf):
        self.ctx, b = ctx, ctx.b
        self.views: dict[int, Buf] = {}
        for buf in [*bufs, out]:
            if buf is not None and buf.dtype is not DType.F32 and id(buf) not in self.views:
                view = Buf(ctx.scratch(4 * buf.numel, "edge"), TensorType(DType.F32, buf.type.shape))
                self.views[id(buf)] = view
                if buf is not out:
                    _convert(b, buf, view)

    def f32(self, buf: Buf | None) -> Buf | None:
        return None if buf is None else self.views.get(id(buf), buf)

    def finish(self, out: Buf) -> None:
        """Round the f32 result into `out` (numpy's astype)."""
        if id(out) in self.views:
            _convert(self.ctx.b, self.views[id(out)], out)


def _convert(b: ir.IRBuilder, src: Buf, dst: Buf) -> None:
    with for_range(b, src.numel, name="edge") as i:
        store_f(b, load_f(b, src, i, dst.dtype), dst, i)


def call_ternary_kernel(ctx: NodeCtx, spec: dict[str, Any], args: list[ir.Value], scratch: ir.Value | None) -> None:
    """Call the kernel for `spec` (emitted once per module and spec) with f32 `args`, and `scratch` (quantisation
    scratch of at least quant_scratch_bytes(spec) bytes) when the kernel quantises (act="int8")."""
    # Layers of the same shape and mode share one kernel: models repeat them (every decoder layer).
    key = ("ternary_matmul", tuple(sorted(spec.items())))
    fn = ctx.m.cache.get(key)
    if fn is None:
        fn = emit_ternary_matmul(ctx.module, ctx.target, name=f"ternary.{len(ctx.m.cache)}", scratch_arg=scratch is not None,
                                 **spec)
        fn.linkage = "internal"
        ctx.m.cache[key] = fn
    ctx.b.call(fn, args + ([scratch] if scratch is not None else []))  # status 0: it allocates nothing


def check_ternary_k(ctx: NodeCtx, k: int, act: str) -> None:
    """An int8 layer's K within the kernel's int32 bound (kernels/ternary.py MAX_K, docs/INTEGER.md): else
    ResourceLimitError naming the node, K and the bound."""
    if act == "int8":
        refuse_past(f"node {ctx.node.describe()}", padded(k), MAX_K,
                    "int8 x trit products (K padded to 16; the kernel sums codes trit+1 in [0, 2] times q in [-128, 127])")


def quant_scratch_bytes(spec: dict[str, Any]) -> int:
    """Bytes of activation quantisation scratch the kernel for `spec` takes (0 unless act="int8")."""
    return scratch_bytes(MatmulSpec(**spec)) if spec["act"] == "int8" else 0


ROW_BLOCK = 32  # tokens per kernel call when their number is known only at run time


@lowering("ternary_matmul", symbolic=True)
def ternary_matmul(ctx: NodeCtx) -> None:
    x, w = ctx.ins[0], ctx.ins[1]
    bias = ctx.ins[2] if len(ctx.ins) > 2 else None
    residual = ctx.ins[3] if len(ctx.ins) > 3 else None
    out = ctx.outs[0]
    entry = ctx.weights[1]
    assert x is not None and w is not None
    if entry is None or entry.kind != "ternary":
        raise UnsupportedError(f"node {ctx.node.describe()}: the ternary weight is not in the weight blob")
    K, N = entry.shape
    M = math.prod(x.shape[:-1]) if x.rank > 1 else 1
    _check(ctx, x, bias, residual, out, N)
    b = ctx.b
    if M == 0 or N == 0:
        return
    edge = _Edge(ctx, [x, bias, residual], out)
    x32, bias32, res32, out32 = edge.f32(x), edge.f32(bias), edge.f32(residual), edge.f32(out)
    assert x32 is not None and out32 is not None
    a = ctx.attrs
    if K == 0:  # nothing to accumulate: the result is the epilogue of zeros
        with for_range(b, M * N) as i:
            v = ir.Constant(F32, 0.0)
            if bias32 is not None:
                v = b.fadd(v, b.load(gep(b, bias32.ptr, b.urem(i, I64(N)), F32), typ=F32))
            if res32 is not None:
                v = b.fadd(v, b.load(gep(b, res32.ptr, i, F32), typ=F32))
            b.store(epilogue_activation(b, a["activation"], v), gep(b, out32.ptr, i, F32))
    else:
        spec = dict(M=M, K=K, N=N, act=a["act"], granularity=_granularity(entry.scale_shape, entry.group_size),
                    group_size=entry.group_size, bias=bias is not None, residual=residual is not None,
                    activation=None if a["activation"] == "none" else a["activation"], threads=ctx.m.threads,
                    act_max=a["act_max"], act_eps=a["act_eps"], act_scale=a["act_scale"])
        check_ternary_k(ctx, K, a["act"])
        scales = gep(b, w.ptr, entry.scale_offset - entry.offset, ir.IntType(8))
        # One quantisation scratch for every kernel call of the node: the largest call's (ROW_BLOCK rows at most).
        quant = quant_scratch_bytes(spec | {"M": M if is_static(M) else ROW_BLOCK})
        scratch = ctx.scratch(quant, "quant") if quant else None

        def call(rows: int, row: ir.Value | None) -> None:
            """The kernel for `rows` rows starting at `row` (rows are independent: each token has its own factor)."""
            def at(buf: Buf, width: int) -> ir.Value:
                return buf.ptr if row is None else gep(b, buf.ptr, b.mul(row, I64(width)), F32)
            args = [at(x32, K), w.ptr, scales] + ([bias32.ptr] if bias32 is not None else []) + \
                ([at(res32, N)] if res32 is not None else []) + [at(out32, N)]
            call_ternary_kernel(ctx, spec | {"M": rows}, args, scratch)

        if is_static(M):
            call(M, None)
        else:  # tokens known at run time: the one-token kernel (decode), else blocks of ROW_BLOCK tokens and the rest one by one
            with b.if_else(b.icmp_unsigned("==", M, I64(1))) as (one, many):
                with one:
                    call(1, None)
                with many:
                    blocks = b.udiv(M, I64(ROW_BLOCK))
                    with for_range(b, blocks, name="rb") as r:
                        call(ROW_BLOCK, b.mul(r, I64(ROW_BLOCK)))
                    with for_range(b, M, start=b.mul(blocks, I64(ROW_BLOCK)), name="rr") as r:
                        call(1, r)
    edge.finish(out)

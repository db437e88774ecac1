"""Copies: identity, and view ops (reshape, squeeze, ...) whose result could not alias its operand."""

from __future__ import annotations

import llvmlite.ir as ir

from ..builder import I1, I64, VOID, intrinsic
from ..context import NodeCtx
from . import lowering


def copy_buffer(ctx: NodeCtx, src: ir.Value, dst: ir.Value, nbytes: int) -> None:
    """memcpy of `nbytes` from src to dst (LLVM's memcpy intrinsic: vectorised by the backend)."""
    if nbytes:
        intrinsic(ctx.b, "llvm.memcpy.p0.p0.i64", VOID, [dst, src, I64(nbytes), I1(0)])


@lowering("identity", "reshape", "squeeze", "unsqueeze", "flatten")
def copy(ctx: NodeCtx) -> None:
    src, dst = ctx.ins[0], ctx.outs[0]
    assert src is not None
    copy_buffer(ctx, src.ptr, dst.ptr, dst.numel * dst.dtype.itemsize)


"""Copies: identity, and view ops (reshape, squeeze, ...) whose result could not alias its operand."""

from __future__ import annotations

import llvmlite.ir as ir

from ..builder import I1, VOID, i64, intrinsic
from ..context import NodeCtx
from ..symbolic import Size
from . import lowering


def copy_buffer(ctx: NodeCtx, src: ir.Value, dst: ir.Value, nbytes: Size) -> None:
    """memcpy of `nbytes` (an int or a symbolic size) from src to dst (LLVM's memcpy intrinsic: vectorised by the
    backend)."""
    if nbytes != 0:
        intrinsic(ctx.b, "llvm.memcpy.p0.p0.i64", VOID, [dst, src, i64(nbytes), I1(0)])


@lowering("identity", "reshape", "squeeze", "unsqueeze", "flatten", symbolic=True, runtime_operands=(1,))
def copy(ctx: NodeCtx) -> None:
    """Reshape's target shape (operand 1) is never read: the result type has the sizes."""
    src, dst = ctx.ins[0], ctx.outs[0]
    assert src is not None
    copy_buffer(ctx, src.ptr, dst.ptr, dst.nbytes)


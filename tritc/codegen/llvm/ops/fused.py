"""fused_elementwise: the whole body evaluated per element in one loop (scalar emitters of elementwise.py)."""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np

from ....ir.ops import OPS
from ....ir.ops.fused import parse_body
from ....ir.types import DType
from ..context import NodeCtx
from ..elementwise import SCALAR, Scalar, broadcast_loop, compute_type, load_compute, store_compute
from . import lowering


def _scalar_constant(value: np.ndarray, dtype: DType) -> ir.Constant:
    t = compute_type(dtype)
    v = value.reshape(-1)[0].item()
    if dtype is DType.BOOL:
        return ir.Constant(t, int(bool(v)))
    return ir.Constant(t, float(v) if dtype.is_float else int(v))


@lowering("fused_elementwise", symbolic=True)
def fused(ctx: NodeCtx) -> None:
    body = parse_body(ctx.node.attrs["body"])
    out = ctx.outs[0]

    def element(idx: list[ir.Value]) -> None:
        env: dict[int, ir.Value] = {}
        for v, buf, i in zip(body.inputs, ctx.ins, idx[:-1]):
            env[id(v)] = load_compute(ctx.b, buf.ptr, i, buf.dtype)
        for n in body:
            if n.op == "constant":
                env[id(n.outputs[0])] = _scalar_constant(n.attrs["value"], n.outputs[0].type.dtype)
                continue
            s = Scalar(ctx.b, OPS[n.op].with_defaults(n.attrs), [None if v is None else v.type.dtype for v in n.inputs],
                       n.outputs[0].type.dtype)
            args = [None if v is None else env[id(v)] for v in n.inputs]
            env[id(n.outputs[0])] = SCALAR[n.op](s, *args)
        store_compute(ctx.b, env[id(body.outputs[0])], out.ptr, idx[-1], out.dtype)

    broadcast_loop(ctx, ctx.ins, out.shape, element)

"""ternary_conv: im2col into a scratch matrix, the ternary GEMM kernel (kernels/ternary.py) per group, then NCHW.

    %y = ternary_conv(%x: f32[N, C, H, W], %w: t2[C/g * kh * kw, M], %b?) {act = "int8", ...} : f32[N, M, H', W']

Per group: cols[(n, p), (c, k)] gathers the window of every output position (a compile-time table maps (p, k)
to the offset in an input plane, -1 in the padding); the kernel computes ytmp[(n, p), m] = cols @ W with the
bias in its epilogue; a last loop writes ytmp to y[n, m, p]. int8: every image is first quantised as one row
(kernels/ternary_quant.py), the windows gather codes, and the kernel takes them prequantized with s[n] per
token, so the rescale is the interpreter's, bit for bit. A group whose output channels do not start a 16-wide
block of the packed weight (or whose scales are per K group) runs the kernel over all M columns and keeps its
own: correct, at `group` times the work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import llvmlite.ir as ir
import numpy as np

from ....errors import UnsupportedError
from ....ir.ops.cnn import Window
from ....ir.types import DType
from ..builder import F32, I8, I32, I64, contiguous_strides, for_range, gep, i64
from ..context import NodeCtx
from ..kernels.ternary import MatmulSpec, emit_ternary_matmul
from ..kernels.ternary_quant import emit_quantize
from ..kernels.vec import entry_alloca
from ..packing import padded
from . import lowering
from .cnn import output_coords
from .ternary import check_ternary_k


def window_table(in_shape: tuple[int, ...], out_shape: tuple[int, ...], win: Window) -> np.ndarray:
    """int32 [P * prod(kernel)]: for output position p and kernel offset k (row-major), the offset of the input
    value they meet within one channel plane, or -1 in the padding."""
    begins = np.array([win.dim(i, s)[1] for i, s in enumerate(in_shape)])[:, None, None]
    coords = output_coords(out_shape)[:, :, None]  # [d, P, 1]
    offsets = output_coords(win.kernel)[:, None, :]  # [d, 1, K]
    strides = np.asarray(win.strides)[:, None, None]
    dilations = np.asarray(win.dilations)[:, None, None]
    pos = coords * strides - begins + offsets * dilations  # [d, P, K]
    limits = np.asarray(in_shape)[:, None, None]
    inside = np.all((pos >= 0) & (pos < limits), axis=0)
    flat = np.tensordot(np.asarray(contiguous_strides(in_shape)), pos, axes=1) if in_shape else np.zeros(inside.shape)
    return np.where(inside, flat, -1).astype(np.int32).reshape(-1)


def scratch_buffers(ctx: NodeCtx, sizes: dict[str, int]) -> dict[str, ir.Value]:
    """Every scratch buffer of the node, 64-byte aligned each, in its scratch slot of the arena (nothing allocated
    at run time, so nothing can fail)."""
    return {name: ctx.scratch(max(size, 1), name) for name, size in sizes.items()}


@lowering("ternary_conv")
def ternary_conv(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    bias = ctx.ins[2] if len(ctx.ins) > 2 else None
    entry, w = ctx.weights[1], ctx.ins[1]
    assert x is not None and w is not None
    if entry is None or entry.kind != "ternary":
        raise UnsupportedError(f"node {ctx.node.describe()}: the ternary weight is not in the weight blob")
    if x.dtype is not DType.F32 or y.dtype is not DType.F32:
        raise UnsupportedError(f"node {ctx.node.describe()}: ternary_conv is compiled for f32 activations, not {x.dtype}")
    a = ctx.attrs
    groups, kernel = a["group"], tuple(a["kernel_shape"])
    win = Window.of(a, kernel, "ternary_conv")
    n, c, in_sp, out_sp = x.shape[0], x.shape[1], tuple(x.shape[2:]), tuple(y.shape[2:])
    kg, m = entry.shape
    mg, cg, kk, hw, p = m // groups, c // groups, math.prod(kernel), math.prod(in_sp), math.prod(out_sp)
    tokens = n * p
    b = ctx.b
    if y.numel == 0:
        return
    if kg == 0:  # no input channels: the bias (or 0) everywhere
        with for_range(b, y.numel) as i:
            v = b.load(gep(b, bias.ptr, b.urem(b.udiv(i, i64(p)), i64(m)), F32), typ=F32) if bias else ir.Constant(F32, 0.0)
            b.store(v, gep(b, y.ptr, i, F32))
        return
    gran = "per_group" if entry.group_size else ("per_channel" if entry.scale_shape else "per_tensor")
    aligned = groups == 1 or (mg % 16 == 0 and gran != "per_group")
    ncols = mg if aligned else m  # the kernel's N
    int8 = a["act"] == "int8"
    spec = MatmulSpec(tokens, kg, ncols, a["act"], gran, entry.group_size, bias is not None, False, None,
                      ctx.m.threads, a["act_max"], a["act_eps"], a["act_scale"])
    check_ternary_k(ctx, kg, a["act"])
    spec.check()
    fn = _kernel(ctx, spec, int8)
    table = ctx.global_array(window_table(in_sp, out_sp, win), "window")
    kpi = padded(c * hw)  # a quantised image is one row of codes
    sizes = {"ytmp": 4 * tokens * ncols}
    if int8:
        sizes.update(qimg=n * kpi, simg=4 * n, sumq_img=4 * n, cols=tokens * spec.KP, srow=4 * tokens, sumq=4 * tokens * spec.G)
    else:
        sizes.update(cols=4 * tokens * kg)
    buf = scratch_buffers(ctx, sizes)
    if int8:
        image_spec = MatmulSpec(n, c * hw, 1, "int8", "per_tensor", act_max=a["act_max"], act_eps=a["act_eps"],
                                act_scale=a["act_scale"])
        emit_quantize(b, image_spec, x.ptr, buf["qimg"], buf["simg"], buf["sumq_img"])
        with for_range(b, tokens, name="srow") as t:  # token (n, p) is rescaled by its image's factor
            s = b.load(gep(b, buf["simg"], b.udiv(t, i64(p)), F32), typ=F32)
            b.store(s, gep(b, buf["srow"], t, F32))
    scales = gep(b, w.ptr, entry.scale_offset - entry.offset, I8)
    weight_block = (mg // 16) * spec.KB * 64 if aligned and groups > 1 else 0  # bytes of one group's packed columns

    def per_group(gi: ir.Value) -> None:
        if int8:
            _gather(b, table, buf["qimg"], buf["cols"], I8, tokens, p, cg, kk, b.mul(gi, i64(cg * hw)), hw,
                    lambda nn: b.mul(nn, i64(kpi)), spec.KP)
            _zero_tail_and_sum(b, buf["cols"], buf["sumq"], tokens, kg, spec)
            args = [buf["cols"], buf["srow"], buf["sumq"]]
        else:
            _gather(b, table, x.ptr, buf["cols"], F32, tokens, p, cg, kk, b.mul(gi, i64(cg * hw)), hw,
                    lambda nn: b.mul(nn, i64(c * hw)), kg)
            args = [buf["cols"]]
        wg = gep(b, w.ptr, b.mul(gi, i64(weight_block)), I8)
        sg = gep(b, scales, b.mul(gi, i64(4 * mg)), I8) if aligned and gran == "per_channel" else scales
        args += [wg, sg]
        if bias is not None:
            args.append(gep(b, bias.ptr, b.mul(gi, i64(mg)), F32) if aligned else bias.ptr)
        # The kernel allocates nothing here (float mode, or int8 codes quantised above): its status is always 0.
        b.call(fn, args + [buf["ytmp"]])
        _scatter(b, buf["ytmp"], y.ptr, tokens, p, mg, m, ncols, i64(0) if aligned else b.mul(gi, i64(mg)), b.mul(gi, i64(mg)))

    if groups == 1:
        per_group(i64(0))
    else:
        with for_range(b, groups, name="group") as gi:
            per_group(gi)


def _kernel(ctx: NodeCtx, spec: MatmulSpec, prequantized: bool) -> ir.Function:
    """The ternary GEMM for this spec, shared by every node with the same one."""
    key = ("ternary_conv", spec, prequantized)
    fn = ctx.m.cache.get(key)
    if fn is None:
        fn = emit_ternary_matmul(ctx.module, ctx.target, name=f"ternary_conv.{len(ctx.m.cache)}", M=spec.M, K=spec.K,
                                 N=spec.N, act=spec.act, granularity=spec.granularity, group_size=spec.group_size,
                                 bias=spec.bias, threads=spec.threads, act_max=spec.act_max, act_eps=spec.act_eps,
                                 act_scale=spec.act_scale, prequantized=prequantized)
        fn.linkage = "internal"
        ctx.m.cache[key] = fn
    return fn


def _gather(b: ir.IRBuilder, table: ir.Value, src: ir.Value, cols: ir.Value, ty: ir.Type, tokens: int, p: int,
            cg: int, kk: int, channel0: ir.Value, hw: int, image: Callable[[ir.Value], ir.Value], row: int) -> None:
    """cols[t, c * kk + k] = src[image(n) + channel0 + c * hw + table[p, k]] (0 where the table says -1), t = (n, p)."""
    zero = ir.Constant(ty, 0.0 if ty == F32 else 0)
    with for_range(b, tokens, name="tok") as t:
        nn, pp = b.udiv(t, i64(p)), b.urem(t, i64(p))
        plane0 = b.add(image(nn), channel0)
        out_row = b.mul(t, i64(row))
        with for_range(b, cg, name="ch") as ci:
            plane = b.add(plane0, b.mul(ci, i64(hw)))
            out = b.add(out_row, b.mul(ci, i64(kk)))
            with for_range(b, kk, name="tap") as k:
                idx = b.sext(b.load(gep(b, table, b.add(b.mul(pp, i64(kk)), k), I32), typ=I32), I64)
                inside = b.icmp_signed(">=", idx, i64(0))
                v = b.load(gep(b, src, b.add(plane, b.select(inside, idx, i64(0))), ty), typ=ty)
                b.store(b.select(inside, v, zero), gep(b, cols, b.add(out, k), ty))


def _zero_tail_and_sum(b: ir.IRBuilder, cols: ir.Value, sumq: ir.Value, tokens: int, kg: int, spec: MatmulSpec) -> None:
    """Codes past K are 0 (the kernel reads KP per row); sumq[t, g] = the sum of row t's codes in K group g."""
    per = kg // spec.G
    with for_range(b, tokens, name="qt") as t:
        row = b.mul(t, i64(spec.KP))
        with for_range(b, spec.KP, start=kg, name="qz") as r:
            b.store(ir.Constant(I8, 0), gep(b, cols, b.add(row, r), I8))
        with for_range(b, spec.G, name="qg") as g:
            total = entry_alloca(b, I32, "sumq")
            b.store(ir.Constant(I32, 0), total)
            with for_range(b, per, name="qs") as r:
                q = b.load(gep(b, cols, b.add(row, b.add(b.mul(g, i64(per)), r)), I8), typ=I8)
                b.store(b.add(b.load(total, typ=I32), b.sext(q, I32)), total)
            b.store(b.load(total, typ=I32), gep(b, sumq, b.add(b.mul(t, i64(spec.G)), g), I32))


def _scatter(b: ir.IRBuilder, ytmp: ir.Value, y: ir.Value, tokens: int, p: int, mg: int, m: int, ncols: int,
             col0: ir.Value, channel0: ir.Value) -> None:
    """y[n, channel0 + j, p] = ytmp[(n, p), col0 + j] for the group's mg output channels."""
    with for_range(b, tokens, name="yt") as t:
        nn, pp = b.udiv(t, i64(p)), b.urem(t, i64(p))
        src = b.add(b.mul(t, i64(ncols)), col0)
        dst = b.add(b.mul(b.add(b.mul(nn, i64(m)), channel0), i64(p)), pp)
        with for_range(b, mg, name="yj") as j:
            v = b.load(gep(b, ytmp, b.add(src, j), F32), typ=F32)
            b.store(v, gep(b, y, b.add(dst, b.mul(j, i64(p))), F32))

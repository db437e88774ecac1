"""Lowerings of the normalizations (layer, rms, group, instance, batch, lp, mean-variance): per-row statistics
with vector accumulators, then one pass that normalizes. Part of the nn family (imported by nn.py).

Statistics are computed as the interpreter does (two passes: the mean, then the mean squared deviation) in
its compute type (the stash type, or f32 for f16/bf16); values the interpreter rounds to X's dtype midway
(the normalized value before the scale) are rounded here too.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import F32, F64, I64, PTR, broadcast_strides, contiguous_strides, for_nest, for_range
from ..context import Buf, NodeCtx
from ..kernels.vec import entry_alloca
from . import lowering
from .nn_values import Vals, _index, _intrinsic, _splat, convert, float_ct, mean_var, shared_body, vsum


def _stash(code: int) -> DType:
    d = DType.from_onnx(code)
    assert d is not None
    return d


# ---- layer / rms normalization: statistics over the trailing axes ----------------------------------------------


@lowering("layer_normalization", symbolic=True)
@shared_body
def layer_normalization(ctx: NodeCtx) -> None:
    _trailing_norm(ctx, rms=False)


@lowering("rms_normalization", symbolic=True)
@shared_body
def rms_normalization(ctx: NodeCtx) -> None:
    _trailing_norm(ctx, rms=True)


def _trailing_norm(ctx: NodeCtx, rms: bool) -> None:
    x, scale = ctx.ins[0], ctx.ins[1]
    bias = ctx.ins[2] if not rms and len(ctx.ins) > 2 else None
    assert x is not None and scale is not None
    at = ctx.attrs
    y = ctx.outs[0]
    rank = x.rank
    axis = at["axis"] % rank if rank else 0
    cols = math.prod(x.shape[axis:])
    stash = _stash(at["stash_type"])
    ct = F64 if stash is DType.F64 else F32
    sv = Vals(ctx.b, stash, ct)
    b = ctx.b
    eps = sv.const(at["epsilon"])
    one = sv.const(1.0)
    out = Vals(b, y.dtype, float_ct(x.dtype, scale.dtype, bias.dtype if bias else None))
    s_strides = broadcast_strides(scale.shape, x.shape)
    b_strides = broadcast_strides(bias.shape, x.shape) if bias is not None else None
    lead, inner = x.shape[:axis], x.shape[axis:]
    if x.numel == 0:
        return
    with for_nest(b, list(lead), name="r") as ri:
        r = _index(b, ri, contiguous_strides(lead)) if lead else I64(0)
        base = b.mul(r, I64(cols))
        if rms:
            ms = b.fdiv(vsum(b, x.ptr, x.dtype, base, cols, ct, lambda v: b.fmul(v, v)), ir.Constant(ct, float(cols)))
            inv = b.fdiv(one, sv.sqrt(b.fadd(ms, eps)))
            mean = None
        else:
            mean, var = mean_var(b, x.ptr, x.dtype, base, cols, ct)
            inv = b.fdiv(one, sv.sqrt(b.fadd(var, eps)))
            for k, v in ((1, mean), (2, inv)):  # Mean and InvStdDev, in the stash type
                if len(ctx.outs) > k and ctx.node.outputs[k] is not None:
                    sv.store(v, ctx.outs[k].ptr, r, ctx.outs[k].dtype)
        s_lead = _index(b, ri, s_strides[:axis])
        b_lead = _index(b, ri, b_strides[:axis]) if b_strides else None
        with for_nest(b, list(inner), name="c") as ci:
            xi = _index(b, ci, contiguous_strides(inner), base)
            v = sv.load(x.ptr, xi, x.dtype)
            norm = b.fmul(b.fsub(v, mean), inv) if mean is not None else b.fmul(v, inv)
            norm = convert(b, sv.round_to(norm, x.dtype), out.ct)
            res = b.fmul(norm, out.load(scale.ptr, _index(b, ci, s_strides[axis:], s_lead), scale.dtype))
            if bias is not None:
                res = b.fadd(res, out.load(bias.ptr, _index(b, ci, b_strides[axis:], b_lead), bias.dtype))
            out.store(res, y.ptr, xi)


# ---- per-channel normalizations over [N, C, spatial...] -------------------------------------------------------------


@lowering("group_normalization")
@shared_body
def group_normalization(ctx: NodeCtx) -> None:
    x, scale, bias = ctx.ins[0], ctx.ins[1], ctx.ins[2]
    assert x is not None and scale is not None and bias is not None
    y, at = ctx.outs[0], ctx.attrs
    n, c = x.shape[:2]
    spatial = math.prod(x.shape[2:])
    groups = at["num_groups"]
    per = c // groups
    stash = _stash(at["stash_type"])
    ct = F64 if stash is DType.F64 else F32
    sv = Vals(ctx.b, stash, ct)
    out = Vals(ctx.b, y.dtype, float_ct(x.dtype, scale.dtype, bias.dtype))
    b = ctx.b
    eps = sv.const(at["epsilon"])
    if x.numel == 0:
        return
    with for_range(b, n * groups, name="g") as ng:
        base = b.mul(ng, I64(per * spatial))
        mean, var = mean_var(b, x.ptr, x.dtype, base, per * spatial, ct)
        std = sv.sqrt(b.fadd(var, eps))
        with for_range(b, per, name="ch") as k:
            ch = b.add(b.mul(b.urem(ng, I64(groups)), I64(per)), k)
            s = out.load(scale.ptr, ch)
            sh = out.load(bias.ptr, ch)
            row = b.add(base, b.mul(k, I64(spatial)))
            with for_range(b, spatial, name="p") as p:
                i = b.add(row, p)
                norm = b.fdiv(b.fsub(sv.load(x.ptr, i, x.dtype), mean), std)
                norm = convert(b, sv.round_to(norm, x.dtype), out.ct)
                out.store(b.fadd(b.fmul(norm, s), sh), y.ptr, i)


@lowering("instance_normalization")
@shared_body
def instance_normalization(ctx: NodeCtx) -> None:
    x, scale, bias = ctx.ins[0], ctx.ins[1], ctx.ins[2]
    assert x is not None and scale is not None and bias is not None
    y = ctx.outs[0]
    n, c = x.shape[:2]
    spatial = math.prod(x.shape[2:])
    ct = float_ct(x.dtype, scale.dtype, bias.dtype)
    v = Vals(ctx.b, y.dtype, ct)
    b = ctx.b
    eps = v.const(ctx.attrs["epsilon"])
    if x.numel == 0:
        return
    with for_range(b, n * c, name="nc") as nc:
        base = b.mul(nc, I64(spatial))
        mean, var = mean_var(b, x.ptr, x.dtype, base, spatial, ct)
        ch = b.urem(nc, I64(c))
        _affine(ctx, x, y, v, base, spatial, v.load(scale.ptr, ch, scale.dtype), mean, b.fadd(var, eps),
                v.load(bias.ptr, ch, bias.dtype))


def _affine(ctx: NodeCtx, x: Buf, y: Buf, v: Vals, base: ir.Value, n: int, scale: ir.Value, mean: ir.Value,
            var_eps: ir.Value, bias: ir.Value) -> None:
    """y = scale * (x - mean) / sqrt(var + eps) + bias over a contiguous run, in the interpreter's order."""
    b = ctx.b
    std = v.sqrt(var_eps)
    with for_range(b, n, name="p") as p:
        i = b.add(base, p)
        d = b.fsub(v.load(x.ptr, i, x.dtype), mean)
        v.store(b.fadd(b.fdiv(b.fmul(scale, d), std), bias), y.ptr, i)


@lowering("batch_normalization")
def batch_normalization(ctx: NodeCtx) -> None:
    """One function per dtype combination and mode, shared by every node: sizes, epsilon and momentum are
    arguments (a CNN has dozens of these with different channel counts)."""
    x, scale, bias, mean_in, var_in = ctx.ins[:5]
    assert x is not None and scale is not None and bias is not None and mean_in is not None and var_in is not None
    at = ctx.attrs
    outs: list[Buf | None] = [o if k < len(ctx.node.outputs) and ctx.node.outputs[k] is not None else None
                              for k, o in enumerate(ctx.outs)]
    outs += [None] * (3 - len(outs))
    ins = [x, scale, bias, mean_in, var_in]
    key = ("batch_normalization", tuple(i.dtype for i in ins), tuple(o.dtype if o else None for o in outs),
           bool(at["training_mode"]))
    fn = ctx.m.cache.get(key)
    if fn is None:
        fn = _emit_batch_norm(ctx.module, key, f"tritc.batch_norm.{sum(1 for k in ctx.m.cache if k[0] == key[0])}")
        ctx.m.cache[key] = fn
    null = ir.Constant(PTR, None)
    n, c = x.shape[:2]
    args = [i.ptr for i in ins] + [o.ptr if o else null for o in outs]
    args += [I64(n), I64(c), I64(math.prod(x.shape[2:])), ir.Constant(F64, float(at["epsilon"])),
             ir.Constant(F64, float(at["momentum"])), ir.Constant(F64, 1.0 - float(at["momentum"]))]
    ctx.b.call(fn, args)


def _emit_batch_norm(module: ir.Module, key: tuple, name: str) -> ir.Function:
    (x_t, s_t, b_t, m_t, v_t), (y_t, rm_t, rv_t), training = key[1:]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR] * 8 + [I64] * 3 + [F64] * 3), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    x, scale, bias, mean_in, var_in, y, run_mean, run_var, n, c, spatial, eps, momentum, rest = fn.args
    for a in fn.args[:8]:
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ct = float_ct(x_t, s_t, b_t, m_t, v_t)
    v = Vals(b, y_t, ct)
    eps_c = convert(b, eps, ct)
    with for_range(b, c, name="ch") as ch:
        m_in = v.load(mean_in, ch, m_t)
        v_in = v.load(var_in, ch, v_t)
        if training:
            mean, var = _channel_stats(b, x, x_t, ch, n, c, spatial, ct)
            mom, keep = convert(b, momentum, ct), convert(b, rest, ct)
            run_m = b.fadd(b.fmul(m_in, mom), b.fmul(mean, keep))
            run_v = b.fadd(b.fmul(v_in, mom), b.fmul(var, keep))
        else:
            mean, var, run_m, run_v = m_in, v_in, m_in, v_in
        for ptr, val, t in ((run_mean, run_m, rm_t), (run_var, run_v, rv_t)):
            if t is not None:
                v.store(val, ptr, ch, t)
        s, sh = v.load(scale, ch, s_t), v.load(bias, ch, b_t)
        std = v.sqrt(b.fadd(var, eps_c))
        with for_range(b, n, name="n") as ni:
            base = b.mul(b.add(b.mul(ni, c), ch), spatial)
            with for_range(b, spatial, name="p") as p:
                i = b.add(base, p)
                d = b.fsub(v.load(x, i, x_t), mean)
                v.store(b.fadd(b.fdiv(b.fmul(s, d), std), sh), y, i)
    b.ret_void()
    return fn


def _channel_stats(b: ir.IRBuilder, x: ir.Value, dtype: DType, ch: ir.Value, n: ir.Value, c: ir.Value, spatial: ir.Value,
                   ct: ir.Type) -> tuple[ir.Value, ir.Value]:
    """Mean and (biased) variance of channel ch over the batch and spatial dims."""
    count = b.uitofp(b.mul(n, spatial), ct)
    total = entry_alloca(b, ct)

    def over(fn) -> ir.Value:
        b.store(ir.Constant(ct, 0.0), total)
        with for_range(b, n, name="sn") as ni:
            base = b.mul(b.add(b.mul(ni, c), ch), spatial)
            b.store(b.fadd(b.load(total, typ=ct), vsum(b, x, dtype, base, spatial, ct, fn)), total)
        return b.load(total, typ=ct)

    mean = b.fdiv(over(None), count)

    def sq(vv: ir.Value) -> ir.Value:
        d = b.fsub(vv, _splat(b, mean, vv.type))
        return b.fmul(d, d)

    return mean, b.fdiv(over(sq), count)


# ---- lp and mean-variance normalization ---------------------------------------------------------------------------------


@lowering("lp_normalization")
@shared_body
def lp_normalization(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    p = ctx.attrs["p"]
    axis = ctx.attrs["axis"] % x.rank
    outer, length, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:])
    v = Vals(ctx.b, x.dtype, float_ct(x.dtype))
    b = ctx.b
    if x.numel == 0:
        return
    acc = b.alloca(v.ct)
    with for_nest(b, [outer, inner], name="o") as (o, i):
        base = b.add(b.mul(o, I64(length * inner)), i)
        b.store(v.zero(), acc)
        with for_range(b, length, name="l") as j:
            e = v.load(x.ptr, b.add(base, b.mul(j, I64(inner))))
            term = _intrinsic(b, "llvm.fabs", e) if p == 1 else b.fmul(e, e)
            b.store(b.fadd(b.load(acc, typ=v.ct), term), acc)
        norm = b.load(acc, typ=v.ct)
        if p != 1:
            norm = v.sqrt(norm)
        is_zero = b.fcmp_ordered("==", norm, v.zero())
        with for_range(b, length, name="l") as j:
            k = b.add(base, b.mul(j, I64(inner)))
            q = b.fdiv(v.load(x.ptr, k), norm)
            v.store(b.select(is_zero, v.zero(), q), y.ptr, k)


@lowering("mean_variance_normalization")
@shared_body
def mean_variance_normalization(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    axes = sorted({a % x.rank for a in ctx.attrs["axes"]})
    kept = [d for d in range(x.rank) if d not in axes]
    strides = contiguous_strides(x.shape)
    ct = float_ct(x.dtype)
    v = Vals(ctx.b, x.dtype, ct)
    b = ctx.b
    count = math.prod(x.shape[d] for d in axes)
    if x.numel == 0:
        return
    sums = [b.alloca(F64), b.alloca(F64)]
    with for_nest(b, [x.shape[d] for d in kept], name="k") as ki:
        base = _index(b, ki, [strides[d] for d in kept])
        for s in sums:
            b.store(ir.Constant(F64, 0.0), s)
        with for_nest(b, [x.shape[d] for d in axes], name="r") as ri:
            e = convert(b, v.load(x.ptr, _index(b, ri, [strides[d] for d in axes], base)), F64)
            b.store(b.fadd(b.load(sums[0], typ=F64), e), sums[0])
            b.store(b.fadd(b.load(sums[1], typ=F64), b.fmul(e, e)), sums[1])
        n = ir.Constant(F64, float(count))
        mean = convert(b, b.fdiv(b.load(sums[0], typ=F64), n), ct)
        ex2 = convert(b, b.fdiv(b.load(sums[1], typ=F64), n), ct)
        std = b.fadd(v.sqrt(b.fsub(ex2, b.fmul(mean, mean))), v.const(1e-9))
        with for_nest(b, [x.shape[d] for d in axes], name="r") as ri:
            k = _index(b, ri, [strides[d] for d in axes], base)
            v.store(b.fdiv(b.fsub(v.load(x.ptr, k), mean), std), y.ptr, k)


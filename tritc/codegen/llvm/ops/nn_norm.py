"""Lowerings of the normalizations (layer, rms, group, instance, batch, lp, mean-variance): per-row statistics
with vector accumulators, then one pass that normalizes. Part of the nn family (imported by nn.py).

Statistics are computed as the interpreter does (two passes: the mean, then the mean squared deviation) in
its compute type (the stash type, or f32 for f16/bf16); values the interpreter rounds to X's dtype midway
(the normalized value before the scale) are rounded here too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import F16, F32, F64, I32, I64, PTR, broadcast_strides, contiguous_strides, elem_type, for_nest, for_range, gep
from ..context import Buf, NodeCtx
from ..elementwise import to_compute, to_storage
from ..kernels.matmul import Gen
from ..kernels.vec import entry_alloca
from . import lowering

# ---- scalars and vectors in a compute type ----------------------------------------------------------------------


def float_ct(*dtypes: DType | None) -> ir.Type:
    """numpy's result type of the widened operands: f64 if any is f64, else f32."""
    return F64 if any(d is DType.F64 for d in dtypes if d is not None) else F32


class Vals:
    """Scalars of `dtype` held in compute type `ct` (default: f32 for f16/bf16, else the dtype's own type)."""

    def __init__(self, b: ir.IRBuilder, dtype: DType, ct: ir.Type | None = None):
        self.b = b
        self.dtype = dtype
        self.ct = ct or (F32 if dtype in (DType.F16, DType.BF16) else elem_type(dtype))
        self.is_float = isinstance(self.ct, (ir.FloatType, ir.DoubleType, ir.HalfType))

    def zero(self) -> ir.Constant:
        return ir.Constant(self.ct, 0.0 if self.is_float else 0)

    def const(self, v: float) -> ir.Constant:
        return ir.Constant(self.ct, float(np.float32(v)) if self.ct == F32 else float(v))

    def load(self, ptr: ir.Value, index: ir.Value | int, dtype: DType | None = None) -> ir.Value:
        d = dtype or self.dtype
        raw = self.b.load(gep(self.b, ptr, index, elem_type(d)), typ=elem_type(d))
        return convert(self.b, to_compute(self.b, raw, d), self.ct)

    def store(self, v: ir.Value, ptr: ir.Value, index: ir.Value | int, dtype: DType | None = None) -> None:
        d = dtype or self.dtype
        target = F32 if d is DType.BF16 else elem_type(d)
        self.b.store(to_storage(self.b, convert(self.b, v, target), d), gep(self.b, ptr, index, elem_type(d)))

    def round_to(self, v: ir.Value, dtype: DType) -> ir.Value:
        """v rounded to `dtype`'s precision and back (numpy's astype(dtype) of an intermediate)."""
        if dtype in (DType.F16, DType.BF16) or (dtype is DType.F32 and self.ct == F64):
            target = F32 if dtype is DType.BF16 else elem_type(dtype)
            return convert(self.b, to_compute(self.b, to_storage(self.b, convert(self.b, v, target), dtype), dtype), self.ct)
        return v

    def add(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fadd(x, y) if self.is_float else self.b.add(x, y)

    def sub(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fsub(x, y) if self.is_float else self.b.sub(x, y)

    def mul(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fmul(x, y) if self.is_float else self.b.mul(x, y)

    def div(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fdiv(x, y)

    def sqrt(self, x: ir.Value) -> ir.Value:
        return _intrinsic(self.b, "llvm.sqrt", x)


def _width(t: ir.Type) -> int:
    return {F16: 16, F32: 32, F64: 64}.get(t, 0)


def convert(b: ir.IRBuilder, v: ir.Value, t: ir.Type) -> ir.Value:
    """A compute value (float, int, or i1) as type t (float widths convert exactly when widening)."""
    src = v.type
    if src == t:
        return v
    if src == F64 and t == F16:
        return b.fptrunc(_f64_to_f32_odd(b, v), F16)
    if _width(src) and _width(t):
        return b.fpext(v, t) if _width(src) < _width(t) else b.fptrunc(v, t)
    if isinstance(src, ir.IntType) and _width(t):
        return b.uitofp(v, t) if src.width == 1 else b.sitofp(v, t)
    raise TypeError(f"cannot convert {src} to {t}")


def _f64_to_f32_odd(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """v rounded to f32 toward zero with the last bit set when inexact (round to odd), so that rounding the
    result to f16 rounds v correctly. LLVM would call __truncdfhf2, which the process may not have."""
    r = b.fptrunc(v, F32)
    bits = b.bitcast(r, I32)
    inexact = b.fcmp_ordered("!=", b.fpext(r, F64), v)
    away = b.fcmp_ordered(">", _intrinsic(b, "llvm.fabs", b.fpext(r, F64)), _intrinsic(b, "llvm.fabs", v))
    toward_zero = b.select(away, b.sub(bits, ir.Constant(I32, 1)), bits)
    odd = b.or_(toward_zero, ir.Constant(I32, 1))
    return b.bitcast(b.select(inexact, odd, bits), F32)


def _intrinsic(b: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    from ..builder import intrinsic, suffix

    return intrinsic(b, f"{name}.{suffix(x.type)}", x.type, [x])


def vsum(b: ir.IRBuilder, ptr: ir.Value, dtype: DType, base: ir.Value, n: int | ir.Value, ct: ir.Type,
         fn: Callable[[ir.Value], ir.Value] | None = None) -> ir.Value:
    """sum(fn(x[base : base + n])) in type ct, with 16 (or 8) lanes accumulating side by side, then a fixed tree."""
    g = Gen(b, dtype)
    L = g.L
    vt = ir.VectorType(ct, L)
    zero = ir.Constant(vt, [ir.Constant(ct, 0.0)] * L)
    acc = entry_alloca(b, vt)
    b.store(zero, acc)

    def add(v: ir.Value, mask: ir.Value | None) -> None:
        v = _widen_vec(b, v, vt)
        v = fn(v) if fn is not None else v
        if mask is not None:  # masked lanes of fn(0) may not be zero
            v = b.select(mask, v, zero)
        b.store(b.fadd(b.load(acc, typ=vt), v), acc)

    nv = I64(n) if isinstance(n, int) else n
    full, tail = b.udiv(nv, I64(L)), b.urem(nv, I64(L))
    with for_range(b, full, name="vs") as i:
        add(g.load(ptr, b.add(base, b.mul(i, I64(L)))), None)
    if not isinstance(n, int) or n % L:
        with b.if_then(b.icmp_unsigned("!=", tail, I64(0))):
            mask = g.lanes_below(tail)
            add(g.load(ptr, b.add(base, b.mul(full, I64(L))), mask), mask)
    v = b.load(acc, typ=vt)
    while L > 1:
        half = L // 2
        lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, half), list(range(half))))
        hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, half), list(range(half, L))))
        v = b.fadd(lo, hi)
        L = half
    return b.extract_element(v, ir.Constant(I32, 0))


def _widen_vec(b: ir.IRBuilder, v: ir.Value, vt: ir.VectorType) -> ir.Value:
    if v.type == vt:
        return v
    return b.fpext(v, vt) if _width(v.type.element) < _width(vt.element) else b.fptrunc(v, vt)


def splat_const(vt: ir.VectorType, v: float) -> ir.Constant:
    return ir.Constant(vt, [ir.Constant(vt.element, v)] * vt.count)


def mean_var(b: ir.IRBuilder, ptr: ir.Value, dtype: DType, base: ir.Value, n: int | ir.Value, ct: ir.Type
             ) -> tuple[ir.Value, ir.Value]:
    """(mean, mean((x - mean)^2)) of a contiguous run, as numpy's mean and var compute them."""
    count = b.uitofp(n, ct) if isinstance(n, ir.Value) else ir.Constant(ct, float(n))
    mean = b.fdiv(vsum(b, ptr, dtype, base, n, ct), count)

    def sq(v: ir.Value) -> ir.Value:
        d = b.fsub(v, _splat(b, mean, v.type))
        return b.fmul(d, d)

    return mean, b.fdiv(vsum(b, ptr, dtype, base, n, ct, sq), count)


def _splat(b: ir.IRBuilder, s: ir.Value, vt: ir.VectorType) -> ir.Value:
    one = b.insert_element(ir.Constant(vt, ir.Undefined), s, ir.Constant(I32, 0))
    return b.shuffle_vector(one, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, vt.count), [0] * vt.count))


def _index(b: ir.IRBuilder, idx: Sequence[ir.Value], strides: Sequence[int], base: ir.Value | None = None) -> ir.Value:
    acc: ir.Value = base if base is not None else I64(0)
    for i, s in zip(idx, strides):
        if s:
            acc = b.add(acc, b.mul(i, I64(s)) if s != 1 else i)
    return acc


def shared_body(lower: Callable[[NodeCtx], None]) -> Callable[[NodeCtx], None]:
    """Make a lowering emit its body once per module for every node with the same op, attributes, operand
    and result types and constant operands, into a function the nodes call (a model's repeated layers
    then compile once)."""

    def wrapper(ctx: NodeCtx) -> None:
        from . import CONST_OPERANDS

        node = ctx.node
        consts = tuple(None if (c := ctx.const(i)) is None else (c.dtype.str, c.shape, c.tobytes())
                       for i in CONST_OPERANDS.get(node.op, ()))
        key = ("shared", node.op, repr(sorted(ctx.attrs.items())), tuple(None if v is None else repr(v.type) for v in node.inputs),
               tuple(None if v is None else repr(v.type) for v in node.outputs), consts)
        ins = [x for x in ctx.ins if x is not None]
        fn = ctx.m.cache.get(key)
        if fn is None:
            fn = ir.Function(ctx.module, ir.FunctionType(ir.VoidType(), [PTR] * (len(ins) + len(ctx.outs))),
                             f"tritc.{node.op}.{sum(1 for k in ctx.m.cache if k[:2] == key[:2])}")
            fn.linkage = "internal"
            fn.attributes.add("noinline")
            for a in fn.args:
                a.add_attribute("noalias")
            args = iter(fn.args)
            body = dataclasses.replace(ctx, b=ir.IRBuilder(fn.append_basic_block("entry")),
                                       ins=[None if x is None else Buf(next(args), x.type) for x in ctx.ins],
                                       outs=[Buf(next(args), o.type) for o in ctx.outs])
            lower(body)
            if not body.b.block.is_terminated:
                body.b.ret_void()
            ctx.m.cache[key] = fn
        ctx.b.call(fn, [x.ptr for x in ins] + [o.ptr for o in ctx.outs])

    wrapper.__name__ = lower.__name__
    wrapper.__doc__ = lower.__doc__
    return wrapper


def _stash(code: int) -> DType:
    d = DType.from_onnx(code)
    assert d is not None
    return d


# ---- layer / rms normalization: statistics over the trailing axes ----------------------------------------------


@lowering("layer_normalization")
@shared_body
def layer_normalization(ctx: NodeCtx) -> None:
    _trailing_norm(ctx, rms=False)


@lowering("rms_normalization")
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


__all__ = ["F16", "Vals", "convert", "float_ct", "mean_var", "vsum"]

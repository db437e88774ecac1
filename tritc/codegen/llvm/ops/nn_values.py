"""Helpers shared by the nn and cnn lowerings: scalars and reductions in a compute type (`Vals`, `convert`,
`vsum`, `mean_var`) and `shared_body`, which emits a lowering once for every node of the same signature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import F16, F32, F64, I32, I64, PTR, elem_type, for_range, gep, i64
from ..context import Buf, NodeCtx
from ..elementwise import f64_to_f32_odd, to_compute, to_storage
from ..kernels.matmul import Gen
from ..kernels.vec import entry_alloca
from ..symbolic import is_static

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
        return b.fptrunc(f64_to_f32_odd(b, v), F16)
    if _width(src) and _width(t):
        return b.fpext(v, t) if _width(src) < _width(t) else b.fptrunc(v, t)
    if isinstance(src, ir.IntType) and _width(t):
        return b.uitofp(v, t) if src.width == 1 else b.sitofp(v, t)
    raise TypeError(f"cannot convert {src} to {t}")


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
        if not is_static(s) or s:
            acc = b.add(acc, b.mul(i, i64(s)) if s != 1 else i)
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
            fn = ir.Function(ctx.module, ir.FunctionType(ir.VoidType(), [PTR] * (len(ins) + len(ctx.outs) + 1)),
                             f"tritc.{node.op}.{sum(1 for k in ctx.m.cache if k[:2] == key[:2])}")
            fn.linkage = "internal"
            fn.attributes.add("noinline")
            for a in fn.args:
                a.add_attribute("noalias")
            args = iter(fn.args)
            dims = fn.args[-1]  # the call's sizes, for symbolic dims in the body
            ctx.register_dims(fn, dims)
            body = dataclasses.replace(ctx, b=ir.IRBuilder(fn.append_basic_block("entry")),
                                       ins=[None if x is None else Buf(next(args), x.type) for x in ctx.ins],
                                       outs=[Buf(next(args), o.type) for o in ctx.outs], dims=dims)
            lower(body)
            if not body.b.block.is_terminated:
                body.b.ret_void()
            ctx.m.cache[key] = fn
        ctx.b.call(fn, [x.ptr for x in ins] + [o.ptr for o in ctx.outs] + [ctx.dims if ctx.dims is not None else ir.Constant(PTR, None)])

    wrapper.__name__ = lower.__name__
    wrapper.__doc__ = lower.__doc__
    return wrapper


__all__ = ["Vals", "convert", "float_ct", "mean_var", "shared_body", "vsum"]

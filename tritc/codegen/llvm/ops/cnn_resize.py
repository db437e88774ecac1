"""Lowering of resize: index and weight tables per resized axis, computed at compile time with the
interpreter's own helpers (shapes, scales and sizes are static), then one gather-weighted-sum loop.

The interpreter resizes one axis at a time in float64; every mode is separable, so each output value is
sum over the taps of every resized axis of prod(weights) * X[indices], also in float64, rounded once.
Nearest is a pure gather that copies values bit for bit. Part of the cnn family (imported by cnn.py).
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np

from ....ir.ops.cnn_resize import _nearest, _present, _source_coords, _taps, _targets
from ....ir.types import DType
from ..builder import F64, I8, I64, contiguous_strides, elem_type, for_nest, for_range, gep, intrinsic
from ..context import NodeCtx
from ..kernels.vec import entry_alloca
from . import lowering
from .nn_values import Vals, convert, shared_body


def axis_tables(in_len: int, out_len: int, scale: float, box: tuple[float, float], attrs: dict
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(indices [out, taps], weights [out, taps] or None for nearest, outside [out] or None) of one axis."""
    mode = attrs["coordinate_transformation_mode"]
    coords = _source_coords(mode, out_len, in_len, scale, box)
    outside = ((coords < 0) | (coords > in_len - 1)) if mode == "tf_crop_and_resize" else None
    if attrs["mode"] == "nearest":
        index = np.clip(_nearest(coords, attrs["nearest_mode"]), 0, in_len - 1).astype(np.int64)
        return index.reshape(out_len, 1), None, outside
    index, weight = _taps(coords, in_len, scale, attrs["mode"], attrs)
    return index.astype(np.int64), weight.astype(np.float64), outside


@lowering("resize", const_operands=(1, 2, 3))
@shared_body
def resize(ctx: NodeCtx) -> None:
    x, y = ctx.ins[0], ctx.outs[0]
    assert x is not None
    attrs = ctx.attrs
    rank = x.rank
    axes = [a % rank for a in attrs["axes"]] if attrs["axes"] is not None else list(range(rank))
    scales, sizes, roi = ctx.const(2), ctx.const(3), ctx.const(1)
    factors, lengths = _targets(x.shape, axes, scales if _present(scales) else None, sizes, attrs["keep_aspect_ratio_policy"])
    boxes = np.asarray(roi, dtype=np.float64).reshape(-1) if _present(roi) else None
    if y.numel == 0:
        return
    tables: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
    for i, (axis, scale, length) in enumerate(zip(axes, factors, lengths)):
        box = (float(boxes[i]), float(boxes[i + len(axes)])) if boxes is not None else (0.0, 1.0)
        if length == x.shape[axis] and scale == 1.0 and box == (0.0, 1.0):
            continue  # the interpreter leaves this axis alone
        tables[axis] = axis_tables(x.shape[axis], length, scale, box, attrs)
    b = ctx.b
    strides = contiguous_strides(x.shape)
    out_strides = contiguous_strides(y.shape)
    nearest = attrs["mode"] == "nearest"
    g_index = {a: ctx.global_array(t[0], "resize_index") for a, t in tables.items()}
    g_weight = {a: ctx.global_array(t[1], "resize_weight") for a, t in tables.items() if t[1] is not None}
    g_outside = {a: ctx.global_array(t[2].astype(np.uint8), "resize_outside") for a, t in tables.items() if t[2] is not None}
    taps = {a: t[0].shape[1] for a, t in tables.items()}
    order = list(tables)  # the axes in the order the interpreter resizes them
    et = elem_type(x.dtype)
    v = Vals(b, x.dtype, F64)
    extrapolation = ir.Constant(F64, float(attrs["extrapolation_value"]))

    with for_nest(b, list(y.shape), name="o") as oi:
        dst = _dot(b, oi, out_strides)
        base: ir.Value = I64(0)
        for d in range(rank):
            if d not in tables:
                base = b.add(base, b.mul(oi[d], I64(strides[d])))

        def outside(d: int) -> ir.Value:
            return b.icmp_unsigned("!=", b.load(gep(b, g_outside[d], oi[d], I8), typ=I8), ir.Constant(I8, 0))

        def level(k: int, src: ir.Value) -> ir.Value:
            """The interpreter's value after resizing axes order[:k]: a weighted sum over axis order[k-1]'s
            taps of the previous level's values, summed in numpy's order, in float64."""
            if k == 0:
                return v.load(x.ptr, src)
            d = order[k - 1]
            n = taps[d]

            def term(t: ir.Value) -> ir.Value:
                at = b.add(b.mul(oi[d], I64(n)), t)
                index = b.load(gep(b, g_index[d], at, I64), typ=I64)
                inner = level(k - 1, b.add(src, b.mul(index, I64(strides[d]))))
                return b.fmul(inner, b.load(gep(b, g_weight[d], at, F64), typ=F64))

            if d == rank - 1 and n >= 8:  # numpy sums a contiguous run of 8 or more pairwise
                terms = [term(I64(t)) for t in range(n)]
                r, i = terms[:8], 8
                while i + 8 <= n:
                    r = [b.fadd(r[j], terms[i + j]) for j in range(8)]
                    i += 8
                res = b.fadd(b.fadd(b.fadd(r[0], r[1]), b.fadd(r[2], r[3])), b.fadd(b.fadd(r[4], r[5]), b.fadd(r[6], r[7])))
                for t in terms[i:]:
                    res = b.fadd(res, t)
            else:  # ... and anything else in order
                acc = entry_alloca(b, F64)
                b.store(ir.Constant(F64, 0.0), acc)
                with for_range(b, n, name=f"t{k}") as t:
                    b.store(b.fadd(b.load(acc, typ=F64), term(t)), acc)
                res = b.load(acc, typ=F64)
            return b.select(outside(d), extrapolation, res) if d in g_outside else res

        def gather() -> None:
            src = base
            for d in order:
                src = b.add(src, b.mul(b.load(gep(b, g_index[d], oi[d], I64), typ=I64), I64(strides[d])))
            b.store(b.load(gep(b, x.ptr, src, et), typ=et), gep(b, y.ptr, dst, et))

        if not nearest:
            _store(ctx, v, level(len(order), base), dst, x.dtype)
        elif g_outside:  # an output outside the crop box along any axis is the extrapolation value
            out_any = None
            for d in g_outside:
                out_any = outside(d) if out_any is None else b.or_(out_any, outside(d))
            with b.if_else(out_any) as (then, otherwise):
                with then:
                    _store_const(ctx, float(attrs["extrapolation_value"]), dst, x.dtype)
                with otherwise:
                    gather()
        else:
            gather()


def _dot(b: ir.IRBuilder, idx: list[ir.Value], strides: list[int]) -> ir.Value:
    acc: ir.Value = I64(0)
    for i, s in zip(idx, strides):
        acc = b.add(acc, b.mul(i, I64(s)) if s != 1 else i)
    return acc


def _store(ctx: NodeCtx, v: Vals, value: ir.Value, dst: ir.Value, dtype: DType) -> None:
    """Store a float64 result as numpy's astype would, ints after rint and clipping to the type's range."""
    b = ctx.b
    if dtype.is_int:
        info = np.iinfo(dtype.np_dtype)
        r = intrinsic(b, "llvm.roundeven.f64", F64, [value])
        r = intrinsic(b, "llvm.maxnum.f64", F64, [r, ir.Constant(F64, float(info.min))])
        r = intrinsic(b, "llvm.minnum.f64", F64, [r, ir.Constant(F64, float(info.max))])
        it = elem_type(dtype)
        # the clipped value may round up to 2^63 in float64 for i64/u64: saturate at the cast instead
        cast = b.fptosi(r, it) if dtype.is_signed else b.fptoui(r, it)
        b.store(cast, gep(b, ctx.outs[0].ptr, dst, it))
        return
    v.store(value, ctx.outs[0].ptr, dst)


def _store_const(ctx: NodeCtx, value: float, dst: ir.Value, dtype: DType) -> None:
    if dtype.is_int:
        info = np.iinfo(dtype.np_dtype)
        raw = np.clip(np.rint(value), info.min, info.max).astype(dtype.np_dtype)
    else:
        raw = np.asarray(value, dtype=np.float64).astype(dtype.np_dtype)
    bits = int(raw.reshape(1).view(f"u{dtype.itemsize}")[0])
    et = ir.IntType(8 * dtype.itemsize)
    ctx.b.store(ir.Constant(et, bits), gep(ctx.b, ctx.outs[0].ptr, dst, et))


__all__ = ["axis_tables", "convert"]

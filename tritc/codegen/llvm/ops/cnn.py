"""Lowerings of conv and conv_transpose: the GEMM kernel (kernels/matmul.py) with an implicit-im2col B.

    Y[n, g, m, p] = sum_{c, k} W[g, m, c, k] * X[n, g, c, window(p, k)] (+ bias[g, m])

is one GEMM per (image, group): A = the group's weights [M/g, C/g * K], B(c, k, p) = the input value
kernel offset k meets at output position p (0 in the padding), gathered on the fly from per-position
start tables computed at compile time, so no im2col buffer exists. A pointwise conv (1x1, stride 1,
no padding) reads X directly as a [C, H*W] matrix. Pools and LRN are in cnn_pool.py, resize in cnn_resize.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.ops.cnn import Window, _transposed_geometry
from ..builder import I32, I64, contiguous_strides, gep
from ..context import NodeCtx
from ..kernels.matmul import BSource, GemmSpec, Gen, StridedB
from . import lowering
from .nn import call_gemm, kernel_threads


def output_coords(out: Sequence[int]) -> np.ndarray:
    """[d, P]: the coordinate along each spatial dim of every output position p (row-major)."""
    grids = np.meshgrid(*(np.arange(n) for n in out), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids]) if out else np.zeros((0, 1), dtype=np.int64)


class _WindowSource(BSource):
    """B(c, k1..kd, p) = X[c, coordinate(p, k)] for a sliding window; subclasses map (p, k) -> coordinate."""

    def __init__(self, ctx: NodeCtx, in_shape: Sequence[int], tables: np.ndarray, tag: str):
        self.in_shape = tuple(in_shape)
        self.plane = math.prod(in_shape)
        self.in_strides = contiguous_strides(in_shape)
        # One start per output position and spatial dim, padded by a panel width of far-out-of-range
        # entries so whole vectors can be read past the last position (those lanes are never valid).
        pad = np.full((len(in_shape), 64), -(1 << 30), dtype=np.int32)
        self.data = np.concatenate([tables.astype(np.int32), pad], axis=1)
        self.ctx = ctx
        self.tag = tag
        self._globals: list[ir.Value] | None = None

    @property
    def key(self) -> tuple:
        return (self.tag, self.in_shape, self.data.tobytes())

    def tables(self) -> list[ir.Value]:
        if self._globals is None:
            self._globals = [self.ctx.global_array(row, "conv_start") for row in self.data]
        return self._globals

    def coordinate(self, g: Gen, start: ir.Value, d: int, k: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(input coordinate, in-range mask) along dim d for kernel offset k (an i64)."""
        raise NotImplementedError

    def vector(self, g: Gen, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: int | ir.Value | None) -> ir.Value:
        b = g.b
        vi = ir.VectorType(I32, g.L)
        mask = g.valid_mask(valid)
        flat = None
        for d, table in enumerate(self.tables()):
            start = b.load(gep(b, table, j0, I32), typ=vi, align=4)
            coord, ok = self.coordinate(g, start, d, ks[1 + d])
            mask = ok if mask is None else b.and_(mask, ok)
            term = coord if self.in_strides[d] == 1 else b.mul(coord, _splat_i32(g, self.in_strides[d]))
            flat = term if flat is None else b.add(flat, term)
        plane = gep(b, base, b.mul(ks[0], I64(self.plane)), g.st)
        if flat is None:  # no spatial dims
            return g.load(plane, 0, 1)
        return g.gather(plane, flat, mask)


def _splat_i32(g: Gen, v: int | ir.Value) -> ir.Value:
    if isinstance(v, int):
        return g.iconst([v] * g.L)
    return g.splat_int(g.b.trunc(v, I32))


class ConvSource(_WindowSource):
    """Conv: coordinate = start[p] + k * dilation, where start = o * stride - begin pad."""

    def __init__(self, ctx: NodeCtx, in_shape: Sequence[int], out: Sequence[int], win: Window, begins: Sequence[int]):
        coords = output_coords(out)
        starts = coords * np.asarray(win.strides)[:, None] - np.asarray(begins)[:, None]
        super().__init__(ctx, in_shape, starts, "conv")
        self.dilations = win.dilations
        self.begins = tuple(begins)
        # Stride 1 with output rows as long as the input's: the input index of output position p is
        # p + (a constant per kernel offset), so B rows are contiguous masked loads, not gathers.
        self.contiguous = all(s == 1 for s in win.strides) and tuple(in_shape[1:]) == tuple(out[1:])

    @property
    def key(self) -> tuple:
        return (*super().key, self.dilations, self.contiguous)

    def vector(self, g: Gen, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: int | ir.Value | None) -> ir.Value:
        if not self.contiguous:
            return super().vector(g, base, ks, j0, valid)
        b = g.b
        vi = ir.VectorType(I32, g.L)
        mask = g.valid_mask(valid)
        shift: ir.Value = I64(0)
        for d, table in enumerate(self.tables()):
            start = b.load(gep(b, table, j0, I32), typ=vi, align=4)
            _, ok = self.coordinate(g, start, d, ks[1 + d])
            mask = ok if mask is None else b.and_(mask, ok)
            off = b.sub(b.mul(ks[1 + d], I64(self.dilations[d])), I64(self.begins[d]))
            shift = b.add(shift, b.mul(off, I64(self.in_strides[d])))
        plane = b.gep(base, [b.add(b.mul(ks[0], I64(self.plane)), b.add(j0, shift))], source_etype=g.st)
        return g.load(plane, 0, mask)  # not inbounds: masked-off lanes may lie before the plane

    def coordinate(self, g: Gen, start: ir.Value, d: int, k: ir.Value) -> tuple[ir.Value, ir.Value]:
        b = g.b
        off = b.mul(k, I64(self.dilations[d])) if self.dilations[d] != 1 else k
        coord = b.add(start, _splat_i32(g, off))
        return coord, b.icmp_unsigned("<", coord, g.iconst([self.in_shape[d]] * g.L))


class TransposedSource(_WindowSource):
    """ConvTranspose: output position f (in the uncropped result) meets input i through kernel offset k
    when f = i * stride + k * dilation; start[p] = f."""

    def __init__(self, ctx: NodeCtx, in_shape: Sequence[int], out: Sequence[int], win: Window, begins: Sequence[int]):
        coords = output_coords(out) + np.asarray(begins)[:, None]
        super().__init__(ctx, in_shape, coords, "conv_transpose")
        self.strides, self.dilations = win.strides, win.dilations

    @property
    def key(self) -> tuple:
        return (*super().key, self.strides, self.dilations)

    def coordinate(self, g: Gen, start: ir.Value, d: int, k: ir.Value) -> tuple[ir.Value, ir.Value]:
        b = g.b
        off = b.mul(k, I64(self.dilations[d])) if self.dilations[d] != 1 else k
        t = b.sub(start, _splat_i32(g, off))
        s, n = self.strides[d], self.in_shape[d]
        # 0 <= t <= (n - 1) * s (an unsigned compare also rejects t < 0), and t a multiple of s
        ok = b.icmp_unsigned("<=", t, g.iconst([(n - 1) * s] * g.L))
        if s == 1:
            return t, ok
        ok = b.and_(ok, b.icmp_unsigned("==", b.urem(t, g.iconst([s] * g.L)), g.iconst([0] * g.L)))
        return b.udiv(t, g.iconst([s] * g.L)), ok


@lowering("conv")
def conv(ctx: NodeCtx) -> None:
    x, w, y = ctx.ins[0], ctx.ins[1], ctx.outs[0]
    bias = ctx.ins[2] if len(ctx.ins) > 2 else None
    assert x is not None and w is not None
    if y.numel == 0:
        return
    at = ctx.attrs
    groups = at["group"]
    kernel = w.shape[2:]
    win = Window.of(at, kernel, "Conv")
    n, c = x.shape[:2]
    m = w.shape[0]
    in_sp, out_sp = x.shape[2:], y.shape[2:]
    begins = [win.dim(i, s)[1] for i, s in enumerate(in_sp)]
    mg, cg = m // groups, c // groups
    kk, hw, p = math.prod(kernel), math.prod(in_sp), math.prod(out_sp)
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in win.strides) and not any(begins) and \
        tuple(in_sp) == tuple(out_sp)
    spec = GemmSpec(mg, p, (cg, *kernel), x.dtype, a_m=cg * kk, a_k=(kk, *contiguous_strides(kernel)), ldc=p,
                    batch=(n, groups), a_batch=(0, mg * cg * kk), b_batch=(c * hw, cg * hw), c_batch=(m * p, mg * p),
                    bias_batch=(0, mg), bias=(1, 0) if bias is not None else None, threads=kernel_threads(ctx))
    if pointwise:
        spec = GemmSpec(mg, p, (cg,), x.dtype, a_m=cg, a_k=(1,), ldc=p, batch=spec.batch, a_batch=spec.a_batch,
                        b_batch=spec.b_batch, c_batch=spec.c_batch, bias_batch=spec.bias_batch, bias=spec.bias,
                        threads=spec.threads)
        source: BSource = StridedB(hw, 1)
    else:
        source = ConvSource(ctx, in_sp, out_sp, win, begins)
    call_gemm(ctx, spec, source, w.ptr, x.ptr, bias.ptr if bias is not None else None, y.ptr)


@lowering("conv_transpose")
def conv_transpose(ctx: NodeCtx) -> None:
    x, w, y = ctx.ins[0], ctx.ins[1], ctx.outs[0]
    bias = ctx.ins[2] if len(ctx.ins) > 2 else None
    assert x is not None and w is not None
    if y.numel == 0:
        return
    at = ctx.attrs
    groups = at["group"]
    kernel = w.shape[2:]
    win = Window.of(at, kernel, "ConvTranspose")
    n, c = x.shape[:2]
    mg = w.shape[1]
    m, cg = mg * groups, c // groups
    in_sp, out_sp = x.shape[2:], y.shape[2:]
    begins = [_transposed_geometry(at, win, i, s)[1] for i, s in enumerate(in_sp)]
    kk, hw, p = math.prod(kernel), math.prod(in_sp), math.prod(out_sp)
    # A(m, c, k) = W[c, m, k]: not linear in (c, k), so the kernel uses its direct loops
    spec = GemmSpec(mg, p, (cg, *kernel), x.dtype, a_m=kk, a_k=(mg * kk, *contiguous_strides(kernel)), ldc=p,
                    batch=(n, groups), a_batch=(0, cg * mg * kk), b_batch=(c * hw, cg * hw), c_batch=(m * p, mg * p),
                    bias_batch=(0, mg), bias=(1, 0) if bias is not None else None, threads=kernel_threads(ctx))
    source = TransposedSource(ctx, in_sp, out_sp, win, begins)
    call_gemm(ctx, spec, source, w.ptr, x.ptr, bias.ptr if bias is not None else None, y.ptr)


__all__ = ["ConvSource", "TransposedSource", "output_coords"]

from . import cnn_pool, cnn_resize  # noqa: E402,F401 - register the pools, LRN and resize (kept in their own files)

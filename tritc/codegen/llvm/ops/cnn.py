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
from ..kernels.matmul import MAX_TILE_COLUMNS, BSource, GemmSpec, Gen, Params, StridedB, Values
from . import lowering
from .nn import call_gemm, kernel_threads


def output_coords(out: Sequence[int]) -> np.ndarray:
    """[d, P]: the coordinate along each spatial dim of every output position p (row-major)."""
    grids = np.meshgrid(*(np.arange(n) for n in out), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids]) if out else np.zeros((0, 1), dtype=np.int64)


class _WindowSource(BSource):
    """B(c, k1..kd, p) = X[c, coordinate(p, k)] for a sliding window; subclasses map (p, k) -> coordinate.

    Runtime parameters: the input plane size, each spatial dim's length, stride in X and dilation; one
    table per spatial dim of a per-output-position start (padded by a panel width of far-out-of-range
    entries, so whole vectors can be read past the last position: those lanes are never valid)."""

    tag = ""

    def __init__(self, in_shape: Sequence[int], starts: np.ndarray, dilations: Sequence[int]):
        self.in_shape = tuple(in_shape)
        self.d = len(in_shape)
        self.in_strides = contiguous_strides(in_shape)
        self.dilations = tuple(dilations)
        pad = np.full((self.d, MAX_TILE_COLUMNS), -(1 << 30), dtype=np.int32)
        self.starts = np.concatenate([starts.astype(np.int32), pad], axis=1)

    @property
    def key(self) -> tuple:
        return (self.tag, self.d)

    def declare(self, layout: Params) -> None:
        layout.slot("s.plane", *(f"s.{n}{d}" for d in range(self.d) for n in ("n", "st", "dil")))

    def values(self) -> dict[str, int]:
        v = {"s.plane": math.prod(self.in_shape)}
        for d in range(self.d):
            v[f"s.n{d}"], v[f"s.st{d}"], v[f"s.dil{d}"] = self.in_shape[d], self.in_strides[d], self.dilations[d]
        return v

    def tables(self) -> list[np.ndarray]:
        return [np.ascontiguousarray(row) for row in self.starts]

    def coordinate(self, g: Gen, p: Values, start: ir.Value, d: int, k: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(input coordinate, in-range mask) along dim d for kernel offset k (an i64)."""
        raise NotImplementedError

    def _start(self, g: Gen, p: Values, d: int, j0: ir.Value) -> ir.Value:
        return g.b.load(gep(g.b, p.ptr(d), j0, I32), typ=ir.VectorType(I32, g.L), align=4)

    def vector(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: ir.Value | None) -> ir.Value:
        b = g.b
        mask = valid
        flat = None
        for d in range(self.d):
            coord, ok = self.coordinate(g, p, self._start(g, p, d, j0), d, ks[1 + d])
            mask = ok if mask is None else b.and_(mask, ok)
            term = b.mul(coord, _splat_i32(g, p[f"s.st{d}"]))
            flat = term if flat is None else b.add(flat, term)
        plane = gep(b, base, b.mul(ks[0], p["s.plane"]), g.st)
        return g.gather(plane, flat, mask)


def _splat_i32(g: Gen, v: ir.Value) -> ir.Value:
    return g.splat_int(g.b.trunc(v, I32))


class ConvSource(_WindowSource):
    """Conv: coordinate = start[p] + k * dilation, where start = o * stride - begin pad."""

    tag = "conv"

    def __init__(self, in_shape: Sequence[int], out: Sequence[int], win: Window, begins: Sequence[int]):
        coords = output_coords(out)
        starts = coords * np.asarray(win.strides)[:, None] - np.asarray(begins)[:, None]
        super().__init__(in_shape, starts, win.dilations)
        self.begins = tuple(begins)
        # Stride 1 with output rows as long as the input's: the input index of output position p is
        # p + (a constant per kernel offset), so B rows are contiguous masked loads, not gathers.
        self.contiguous = all(s == 1 for s in win.strides) and tuple(in_shape[1:]) == tuple(out[1:])

    @property
    def key(self) -> tuple:
        return (*super().key, self.contiguous)

    def declare(self, layout: Params) -> None:
        super().declare(layout)
        layout.slot(*(f"s.beg{d}" for d in range(self.d)))

    def values(self) -> dict[str, int]:
        return {**super().values(), **{f"s.beg{d}": self.begins[d] for d in range(self.d)}}

    def coordinate(self, g: Gen, p: Values, start: ir.Value, d: int, k: ir.Value) -> tuple[ir.Value, ir.Value]:
        b = g.b
        coord = b.add(start, _splat_i32(g, b.mul(k, p[f"s.dil{d}"])))
        return coord, b.icmp_unsigned("<", coord, _splat_i32(g, p[f"s.n{d}"]))

    def vector(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: ir.Value | None) -> ir.Value:
        if not self.contiguous:
            return super().vector(g, p, base, ks, j0, valid)
        b = g.b
        mask = valid
        shift: ir.Value = I64(0)
        for d in range(self.d):
            _, ok = self.coordinate(g, p, self._start(g, p, d, j0), d, ks[1 + d])
            mask = ok if mask is None else b.and_(mask, ok)
            off = b.sub(b.mul(ks[1 + d], p[f"s.dil{d}"]), p[f"s.beg{d}"])
            shift = b.add(shift, b.mul(off, p[f"s.st{d}"]))
        plane = b.gep(base, [b.add(b.mul(ks[0], p["s.plane"]), b.add(j0, shift))], source_etype=g.st)
        return g.load(plane, 0, mask)  # not inbounds: masked-off lanes may lie before the plane


class TransposedSource(_WindowSource):
    """ConvTranspose: output position f (in the uncropped result) meets input i through kernel offset k
    when f = i * stride + k * dilation; start[p] = f. The strides are compiled in (they divide)."""

    tag = "conv_transpose"

    def __init__(self, in_shape: Sequence[int], out: Sequence[int], win: Window, begins: Sequence[int]):
        super().__init__(in_shape, output_coords(out) + np.asarray(begins)[:, None], win.dilations)
        self.strides = tuple(win.strides)

    @property
    def key(self) -> tuple:
        return (*super().key, self.strides)

    def coordinate(self, g: Gen, p: Values, start: ir.Value, d: int, k: ir.Value) -> tuple[ir.Value, ir.Value]:
        b = g.b
        t = b.sub(start, _splat_i32(g, b.mul(k, p[f"s.dil{d}"])))
        s = self.strides[d]
        # 0 <= t <= (n - 1) * s (an unsigned compare also rejects t < 0), and t a multiple of s
        limit = _splat_i32(g, b.mul(b.sub(p[f"s.n{d}"], I64(1)), I64(s)))
        ok = b.icmp_unsigned("<=", t, limit)
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
        source = ConvSource(in_sp, out_sp, win, begins)
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
    source = TransposedSource(in_sp, out_sp, win, begins)
    call_gemm(ctx, spec, source, w.ptr, x.ptr, bias.ptr if bias is not None else None, y.ptr)


__all__ = ["ConvSource", "TransposedSource", "output_coords"]

from . import cnn_pool, cnn_resize  # noqa: E402,F401 - register the pools, LRN and resize (kept in their own files)

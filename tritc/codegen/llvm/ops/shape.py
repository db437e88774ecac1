"""Lowerings of the affine data-movement ops (transpose, slice, concat, split, expand, tile, pad, ...) and
the copy engine they share: a destination/source pair of strided views walked by one loop nest.

Every op here is "out[i] = in[f(i)]" with f affine per axis (a stride, possibly 0 or negative) or, for
pad's reflect/edge/wrap, an index table per axis computed with numpy at compile time. Elements are moved
as raw integers of their itemsize, so every dtype works the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import I1, I8, I32, I64, PTR, VOID, broadcast_strides, contiguous_strides, declare, for_range, gep, i64, intrinsic
from ..context import Buf, NodeCtx
from ..symbolic import is_static
from . import Lowering, lowering

# Transposes move square blocks of n vectors of n elements: n loads, a transpose in registers, n stores.
# A vector is one register wide (64 bytes with AVX-512, else 32), at most MAX_BLOCK elements.
MAX_BLOCK = 16


def out_of_line(*ops: str, const_operands: tuple[int, ...] = (), symbolic: bool = False,
                runtime_operands: tuple[int, ...] = ()) -> Callable[[Lowering], Lowering]:
    """@lowering, with the node's function kept out of line (noinline). LLVM otherwise inlines every node
    into tritc_main and optimises one huge function: compile time grows quadratically with the node count
    (64 small transposes in one graph: 150 s inlined, 9 s out of line). A call per node costs nothing next
    to moving data."""

    def register(fn: Lowering) -> Lowering:
        def lower(ctx: NodeCtx) -> None:
            ctx.b.function.attributes.add("noinline")
            fn(ctx)

        lower.__name__, lower.__doc__ = fn.__name__, fn.__doc__
        lowering(*ops, const_operands=const_operands, symbolic=symbolic, runtime_operands=runtime_operands)(lower)
        return fn

    return register


def raw_type(itemsize: int) -> ir.IntType:
    """The integer type elements of `itemsize` bytes are moved as."""
    return ir.IntType(8 * itemsize)


def raw_bits(value: object, dtype: DType) -> int:
    """The storage bits of `value` in `dtype`, as an unsigned integer (bool as one byte)."""
    arr = np.asarray(value).astype(dtype.np_dtype).reshape(1)
    return int(arr.view(f"u{dtype.itemsize}")[0])


# ---- the copy engine ------------------------------------------------------------------------------


@dataclass
class Axis:
    """One loop of a copy: `n` steps; the destination moves by `dst` elements per step and the source
    by `src`, or to source offset table[i] (element offsets, already scaled) when a table is given."""

    n: int
    dst: int
    src: int = 0
    table: np.ndarray | None = None


def _offset(b: ir.IRBuilder, base: ir.Value, i: ir.Value, stride: int) -> ir.Value:
    if stride == 0:
        return base
    term = i if stride == 1 else b.mul(i, i64(stride), flags=["nsw"])
    if isinstance(base, ir.Constant) and base.constant == 0:
        return term
    return b.add(base, term, flags=["nsw"])


def _simplify(axes: Sequence[Axis], src_off: int) -> tuple[list[Axis], int]:
    """Drop length-1 axes (folding a table's one entry into the source offset) and merge neighbours
    that together walk both sides contiguously."""
    out: list[Axis] = []
    for a in axes:
        if a.n == 1:
            if a.table is not None:
                src_off += int(a.table[0])
            continue
        prev = out[-1] if out else None
        if prev is not None and a.table is None and prev.table is None and prev.dst == a.dst * a.n and prev.src == a.src * a.n:
            out[-1] = Axis(prev.n * a.n, a.dst, a.src)
        else:
            out.append(a)
    return out, src_off


def memcpy(b: ir.IRBuilder, dst: ir.Value, src: ir.Value, nbytes: ir.Value | int) -> None:
    n = I64(nbytes) if isinstance(nbytes, int) else nbytes
    # Declared with plain ptr operands: llvmlite types a global as [n x i8]*, and a declaration taking the first call's
    # types would refuse a second global of another size.
    b.call(declare(b.module, "llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1]), [dst, src, n, I1(0)])


def memset(b: ir.IRBuilder, dst: ir.Value, byte: int, nbytes: ir.Value | int) -> None:
    n = I64(nbytes) if isinstance(nbytes, int) else nbytes
    intrinsic(b, "llvm.memset.p0.i64", VOID, [dst, ir.Constant(I8, byte), n, I1(0)])


def emit_copy(ctx: NodeCtx, dst: ir.Value, src: ir.Value, axes: Sequence[Axis], itemsize: int, *,
              dst_off: int = 0, src_off: int = 0) -> None:
    """dst[dst_off + sum(i_d * dst_d)] = src[src_off + sum(i_d * src_d or table_d[i_d])] over every index."""
    if any(a.n == 0 for a in axes):
        return
    b = ctx.b
    et = raw_type(itemsize)
    axes, src_off = _simplify(axes, src_off)
    tables = {id(a): gep(b, ctx.global_array(a.table.astype(np.int64), "axis"), 0, I8) for a in axes if a.table is not None}

    def step(a: Axis, d: ir.Value, s: ir.Value, i: ir.Value) -> tuple[ir.Value, ir.Value]:
        d = _offset(b, d, i, a.dst)
        if a.table is not None:
            t = b.load(gep(b, tables[id(a)], i, I64), typ=I64)
            return d, (t if isinstance(s, ir.Constant) and s.constant == 0 else b.add(s, t, flags=["nsw"]))
        return d, _offset(b, s, i, a.src)

    def element(d: ir.Value, s: ir.Value) -> None:
        b.store(b.load(gep(b, src, s, et), typ=et), gep(b, dst, d, et))

    if axes and axes[-1].table is None and axes[-1].dst == 1 and axes[-1].src == 1:
        row = axes.pop()  # a contiguous run on both sides: one memcpy per row

        def leaf(d: ir.Value, s: ir.Value) -> None:
            memcpy(b, gep(b, dst, d, et), gep(b, src, s, et), row.n * itemsize)
    else:
        leaf = element

    blocked = _block_axis(axes, _block_size(ctx, itemsize)) if leaf is element else None
    if blocked is None:
        _nest(b, axes, I64(dst_off), I64(src_off), step, leaf)
        return
    p, n = blocked
    ap, aq = axes[p], axes[-1]
    outer = [a for k, a in enumerate(axes) if k not in (p, len(axes) - 1)]
    vt = ir.VectorType(et, n)

    def transpose_2d(d: ir.Value, s: ir.Value) -> None:
        # n x n blocks: n vector loads along p, a transpose in registers, n vector stores along q. A ragged
        # last block is shifted back to end at the edge: it rewrites some values with the same values.
        with for_range(b, _blocks(ap.n, n), name="pb") as i:
            with for_range(b, _blocks(aq.n, n), name="qb") as j:
                d0, s0 = step(ap, *step(aq, d, s, _block_start(b, j, n, aq.n)), _block_start(b, i, n, ap.n))
                rows = [b.load(gep(b, src, _offset(b, s0, I64(r), aq.src), et), typ=vt, align=itemsize) for r in range(n)]
                for r, v in enumerate(transpose_vectors(b, rows)):
                    b.store(v, gep(b, dst, _offset(b, d0, I64(r), ap.dst), et), align=itemsize)

    _nest(b, outer, I64(dst_off), I64(src_off), step, transpose_2d)


def _blocks(length: int, n: int) -> int:
    return -(-length // n)


def _block_start(b: ir.IRBuilder, i: ir.Value, n: int, length: int) -> ir.Value:
    """min(i * n, length - n): the first index of block i, the last block kept inside the axis."""
    start = b.mul(i, I64(n), flags=["nsw"])
    if length % n == 0:
        return start
    return b.select(b.icmp_signed("<", start, I64(length - n)), start, I64(length - n))


def _block_size(ctx: NodeCtx, itemsize: int) -> int:
    vector_bytes = 64 if ctx.target.has("avx512f") else 32
    return max(4, min(MAX_BLOCK, vector_bytes // itemsize))


def _block_axis(axes: Sequence[Axis], n: int) -> tuple[int, int] | None:
    """(axis index p, n) for a transpose-like copy in n x n blocks: the innermost axis writes contiguously,
    axis p reads contiguously, and both are at least one block long. None when a plain nest is better."""
    q = axes[-1] if axes else None
    if q is None or len(axes) < 2 or q.table is not None or q.dst != 1 or not is_static(q.n) or q.n < n:
        return None  # a symbolic length: the plain nest (blocks would need a run-time choice)
    for k in range(len(axes) - 2, -1, -1):
        a = axes[k]
        if a.table is None and a.src == 1 and is_static(a.n) and a.n >= n:
            return k, n
    return None


def transpose_vectors(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose n vectors of n elements (n a power of 2) with n log2(n) two-source shuffles (Eklundh):
    the stage for distance d swaps the off-diagonal d x d blocks of each 2d x 2d block."""
    n = len(rows)
    rows = list(rows)
    d = n // 2
    while d >= 1:
        for i in range(n):
            if i & d:
                continue
            j = i + d
            lo = [c if c & d == 0 else n + c - d for c in range(n)]
            hi = [c + d if c & d == 0 else n + c for c in range(n)]
            rows[i], rows[j] = (b.shuffle_vector(rows[i], rows[j], ir.Constant(ir.VectorType(I32, n), [I32(m) for m in lo])),
                                b.shuffle_vector(rows[i], rows[j], ir.Constant(ir.VectorType(I32, n), [I32(m) for m in hi])))
        d //= 2
    return rows


Step = Callable[[Axis, ir.Value, ir.Value, ir.Value], tuple[ir.Value, ir.Value]]


def _nest(b: ir.IRBuilder, axes: Sequence[Axis], d: ir.Value, s: ir.Value, step: Step,
          leaf: Callable[[ir.Value, ir.Value], None]) -> None:
    """Loops over `axes` (outermost first) carrying the destination and source offsets; leaf at the bottom."""
    if not axes:
        leaf(d, s)
        return
    with for_range(b, axes[0].n, name="c") as i:
        d1, s1 = step(axes[0], d, s, i)
        _nest(b, axes[1:], d1, s1, step, leaf)


def fill(ctx: NodeCtx, ptr: ir.Value, n: int | ir.Value, bits: int | ir.Value, itemsize: int, off: int = 0) -> None:
    """ptr[off : off + n] = the element whose raw bits are `bits` (memset when every byte is the same)."""
    if isinstance(n, int) and n <= 0:
        return
    b = ctx.b
    et = raw_type(itemsize)
    start = gep(b, ptr, off, et)
    if isinstance(bits, int):
        raw = bits.to_bytes(itemsize, "little")
        if len(set(raw)) == 1:
            nbytes = n * itemsize if isinstance(n, int) else b.mul(n, I64(itemsize))
            memset(b, start, raw[0], nbytes)
            return
        bits = ir.Constant(et, bits)
    with for_range(b, n, name="f") as i:
        b.store(bits, gep(b, start, i, et))


def copy_view(ctx: NodeCtx, src: Buf, dst: Buf, view: Sequence[int], perm: Sequence[int], src_off: int = 0) -> None:
    """dst = transpose(src viewed as contiguous `view`, perm), i.e. a permuted copy."""
    strides = contiguous_strides(view)
    out = [view[p] for p in perm]
    dst_strides = contiguous_strides(out)
    axes = [Axis(n, ds, strides[p]) for n, ds, p in zip(out, dst_strides, perm)]
    emit_copy(ctx, dst.ptr, src.ptr, axes, src.dtype.itemsize, src_off=src_off)


def ints(ctx: NodeCtx, i: int) -> list[int] | None:
    """Constant operand i as a list of Python ints (None when the operand is absent)."""
    if i >= len(ctx.node.inputs) or ctx.node.inputs[i] is None:
        return None
    c = ctx.const(i)
    assert c is not None, f"operand {i} of {ctx.node.describe()} must be a constant"
    return [int(v) for v in c.reshape(-1)]


def _ins(ctx: NodeCtx) -> Buf:
    src = ctx.ins[0]
    assert src is not None
    return src


# ---- transpose, slice, expand, tile ---------------------------------------------------------------


@out_of_line("transpose", symbolic=True)
def transpose(ctx: NodeCtx) -> None:
    src = _ins(ctx)
    perm = ctx.attrs["perm"]
    copy_view(ctx, src, ctx.outs[0], src.shape, perm if perm is not None else list(range(src.rank))[::-1])


@out_of_line("slice", const_operands=(1, 2, 3, 4), symbolic=True, runtime_operands=(1, 2))
def slice_(ctx: NodeCtx) -> None:
    src, dst = _ins(ctx), ctx.outs[0]
    if ctx.const(1) is None or ctx.const(2) is None or not all(is_static(d) for d in (*src.shape, *dst.shape)):
        _slice_at_run_time(ctx, src, dst)
        return
    starts, ends = ints(ctx, 1), ints(ctx, 2)
    assert starts is not None and ends is not None
    axes = ints(ctx, 3) or list(range(len(starts)))
    steps = ints(ctx, 4) or [1] * len(starts)
    step_of = [1] * src.rank
    off = 0
    for a, s, e, st in zip(axes, starts, ends, steps):
        a %= src.rank
        start, _, _ = slice(s, e, st).indices(src.shape[a])
        off += start * src.strides[a]
        step_of[a] = st
    loops = [Axis(n, ds, st * ss) for n, ds, st, ss in zip(dst.shape, dst.strides, step_of, src.strides)]
    emit_copy(ctx, dst.ptr, src.ptr, loops, src.dtype.itemsize, src_off=off)


def _slice_at_run_time(ctx: NodeCtx, src: Buf, dst: Buf) -> None:
    """A slice whose starts are read at run time or whose dims are symbolic: the result's (inferred) type gives each
    axis' length, so only the start offsets are computed here, clamped as ONNX says (the ends decide only lengths)."""
    b = ctx.b
    starts_buf = ctx.ins[1]
    assert starts_buf is not None
    k = starts_buf.numel
    assert is_static(k), f"{ctx.node.describe()}: the number of sliced axes must be static"
    axes = ints(ctx, 3) or list(range(k))
    steps = ints(ctx, 4) or [1] * k
    step_of: list[int] = [1] * src.rank
    off: ir.Value = I64(0)
    const_starts = ctx.const(1)
    for n, (a, st) in enumerate(zip(axes, steps)):
        a %= src.rank
        dim = i64(src.shape[a])
        if const_starts is not None:
            s = I64(int(const_starts.reshape(-1)[n]))
        else:
            raw = b.load(gep(b, starts_buf.ptr, n, starts_buf.elem), typ=starts_buf.elem)
            s = raw if raw.type.width == 64 else b.sext(raw, I64)
        s = b.select(b.icmp_signed("<", s, I64(0)), b.add(s, dim), s)
        hi = dim if st > 0 else b.sub(dim, I64(1))
        s = b.select(b.icmp_signed("<", s, I64(0)), I64(0), s)
        s = b.select(b.icmp_signed(">", s, hi), hi, s)
        off = b.add(off, b.mul(s, i64(src.strides[a])))
        step_of[a] = st
    loops = [Axis(n, ds, st * ss) for n, ds, st, ss in zip(dst.shape, dst.strides, step_of, src.strides)]
    emit_copy(ctx, dst.ptr, gep(b, src.ptr, off, raw_type(src.dtype.itemsize)), loops, src.dtype.itemsize)


@out_of_line("expand", const_operands=(1,), symbolic=True, runtime_operands=(1,))
def expand(ctx: NodeCtx) -> None:
    """The result's type (inferred, symbolic dims included) says the broadcast; the shape operand is not read."""
    src, dst = _ins(ctx), ctx.outs[0]
    loops = [Axis(n, ds, ss) for n, ds, ss in zip(dst.shape, dst.strides, broadcast_strides(src.shape, dst.shape))]
    emit_copy(ctx, dst.ptr, src.ptr, loops, src.dtype.itemsize)


@out_of_line("tile", const_operands=(1,))
def tile(ctx: NodeCtx) -> None:
    """The output viewed as [r0, d0, r1, d1, ...]: a repeat axis reads with stride 0."""
    src, dst = _ins(ctx), ctx.outs[0]
    loops = []
    for d, n, ds, ss in zip(src.shape, dst.shape, dst.strides, src.strides):
        loops += [Axis(n // d if d else 0, ds * d, 0), Axis(d, ds, ss)]
    emit_copy(ctx, dst.ptr, src.ptr, loops, src.dtype.itemsize)


# ---- concat, split --------------------------------------------------------------------------------


@out_of_line("concat", symbolic=True)
def concat(ctx: NodeCtx) -> None:
    dst = ctx.outs[0]
    axis = ctx.attrs["axis"] % dst.rank
    pos = 0
    for src in ctx.ins:
        if src is None:
            continue
        loops = [Axis(n, ds, ss) for n, ds, ss in zip(src.shape, dst.strides, src.strides)]
        emit_copy(ctx, dst.ptr, src.ptr, loops, src.dtype.itemsize, dst_off=pos * dst.strides[axis])
        pos += src.shape[axis]


@out_of_line("split", const_operands=(1,), symbolic=True)
def split(ctx: NodeCtx) -> None:
    src = _ins(ctx)
    axis = ctx.attrs["axis"] % src.rank
    pos = 0
    for dst in ctx.outs:
        loops = [Axis(n, ds, ss) for n, ds, ss in zip(dst.shape, dst.strides, src.strides)]
        emit_copy(ctx, dst.ptr, src.ptr, loops, src.dtype.itemsize, src_off=pos * src.strides[axis])
        pos += dst.shape[axis]


# ---- depth_to_space, space_to_depth: reshape + transpose views -------------------------------------


@out_of_line("depth_to_space")
def depth_to_space(ctx: NodeCtx) -> None:
    src = _ins(ctx)
    n, c, h, w = src.shape
    bs = ctx.attrs["blocksize"]
    if ctx.attrs["mode"] == "DCR":
        copy_view(ctx, src, ctx.outs[0], (n, bs, bs, c // (bs * bs), h, w), (0, 3, 4, 1, 5, 2))
    else:
        copy_view(ctx, src, ctx.outs[0], (n, c // (bs * bs), bs, bs, h, w), (0, 1, 4, 2, 5, 3))


@out_of_line("space_to_depth")
def space_to_depth(ctx: NodeCtx) -> None:
    src = _ins(ctx)
    n, c, h, w = src.shape
    bs = ctx.attrs["blocksize"]
    perm = (0, 3, 5, 1, 2, 4) if ctx.attrs["mode"] == "DCR" else (0, 1, 3, 5, 2, 4)
    copy_view(ctx, src, ctx.outs[0], (n, c, h // bs, bs, w // bs, bs), perm)


# ---- pad, center_crop_pad -------------------------------------------------------------------------


def _pad_value(ctx: NodeCtx, dtype: DType) -> int | ir.Value:
    """The raw bits of pad's constant value: a compile-time int when known, else loaded at run time."""
    vb = ctx.ins[2] if len(ctx.ins) > 2 else None
    if vb is None or vb.numel == 0:
        return 0
    c = ctx.const(2)
    if c is not None:
        return raw_bits(c.reshape(-1)[0], dtype)
    et = raw_type(dtype.itemsize)
    return ctx.b.load(gep(ctx.b, vb.ptr, 0, et), typ=et)


@out_of_line("pad", const_operands=(1, 3))
def pad(ctx: NodeCtx) -> None:
    """Negative pads crop first (a source offset); constant mode fills then copies the interior,
    the other modes map each padded axis through a numpy-built table (np.pad of an arange)."""
    src, dst = _ins(ctx), ctx.outs[0]
    size = src.dtype.itemsize
    if src.rank == 0:
        emit_copy(ctx, dst.ptr, src.ptr, [], size)
        return
    pads = ints(ctx, 1)
    assert pads is not None
    axes = [a % src.rank for a in (ints(ctx, 3) or range(src.rank))]
    width = [(0, 0)] * src.rank
    crop_lo = [0] * src.rank
    for k, a in enumerate(axes):
        begin, end = pads[k], pads[k + len(axes)]
        crop_lo[a] = max(-begin, 0)
        width[a] = (max(begin, 0), max(end, 0))
    kept = [n - sum(w) for n, w in zip(dst.shape, width)]
    src_off = sum(lo * s for lo, s in zip(crop_lo, src.strides))
    mode = ctx.attrs["mode"]
    if mode == "constant":
        if any(w != (0, 0) for w in width):
            fill(ctx, dst.ptr, dst.numel, _pad_value(ctx, src.dtype), size)
        loops = [Axis(n, ds, ss) for n, ds, ss in zip(kept, dst.strides, src.strides)]
        dst_off = sum(w[0] * s for w, s in zip(width, dst.strides))
        emit_copy(ctx, dst.ptr, src.ptr, loops, size, dst_off=dst_off, src_off=src_off)
        return
    loops = []
    for d in range(src.rank):
        if width[d] == (0, 0):
            loops.append(Axis(kept[d], dst.strides[d], src.strides[d]))
        else:
            table = np.pad(np.arange(kept[d], dtype=np.int64), width[d], mode=mode) * src.strides[d]
            loops.append(Axis(dst.shape[d], dst.strides[d], table=table))
    emit_copy(ctx, dst.ptr, src.ptr, loops, size, src_off=src_off)


@out_of_line("center_crop_pad", const_operands=(1,))
def center_crop_pad(ctx: NodeCtx) -> None:
    src, dst = _ins(ctx), ctx.outs[0]
    axes = ctx.attrs["axes"]
    axes_l = [a % src.rank for a in axes] if axes is not None else list(range(src.rank))
    kept, src_off, dst_off, padded = list(src.shape), 0, 0, False
    for a in axes_l:
        d, size = src.shape[a], dst.shape[a]
        if size < d:
            src_off += (d - size) // 2 * src.strides[a]
            kept[a] = size
        elif size > d:
            dst_off += (size - d) // 2 * dst.strides[a]
            padded = True
    if padded:
        fill(ctx, dst.ptr, dst.numel, 0, src.dtype.itemsize)
    loops = [Axis(n, ds, ss) for n, ds, ss in zip(kept, dst.strides, src.strides)]
    emit_copy(ctx, dst.ptr, src.ptr, loops, src.dtype.itemsize, dst_off=dst_off, src_off=src_off)

"""The loop shapes of the GEMM kernels (kernels/matmul.py) inside one task: the direct register tile, the
streamed GEMV, the dot products, and the packed panels with their shared micro-kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import F32, F64, I1, I32, I64, PTR, VOID, for_range, gep, i64
from .matmul_vec import BSource, Gen, Values
from .vec import entry_alloca

if TYPE_CHECKING:
    from .matmul import Signature

PREFETCH_ROWS = 16  # rows of B ahead that the packing loop prefetches
KC_TARGET = 256  # rows of a packed B block: a 32-wide panel is then 32 KB, the size of L1
MAX_PACK_ROWS = 512  # a K block is whole outer k steps (larger inner nests use the direct loops): 64 KB of stack
MICRO_UNROLL = 4  # k steps per loop iteration in the micro-kernel (LLVM's unroller is off)


@dataclass
class _Task:
    """What the tile emitters need inside one task: runtime parameters and pointers offset to the batch."""

    g: Gen
    sig: Signature
    p: Values
    source: BSource
    a: ir.Value
    b: ir.Value
    bias: ir.Value
    c: ir.Value

    @property
    def ks(self) -> list[ir.Value]:
        return [self.p[f"k{d}"] for d in range(self.sig.k_rank)]


def _k_nest(b: ir.IRBuilder, extents: Sequence[ir.Value], body, start: ir.Value | None = None,
            stop: ir.Value | None = None, depth: int = 0, ks: tuple = ()) -> None:
    """Nested loops over runtime extents (the outermost optionally over [start, stop)); body(ks)."""
    if depth == len(extents):
        body(list(ks))
        return
    lo = start if depth == 0 and start is not None else i64(0)
    hi = stop if depth == 0 and stop is not None else extents[depth]
    with for_range(b, hi, start=lo, name=f"k{depth}") as kd:
        _k_nest(b, extents, body, start, stop, depth + 1, ks + (kd,))


def _a_offset(k: _Task, i: ir.Value, ks: Sequence[ir.Value]) -> ir.Value:
    b = k.g.b
    off = b.mul(i, k.p["a_m"])
    for d, kd in enumerate(ks):
        off = b.add(off, b.mul(kd, k.p[f"ak{d}"]))
    return off


def _masks(k: _Task, count: ir.Value | None, nv: int) -> list[ir.Value | None]:
    return [None if count is None else k.g.lanes_below(count, v * k.g.L) for v in range(nv)]


def _epilogue(k: _Task, acc: ir.Value, i: ir.Value, j0: ir.Value, valid: ir.Value | None) -> ir.Value:
    """alpha * acc + beta * bias(i, j0 + lane), in the compute type (ints with a float alpha/beta via f64)."""
    g, sig = k.g, k.sig
    b = g.b
    bias = None
    if sig.bias is not None:
        row = b.mul(i, k.p["bias_s0"])
        bias = g.load(k.bias, b.add(row, j0), valid) if sig.bias else g.splat(g.scalar(k.bias, row))
    if not sig.scaled:
        if bias is None:
            return acc
        return b.fadd(acc, bias) if g.is_float else b.add(acc, bias)
    if not g.is_float:  # numpy: an int product times a Python float is float64, cast back at the end
        wide = ir.VectorType(F64, g.L)
        signed = sig.dtype.is_signed

        def to_f(v: ir.Value) -> ir.Value:
            return b.sitofp(v, wide) if signed else b.uitofp(v, wide)

        y = b.fmul(to_f(acc), g.splat_f(k.p.f("alpha", F64), wide))
        if bias is not None:
            y = b.fadd(y, b.fmul(to_f(bias), g.splat_f(k.p.f("beta", F64), wide)))
        return b.fptosi(y, g.vt) if signed else b.fptoui(y, g.vt)
    y = b.fmul(acc, g.splat(k.p.f("alpha", g.ct)))
    if bias is not None:
        y = b.fadd(y, b.fmul(bias, g.splat(k.p.f("beta", g.ct))))
    return y


# ---- direct: a register tile over the whole K, B read from the source -------------------------------------


def _direct_tile(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, count: ir.Value) -> None:
    g, sig = k.g, k.sig
    b = g.b
    valid = _masks(k, count, sig.nv)
    accs = [[entry_alloca(b, g.vt) for _ in range(sig.nv)] for _ in range(mr)]
    for row in accs:
        for s in row:
            b.store(g.zero(), s)

    def step(ks: list[ir.Value]) -> None:
        bv = [k.source.vector(g, k.p, k.b, ks, b.add(j0, i64(v * g.L)), valid[v]) for v in range(sig.nv)]
        for r in range(mr):
            a = g.splat(g.scalar(k.a, _a_offset(k, b.add(i0, i64(r)), ks)))
            for v, s in enumerate(accs[r]):
                b.store(g.madd(b.load(s, typ=g.vt), a, bv[v]), s)

    _k_nest(b, k.ks, step)
    for r in range(mr):
        i = b.add(i0, i64(r))
        for v in range(sig.nv):
            jv = b.add(j0, i64(v * g.L))
            y = _epilogue(k, b.load(accs[r][v], typ=g.vt), i, jv, valid[v])
            g.store(y, k.c, b.add(b.mul(i, k.p["ldc"]), jv), valid[v])


# ---- stream: one row of A against a row-major B ---------------------------------------------------------------


def _stream(k: _Task, j_start: ir.Value, j_count: ir.Value, rows: int) -> None:
    """C[0:rows, columns] = A[0:rows, :] @ B[:, columns] for a few rows of A, in column chunks whose C rows fit
    L1 (16 KB): each chunk accumulates in place over steps of a few rows of B, so B streams through memory
    in long row runs and each of its vectors serves every row of A (a GEMV or a small batch is bound by
    reading B)."""
    chunk = max(256, 4096 // rows)
    b = k.g.b
    with for_range(b, b.add(j_start, j_count), start=j_start, step=chunk, name="jc") as j0:
        left = b.sub(b.add(j_start, j_count), j0)
        _stream_chunk(k, j0, b.select(b.icmp_signed("<", left, i64(chunk)), left, i64(chunk)), rows)


def _stream_chunk(k: _Task, j0: ir.Value, count: ir.Value, rows: int) -> None:
    """One chunk, zeroed, then per step of a few rows of B one sweep over its vectors: each vector of B is
    loaded once and used by every row of A. (A register tile over blocks of B's rows was slower here: it
    reads B as many short runs at once, which the prefetchers do not follow.)"""
    g, sig = k.g, k.sig
    b = g.b
    L = g.L
    K, ak, sk, am, ldc = k.p["k0"], k.p["ak0"], k.p["s.sk"], k.p["a_m"], k.p["ldc"]
    full = b.udiv(count, i64(L))
    tail = b.urem(count, i64(L))
    step_rows = max(4, 16 // rows)  # rows of B per sweep over C (2 for 8 rows of A was slower: C traffic)

    def vectors(body) -> None:
        with for_range(b, full, name="v") as v:
            body(b.add(j0, b.mul(v, i64(L))), None)
        with b.if_then(b.icmp_unsigned("!=", tail, i64(0))):
            body(b.add(j0, b.mul(full, i64(L))), g.lanes_below(tail))

    def at(m: int, j: ir.Value) -> ir.Value:
        return b.add(b.mul(i64(m), ldc), j)

    vectors(lambda j, valid: [g.store(g.zero(), k.c, at(m, j), valid) for m in range(rows)])

    def step(k0: ir.Value, n: int) -> None:
        xs = [[g.splat(g.scalar(k.a, b.add(b.mul(i64(m), am), b.mul(b.add(k0, i64(r)), ak)))) for r in range(n)]
              for m in range(rows)]
        starts = [b.mul(b.add(k0, i64(r)), sk) for r in range(n)]

        def update(j: ir.Value, valid: ir.Value | None) -> None:
            bv = [g.load(k.b, b.add(starts[r], j), valid) for r in range(n)]
            for m in range(rows):
                acc = g.load(k.c, at(m, j), valid)
                for r in range(n):
                    acc = g.madd(acc, xs[m][r], bv[r])
                g.store(acc, k.c, at(m, j), valid)

        vectors(update)

    with for_range(b, b.udiv(K, i64(step_rows)), name="ks") as ks:
        step(b.mul(ks, i64(step_rows)), step_rows)
    with for_range(b, K, start=b.mul(b.udiv(K, i64(step_rows)), i64(step_rows)), name="kr") as kr:
        step(kr, 1)
    if sig.bias is not None or sig.scaled:
        for m in range(rows):
            vectors(lambda j, valid, m=m: g.store(_epilogue(k, g.load(k.c, at(m, j), valid), i64(m), j, valid),
                                                  k.c, at(m, j), valid))


# ---- dot: small M against B contiguous along k ----------------------------------------------------------------


def _dot_tile(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, count: ir.Value) -> None:
    """C[i0:i0+mr, j0:j0+count] as vector dot products along k, tree-reduced at the end; a ragged last block
    (count < nv) runs one column at a time."""
    b = k.g.b
    with b.if_else(b.icmp_unsigned("==", count, i64(k.sig.nv))) as (whole, ragged):
        with whole:
            _dot_columns(k, i0, mr, j0, k.sig.nv)
        with ragged:
            with for_range(b, b.add(j0, count), start=j0, name="jc") as j:
                _dot_columns(k, i0, mr, j, 1)


def _dot_columns(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, cols: int) -> None:
    g = k.g
    b = g.b
    K, ds, a_m = k.p["k0"], k.p["s.sj"], k.p["a_m"]
    accs = [[entry_alloca(b, g.vt) for _ in range(cols)] for _ in range(mr)]
    for row in accs:
        for s in row:
            b.store(g.zero(), s)

    def step(kk: ir.Value, valid: ir.Value | None) -> None:
        av = [g.load(k.a, b.add(b.mul(b.add(i0, i64(r)), a_m), kk), valid) for r in range(mr)]
        for t in range(cols):
            bv = g.load(k.b, b.add(b.mul(b.add(j0, i64(t)), ds), kk), valid)
            for r in range(mr):
                b.store(g.madd(b.load(accs[r][t], typ=g.vt), av[r], bv), accs[r][t])

    full = b.udiv(K, i64(g.L))
    with for_range(b, full, name="kv") as kv:
        step(b.mul(kv, i64(g.L)), None)
    rest = b.urem(K, i64(g.L))
    with b.if_then(b.icmp_unsigned("!=", rest, i64(0))):
        step(b.mul(full, i64(g.L)), g.lanes_below(rest))
    valid = g.lanes_below(i64(cols))
    for r in range(mr):
        i = b.add(i0, i64(r))
        out = g.zero()
        for t in range(cols):
            out = b.insert_element(out, _reduce(g, b.load(accs[r][t], typ=g.vt)), ir.Constant(I32, t))
        y = _epilogue(k, out, i, j0, valid)
        g.store(y, k.c, b.add(b.mul(i, k.p["ldc"]), j0), valid)


def _reduce(g: Gen, v: ir.Value) -> ir.Value:
    """Sum of the lanes, by halving (a fixed tree: the same result on every run)."""
    b = g.b
    n = g.L
    while n > 1:
        half = n // 2
        lo = b.shuffle_vector(v, v, g.iconst(range(half)))
        hi = b.shuffle_vector(v, v, g.iconst(range(half, n)))
        v = b.fadd(lo, hi) if g.is_float else b.add(lo, hi)
        n = half
    return b.extract_element(v, ir.Constant(I32, 0))


# ---- packed: B panels packed per K block, an MR x NR FMA tile over them ------------------------------------------


def _packed(k: _Task, j_lo: ir.Value, j_hi: ir.Value, tiles, i_lo: ir.Value, i_hi: ir.Value) -> None:
    """Column panels [j_lo, j_hi) of C: for each (K block, panel) pack B into the panel buffer, then run every
    row tile over it. K blocks outermost when A is too big for L2 (its block then stays there for every
    panel; C tiles are re-read per block), else panels outermost (A stays cached anyway; C is written once)."""
    g, sig = k.g, k.sig
    b = g.b
    width = sig.nv * g.L
    buf = entry_alloca(b, ir.ArrayType(F32, MAX_PACK_ROWS * width), "panel")
    buf.align = 64
    extents = k.ks
    outer = extents[0]
    inner: ir.Value = i64(1)
    for e in extents[1:]:
        inner = b.mul(inner, e)
    # K blocks of whole outer steps, about KC_TARGET rows each (inner <= MAX_PACK_ROWS by the plan)
    per_block = b.udiv(i64(KC_TARGET), inner)
    per_block = b.select(b.icmp_unsigned("<", per_block, i64(1)), i64(1), per_block)
    nkb = b.udiv(b.add(outer, b.sub(per_block, i64(1))), per_block)
    a_k = k.p[f"ak{sig.k_rank - 1}"]

    def columns(jt: ir.Value) -> tuple[ir.Value, ir.Value, list[ir.Value]]:
        j0 = b.mul(jt, i64(width))
        count = b.sub(k.p["N"], j0)
        count = b.select(b.icmp_signed("<", count, i64(width)), count, i64(width))
        return j0, count, [g.lanes_below(count, v * g.L) for v in range(sig.nv)]

    def block(kb: ir.Value, jt: ir.Value) -> None:
        j0, count, valid = columns(jt)
        c0 = b.mul(kb, per_block)
        c1 = b.add(c0, per_block)
        c1 = b.select(b.icmp_unsigned("<", c1, outer), c1, outer)
        kc = b.mul(b.sub(c1, c0), inner)

        def pack(ks: list[ir.Value]) -> None:
            row = b.sub(ks[0], c0)
            for d, kd in enumerate(ks[1:]):
                row = b.add(b.mul(row, extents[d + 1]), kd)
            base = b.mul(row, i64(width))
            for v in range(sig.nv):
                vec = k.source.vector(g, k.p, k.b, ks, b.add(j0, i64(v * g.L)), valid[v])
                b.store(vec, gep(b, buf, b.add(base, i64(v * g.L)), F32), align=64)
            # rows of B lie far apart (a panel is 128 bytes of each): fetch ahead, the hardware will not
            k.source.prefetch(g, k.p, k.b, [b.add(ks[0], i64(PREFETCH_ROWS)), *ks[1:]], j0, width)

        _k_nest(b, extents, pack, start=c0, stop=c1)
        first = b.icmp_unsigned("==", kb, i64(0))
        k0 = b.mul(b.mul(c0, inner), a_k)

        def micro(i0: ir.Value, mr: int) -> None:
            fn = _micro_fn(b.module, mr, sig.nv, sig.unit_k)
            a = gep(b, k.a, b.add(b.mul(i0, k.p["a_m"]), k0), F32)
            c = gep(b, k.c, b.add(b.mul(i0, k.p["ldc"]), j0), F32)
            b.call(fn, [a, k.p["a_m"], a_k, buf, kc, c, k.p["ldc"], count, first])

        def tail_rows(i0: ir.Value) -> None:
            # the M % mr leftover rows as tiles of 4, 2 and 1 rows: few micro-kernels per module
            row = i0
            size = 1 << max(0, (sig.mr - 1).bit_length() - 1)  # the largest power of two below mr
            while size >= 1 and sig.mr > 1:
                left = b.sub(k.p["M"], row)
                take = b.icmp_unsigned(">=", left, i64(size))
                with b.if_then(take):
                    micro(row, size)
                row = b.select(take, b.add(row, i64(size)), row)
                size //= 2

        tiles(micro, tail_rows)

    with b.if_else(b.icmp_unsigned("!=", k.p["kb_outer"], i64(0))) as (blocks_first, panels_first):
        with blocks_first:
            with for_range(b, nkb, name="kb") as kb:
                with for_range(b, j_hi, start=j_lo, name="jt") as jt:
                    block(kb, jt)
        with panels_first:
            with for_range(b, j_hi, start=j_lo, name="jt") as jt:
                with for_range(b, nkb, name="kb") as kb:
                    block(kb, jt)
    if sig.bias is not None or sig.scaled:
        with for_range(b, j_hi, start=j_lo, name="jt") as jt:
            j0, _, valid = columns(jt)
            with for_range(b, i_hi, start=i_lo, name="ep") as i:
                for v in range(sig.nv):
                    at = b.add(b.mul(i, k.p["ldc"]), b.add(j0, i64(v * g.L)))
                    y = _epilogue(k, g.load(k.c, at, valid[v]), i, b.add(j0, i64(v * g.L)), valid[v])
                    g.store(y, k.c, at, valid[v])


def _micro_fn(module: ir.Module, mr: int, nv: int, unit_k: bool) -> ir.Function:
    """`void micro(a, a_m, a_k, panel, kc, c, ldc, count, first)`: C[0:mr, 0:count] (+)= A[0:mr, 0:kc] @ panel.

    The register tile: mr x nv accumulators of 16 floats, one FMA per (row, vector) per k, A broadcast
    from memory. One function per tile shape, shared by every kernel of the module. With `unit_k`
    (A's rows contiguous, the usual case) the a_k argument is ignored and each row of A is addressed
    as its own base plus one shared index, instead of a chain of adds from the first row."""
    name = f"tritc.sgemm.micro.{mr}x{nv * 16}{'.u' if unit_k else ''}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing  # type: ignore[return-value]
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64, PTR, I64, PTR, I64, I64, I1]), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")  # one copy per module: inlining it into every kernel multiplies compile time
    a, a_m, a_k, panel, kc, c, ldc, count, first = fn.args
    for arg in (a, panel, c):
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    g = Gen(b, DType.F32)
    width = nv * g.L
    valid = [g.lanes_below(count, v * g.L) for v in range(nv)]
    rows = [gep(b, a, b.mul(i64(r), a_m), F32) for r in range(mr)]
    c_at = [[b.add(b.mul(i64(r), ldc), i64(v * g.L)) for v in range(nv)] for r in range(mr)]
    accs = [[entry_alloca(b, g.vt) for _ in range(nv)] for _ in range(mr)]
    for r in range(mr):
        for v in range(nv):
            b.store(b.select(first, g.zero(), g.load(c, c_at[r][v], valid[v])), accs[r][v])

    def step(kk: ir.Value) -> None:
        bv = [b.load(gep(b, panel, b.add(b.mul(kk, i64(width)), i64(v * g.L)), F32), typ=g.vt, align=64) for v in range(nv)]
        ka = kk if unit_k else b.mul(kk, a_k)
        for r in range(mr):
            x = g.splat(b.load(gep(b, rows[r], ka, F32), typ=F32))
            for v in range(nv):
                b.store(g.madd(b.load(accs[r][v], typ=g.vt), x, bv[v]), accs[r][v])

    steps = b.udiv(kc, i64(MICRO_UNROLL))
    with for_range(b, steps, name="kk") as kk:
        for u in range(MICRO_UNROLL):
            step(b.add(b.mul(kk, i64(MICRO_UNROLL)), i64(u)))
    with for_range(b, kc, start=b.mul(steps, i64(MICRO_UNROLL)), name="kr") as kk:
        step(kk)
    for r in range(mr):
        for v in range(nv):
            g.store(b.load(accs[r][v], typ=g.vt), c, c_at[r][v], valid[v])
    b.ret_void()
    return fn

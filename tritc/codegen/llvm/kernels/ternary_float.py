"""Inner loop of the float-activation ternary matmul: adds only (and one subtraction per output), no multiplies.

For each k the trit of every lane is read as two lane masks straight from the packed chunk
(packing.py): code c = trit + 1 sits in bits 8i + 2j .. 8i + 2j + 1 of the lane's dword, for
k = 16 kb + 4 j + i. nonzero = (bit 8i+2j clear) (c != 1) and minus = (both bits clear) (c == 0);
then  sum_k x[k] * trit = sum_{nonzero} x - 2 * sum_{minus} x. Both masks are "bits == 0" tests,
so on AVX-512 each is one vptestnmd into a k-mask and each add one masked vaddps with x[k]
broadcast (AVX2 gets compares and blends). The masks are shared by every token of the tile; a
GEMV keeps 4 partial sums per output so the add chains overlap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ..builder import F32, for_range, gep, i64
from .ternary_int8 import accumulate_loop, chunk_byte
from .vec import V16F32, V16I32, activation, add, const_vec, entry_alloca, mul, sload, splat, vload_bytes

if TYPE_CHECKING:
    from .ternary import Frame, MatmulSpec


def accumulate_float(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                     kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    """sum_k x[m, k] * trit(k, n) for the tile, as acc[t][c] <16 x f32>, over K blocks [kb0, kb0 + nkb).

    A K block that runs past K (the last one when K % 16) is emitted separately with only its
    valid k, so x is never read past its row."""
    spec, b = f.spec, f.b
    split = 4 if mt == 1 else 1
    full, tail = nkb, 0
    if isinstance(kb0, int) and kb0 + nkb == spec.KB and spec.K % 16:
        full, tail = nkb - 1, spec.K % 16
    shape = (mt, nc, 2 * split)
    sums: list | None = None
    if full:
        sums = accumulate_loop(f, shape, V16F32, kb0, full, lambda acc, kb: _step(f, acc, m0, nb0, mt, nc, kb, 16),
                           lambda acc: acc)
    if tail:
        start = sums or [[[const_vec(V16F32, 0.0)] * (2 * split) for _ in range(nc)] for _ in range(mt)]
        flat = _step(f, start, m0, nb0, mt, nc, add(b, kb0, full), tail)
        sums = [[flat[(t * nc + c) * 2 * split:(t * nc + c + 1) * 2 * split] for c in range(nc)] for t in range(mt)]
    assert sums is not None
    out = []
    for t in range(mt):
        row = []
        for c in range(nc):
            nonzero, minus = _tree_sum(b, sums[t][c][:split]), _tree_sum(b, sums[t][c][split:])
            row.append(b.fsub(b.fsub(nonzero, minus), minus))
        out.append(row)
    return out


def _tree_sum(b, values: list) -> ir.Value:
    while len(values) > 1:
        values = [b.fadd(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    return values[0]


def _step(f: Frame, acc: list[list[ir.Value]], m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
          kb: ir.Value | int, kcount: int) -> list[ir.Value]:
    """One K block: acc[t][c] is [nonzero sums..., minus sums...] (SPLIT of each) for token t, chunk c."""
    b = f.b
    split = len(acc[0][0]) // 2
    w = [vload_bytes(b, f.w, chunk_byte(f, add(b, nb0, c), kb), V16I32) for c in range(nc)]
    out = [[list(cell) for cell in row] for row in acc]
    zero = const_vec(V16I32, 0)
    for kk in range(kcount):
        j, i = divmod(kk, 4)
        bit = 8 * i + 2 * j
        nonzero = [b.icmp_unsigned("==", b.and_(w[c], const_vec(V16I32, 1 << bit)), zero) for c in range(nc)]
        minus = [b.icmp_unsigned("==", b.and_(w[c], const_vec(V16I32, 3 << bit)), zero) for c in range(nc)]
        part = kk % split
        for t in range(mt):
            xk = splat(b, sload(b, f.act, add(b, add(b, mul(b, add(b, m0, t), f.spec.K), mul(b, kb, 16)), kk), F32), 16)
            for c in range(nc):
                cell = out[t][c]
                cell[part] = b.select(nonzero[c], b.fadd(cell[part], xk), cell[part])
                cell[split + part] = b.select(minus[c], b.fadd(cell[split + part], xk), cell[split + part])
    return [v for row in out for cell in row for v in cell]


def emit_nonfinite_fixup(b: ir.IRBuilder, spec: MatmulSpec, args: dict[str, ir.Value]) -> None:
    """Float path, rows of x holding NaN or +-Inf: recompute those rows' outputs as numpy does.

    In numpy every output of such a row is NaN or +-Inf (0 * Inf = NaN, Inf - Inf = NaN), and which
    one depends only on the non-finite terms; the add-only loop skips trit 0 and folds the minus
    sums twice, so it can get that class wrong. Here pre[n] = sum over the non-finite x[k] of
    x[k] * trit(k, n) * scale(k, n), then the usual epilogue. A scan of x is cheap next to the
    matmul; the recomputation only runs for rows that need it."""
    x, w, y = args["x"], args["w"], args["y"]
    I8T = ir.IntType(8)
    bad = entry_alloca(b, I8T, "bad")
    with for_range(b, spec.M, name="fm") as m:
        row = b.mul(m, i64(spec.K))
        b.store(ir.Constant(I8T, 0), bad)
        with for_range(b, spec.K, name="fk") as k:
            v = sload(b, x, b.add(row, k), F32)
            nonfinite = b.fcmp_unordered("uno", b.fsub(v, v), b.fsub(v, v))
            b.store(b.or_(b.load(bad, typ=I8T), b.zext(nonfinite, I8T)), bad)
        with b.if_then(b.icmp_unsigned("!=", b.load(bad, typ=I8T), ir.Constant(I8T, 0)), likely=False):
            with for_range(b, spec.N, name="fn") as n:
                pre = entry_alloca(b, F32, "pre")
                b.store(ir.Constant(F32, 0.0), pre)
                nb, lane = b.udiv(n, i64(16)), b.urem(n, i64(16))
                with for_range(b, spec.K, name="fk2") as k:
                    v = sload(b, x, b.add(row, k), F32)
                    with b.if_then(b.fcmp_unordered("uno", b.fsub(v, v), b.fsub(v, v))):
                        kb, kr = b.udiv(k, i64(16)), b.urem(k, i64(16))
                        byte = b.add(b.mul(b.add(b.mul(nb, i64(spec.KB)), kb), i64(64)),
                                     b.add(b.mul(lane, i64(4)), b.urem(kr, i64(4))))
                        shift = b.trunc(b.mul(b.udiv(kr, i64(4)), i64(2)), I8T)
                        code = b.and_(b.lshr(sload(b, w, byte, I8T, align=1), shift), ir.Constant(I8T, 3))
                        trit = b.sitofp(b.sub(b.zext(code, ir.IntType(32)), ir.Constant(ir.IntType(32), 1)), F32)
                        if spec.granularity == "per_tensor":
                            scale = sload(b, args["scales"], 0, F32)
                        elif spec.granularity == "per_channel":
                            scale = sload(b, args["scales"], n, F32)
                        else:
                            g = b.udiv(k, i64(spec.group_size))
                            scale = sload(b, args["scales"], b.add(b.mul(g, i64(spec.NP)), n), F32)
                        b.store(b.fadd(b.load(pre, typ=F32), b.fmul(b.fmul(v, trit), scale)), pre)
                out = b.load(pre, typ=F32)
                if spec.bias:
                    out = b.fadd(out, sload(b, args["bias"], n, F32))
                if spec.residual:
                    out = b.fadd(out, sload(b, args["residual"], b.add(b.mul(m, i64(spec.N)), n), F32))
                b.store(activation(b, spec.activation, out), gep(b, y, b.add(b.mul(m, i64(spec.N)), n), F32))

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

from ..builder import F32
from .ternary_int8 import _accumulate, chunk_byte
from .vec import V16F32, V16I32, add, const_vec, mul, sload, splat, vload_bytes

if TYPE_CHECKING:
    import llvmlite.ir as ir

    from .ternary import Frame


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
        sums = _accumulate(f, shape, V16F32, kb0, full, lambda acc, kb: _step(f, acc, m0, nb0, mt, nc, kb, 16),
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

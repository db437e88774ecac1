"""Inner loop of the float-activation ternary matmul: adds and subtracts only, no multiplies.

For each k the trit of every lane is read as two lane masks straight from the packed chunk
(packing.py): code c = trit + 1 sits in bits 8i + 2j .. 8i + 2j + 1 of the lane's dword, for
k = 16 kb + 4 j + i, so  plus = (bit 8i+2j+1 set)  (c == 2)  and  minus = (both bits clear)  (c == 0).
Then acc = select(plus, acc + x[k], acc); acc = select(minus, acc - x[k], acc): on AVX-512 this is
vptestmd / vptestnmd into k-masks and masked vaddps / vsubps with x[k] broadcast from memory; on
AVX2 LLVM turns it into compares and blends. The masks are shared by every token of the tile.
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
    spec = f.spec
    full = nkb
    tail = 0
    if isinstance(kb0, int) and kb0 + nkb == spec.KB and spec.K % 16:
        full, tail = nkb - 1, spec.K % 16
    acc_in: list | None = None
    if full:
        acc_in = _accumulate(f, (mt, nc), V16F32, kb0, full,
                             lambda acc, kb: _step(f, acc, m0, nb0, mt, nc, kb, 16), lambda acc: acc)
    if tail:
        b = f.b
        start = acc_in or [[const_vec(V16F32, 0.0)] * nc for _ in range(mt)]
        flat = _step(f, start, m0, nb0, mt, nc, add(b, kb0, full), tail)
        acc_in = [flat[t * nc:(t + 1) * nc] for t in range(mt)]
    assert acc_in is not None
    return acc_in


def _step(f: Frame, acc: list[list[ir.Value]], m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
          kb: ir.Value | int, kcount: int) -> list[ir.Value]:
    b = f.b
    w = [vload_bytes(b, f.w, chunk_byte(f, add(b, nb0, c), kb), V16I32) for c in range(nc)]
    out = [list(row) for row in acc]
    zero = const_vec(V16I32, 0)
    for kk in range(kcount):
        j, i = divmod(kk, 4)
        bit = 8 * i + 2 * j
        plus = [b.icmp_unsigned("!=", b.and_(w[c], const_vec(V16I32, 2 << bit)), zero) for c in range(nc)]
        minus = [b.icmp_unsigned("==", b.and_(w[c], const_vec(V16I32, 3 << bit)), zero) for c in range(nc)]
        for t in range(mt):
            xk = splat(b, sload(b, f.act, add(b, add(b, mul(b, add(b, m0, t), f.spec.K), mul(b, kb, 16)), kk), F32), 16)
            for c in range(nc):
                v = out[t][c]
                v = b.select(plus[c], b.fadd(v, xk), v)
                out[t][c] = b.select(minus[c], b.fsub(v, xk), v)
    return [v for row in out for v in row]

"""Inner loop of the float-activation ternary matmul without AVX-512: trits decoded to f32, one FMA per k.

For k = 16 kb + 4 j + i the code c = trit + 1 of a lane sits at bits 8i + 2j of its dword
(packing.py). Shifted down, AVX2's vpermps (which reads 3 index bits) maps it to the f32 trit
through the table [-1, 0, 1, -, -1, 0, 1, -]; the portable build masks, converts and subtracts
one instead. llvm.fmuladd(trit, x[k], acc) is exactly acc + x[k] * trit rounded once whether
or not it fuses (the product is exact). The decoded trits are shared by the tokens of the tile.
Chunks are read as two 8-lane halves (outputs 0-7 and 8-15).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ..builder import F32, I32
from .kloop import accumulate_blocks, chunk_byte
from .vec import add, call, const_vec, mul, sload, splat, tree_sum, vec, vload_bytes

if TYPE_CHECKING:
    from .ternary import Frame

V8I32, V8F32 = vec(I32, 8), vec(F32, 8)
TRITS = const_vec(V8F32, [float((c & 3) - 1) for c in range(8)])  # vpermps table: code (low 2 bits) -> trit
MIN_CHAINS = 4  # independent FMA chains per tile and half (FMA latency 4, two FMA pipes)


def accumulate_decode(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                      kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    """sum_k x[m, k] * trit(k, n) for the tile, as acc[t][c] <16 x f32>, over K blocks [kb0, kb0 + nkb)."""
    b = f.b
    split = max(1, MIN_CHAINS // (mt * nc))  # partial sums per half (k alternate between them)
    sums = accumulate_blocks(f, (mt, nc, 2, split), V8F32, kb0, nkb,
                             lambda acc, kb, kcount: _step(f, acc, m0, nb0, mt, nc, kb, kcount))
    lo_hi = ir.Constant(vec(I32, 16), list(range(16)))
    return [[b.shuffle_vector(tree_sum(b, sums[t][c][0]), tree_sum(b, sums[t][c][1]), lo_hi) for c in range(nc)]
            for t in range(mt)]


def _step(f: Frame, acc: list, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
          kb: ir.Value | int, kcount: int) -> list[ir.Value]:
    """One K block (its first kcount k): acc[t][c][half][s] += trit * x[t, k] for k = s, s + split, ..."""
    b = f.b
    split = len(acc[0][0][0])
    w = [[vload_bytes(b, f.w, add(b, chunk_byte(f, add(b, nb0, c), kb), 32 * h), V8I32) for h in range(2)] for c in range(nc)]
    out = [[[list(half) for half in cell] for cell in row] for row in acc]
    for k in range(kcount):
        j, i = divmod(k, 4)
        trits = [[_decode(f, w[c][h], 8 * i + 2 * j) for h in range(2)] for c in range(nc)]
        for t in range(mt):
            xk = splat(b, sload(b, f.act, add(b, add(b, mul(b, add(b, m0, t), f.spec.K), mul(b, kb, 16)), k), F32), 8)
            for c in range(nc):
                for h in range(2):
                    out[t][c][h][k % split] = call(b, "llvm.fmuladd.v8f32", V8F32, trits[c][h], xk, out[t][c][h][k % split])
    return [v for row in out for cell in row for half in cell for v in half]


def _decode(f: Frame, w: ir.Value, shift: int) -> ir.Value:
    """The f32 trits of the codes at bits shift..shift+1 of every lane."""
    b = f.b
    codes = b.lshr(w, const_vec(V8I32, shift)) if shift else w
    if f.isa == "avx2":
        return call(b, "llvm.x86.avx2.permps", V8F32, TRITS, codes)
    return b.fsub(b.sitofp(b.and_(codes, const_vec(V8I32, 3)), V8F32), const_vec(V8F32, 1.0))

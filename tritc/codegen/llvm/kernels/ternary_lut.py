"""AVX-512 inner loop of the float-activation ternary matmul: 16-entry tables of pair sums, vpermps lookups.

Rotated right by 8i + 4h, a lane's dword of a packed chunk (packing.py) holds in its low nibble the
codes of two k of that output: a = 16 kb + 8h + i (bits 0-1) and b = a + 4 (bits 2-3). So for each
of the 8 pairs (i, h) of a K block the kernel builds, per token, the table
T[ca + 4 cb] = (ca - 1) x[a] + (cb - 1) x[b] (a vmulps and a vfmadd: each entry is the pair's exact
sum rounded once), and 16 outputs get their pair sums with one vprord (the index) and one vpermps
(which reads only the low 4 bits of each index lane): one vaddps per 2 k and 16 outputs, where the
add-only loop (ternary_float.py) spends 2 vptestnmd and 2 masked vaddps per k. A table is shared
by the chunks of the tile, an index by its tokens. docs/KERNELS.md has the measurements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ..builder import F32
from .kloop import accumulate_blocks, chunk_byte, prefetch_chunks
from .vec import V16F32, V16I32, add, call, const_vec, mul, sload, splat, tree_sum, vload_bytes

if TYPE_CHECKING:
    from .ternary import Frame

# The trit of code a (index bits 0-1) and of code b (bits 2-3) at each of the 16 table positions; code 3 never occurs.
TRIT_A = const_vec(V16F32, [float((j & 3) - 1) for j in range(16)])
TRIT_B = const_vec(V16F32, [float((j >> 2) - 1) for j in range(16)])
PAIRS = [(i, h) for h in range(2) for i in range(4)]  # byte i, nibble h: k = 8h + i and 8h + i + 4 of the block
MIN_CHAINS = 4  # independent add chains per tile, so vaddps latency never limits a small tile
PREFETCH_BLOCKS = 16  # 1 KiB ahead per weight stream: GEMV from DRAM 77 -> 89-102 G weights/s (2 KiB: 85-98)


def accumulate_lut(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                   kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    """sum_k x[m, k] * trit(k, n) for the tile, as acc[t][c] <16 x f32>, over K blocks [kb0, kb0 + nkb)."""
    split = max(1, MIN_CHAINS // (mt * nc))  # partial sums per output vector (pairs alternate between them)
    sums = accumulate_blocks(f, (mt, nc, split), V16F32, kb0, nkb,
                             lambda acc, kb, kcount: _step(f, acc, m0, nb0, mt, nc, kb, kcount))
    return [[tree_sum(f.b, sums[t][c]) for c in range(nc)] for t in range(mt)]


def _step(f: Frame, acc: list, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
          kb: ir.Value | int, kcount: int) -> list[ir.Value]:
    """One K block (its first kcount k): acc[t][c][s] += the pair sums of pairs s, s + split, ..."""
    b = f.b
    split = len(acc[0][0])
    w = [vload_bytes(b, f.w, chunk_byte(f, add(b, nb0, c), kb), V16I32) for c in range(nc)]
    prefetch_chunks(f, nb0, nc, kb, PREFETCH_BLOCKS)
    out = [[list(cell) for cell in row] for row in acc]
    for p, (i, h) in enumerate(PAIRS):
        ka, kb_ = 8 * h + i, 8 * h + i + 4
        if ka >= kcount:
            continue  # both k are padding: trit 0 in every lane
        idx = [_rotate_right(b, w[c], 8 * i + 4 * h) for c in range(nc)]
        for t in range(mt):
            row = add(b, mul(b, add(b, m0, t), f.spec.K), mul(b, kb, 16))
            table = b.fmul(TRIT_A, splat(b, sload(b, f.act, add(b, row, ka), F32), 16))
            if kb_ < kcount:  # else b is padding (trit 0): T holds x[a]'s terms only
                table = call(b, "llvm.fma.v16f32", V16F32, TRIT_B, splat(b, sload(b, f.act, add(b, row, kb_), F32), 16), table)
            for c in range(nc):
                cell = out[t][c]
                cell[p % split] = b.fadd(cell[p % split], call(b, "llvm.x86.avx512.permvar.sf.512", V16F32, table, idx[c]))
    return [v for row in out for cell in row for v in cell]


def _rotate_right(b: ir.IRBuilder, w: ir.Value, bits: int) -> ir.Value:
    """vprord: every dword lane of w rotated right by `bits` (its bits bits..bits+3 then sit at bit 0).

    Inline assembly because LLVM, seeing that vpermps reads only 4 index bits, would turn a
    rotate (llvm.fshr) into a vpsrld, which on Zen 5 competes with vpermps for its pipes and costs
    ~25% of the loop's speed; vprord does not (measured: docs/KERNELS.md)."""
    if not bits:
        return w
    return b.call(ir.InlineAsm(ir.FunctionType(V16I32, [V16I32]), f"vprord $${bits}, $1, $0", "=v,v"), [w])

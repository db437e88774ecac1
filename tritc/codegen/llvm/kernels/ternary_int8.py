"""Integer inner loops of the int8-activation ternary matmul, one per ISA: AVX-512 VNNI, AVX2, portable.

Each `accumulate_*` emits, for a tile of `mt` tokens x `nc` output chunks (16 outputs each) and the
K blocks [kb0, kb0 + nkb), the exact int32 sums  sum_k c(k, n) * q(m, k)  with c = trit + 1 in
{0, 1, 2} read from the packed layout (packing.py); the caller subtracts sum_k q to get trit * q.
They return acc[t][c], one <16 x i32> per token and chunk, lane L = output 16*(nb0 + c) + L.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ..builder import I8, I16, I32, gep
from .kloop import accumulate_loop, chunk_byte, flatten, prefetch_chunks
from .vec import V16I32, V64I8, add, call, const_vec, ival, loop, mul, sload, slots, splat, vec, vload_bytes

if TYPE_CHECKING:
    from .ternary import Frame

CODE_MASK = 0x03030303  # the low 2 bits of each byte
V8I32, V32I8, V16I16 = vec(I32, 8), vec(I8, 32), vec(I16, 16)
# The masked VNNI variant's accumulator 3 gains at most 4 * (2 << 6) * 128 = 65536 per K block.
MASKED_MAX_KB = (2**31 - 1) // 65536
# The masked GEMV prefetches 2 KiB ahead per weight stream: from DRAM 74-83 -> 99-109 G weights/s (1 KiB: 89-96).
PREFETCH_BLOCKS = 32
AVX2_FLUSH_KB = 16  # int16 sums flushed to int32 every 16 K blocks (64 vpmaddubsw): see accumulate_avx2


def q_dword(f: Frame, m: ir.Value | int, kb: ir.Value | int, j: int) -> ir.Value:
    """q[m, 16*kb + 4*j .. +3] as one i32 (4 consecutive k, the vpdpbusd operand)."""
    b = f.b
    byte = add(b, add(b, mul(b, m, f.spec.KP), mul(b, kb, 16)), 4 * j)
    return b.load(gep(b, f.act, ival(byte), I8), typ=I32, align=4)


def _dpbusd(b: ir.IRBuilder, acc: ir.Value, codes_u8: ir.Value, q_s8: ir.Value) -> ir.Value:
    return call(b, "llvm.x86.avx512.vpdpbusd.512", V16I32, acc, codes_u8, q_s8)


def _codes(b: ir.IRBuilder, w: ir.Value, j: int, t: ir.VectorType) -> ir.Value:
    """Plain codes c(k = 16kb + 4j + i) in byte i of every lane: (chunk >> 2j) & 3 per byte."""
    shifted = b.lshr(w, const_vec(t, 2 * j)) if j else w
    return b.and_(shifted, const_vec(t, CODE_MASK))


def accumulate_vnni(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                    kb0: ir.Value | int, nkb: int, masked: bool) -> list[list[ir.Value]]:
    """AVX-512 VNNI: vpdpbusd(acc, codes as u8, 4 consecutive q broadcast as s8) per 4 k.

    masked (GEMV): acc_j += vpdpbusd(chunk & (3 << 2j), q_j): each byte then holds 4^j * c, so the
    chunk needs no shifts; the 4 accumulators are recombined exactly at the end as
    acc_0 + acc_1 >> 2 + acc_2 >> 4 + acc_3 >> 6 (each acc_j is 4^j times an integer).
    plain (GEMM): the chunk is unpacked once per j (shift + and) and reused by all mt tokens."""
    b = f.b
    if masked:
        assert nkb <= MASKED_MAX_KB
        masks = [const_vec(V64I8, (3 << (2 * j)) & 0xFF) for j in range(4)]

        def step(acc, kb):
            w = [vload_bytes(b, f.w, chunk_byte(f, add(b, nb0, c), kb), V64I8) for c in range(nc)]
            prefetch_chunks(f, nb0, nc, kb, PREFETCH_BLOCKS)
            xq = [[b.bitcast(splat(b, q_dword(f, add(b, m0, t), kb, j), 16), V64I8) for j in range(4)] for t in range(mt)]
            out = [[[None] * 4 for _ in range(nc)] for _ in range(mt)]
            for c in range(nc):
                for j in range(4):
                    part = b.and_(w[c], masks[j])
                    for t in range(mt):
                        out[t][c][j] = _dpbusd(b, acc[t][c][j], part, xq[t][j])
            return flatten(out)

        def result(acc):
            return [[_recombine(b, acc[t][c]) for c in range(nc)] for t in range(mt)]

        return accumulate_loop(f, (mt, nc, 4), V16I32, kb0, nkb, step, result)

    def step_plain(acc, kb):
        w = [vload_bytes(b, f.w, chunk_byte(f, add(b, nb0, c), kb), V16I32) for c in range(nc)]
        out = [list(row) for row in acc]
        for j in range(4):
            codes = [b.bitcast(_codes(b, w[c], j, V16I32), V64I8) for c in range(nc)]
            for t in range(mt):
                xq = b.bitcast(splat(b, q_dword(f, add(b, m0, t), kb, j), 16), V64I8)
                for c in range(nc):
                    out[t][c] = _dpbusd(b, out[t][c], codes[c], xq)
        return flatten(out)

    return accumulate_loop(f, (mt, nc), V16I32, kb0, nkb, step_plain, lambda acc: acc)


def _recombine(b: ir.IRBuilder, parts: list[ir.Value]) -> ir.Value:
    total = parts[0]
    for j in range(1, 4):
        total = b.add(total, b.ashr(parts[j], const_vec(V16I32, 2 * j)))
    return total


def accumulate_avx2(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                    kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    """AVX2: vpmaddubsw(codes u8, q s8) -> int16 pair sums, flushed to int32 with vpmaddwd(., 1).

    Each 64-byte chunk is two 32-byte halves (outputs 0-7 and 8-15). Bound: one vpmaddubsw lane is
    c0*q0 + c1*q1 with c <= 2 and q in [-128, 127], so it lies in [-512, 508]; every K block adds 4
    of them (j = 0..3), so after AVX2_FLUSH_KB = 16 blocks a lane is in [-32768, 32512]: int16 holds
    it exactly and vpmaddubsw never saturates. The int16 sums are then widened and cleared."""
    b = f.b
    ones = const_vec(V16I16, 1)
    acc32 = slots(b, V8I32, const_vec(V8I32, 0), mt, nc, 2)
    flat32 = flatten(acc32)

    def step(acc16, kb):
        w = [[vload_bytes(b, f.w, add(b, chunk_byte(f, add(b, nb0, c), kb), 32 * h), V8I32) for h in range(2)] for c in range(nc)]
        out = [[list(x) for x in row] for row in acc16]
        for j in range(4):
            codes = [[b.bitcast(_codes(b, w[c][h], j, V8I32), V32I8) for h in range(2)] for c in range(nc)]
            for t in range(mt):
                xq = b.bitcast(splat(b, q_dword(f, add(b, m0, t), kb, j), 8), V32I8)
                for c in range(nc):
                    for h in range(2):
                        prod = call(b, "llvm.x86.avx2.pmadd.ub.sw", V16I16, codes[c][h], xq)
                        out[t][c][h] = b.add(out[t][c][h], prod)
        return flatten(out)

    def flush(acc16):
        for s, v in zip(flat32, flatten(acc16)):
            b.store(b.add(b.load(s, typ=V8I32), call(b, "llvm.x86.avx2.pmadd.wd", V8I32, v, ones)), s)

    blocks, rest = divmod(nkb, AVX2_FLUSH_KB)
    if blocks:
        with loop(b, 0, blocks, "kblk") as blk:
            start = add(b, kb0, mul(b, blk, AVX2_FLUSH_KB))
            accumulate_loop(f, (mt, nc, 2), V16I16, start, AVX2_FLUSH_KB, step, flush)
    if rest:
        accumulate_loop(f, (mt, nc, 2), V16I16, add(b, kb0, blocks * AVX2_FLUSH_KB), rest, step, flush)
    lo_hi = ir.Constant(vec(I32, 16), list(range(16)))
    return [[b.shuffle_vector(b.load(acc32[t][c][0], typ=V8I32), b.load(acc32[t][c][1], typ=V8I32), lo_hi)
             for c in range(nc)] for t in range(mt)]


def accumulate_portable(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                        kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    """Plain IR: byte i of every lane gathered with a shuffle, widened, multiplied by q[k], added."""
    b = f.b
    picks = [ir.Constant(vec(I32, 16), [4 * lane + i for lane in range(16)]) for i in range(4)]

    def step(acc, kb):
        w = [vload_bytes(b, f.w, chunk_byte(f, add(b, nb0, c), kb), V16I32) for c in range(nc)]
        out = [list(row) for row in acc]
        for j in range(4):
            codes = [b.bitcast(_codes(b, w[c], j, V16I32), V64I8) for c in range(nc)]
            for i in range(4):
                lanes = [b.zext(b.shuffle_vector(codes[c], ir.Constant(V64I8, ir.Undefined), picks[i]), V16I32)
                         for c in range(nc)]
                for t in range(mt):
                    byte = add(b, add(b, mul(b, add(b, m0, t), f.spec.KP), mul(b, kb, 16)), 4 * j + i)
                    qk = splat(b, b.sext(sload(b, f.act, byte, I8, align=1), I32), 16)
                    for c in range(nc):
                        out[t][c] = b.add(out[t][c], b.mul(lanes[c], qk))
        return flatten(out)

    return accumulate_loop(f, (mt, nc), V16I32, kb0, nkb, step, lambda acc: acc)

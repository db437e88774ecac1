"""Weight tiles in the ISA v3 layout (docs/ISA.md, "Weight layout"): which columns a tile takes, and its LOAD to WGT.

The image holds each matrix in blocks of R = matrix_rows columns, beat by beat (R * P words a beat). So a tile is
cheap to move when it starts at a block boundary: its whole blocks are one contiguous run of the image (one run per
block for a K-chunk), and a part of a block is one short row per beat (a strided LOAD into the first slots of each
beat). A tile that starts inside a block stays inside it: its columns are slots r0.. of that block's beats, and
the GEMM wants them at slots 0.. . `weight_tiles` cuts a column range so, `load_weight_tile` moves one tile.
"""

from __future__ import annotations

from .isa import Buf, padded_kw
from .lower_ctx import LowerCtx
from .lower_image import WeightEntry


def weight_tiles(c0: int, c1: int, n_t: int, rows: int) -> list[tuple[int, int]]:
    """(first column, columns) of tiles covering columns [c0, c1), at most n_t each, each starting at a block
    boundary or lying inside one block: a head up to the first boundary is a tile of its own, n_t of a block or more
    is cut to whole blocks (the last tile takes what is left if it is at most n_t), less than a block stays in one."""
    out: list[tuple[int, int]] = []
    if n_t >= rows:
        n0 = c0
        if c0 % rows:
            head = min(c1, c0 - c0 % rows + rows)
            out.append((c0, head - c0))
            n0 = head
        step = n_t // rows * rows
        while n0 < c1:
            nn = c1 - n0 if c1 - n0 <= n_t else step
            out.append((n0, nn))
            n0 += nn
        return out
    for b0 in range(c0 - c0 % rows, c1, rows):
        lo, hi = max(b0, c0), min(b0 + rows, c1)
        out.extend((n0, min(n_t, hi - n0)) for n0 in range(lo, hi, n_t))
    return out


def tile_span(e: WeightEntry, nn: int, kn: int) -> int:
    """WGT bytes a GEMM of nn columns and kn words reads: whole blocks, kn padded to whole beats."""
    return -(-nn // e.rows) * padded_kw(kn, e.per_beat) * e.rows * e.word_bytes


def load_weight_tile(ctx: LowerCtx, e: WeightEntry, g: int, n0: int, nn: int, k0: int, kn: int) -> int:
    """LOAD words k0..k0+kn of columns n0..n0+nn of group g of `e` into the next place of the WGT ring, laid out as
    a GEMM of nn columns and kn words reads them; its WGT address. k0 is a multiple of the words per beat P (a
    K-chunk), and kn too unless the chunk ends the column (the image pads it to whole beats). The tile is one of
    weight_tiles'."""
    rows, per_beat, wb = e.rows, e.per_beat, e.word_bytes
    if k0 % per_beat or (kn % per_beat and k0 + kn != e.kw):
        raise AssertionError(f"K-chunk of words {k0}..{k0 + kn} is not in whole beats of {per_beat} words")
    knp = padded_kw(kn, per_beat)
    chunk = knp * rows * wb                       # one block's beats of this chunk, contiguous in the image
    wgt = ctx.next_wgt_half(tile_span(e, nn, kn))
    at = e.group_addr(g) - e.addr + k0 * rows * wb  # beat k0 / P of block 0 of the group
    block, r0 = divmod(n0, rows)
    if r0:
        if r0 + nn > rows:
            raise AssertionError(f"weight tile of columns {n0}..{n0 + nn} starts inside a block and leaves it")
        _load_slots(ctx, e, wgt, at + block * e.block_bytes + r0 * per_beat * wb, nn, knp)
        return wgt
    # whole blocks: the matrix's last block is whole in the image (padded), so a tile that ends the matrix takes it
    full = -(-nn // rows) if n0 + nn == e.shape[1] else nn // rows
    if full:
        ctx.load(Buf.WGT, wgt, ctx.image(e), at + block * e.block_bytes, full, chunk, e.block_bytes, 1, chunk)
    if nn > full * rows:     # the first columns of a block the next tile also reads: only theirs
        _load_slots(ctx, e, wgt + full * chunk, at + (block + full) * e.block_bytes, nn - full * rows, knp)
    return wgt


def _load_slots(ctx: LowerCtx, e: WeightEntry, wgt: int, offset: int, cols: int, knp: int) -> None:
    """`cols` consecutive columns of one block, image offset at the first one's words of the first beat, into the
    first slots of the beats at wgt: one row of cols * P words per beat."""
    beat = e.beat_bytes
    ctx.load(Buf.WGT, wgt, ctx.image(e), offset, knp // e.per_beat, cols * e.per_beat * e.word_bytes, beat, 1, beat)

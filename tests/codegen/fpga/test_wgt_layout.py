"""ISA v3's weight layout in WGT (docs/ISA.md, "Weight layout"): the packer and the offset helper against the formula
written out literally, the Simulator's GEMM over interleaved weights against a plain numpy matmul (n not a multiple
of the block, kw not a multiple of the words per beat, m > 1, reset 0 and 1, both packings, 16 / 64 / 128 lanes),
and the checks on wgt_addr: beat-aligned, whole blocks inside WGT, one clear line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tritc.codegen.fpga.config import FpgaConfig
from tritc.codegen.fpga.isa import (
    ISA_VERSION,
    STREAM_HEADER,
    Buf,
    Instr,
    Op,
    StreamError,
    decode_stream,
    decode_words,
    deinterleave_words,
    encode_stream,
    interleave_words,
    pack_words,
    wgt_span_words,
    wgt_word_offset,
)
from tritc.errors import ArtifactCompatibilityError
from tritc.runtime.fpga import Simulator

# 4 adder trees; WGT of 64 beats at 128 lanes (2 words a beat) in 2bit packing; the lanes vary per test
BASE = FpgaConfig(name="wgt-layout", matrix_rows=4, matrix_lanes=64, weight_buffer_bytes=4 * 2 * 16 * 64,
                  activation_buffer_bytes=2048, accumulator_buffer_bytes=1024, vector_buffer_bytes=1024,
                  cache_buffer_bytes=512, vector_lanes=4, clock_hz=250e6, dram_bandwidth=16e9, dram_latency_ns=40.0,
                  dram_bytes=1 << 16).validate()


def literal_image(words: np.ndarray, rows: int, per_beat: int, wb: int) -> bytes:
    """WGT_LAYOUT.md's formula, one word at a time: word g of column j at ((j // R) * kwp * R + (g // P) * R * P
    + (j % R) * P + g % P) * wb; everything else (pad columns, pad words) zero trits."""
    n, kw = words.shape[0], words.shape[1] // wb
    kwp = -(-kw // per_beat) * per_beat
    packing = "base3" if wb == 13 else "2bit"
    out = np.tile(pack_words(np.zeros(64, np.int8), packing), -(-n // rows) * rows * kwp)
    for j in range(n):
        for g in range(kw):
            at = ((j // rows) * kwp * rows + (g // per_beat) * rows * per_beat + (j % rows) * per_beat
                  + g % per_beat) * wb
            out[at:at + wb] = words[j, g * wb:(g + 1) * wb]
    return out.tobytes()


@pytest.mark.parametrize("rows,per_beat,wb", [(4, 1, 13), (4, 2, 16), (3, 2, 13), (16, 1, 13), (2, 4, 16)])
@pytest.mark.parametrize("n,kw", [(1, 1), (7, 3), (8, 4), (5, 5)])
def test_interleave_and_offsets_follow_the_formula(rows, per_beat, wb, n, kw):
    words = np.random.default_rng(n * 7 + kw).integers(0, 256, (n, kw * wb), dtype=np.uint8)
    image = interleave_words(words, rows, per_beat, wb)
    assert image == literal_image(words, rows, per_beat, wb)
    assert len(image) == wgt_span_words(n, kw, rows, per_beat) * wb
    img = np.frombuffer(image, np.uint8)
    for j in range(n):
        for g in range(kw):
            at = wgt_word_offset(j, g, kw, rows, per_beat) * wb
            assert np.array_equal(img[at:at + wb], words[j, g * wb:(g + 1) * wb])
    assert np.array_equal(deinterleave_words(img, n, kw, rows, per_beat, wb), words)


def test_one_beat_is_one_contiguous_row_of_every_tree():
    # 128 lanes over 4 trees: beat b of block 0 is words 2b, 2b+1 of columns 0..3, in that order
    words = np.arange(4 * 4, dtype=np.uint8).reshape(4, 4).repeat(16, axis=1)     # word g of column j: bytes 4j+g
    img = np.frombuffer(interleave_words(words, 4, 2, 16), np.uint8).reshape(-1, 16)[:, 0]
    assert img.tolist() == [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15]
    assert interleave_words(words[:0], 4, 2, 16) == b"" and wgt_span_words(0, 3, 4, 2) == 0


@pytest.mark.parametrize("lanes", [16, 64, 128])
@pytest.mark.parametrize("packing", ["base3", "2bit"])
@pytest.mark.parametrize("reset", [1, 0])
def test_simulator_gemm_reads_the_interleaved_layout(lanes, packing, reset):
    cfg = dataclasses.replace(BASE, matrix_lanes=lanes, weight_packing=packing).validate()
    rows, per_beat, wb = cfg.matrix_rows, cfg.words_per_beat, cfg.word_bytes
    rng = np.random.default_rng(lanes + reset)
    m, n, kw, act_rs, acc_rs = 3, 7, 3, 256, 9       # n = 7 over blocks of 4, kw = 3 (not whole beats of 2 words)
    words = rng.integers(0, 256, (n, kw * wb), dtype=np.uint8)        # any bytes: invalid codes too
    act = rng.integers(-128, 128, (m, act_rs), dtype=np.int8)          # past 64 kw: never read
    start = rng.integers(-1000, 1000, (m, acc_rs), dtype=np.int32)
    wgt_addr = 3 * cfg.weight_beat_bytes
    sim = Simulator(cfg)
    sim.raw[Buf.WGT][:] = rng.integers(0, 256, cfg.weight_buffer_bytes, dtype=np.uint8)   # garbage around it
    image = interleave_words(words, rows, per_beat, wb)
    sim.raw[Buf.WGT][wgt_addr:wgt_addr + len(image)] = np.frombuffer(image, np.uint8)
    sim.typed[Buf.ACT][:act.size] = act.ravel()
    sim.typed[Buf.ACC][:start.size] = start.ravel()
    sim.load_stream([Instr(Op.GEMM, acc_addr=0, act_addr=0, wgt_addr=wgt_addr, m=m, kw=kw, n=n, act_rs=act_rs,
                           acc_rs=acc_rs, reset=reset), Instr(Op.FINISH)])
    sim.run()
    trits = decode_words(words, packing).astype(np.int64)              # [n, 64 kw]
    want = start.astype(np.int64).copy()
    want[:, :n] = (0 if reset else want[:, :n]) + act[:, :64 * kw].astype(np.int64) @ trits.T
    got = sim.typed[Buf.ACC][:start.size].reshape(m, acc_rs)
    assert np.array_equal(got, want.astype(np.int32))                  # columns past n untouched


def refused(cfg: FpgaConfig, ins: Instr) -> str:
    with pytest.raises(StreamError) as e:
        Simulator(cfg).load_stream([ins, Instr(Op.FINISH)])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("instruction 0 (GEMM ")
    return msg


def test_wgt_addr_must_be_beat_aligned_and_the_blocks_inside_wgt():
    cfg = dataclasses.replace(BASE, matrix_lanes=128, weight_packing="2bit").validate()   # a beat: 4 x 2 x 16 bytes
    assert cfg.weight_beat_bytes == 128
    gemm = Instr(Op.GEMM, m=1, n=1, kw=1, reset=1)
    assert "wgt_addr 16 is not a multiple of the 128-byte weight beat" in refused(cfg, gemm.replace(wgt_addr=16))
    last = cfg.weight_buffer_bytes - 128
    Simulator(cfg).load_stream([gemm.replace(wgt_addr=last), Instr(Op.FINISH)])       # one column, one word: a beat
    # 5 columns of 3 words: 2 blocks of 2 beats (words 2..3 padded) = 512 bytes, though 15 words are 240
    msg = refused(cfg, gemm.replace(wgt_addr=cfg.weight_buffer_bytes - 384, n=5, kw=3))
    assert f"wgt reaches WGT [{cfg.weight_buffer_bytes - 384}, {cfg.weight_buffer_bytes + 127}], outside the " \
           f"{cfg.weight_buffer_bytes} bytes of WGT" in msg


def test_a_version_2_stream_is_refused():
    blob = encode_stream([Instr(Op.NOP), Instr(Op.FINISH)])
    old = bytearray(blob)
    old[8:10] = (2).to_bytes(2, "little")                             # the header's ISA version; its hash covers the words
    assert STREAM_HEADER.unpack_from(old)[1] == 2 and ISA_VERSION == 3
    with pytest.raises(ArtifactCompatibilityError) as e:
        decode_stream(bytes(old))
    assert str(e.value) == ("instruction stream of ISA version 2; this tritc and its devices run ISA version 3 (version 3 "
                            "changed the weight layout in WGT: lower the model again)")


@pytest.mark.parametrize("lanes,packing", [(128, "2bit"), (64, "base3")])
def test_weight_tiles_land_as_a_gemm_of_their_columns_reads_them(lanes, packing):
    """lower_weights: every tile weight_tiles cuts (heads inside a block, whole blocks, part blocks, the padded last
    block) and every K-chunk in whole beats (several blocks of a chunk: one run each), LOADed from the image, is in WGT
    what interleave_words makes of the tile's own columns and words."""
    from tritc.codegen.fpga.lower_ctx import LowerCtx
    from tritc.codegen.fpga.lower_image import DramMap, ImageWriter, ternary_entry
    from tritc.codegen.fpga.lower_weights import load_weight_tile, tile_span, weight_tiles
    from tritc.ir.graph import Graph
    from tritc.ir.ternary import TernaryWeight

    cfg = dataclasses.replace(BASE, matrix_lanes=lanes, weight_packing=packing, weight_buffer_bytes=1 << 14).validate()
    rows, per_beat, wb = cfg.matrix_rows, cfg.words_per_beat, cfg.word_bytes
    rng = np.random.default_rng(lanes)
    k, n = 64 * 5 - 7, 23                                              # kw = 5, n = 5 blocks of 4 and 3
    w = TernaryWeight(rng.integers(-1, 2, (k, n)).astype(np.int8), np.float32(1.0))
    out = ImageWriter(0)
    e = ternary_entry("w", w, cfg, out)
    image = out.image({"w": e})
    padded = np.zeros((n, 64 * 5), np.int8)
    padded[:, :k] = w.trits.T
    words = pack_words(padded, packing)                                # [n, kw * wb], column-major
    cases = [(n0, nn, k0, kn) for c0, c1, n_t in ((0, n, 8), (1, n, 8), (2, 21, 3), (5, n, 6), (0, n, 23))
             for n0, nn in weight_tiles(c0, c1, n_t, rows)
             for k0, kn in ((0, 5), (0, 2 * per_beat), (2 * per_beat, 5 - 2 * per_beat))]
    for n0, nn, k0, kn in cases:
        assert n0 % rows == 0 or n0 // rows == (n0 + nn - 1) // rows       # a head stays inside its block
        ctx = LowerCtx(Graph("t"), cfg, DramMap(1 << 14, cfg.dram_bytes), image, True)
        wgt = load_weight_tile(ctx, e, 0, n0, nn, k0, kn)
        assert wgt % cfg.weight_beat_bytes == 0
        sim = Simulator(cfg)
        sim.write(0, image.data)
        sim.raw[Buf.WGT][:] = 0x55 if packing == "2bit" else 0
        sim.load_stream(ctx.s.finish())
        sim.run()
        span = sim.raw[Buf.WGT][wgt:wgt + tile_span(e, nn, kn)]
        got = deinterleave_words(span, nn, kn, rows, per_beat, wb)
        assert np.array_equal(got, words[n0:n0 + nn, k0 * wb:(k0 + kn) * wb]), (n0, nn, k0, kn)

"""The ISA's encoding and listing: encode/decode and asm round-trips are identities on valid instructions,
malformed words and streams are refused, and the weight words pack, unpack and decode as docs/ISA.md says."""

from __future__ import annotations

import hashlib
import itertools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.codegen.fpga.asm import format_instr, format_listing, parse_instr, parse_listing
from tritc.codegen.fpga.isa import (
    DEP_FLAGS,
    FIELDS,
    HEADER_BITS,
    INSTR_BYTES,
    MAGIC,
    STREAM_HEADER,
    Buf,
    Instr,
    Op,
    StreamError,
    VFunc,
    bits_f32,
    decode,
    decode_stream,
    decode_words,
    encode,
    encode_stream,
    f32_bits,
    pack_2bit_words,
    pack_base3_words,
    pack_words,
    unpack_2bit_words,
    unpack_base3_words,
    unpack_words,
)
from tritc.errors import ArtifactIntegrityError, CompilerError, IRParseError

from ...properties import budget

BUF_FIELDS = {"buf", "dst_buf", "src1_buf", "src2_buf"}


@st.composite
def instructions(draw, op: Op | None = None) -> Instr:
    op = draw(st.sampled_from(list(Op))) if op is None else op
    values = {}
    for f in FIELDS[op]:
        if f.name in BUF_FIELDS:
            values[f.name] = draw(st.sampled_from(list(Buf)))
        elif f.name == "func":
            values[f.name] = draw(st.sampled_from(list(VFunc)))
        else:
            # Edges and the middle: extremes of the field catch sign and width mistakes.
            values[f.name] = draw(st.one_of(st.sampled_from([f.lo, f.hi, 0, min(f.hi, 1), max(f.lo, -1)]),
                                            st.integers(f.lo, f.hi)))
    flags = {k: draw(st.integers(0, 1)) for k in DEP_FLAGS}
    return Instr(op, **flags, **values)


@settings(max_examples=budget(300))
@given(instructions())
def test_encode_decode_roundtrip(ins):
    word = encode(ins)
    assert len(word) == INSTR_BYTES
    assert decode(word) == ins
    assert encode(decode(word)) == word


@settings(max_examples=budget(300))
@given(instructions())
def test_asm_roundtrip(ins):
    text = format_instr(ins)
    assert "\n" not in text
    assert parse_instr(text) == ins
    assert parse_listing(text + "  # a comment\n") == [ins]


@settings(max_examples=budget(40))
@given(st.lists(instructions(), max_size=12))
def test_stream_roundtrip_binary_and_asm(instrs):
    blob = encode_stream(instrs)
    assert blob[:8] == MAGIC and struct.unpack_from("<I", blob, 12)[0] == len(instrs)  # after ISA version, reserved
    assert decode_stream(blob) == instrs
    listing = format_listing(instrs)
    assert parse_listing(listing) == instrs
    assert encode_stream(parse_listing(format_listing(decode_stream(blob)))) == blob    # asm <-> binary
    assert parse_listing(format_listing(instrs, index=False)) == instrs


def test_vop_listing_is_readable():
    ins = Instr(Op.VOP, func=VFunc.MUL, rows=1, cols=16, imm=f32_bits(0.0625), use_imm=1, dst_buf=Buf.VEC, dst_cs=1,
                src1_buf=Buf.ACC, src1_cs=1, src2_buf=Buf.VEC, pop_prev=1)
    assert format_instr(ins) == ("VOP.MUL rows=1 cols=16 depth=0 imm=0x3d800000(0.0625) use_imm=1 dst=VEC:0:0:1 "
                                 "src1=ACC:0:0:1 src2=VEC:0:0:0 !pop_prev")
    gemm = Instr(Op.GEMM, m=1, kw=40, n=16, reset=1, push_next=1)
    assert format_instr(gemm) == ("GEMM acc_addr=0 act_addr=0 wgt_addr=0 m=1 kw=40 n=16 act_rs=0 acc_rs=0 reset=1 "
                                  "!push_next")
    req = Instr(Op.VOP, func=VFunc.REQ, imm=-1234567, depth=3, src1_buf=Buf.ACC)
    assert "imm=-1234567" in format_instr(req)
    # Either part of a float immediate alone is accepted; fields left out are 0.
    assert parse_instr("VOP.ADD imm=0.5 use_imm=1").imm == f32_bits(0.5)
    assert parse_instr("VOP.ADD imm=0x3f000000").imm == f32_bits(0.5)
    assert parse_instr("vop.add imm=-inf").imm == f32_bits(-np.inf)
    nan = parse_instr("VOP.FILL imm=0x7fc00001(nan)").imm
    assert nan == 0x7FC00001 and np.isnan(bits_f32(nan))


@pytest.mark.parametrize("text, message", [
    ("JUMP x=1", "line 2: unknown opcode 'JUMP'"),
    ("VOP.FOO rows=1", "line 2: unknown vector function 'FOO'"),
    ("LOAD buf=XYZ", "line 2: buf: unknown buffer 'XYZ'"),
    ("LOAD bogus=1", "line 2: LOAD has no field 'bogus'"),
    ("GEMM m=1 m=2", "line 2: field m given twice"),
    ("GEMM m=70000", "line 2: GEMM.m = 70000 does not fit its 16-bit field"),
    ("GEMM m=x", "line 2: m must be an integer"),
    ("NOP !push_sideways", "line 2: unknown flag '!push_sideways'"),
    ("VOP.ADD dst=VEC:1:2", "line 2: operand dst must be BUF:addr:rs:cs"),
    ("VOP.ADD imm=0x3f800000(2.0)", "the bit pattern holds 1.0, not 2.0"),
    ("VOP.ADD dst_addr=3", "VOP has no field 'dst_addr'"),
    ("FINISH.X", "FINISH takes no .X suffix"),
    ("GEMM m", "expected name=value or !flag"),
])
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(IRParseError, match="asm line 2") as e:
        parse_listing("NOP\n" + text + "\nFINISH\n")
    assert message in str(e.value)


def test_unknown_opcode_unused_bits_and_codes_refused():
    for code in range(len(Op), 16):
        with pytest.raises(StreamError, match=f"unknown opcode {code}"):
            decode(bytes([code]) + bytes(INSTR_BYTES - 1), 7)
    for op in Op:
        last = HEADER_BITS + sum(f.width for f in FIELDS[op])
        for bit in (last, INSTR_BYTES * 8 - 1):
            word = int.from_bytes(encode(Instr(op)), "little") | (1 << bit)
            with pytest.raises(StreamError, match="bits set above its last field"):
                decode(word.to_bytes(INSTR_BYTES, "little"))
    vop = int.from_bytes(encode(Instr(Op.VOP)), "little") | (63 << HEADER_BITS)    # func 63
    with pytest.raises(StreamError, match="unknown vector function 63"):
        decode(vop.to_bytes(INSTR_BYTES, "little"))
    load = int.from_bytes(encode(Instr(Op.LOAD)), "little") | (7 << HEADER_BITS)    # buf 7
    with pytest.raises(StreamError, match="LOAD.buf = 7 is not a buffer"):
        decode(load.to_bytes(INSTR_BYTES, "little"))
    with pytest.raises(StreamError, match="31 bytes"):
        decode(bytes(31))


def test_truncated_and_foreign_streams_refused():
    blob = encode_stream([Instr(Op.NOP), Instr(Op.FINISH)])
    with pytest.raises(StreamError, match="truncated"):
        decode_stream(blob[:-1])
    with pytest.raises(StreamError, match="truncated"):
        decode_stream(blob + bytes(32))
    with pytest.raises(StreamError, match="bad magic"):
        decode_stream(b"TRITISA2" + blob[8:])
    with pytest.raises(StreamError, match="bad magic"):
        decode_stream(blob[:6])
    bad = bytearray(blob)
    bad[STREAM_HEADER.size + 32] = 9          # the second instruction's opcode
    with pytest.raises(ArtifactIntegrityError, match="hash mismatch"):
        decode_stream(bytes(bad))
    bad[48:80] = hashlib.sha256(bytes(bad[80:])).digest()   # the hash fixed up: the word itself is refused
    with pytest.raises(StreamError, match="instruction 1: unknown opcode 9"):
        decode_stream(bytes(bad))


def test_fields_out_of_range_refused():
    with pytest.raises(StreamError, match="does not fit"):
        Instr(Op.LOAD, dram_addr=1 << 40)
    with pytest.raises(StreamError, match="does not fit"):
        Instr(Op.VOP, dst_rs=1 << 15)
    with pytest.raises(StreamError, match="has no field"):
        Instr(Op.NOP, rows=1)
    with pytest.raises(StreamError, match="must be 0 or 1"):
        Instr(Op.NOP, push_next=2)


def test_f32_bits_roundtrip():
    for x in (0.0, -0.0, 1.0, -2.5, 1e-45, 3.4e38, np.inf, -np.inf):
        assert bits_f32(f32_bits(x)) == np.float32(x)
    assert np.signbit(bits_f32(f32_bits(-0.0)))
    assert f32_bits(1.0) == 0x3F800000 and f32_bits(-1.0) == -0x40800000


# -- weight words ------------------------------------------------------------------------------------------

@st.composite
def trit_rows(draw):
    rows = draw(st.integers(1, 5))
    words = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(-1, 2, size=(rows, 64 * words)).astype(np.int8)


@settings(max_examples=budget(60))
@given(trit_rows(), st.sampled_from(["base3", "2bit"]))
def test_weight_words_roundtrip(t, packing):
    p = pack_words(t, packing)
    assert p.dtype == np.uint8 and p.shape == (t.shape[0], t.shape[1] // 64 * (13 if packing == "base3" else 16))
    np.testing.assert_array_equal(unpack_words(p, packing), t)
    np.testing.assert_array_equal(decode_words(p, packing), t)


def test_base3_byte_formula_exhaustive():
    """Every 5-trit group: q = ceil(256 v / 243) and the division-free digits ((q * 3^i) mod 256) * 3 >> 8."""
    for digits in itertools.product(range(3), repeat=5):
        v = sum(d * 3 ** (4 - i) for i, d in enumerate(digits))
        q = -(-256 * v // 243)
        assert 0 <= q <= 255
        assert [(((q * 3 ** i) % 256) * 3) >> 8 for i in range(5)] == list(digits)
    # The packer writes exactly those bytes: trits 5b..5b+4 in byte b, d_0 most significant, byte 12 padded.
    t = np.zeros(64, np.int8)
    t[:5] = [1, -1, 0, 1, 1]                   # digits 2 0 1 2 2: v = 162 + 9 + 6 + 2 = 179
    t[60:] = [1, 1, 1, 1]                      # digits 2 2 2 2 and the pad digit 1: v = 242 - 2 + 1 = 241
    p = pack_base3_words(t)
    assert p.size == 13 and p[0] == -(-256 * 179 // 243) and p[12] == -(-256 * 241 // 243)
    assert np.all(p[1:12] == -(-256 * 121 // 243))   # all-zero trits: digits 1 1 1 1 1, v = 121


def test_2bit_layout_and_invalid_code():
    t = np.zeros(64, np.int8)
    t[:4] = [-1, 0, 1, 1]                      # codes 0 1 2 2 -> bits 0b10_10_01_00
    p = pack_2bit_words(t)
    assert p.size == 16 and p[0] == 0b10100100 and np.all(p[1:] == 0b01010101)
    bad = p.copy()
    bad[0] |= 0b11                             # code 3 in trit 0, trits 1-3 kept
    with pytest.raises(CompilerError, match="code 3"):
        unpack_2bit_words(bad)
    assert decode_words(bad, "2bit")[0] == 0  # the hardware reads code 3 as trit 0
    np.testing.assert_array_equal(decode_words(bad, "2bit")[1:], t[1:])


def test_base3_decoder_total_on_every_byte():
    """The decoder reads any byte as five trits in {-1, 0, 1} (bytes the packer never writes included)."""
    word = np.arange(256, dtype=np.uint8)[:, None].repeat(13, 1)
    t = decode_words(word, "base3")
    assert t.shape == (256, 64) and set(np.unique(t)) <= {-1, 0, 1}
    np.testing.assert_array_equal(unpack_base3_words(pack_base3_words(t)), t)   # and they pack back


def test_packers_refuse_partial_words():
    with pytest.raises(CompilerError, match="words of 64"):
        pack_words(np.zeros(63, np.int8), "base3")
    with pytest.raises(CompilerError, match="13 bytes"):
        unpack_base3_words(np.zeros(12, np.uint8))
    with pytest.raises(CompilerError, match="13 bytes"):
        decode_words(np.zeros(12, np.uint8), "base3")

"""The accelerator's instruction set: opcodes, fields, and the fixed-width binary encoding (docs/ISA.md).

Every instruction is 256 bits (32 bytes, little-endian). Bits [3:0] hold the opcode, bits [7:4] the four
dependency flags (pop_prev, pop_next, push_prev, push_next), and the opcode's fields follow from bit 8 up,
in the order of FIELDS, each `width` bits, unsigned or two's complement (`signed`). Unused high bits are 0;
a decoder refuses an instruction whose unused bits are set, so the encoding is a bijection on valid words.

    ins = Instr(Op.GEMM, m=1, kw=40, n=16, reset=1, push_next=1)
    word = encode(ins)               # 32 bytes
    assert decode(word) == ins
    stream = encode_stream([ins, ...], config); decode_stream(stream, config)

A binary stream starts with an 80-byte header: magic, ISA version, the instruction count, the build id of the
accelerator it was lowered for (FpgaConfig.build_id) and the SHA-256 of its words. A stream of another ISA version
or build is refused (ArtifactCompatibilityError) before anything is submitted; a hash that does not match is
ArtifactIntegrityError; a truncated stream or a bad word is StreamError.

The engines (docs/ISA.md, "Engines and tokens"): LOAD runs on the load engine, GEMM / VOP / NOP / FINISH on
the compute engine, STORE on the store engine. "prev" and "next" name the neighbouring engines in the chain
load -> compute -> store.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ...errors import ArtifactCompatibilityError, ArtifactIntegrityError, CompilerError

INSTR_BITS = 256
INSTR_BYTES = INSTR_BITS // 8
HEADER_BITS = 8  # opcode (4) + dependency flags (4)
ISA_VERSION = 3  # the instruction set of docs/ISA.md; a change to any encoding or meaning raises it
# Versions this tritc reads. 3 interleaves a GEMM's weights in WGT in beats of matrix_rows x words_per_beat words
# (wgt_word_offset) with wgt_addr beat-aligned: a stream of 1 or 2 reads column-major weights, so it would compute
# wrong sums on a version-3 device, and it is refused (lower the model again).
READABLE_ISA_VERSIONS = (3,)
MAGIC = b"TRITSTRM"  # a binary stream: STREAM_HEADER, then the words
LEGACY_MAGIC = b"TRITISA1"  # before the header (ISA 1, no build id, no hash): the magic and a u32 count; refused
STREAM_HEADER = struct.Struct("<8sHHI32s32s")  # magic, ISA version, reserved 0, count, build id, SHA-256 of the words
NO_BUILD = bytes(32)  # the build id of a stream bound to no accelerator build (hand-written, tests)


class StreamError(CompilerError):
    """A malformed instruction stream: unknown opcode, bad field, truncated, out-of-range address."""


class Op(IntEnum):
    NOP = 0      # compute engine: only its dependency flags act (a token relay)
    LOAD = 1     # load engine: DRAM -> buffer, a 2-D strided transfer
    STORE = 2    # store engine: buffer -> DRAM, a 2-D strided transfer
    GEMM = 3     # compute engine, matrix unit: int8 activations x packed trits -> int32 accumulators
    VOP = 4      # compute engine, vector unit: elementwise / reduction / small fp32 matmul over 2-D views
    FINISH = 5   # compute engine: the end of the stream (after every engine has drained)


class Engine(IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


ENGINE_OF = {Op.NOP: Engine.COMPUTE, Op.LOAD: Engine.LOAD, Op.STORE: Engine.STORE, Op.GEMM: Engine.COMPUTE,
             Op.VOP: Engine.COMPUTE, Op.FINISH: Engine.COMPUTE}


class Buf(IntEnum):
    WGT = 0  # packed weight words, addressed in bytes
    ACT = 1  # int8 activations, addressed in bytes
    ACC = 2  # int32 accumulators, addressed in 4-byte words
    VEC = 3  # fp32 working data of the vector unit, addressed in 4-byte words
    KV = 4   # fp32 key / value cache tiles, addressed in 4-byte words


ELEM_BYTES = {Buf.WGT: 1, Buf.ACT: 1, Buf.ACC: 4, Buf.VEC: 4, Buf.KV: 4}


class VFunc(IntEnum):
    """The vector unit's functions (docs/ISA.md, "Vector unit"). a = src1, b = src2 or the immediate."""
    COPY = 0     # d = a
    FILL = 1     # d = imm
    ADD = 2      # d = a + b
    SUB = 3      # d = a - b
    MUL = 4      # d = a * b
    DIV = 5      # d = a / b                 (IEEE, correctly rounded)
    MAX = 6      # d = max(a, b)             (NaN if either is NaN)
    MIN = 7      # d = min(a, b)
    NEG = 8      # d = -a
    ABS = 9      # d = |a|
    RECIP = 10   # d = 1 / a                 (IEEE division)
    SQRT = 11    # d = sqrt(a)               (IEEE, correctly rounded)
    EXP = 12     # d = exp(a)                (range reduction + degree-6 polynomial, docs/ISA.md)
    SIN = 13     # d = sin(a)                (Cody-Waite reduction by pi/2 + polynomials)
    COS = 14     # d = cos(a)
    TANH = 15    # d = tanh(a)               (from EXP)
    ERF = 16     # d = erf(a)                (polynomial, docs/ISA.md)
    WHERE = 17   # d = a if b != 0 else imm  (b is always src2)
    RSUM = 18    # d[i, 0] = sum_j a[i, j]   (lane partial sums, then a binary tree)
    RMAX = 19    # d[i, 0] = max_j a[i, j]
    MM = 20      # d[i, j] = sum_k a[i, k] * b[j, k] over `depth` k (lane partial sums, then a tree)
    REQ = 21     # d = sat8((a_int32 * M + 2^(30+shift)) >> (31+shift)), M = imm (Q31), shift = depth
    ROUND = 22   # d = round half to even (a)
    RELU = 23    # d = max(a, 0)
    LT = 24      # d = 1.0 if a < b else 0.0
    EQ = 25      # d = 1.0 if a == b else 0.0
    AMAX = 26    # d[i, 0] = max_j |a[i, j]|, and at least imm with use_imm (an activation row's absmax, floored)


UNARY = frozenset({VFunc.COPY, VFunc.NEG, VFunc.ABS, VFunc.RECIP, VFunc.SQRT, VFunc.EXP, VFunc.SIN, VFunc.COS,
                   VFunc.TANH, VFunc.ERF, VFunc.RSUM, VFunc.RMAX, VFunc.REQ, VFunc.ROUND, VFunc.RELU,
                   VFunc.AMAX})
BINARY = frozenset({VFunc.ADD, VFunc.SUB, VFunc.MUL, VFunc.DIV, VFunc.MAX, VFunc.MIN, VFunc.WHERE, VFunc.MM,
                    VFunc.LT, VFunc.EQ})
REDUCTIONS = frozenset({VFunc.RSUM, VFunc.RMAX, VFunc.AMAX})


@dataclass(frozen=True)
class Field:
    name: str
    width: int
    signed: bool = False

    @property
    def lo(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1


def _operand(prefix: str) -> list[Field]:
    """A vector operand: buffer, word / byte address, row stride and column stride (elements)."""
    return [Field(f"{prefix}_buf", 3), Field(f"{prefix}_addr", 22), Field(f"{prefix}_rs", 16, True),
            Field(f"{prefix}_cs", 12, True)]


FIELDS: dict[Op, list[Field]] = {
    Op.NOP: [],
    Op.FINISH: [],
    # rows x cols elements (of the buffer's element size); element (r, c) moves between
    # dram_addr + r * dram_rs + c * dram_cs (bytes) and sram_addr + r * sram_rs + c (buffer units).
    Op.LOAD: [Field("buf", 3), Field("sram_addr", 22), Field("dram_addr", 40), Field("rows", 16),
              Field("cols", 16), Field("dram_rs", 32, True), Field("dram_cs", 16, True), Field("sram_rs", 22)],
    Op.STORE: [Field("buf", 3), Field("sram_addr", 22), Field("dram_addr", 40), Field("rows", 16),
               Field("cols", 16), Field("dram_rs", 32, True), Field("dram_cs", 16, True), Field("sram_rs", 22)],
    # acc[acc_addr + i*acc_rs + j] (=|+=) sum over g < kw, l < 64 of
    #     act[act_addr + i*act_rs + 64*g + l] * trit l of the word at wgt_addr + wgt_word_offset(j, g, kw, R, P) * wb
    # for i < m, j < n (R = matrix_rows, P = words_per_beat, wb = word_bytes); wgt_addr is a multiple of R * P * wb.
    Op.GEMM: [Field("acc_addr", 22), Field("act_addr", 22), Field("wgt_addr", 22), Field("m", 16),
              Field("kw", 12), Field("n", 16), Field("act_rs", 22), Field("acc_rs", 22), Field("reset", 1)],
    # rows x cols results; `depth` is MM's inner length and REQ's shift; imm is a float32 bit pattern (an int32
    # for REQ); use_imm: b is the immediate instead of src2; overlap: may run while the matrix unit still multiplies.
    Op.VOP: [Field("func", 6), Field("rows", 16), Field("cols", 16), Field("depth", 16), Field("imm", 32, True),
             Field("use_imm", 1), *_operand("dst"), *_operand("src1"), *_operand("src2"), Field("overlap", 1)],
}
DEP_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")

for _op, _fields in FIELDS.items():
    assert HEADER_BITS + sum(f.width for f in _fields) <= INSTR_BITS, _op
FIELD_INDEX: dict[Op, dict[str, Field]] = {op: {f.name: f for f in fs} for op, fs in FIELDS.items()}


class Instr:
    """One instruction: an opcode, its dependency flags and its fields (missing fields are 0). Immutable."""

    op: Op
    pop_prev: int
    pop_next: int
    push_prev: int
    push_next: int
    fields: Mapping[str, int]

    def __init__(self, op: Op, *, pop_prev: int = 0, pop_next: int = 0, push_prev: int = 0, push_next: int = 0,
                 **values: int):
        op = Op(op)
        known = FIELD_INDEX[op]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise StreamError(f"{op.name} has no field(s) {', '.join(unknown)} (fields: "
                              f"{', '.join(known) or 'none'})")
        full = {name: int(values.get(name, 0)) for name in known}
        for name, f in known.items():
            if not f.lo <= full[name] <= f.hi:
                raise StreamError(f"{op.name}.{name} = {full[name]} does not fit its {f.width}-bit "
                                  f"{'signed ' if f.signed else ''}field [{f.lo}, {f.hi}]")
        object.__setattr__(self, "op", op)
        for flag, v in zip(DEP_FLAGS, (pop_prev, pop_next, push_prev, push_next)):
            if v not in (0, 1, False, True):
                raise StreamError(f"{op.name}.{flag} must be 0 or 1, got {v}")
            object.__setattr__(self, flag, int(v))
        object.__setattr__(self, "fields", full)

    def __getattr__(self, name: str) -> int:
        f = self.__dict__.get("fields")
        if f is not None and name in f:
            return f[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("instructions are immutable: use replace()")

    def __hash__(self) -> int:
        return hash((self.op, self.flags, tuple(sorted(self.fields.items()))))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Instr) and self.op == other.op and self.flags == other.flags
                and dict(self.fields) == dict(other.fields))

    def __reduce__(self):  # for copy / pickle in tests (never written to artifacts)
        return (_rebuild, (self.op, self.flags, dict(self.fields)))

    @property
    def flags(self) -> tuple[int, int, int, int]:
        return (self.pop_prev, self.pop_next, self.push_prev, self.push_next)

    @property
    def engine(self) -> Engine:
        return ENGINE_OF[self.op]

    def replace(self, **changes: int) -> Instr:
        values = dict(self.fields)
        flags = dict(zip(DEP_FLAGS, self.flags))
        for k, v in changes.items():
            (flags if k in flags else values)[k] = v
        return Instr(self.op, **flags, **values)

    def __repr__(self) -> str:
        parts = [f"{k}=1" for k, v in zip(DEP_FLAGS, self.flags) if v]
        parts += [f"{k}={v}" for k, v in self.fields.items() if v]
        return f"Instr({self.op.name}{', ' if parts else ''}{', '.join(parts)})"


def _rebuild(op: Op, flags: tuple[int, ...], values: dict[str, int]) -> Instr:
    return Instr(op, **dict(zip(DEP_FLAGS, flags)), **values)


def encode(ins: Instr) -> bytes:
    """The 32-byte little-endian word of one instruction."""
    word = int(ins.op) | (ins.pop_prev << 4) | (ins.pop_next << 5) | (ins.push_prev << 6) | (ins.push_next << 7)
    pos = HEADER_BITS
    for f in FIELDS[ins.op]:
        v = ins.fields[f.name] & ((1 << f.width) - 1)
        word |= v << pos
        pos += f.width
    return word.to_bytes(INSTR_BYTES, "little")


def decode(data: bytes, index: int | None = None) -> Instr:
    """The instruction of a 32-byte word; StreamError on an unknown opcode or set unused bits."""
    where = f"instruction {index}" if index is not None else "instruction"
    if len(data) != INSTR_BYTES:
        raise StreamError(f"{where}: {len(data)} bytes, an instruction has {INSTR_BYTES}")
    word = int.from_bytes(data, "little")
    code = word & 0xF
    try:
        op = Op(code)
    except ValueError:
        raise StreamError(f"{where}: unknown opcode {code}") from None
    flags = [(word >> (4 + i)) & 1 for i in range(4)]
    values: dict[str, int] = {}
    pos = HEADER_BITS
    for f in FIELDS[op]:
        v = (word >> pos) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        values[f.name] = v
        pos += f.width
    if word >> pos:
        raise StreamError(f"{where}: {op.name} has bits set above its last field (bit {pos} up)")
    if op is Op.VOP:
        try:
            VFunc(values["func"])
        except ValueError:
            raise StreamError(f"{where}: unknown vector function {values['func']}") from None
    for key in ("buf", "dst_buf", "src1_buf", "src2_buf"):
        if key in values and values[key] not in Buf._value2member_map_:
            raise StreamError(f"{where}: {op.name}.{key} = {values[key]} is not a buffer")
    return Instr(op, **dict(zip(DEP_FLAGS, flags)), **values)


@dataclass(frozen=True)
class StreamHeader:
    isa_version: int
    count: int
    build_id: bytes    # NO_BUILD: bound to no build
    sha256: bytes      # of the words; empty for a legacy stream
    size: int          # header bytes


def encode_stream(instrs: Iterable[Instr], config: object = None) -> bytes:
    """A binary stream: the header (bound to `config`'s build when given: an FpgaConfig), then the 32-byte words."""
    body = b"".join(encode(i) for i in instrs)
    build = config.build_id if config is not None else NO_BUILD  # type: ignore[attr-defined]
    return STREAM_HEADER.pack(MAGIC, ISA_VERSION, 0, len(body) // INSTR_BYTES, build,
                              hashlib.sha256(body).digest()) + body


def read_stream_header(data: bytes | memoryview) -> StreamHeader:
    """The header of a binary stream (StreamError if it is not one)."""
    if len(data) >= len(LEGACY_MAGIC) + 4 and bytes(data[:len(LEGACY_MAGIC)]) == LEGACY_MAGIC:
        (count,) = struct.unpack_from("<I", data, len(LEGACY_MAGIC))
        return StreamHeader(1, count, NO_BUILD, b"", len(LEGACY_MAGIC) + 4)
    if len(data) < STREAM_HEADER.size or bytes(data[:len(MAGIC)]) != MAGIC:
        raise StreamError(f"not a tritc instruction stream (bad magic or shorter than its {STREAM_HEADER.size}-byte "
                          f"header: {len(data)} bytes)")
    _magic, version, reserved, count, build, digest = STREAM_HEADER.unpack_from(data)
    if reserved:
        raise StreamError(f"instruction stream header: reserved field is {reserved}, not 0")
    return StreamHeader(version, count, build, digest, STREAM_HEADER.size)


_WHY_NOT = {v: " (version 3 changed the weight layout in WGT: lower the model again)" for v in (1, 2)}


def decode_stream(data: bytes, config: object = None) -> list[Instr]:
    """The instructions of a binary stream, checked in this order: the header; its ISA version and (with `config`, an
    FpgaConfig) its build, ArtifactCompatibilityError if this tritc or that device cannot run it; the length
    (StreamError if truncated); the hash (ArtifactIntegrityError); every word (StreamError)."""
    body = stream_words(data, config)
    return [decode(bytes(body[i * INSTR_BYTES:(i + 1) * INSTR_BYTES]), i) for i in range(len(body) // INSTR_BYTES)]


def stream_words(data: bytes, config: object = None) -> memoryview:
    """The words of a binary stream after decode_stream's checks of its header, build, length and hash, not decoded
    (a device whose own decoder checks them: the RTL core)."""
    head = read_stream_header(data)
    if head.isa_version not in READABLE_ISA_VERSIONS:
        raise ArtifactCompatibilityError(f"instruction stream of ISA version {head.isa_version}; this tritc and its "
                                         f"devices run ISA version {ISA_VERSION}{_WHY_NOT.get(head.isa_version, '')}")
    if config is not None and head.build_id != NO_BUILD and head.build_id != config.build_id:  # type: ignore[attr-defined]
        raise ArtifactCompatibilityError(
            f"instruction stream lowered for accelerator build {head.build_id.hex()[:16]}, not for the FPGA config "
            f"'{config.name}' (build {config.build_id.hex()[:16]}): lower the model for this build")  # type: ignore[attr-defined]
    body = memoryview(data)[head.size:]
    if len(body) != head.count * INSTR_BYTES:
        raise StreamError(f"truncated instruction stream: header says {head.count} instructions "
                          f"({head.count * INSTR_BYTES} bytes), {len(body)} bytes follow")
    if head.sha256 and hashlib.sha256(body).digest() != head.sha256:
        raise ArtifactIntegrityError("instruction stream hash mismatch (corrupted or tampered)")
    return body


def iter_words(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), INSTR_BYTES):
        yield data[i:i + INSTR_BYTES]


# -- helpers the lowering and the simulator share ---------------------------------------------------------

def f32_bits(x: float) -> int:
    """The float32 bit pattern of x as a signed 32-bit int (the VOP imm field)."""
    return int(np.array(x, dtype=np.float32).view(np.int32))


def bits_f32(v: int) -> np.float32:
    return np.array(v, dtype=np.int32).view(np.float32)[()]


# -- weights: 64 trits per word (docs/ISA.md, "Weights") -------------------------------------------------

POW3 = np.array([81, 27, 9, 3, 1], np.int32)


def pack_base3_words(trits: np.ndarray) -> np.ndarray:
    """trits [..., 64g] in {-1, 0, 1} -> uint8 [..., 13g]: 5 trits per byte (the 13th byte holds trits 60-63 and
    a zero pad trit). Byte q of digits d0..d4 (d = t + 1, d0 most significant) is ceil(256 * v / 243),
    v = sum d_i 3^(4-i); digit i decodes as ((q * 3^i) mod 256) * 3 >> 8 (no division)."""
    t = np.asarray(trits)
    if t.shape[-1] % 64:
        raise CompilerError(f"trits must come in words of 64, got a last dim of {t.shape[-1]}")
    g = t.shape[-1] // 64
    d = (t.astype(np.int32) + 1).reshape(t.shape[:-1] + (g, 64))
    d = np.concatenate([d, np.ones(d.shape[:-1] + (1,), np.int32)], axis=-1).reshape(t.shape[:-1] + (g, 13, 5))
    v = (d * POW3).sum(axis=-1)
    q = (v * 256 + 242) // 243
    return q.astype(np.uint8).reshape(t.shape[:-1] + (13 * g,))


def unpack_base3_words(packed: np.ndarray) -> np.ndarray:
    """The inverse of pack_base3_words, with the division-free decode the hardware uses: int8 [..., 64g]."""
    p = np.asarray(packed, dtype=np.uint8)
    if p.shape[-1] % 13:
        raise CompilerError(f"base-3 words are 13 bytes, got a last dim of {p.shape[-1]}")
    g = p.shape[-1] // 13
    q = p.astype(np.int32).reshape(p.shape[:-1] + (g, 13, 1))
    digits = (((q * np.array([1, 3, 9, 27, 81], np.int32)) & 0xFF) * 3) >> 8
    t = digits.reshape(p.shape[:-1] + (g, 65))[..., :64] - 1
    return t.astype(np.int8).reshape(p.shape[:-1] + (64 * g,))


def pack_2bit_words(trits: np.ndarray) -> np.ndarray:
    """trits [..., 64g] -> uint8 [..., 16g]: code t + 1 in 2 bits, trit 4b + i in bits 2i..2i+1 of byte b."""
    t = np.asarray(trits)
    if t.shape[-1] % 64:
        raise CompilerError(f"trits must come in words of 64, got a last dim of {t.shape[-1]}")
    c = (t.astype(np.int32) + 1).reshape(t.shape[:-1] + (t.shape[-1] // 4, 4))
    return (c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)).astype(np.uint8)


def unpack_2bit_words(packed: np.ndarray) -> np.ndarray:
    p = np.asarray(packed, dtype=np.uint8)
    c = np.stack([(p >> (2 * i)) & 3 for i in range(4)], axis=-1).astype(np.int8)
    if c.size and c.max() > 2:
        raise CompilerError("2-bit weight word holds code 3, which is not a trit")
    return (c - 1).reshape(p.shape[:-1] + (p.shape[-1] * 4,))


def pack_words(trits: np.ndarray, packing: str) -> np.ndarray:
    return pack_base3_words(trits) if packing == "base3" else pack_2bit_words(trits)


def unpack_words(packed: np.ndarray, packing: str) -> np.ndarray:
    return unpack_base3_words(packed) if packing == "base3" else unpack_2bit_words(packed)


# -- the matrix unit's weight decoder (what the hardware computes for any byte, valid or not) ---------------

def _base3_lut() -> np.ndarray:
    q = np.arange(256, dtype=np.int32)[:, None]
    return ((((q * np.array([1, 3, 9, 27, 81], np.int32)) & 0xFF) * 3) >> 8).astype(np.int8) - 1


def _2bit_lut() -> np.ndarray:
    c = (np.arange(256, dtype=np.int32)[:, None] >> np.array([0, 2, 4, 6], np.int32)) & 3
    return np.where(c == 3, 1, c).astype(np.int8) - 1  # code 3 is invalid: the decoder reads it as trit 0


DECODE_LUT = {"base3": _base3_lut(), "2bit": _2bit_lut()}


def decode_words(packed: np.ndarray, packing: str) -> np.ndarray:
    """The trits the matrix unit reads from packed words: uint8 [..., word_bytes * g] -> int8 [..., 64g].
    Equal to unpack_words on what the packers write; defined for every byte (base3: the division-free digit
    formula, the 13th byte's fifth digit dropped; 2bit: code 3 read as 0), through a 256-entry table."""
    p = np.asarray(packed, dtype=np.uint8)
    t = DECODE_LUT[packing][p]                      # [..., bytes, 5 or 4]
    if packing == "2bit":
        return t.reshape(p.shape[:-1] + (p.shape[-1] * 4,))
    if p.shape[-1] % 13:
        raise CompilerError(f"base-3 words are 13 bytes, got a last dim of {p.shape[-1]}")
    g = p.shape[-1] // 13
    return t.reshape(p.shape[:-1] + (g, 65))[..., :64].reshape(p.shape[:-1] + (64 * g,))


# -- the weight layout in WGT and in the DRAM image (docs/ISA.md, "Weight layout") -------------------------
# Blocks of R = matrix_rows output columns; in a block, beat r holds words r*P .. r*P+P-1 of each of the R columns,
# so that one beat of the matrix unit (R trees x P words) is one contiguous, aligned row of R * P words.

def padded_kw(kw: int, per_beat: int) -> int:
    """kwp: a column's words padded to whole beats (a multiple of P)."""
    return -(-kw // per_beat) * per_beat


def wgt_word_offset(j: int, g: int, kw: int, rows: int, per_beat: int) -> int:
    """Where word g (< kw) of output column j of a GEMM lies, in words from its wgt_addr (ISA v3)."""
    kwp = padded_kw(kw, per_beat)
    return (j // rows) * kwp * rows + (g // per_beat) * rows * per_beat + (j % rows) * per_beat + g % per_beat


def wgt_span_words(n: int, kw: int, rows: int, per_beat: int) -> int:
    """The words a GEMM of n columns of kw words reads from WGT: whole blocks of R columns, kw padded to kwp."""
    return -(-n // rows) * padded_kw(kw, per_beat) * rows if n and kw else 0


def _pad_word(word_bytes: int) -> np.ndarray:
    """A word of zero trits in the packing of that word size (bytes of zeros for any other size)."""
    for packing, size in (("base3", 13), ("2bit", 16)):
        if size == word_bytes:
            return pack_words(np.zeros(64, np.int8), packing)
    return np.zeros(word_bytes, np.uint8)


def interleave_words(words: np.ndarray, rows: int, per_beat: int, word_bytes: int) -> bytes:
    """Column-major packed words [n, kw * word_bytes] (column j's words one after the other) in the ISA v3 layout:
    ceil(n / rows) blocks of kwp * rows words, columns past n and words past kw padded with words of zero trits.
    What the DRAM image holds for each matrix and a GEMM at wgt_addr reads; bytes(0) for n = 0 or kw = 0."""
    w = np.asarray(words, dtype=np.uint8)
    if w.ndim != 2 or w.shape[1] % word_bytes:
        raise CompilerError(f"interleave_words takes [n, kw * {word_bytes}] bytes, got shape {list(w.shape)}")
    n, kw = w.shape[0], w.shape[1] // word_bytes
    if not n or not kw:
        return b""
    kwp, blocks = padded_kw(kw, per_beat), -(-n // rows)
    out = np.empty((blocks * rows, kwp, word_bytes), np.uint8)
    out[...] = _pad_word(word_bytes)
    out[:n, :kw] = w.reshape(n, kw, word_bytes)
    # [block, column in block, beat, word in beat, byte] -> [block, beat, column in block, word in beat, byte]
    return out.reshape(blocks, rows, kwp // per_beat, per_beat, word_bytes).transpose(0, 2, 1, 3, 4).tobytes()


def deinterleave_words(span: np.ndarray, n: int, kw: int, rows: int, per_beat: int, word_bytes: int) -> np.ndarray:
    """The inverse of interleave_words on the bytes a GEMM reads (wgt_span_words * word_bytes of them):
    [n, kw * word_bytes], column j's words in order (a copy)."""
    kwp, blocks = padded_kw(kw, per_beat), -(-n // rows)
    b = np.asarray(span, dtype=np.uint8).reshape(blocks, kwp // per_beat, rows, per_beat, word_bytes)
    return b.transpose(0, 2, 1, 3, 4).reshape(blocks * rows, kwp * word_bytes)[:n, :kw * word_bytes]

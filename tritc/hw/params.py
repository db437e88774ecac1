"""What the RTL builds from an FpgaConfig: widths, depths and pipeline latencies (docs/HW.md, "Parameters").

`hw_params(config)` checks what the ISA's own checks (config.py) allow but this RTL cannot build and raises a
one-line HwConfigError naming the parameter; every component takes its numbers from the HwParams it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..codegen.fpga.config import TRIT_GROUP, FpgaConfig, load_config
from ..codegen.fpga.isa import Buf
from ..codegen.fpga.ports import beat_bytes
from ..codegen.fpga.verify import buffer_elems
from ..errors import CompilerError

ACT_BITS = 8                  # int8 activations
PRODUCT_BITS = ACT_BITS + 1   # an int8 times a trit: -(-128) = 128 needs a ninth bit
ACC_BITS = 32                 # int32 accumulators, wrapping
BUFFER_FIELDS = {Buf.WGT: "weight_buffer_bytes", Buf.ACT: "activation_buffer_bytes",
                 Buf.ACC: "accumulator_buffer_bytes", Buf.VEC: "vector_buffer_bytes", Buf.KV: "cache_buffer_bytes"}


class HwConfigError(CompilerError):
    """An FpgaConfig that the ISA allows but the RTL cannot build (a lane count, a buffer size)."""


@dataclass(frozen=True)
class HwParams:
    """The numbers of one RTL build. A tree takes `words_per_beat` packed weight words per cycle (lanes >= 64)
    or one word over `beats_per_word` cycles (lanes < 64)."""
    config: FpgaConfig
    rows: int                    # adder trees: outputs per cycle
    lanes: int                   # trit-activation products per tree per cycle
    packing: str                 # base3 | 2bit
    word_bytes: int              # bytes of one packed 64-trit word
    words_per_beat: int
    beats_per_word: int
    tree_levels: int             # registered adder levels of a tree: log2(lanes)
    sum_bits: int                # a tree's sum: PRODUCT_BITS + tree_levels, signed
    gemm_latency: int            # cycles from a beat in to its block's sum out: tree_levels + 2 (ISA.md's fill)
    vector_lanes: int
    queue_depth: int
    mem_beat_bytes: int          # the memory port's width: a burst, or the DRAM's bytes per cycle (a power of two)
    mem_latency: int             # cycles from a request to its response (ISA.md's transfer latency)
    mem_outstanding: int         # requests in flight the port keeps track of: enough to cover the latency
    buffer_units: dict[Buf, int]   # each buffer's size in its addressing unit (bytes, or 4-byte words)

    def addr_bits(self, buf: Buf) -> int:
        """Bits of an address inside `buf` (its unit: bytes for WGT and ACT, words for the others)."""
        return max(1, (self.buffer_units[buf] - 1).bit_length())


def hw_params(config: FpgaConfig | str) -> HwParams:
    """The RTL's parameters for `config` (a preset name or FpgaConfig, checked); HwConfigError if it cannot build it."""
    c = load_config(config)

    def bad(field: str, why: str) -> HwConfigError:
        return HwConfigError(f"FPGA config '{c.name}': {field} {why} (the RTL cannot build it)")

    lanes = c.matrix_lanes
    if lanes & (lanes - 1):
        raise bad("matrix_lanes", f"must be a power of two for the RTL (balanced adder trees, activation banks "
                  f"addressed by shifts), got {lanes}")
    # ACT is `matrix_lanes` byte-wide banks, so that a GEMM reads matrix_lanes activations from any byte address
    # in one cycle; VEC, KV and ACC are `vector_lanes` word-wide banks for the vector unit.
    if c.activation_buffer_bytes % lanes:
        raise bad("activation_buffer_bytes", f"must be a multiple of matrix_lanes ({lanes}: one byte-wide bank "
                  f"per lane), got {c.activation_buffer_bytes}")
    for buf in (Buf.ACC, Buf.VEC, Buf.KV):
        size = getattr(c, BUFFER_FIELDS[buf])
        if size % (4 * c.vector_lanes):
            raise bad(BUFFER_FIELDS[buf], f"must be a multiple of 4 * vector_lanes ({4 * c.vector_lanes}: one "
                      f"word-wide bank per vector lane), got {size}")
    levels = int(math.log2(lanes))
    beat = beat_bytes(c)
    latency = math.ceil(c.dram_latency_ns * c.clock_hz / 1e9 - 1e-9)
    return HwParams(
        config=c, rows=c.matrix_rows, lanes=lanes, packing=c.weight_packing, word_bytes=c.word_bytes,
        words_per_beat=max(1, lanes // TRIT_GROUP), beats_per_word=max(1, TRIT_GROUP // lanes),
        tree_levels=levels, sum_bits=PRODUCT_BITS + levels, gemm_latency=levels + 2,
        vector_lanes=c.vector_lanes, queue_depth=c.queue_depth, mem_beat_bytes=beat, mem_latency=latency,
        mem_outstanding=1 << (latency + 2).bit_length(), buffer_units=buffer_elems(c))

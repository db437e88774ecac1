"""How the accelerator's transfer engines meet DRAM and the buffers (docs/ISA.md, "Transfer timing"; docs/HW.md,
"Transfers"): the memory port's beat, each buffer's bank window, and the chunks and DRAM requests a LOAD or STORE
takes. The RTL builds its movers from these numbers (tritc/hw/dma.py) and the cycle model charges a transfer from
`transfer_cost`, so that both count the same chunks and requests.

- The memory port moves *beats*: the smallest power of two that is at least a burst and at least the DRAM's bytes
  per cycle. A transfer requests a beat whenever its next chunk lies in a beat other than the previous chunk's.
- A *run* is bytes consecutive in both DRAM and the buffer: a row whose elements are adjacent in DRAM, else one
  element. A run is cut into *chunks* at every beat boundary and, in the buffer, at every bank-window boundary
  (ACT: `matrix_lanes` bytes, one per byte bank; ACC, VEC, KV: `4 * vector_lanes`, a word per bank; WGT: none, its
  rows take any chunk of a beat). The movers move one chunk a cycle.
- WGT's write port finds the row of a byte by a restoring division, `wgt_division_cycles`, when a chunk does not
  continue where the previous one ended; a LOAD's later runs that continue the previous one do not pay it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .config import TRIT_GROUP, FpgaConfig
from .isa import ELEM_BYTES, Buf


def beat_bytes(config: FpgaConfig) -> int:
    """The memory port's width in bytes: a power of two, at least a burst and the DRAM's bytes per cycle."""
    return 1 << (max(config.dram_burst_bytes, math.ceil(config.bytes_per_cycle - 1e-9)) - 1).bit_length()


def bank_window(config: FpgaConfig, buf: Buf) -> int | None:
    """The aligned span of `buf`'s bytes that one chunk stays inside (None: WGT, any chunk of a beat)."""
    if buf is Buf.WGT:
        return None
    if buf is Buf.ACT:
        return config.matrix_lanes
    return 4 * config.vector_lanes


def store_bytes(config: FpgaConfig) -> int:
    """The bytes of a chunk read (STORE): the widest chunk any buffer but WGT gives."""
    return max(min(beat_bytes(config), bank_window(config, b)) for b in (Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV))


def wgt_row_bytes(config: FpgaConfig) -> int:
    """Bytes of one WGT row: a matrix-unit beat, R trees of P packed words."""
    return config.matrix_rows * max(1, config.matrix_lanes // TRIT_GROUP) * config.word_bytes


def wgt_rows(config: FpgaConfig) -> int:
    """Rows of WGT: the last one partial when the buffer is not a whole number of rows (a GEMM never reads it)."""
    return -(-config.weight_buffer_bytes // wgt_row_bytes(config))


def wgt_row_bits(config: FpgaConfig) -> int:
    """Bits of a WGT row index: the quotient bits WGT's write port divides out, one a cycle."""
    return max(1, (wgt_rows(config) - 1).bit_length())


def wgt_division_cycles(config: FpgaConfig) -> int:
    """Cycles WGT's write port takes to find a chunk's row when it does not continue the previous chunk."""
    return wgt_row_bits(config) + 1


class TransferCost(NamedTuple):
    chunks: int          # the movers' chunks, a cycle each
    requests: int        # DRAM requests, a beat each
    divisions: int       # cycles WGT's write port spends finding rows


def transfer_cost(config: FpgaConfig, buf: Buf, *, dram_addr: int, rows: int, cols: int, dram_rs: int,
                  dram_cs: int, sram_addr: int, sram_rs: int) -> TransferCost:
    """What a LOAD or STORE with these fields costs the movers, as they make its chunks and requests."""
    if rows == 0 or cols == 0:
        return TransferCost(0, 0, 0)
    item = ELEM_BYTES[buf]
    B = beat_bytes(config)
    w = bank_window(config, buf)
    r = np.arange(rows, dtype=np.int64)
    if cols == 1 or dram_cs == item:                 # a run per row
        length = cols * item
        d = dram_addr + r * dram_rs
        s = (sram_addr + r * sram_rs) * item
    else:                                            # a run per element
        length = item
        c = np.arange(cols, dtype=np.int64)
        d = (dram_addr + r[:, None] * dram_rs + c[None, :] * dram_cs).reshape(-1)
        s = ((sram_addr + r[:, None] * sram_rs + c[None, :]) * item).reshape(-1)
    first, last = d // B, (d + length - 1) // B
    nb = last - first                                # beat boundaries inside each run
    chunks = len(d) + int(nb.sum())
    divisions = 0
    if w is not None:
        nw = (s + length - 1) // w - s // w          # window boundaries inside each run
        if w <= B:                                   # a beat boundary is a window boundary iff the run is aligned alike
            both = np.where((s - d) % w == 0, nb, 0)
        else:
            both = np.where((s - d) % B == 0, nw, 0)
        chunks += int((nw - both).sum())
    else:                                            # WGT: a division where a run does not continue the last one
        divisions = wgt_division_cycles(config) * (1 + int(np.count_nonzero(s[1:] != s[:-1] + length)))
    # A request for each run's first beat unless the previous run ended in it, and for every beat after it.
    requests = len(d) + int(nb.sum()) - int(np.count_nonzero(first[1:] == last[:-1]))
    return TransferCost(chunks, requests, divisions)

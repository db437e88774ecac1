"""The cycle model's costs that the RTL core fixes (docs/HW.md, "Calibration"): what the Simulator charges, measured
on the RTL (tritc/hw/) with `RtlDevice.trace`. Transfers are costed in ports.py.

- A stream starts once its first words are fetched: `fetch_start` (the DRAM latency and the decode).
- A token pushed at cycle t can be popped from t + `TOKEN_CYCLES` (the queue's counter, then the engine's pop).
- A GEMM's results are in ACC `GEMM_COMMIT` cycles after its last block leaves the adder trees (the
  read-modify-write of the accumulators and the `done`).
- A VOP: `vop_cycles`, below.

A VOP works in chunks of `vector_lanes` elements of a row. After a fixed start (reading the instruction's operands
into the pipeline, `START`), an elementwise function takes a chunk a cycle; a reduction (RSUM, RMAX, AMAX) and MM
add their lane tree's levels once; the multi-step functions run on their units:

- DIV, RECIP, SQRT on `DIVIDER_GROUPS` groups of a divider and a square root per lane, each `DIVIDER_CYCLES` an
  operation: chunks go to the groups in turn, so a VOP of c chunks takes ceil(c / groups) operations one after
  another, plus a cycle per group filled;
- EXP, SIN, COS, TANH, ERF on one sequencer per lane (`TRANSCENDENTAL_GROUPS` groups), which runs the function's
  microprogram (tritc/hw/transcendental_program.py) one element at a time: its cycles per element, per chunk.
"""

from __future__ import annotations

import math

from .isa import REDUCTIONS, Buf, VFunc

TOKEN_CYCLES = 2
GEMM_COMMIT = 3
FETCH_DECODE = 3              # cycles from the stream's first beat arriving to its first instruction starting
START = 4                     # cycles from a VOP's dispatch to its first chunk's result, an elementwise function
UNIT_START = 6                # the same through a multi-step unit
REDUCE_START = 5              # a reduction or MM: the start before its lane tree
DIVIDER_CYCLES = 28           # FpDivider and FpSqrt: an operation (the quotient's bits and two)
DIVIDER_GROUPS = 4
TRANSCENDENTAL_GROUPS = 1
DIVIDER_FUNCS = (VFunc.DIV, VFunc.RECIP, VFunc.SQRT)
TRANSCENDENTAL_FUNCS = (VFunc.EXP, VFunc.SIN, VFunc.COS, VFunc.TANH, VFunc.ERF)


def fetch_start(latency: int) -> int:
    """The cycle the first instruction of a stream can start: its first beat's DRAM latency and the decode."""
    return latency + FETCH_DECODE


def lane_conflict(buf: Buf, stride: int, lanes: int, matrix_lanes: int, write: bool, active: int | None = None) -> int:
    """Cycles the buffer takes to serve one chunk of `lanes` lanes whose elements are `stride` apart (docs/HW.md,
    "The vector engine"): a word buffer's `lanes` banks serve every lane whose bank no lower lane holds (at another
    row) in a cycle, so a stride sharing a factor g with `lanes` takes g cycles (a broadcast, stride 0, one); ACT's
    `matrix_lanes` byte banks take a write the same way; a read of consecutive bytes (stride 1) is one read of ACT's
    wide port, and any other a lane's byte a cycle through the adapters, each then answered (4 cycles). `active`:
    the lanes a chunk uses (a row shorter than the lanes uses fewer)."""
    n = lanes if active is None else max(1, min(active, lanes))
    if buf is Buf.ACT:
        if not write:     # one wide read for consecutive bytes, else a lane a cycle; then the answer (4 cycles)
            return 5 if stride == 1 and lanes <= matrix_lanes else n + 4
        banks = matrix_lanes
    else:
        banks = lanes
    if stride == 0:
        return 1
    spread = banks // math.gcd(abs(stride), banks)          # distinct banks the lanes fall in
    return max(1, math.ceil(n / spread))


def vop_cycles(func: VFunc, rows: int, cols: int, depth: int, lanes: int, *, matrix_lanes: int | None = None,
               operands: tuple[tuple[Buf, int, bool], ...] = ()) -> int:
    """The cycles of a VOP of `rows` x `cols` (MM: each output a dot product of `depth`) on `lanes` lanes.
    `operands`: (buffer, the stride between a chunk's lanes, written) of each operand the lanes walk (for MM and the
    reductions its sources, along depth or the row; for the rest every operand along the row): a chunk takes as long
    as its slowest operand's banks need (`lane_conflict`)."""
    tree = int(math.log2(lanes))
    active = depth if func is VFunc.MM else cols
    per_chunk = max((lane_conflict(b, st, lanes, matrix_lanes or lanes, w, active) for b, st, w in operands),
                    default=1)
    if func is VFunc.MM:
        return rows * cols * math.ceil(depth / lanes) * per_chunk + tree + REDUCE_START
    chunks = rows * math.ceil(cols / lanes)
    if func in REDUCTIONS:
        return chunks * per_chunk + tree + REDUCE_START
    if func in DIVIDER_FUNCS:
        if chunks == 0:
            return UNIT_START
        return UNIT_START + DIVIDER_CYCLES * math.ceil(chunks / DIVIDER_GROUPS) + min(chunks, DIVIDER_GROUPS) - 1
    if func in TRANSCENDENTAL_FUNCS:
        from ...hw.transcendental_program import cycles_per_element
        return UNIT_START + math.ceil(chunks * cycles_per_element(int(func)) / TRANSCENDENTAL_GROUPS)
    return chunks * per_chunk + START

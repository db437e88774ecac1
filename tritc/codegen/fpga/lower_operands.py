"""Operands seen as rows of an output: broadcasting strides, per-row offsets, runs of rows that step evenly, and
the LOAD of a run into VEC (or ACT for booleans), or nothing when the previous node left the data in VEC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...ir.types import DType
from .isa import Buf
from .lower_ctx import DTensor, LowerCtx, View

# ---- operands seen as rows of an output -------------------------------------------------------------------

def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides of a contiguous tensor of `shape` broadcast (numpy's rules) to `out_shape`: 0 on the
    dims it is repeated along."""
    own = DTensor(0, tuple(shape), DType.F32).strides
    pad = len(out_shape) - len(shape)
    out = []
    for i in range(len(out_shape)):
        j = i - pad
        out.append(0 if j < 0 or shape[j] == 1 else own[j])
    return out


def row_offsets(row_shape: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """The element offset of each row (row-major over `row_shape`) given the strides of those dims."""
    if not row_shape:
        return np.zeros(1, np.int64)
    grid = np.indices(tuple(row_shape), dtype=np.int64).reshape(len(row_shape), -1)
    return (np.asarray(strides, np.int64)[:, None] * grid).sum(axis=0)


@dataclass(frozen=True, eq=False)
class RowOperand:
    """A DRAM tensor read as the rows x cols of an output: row r starts at element offs[r], columns step by cs
    (1, or 0 when it is broadcast along them). Booleans go to ACT (one byte each), the rest to VEC."""

    t: DTensor
    offs: np.ndarray
    cs: int

    @property
    def buf(self) -> Buf:
        return Buf.ACT if self.t.itemsize == 1 else Buf.VEC

    @property
    def invariant(self) -> bool:
        return bool((self.offs == self.offs[0]).all())

    def step(self, r0: int, n: int) -> int:
        return int(self.offs[r0 + 1] - self.offs[r0]) if n > 1 else 0


def row_operand(t: DTensor, out_shape: Sequence[int]) -> RowOperand:
    """`t` broadcast to `out_shape`, seen as rows over its leading dims and columns over its last."""
    st = broadcast_strides(t.shape, out_shape)
    if not out_shape:
        return RowOperand(t, np.zeros(1, np.int64), 0)
    return RowOperand(t, row_offsets(out_shape[:-1], st[:-1]), 1 if st[-1] else 0)


def split_runs(operands: Sequence[RowOperand], r0: int, n: int) -> list[tuple[int, int]]:
    """[r0, r0 + n) cut into (start, count) runs over which every operand's row offsets step evenly."""
    runs: list[tuple[int, int]] = []
    a = r0
    while a < r0 + n:
        b = a + 1
        steps = [None] * len(operands)
        while b < r0 + n:
            ok = True
            for i, op in enumerate(operands):
                d = int(op.offs[b] - op.offs[b - 1])
                if steps[i] is None:
                    steps[i] = d
                elif steps[i] != d:
                    ok = False
                    break
            if not ok:
                break
            b += 1
        runs.append((a, b - a))
        a = b
    return runs


def load_run(ctx: LowerCtx, op: RowOperand, area: int, row: int, r0: int, n: int, c0: int, cn: int) -> View:
    """Load rows r0..r0+n (one even run) and columns c0..c0+cn of `op` into its area (laid out [rows, cn] from
    `area`, this run at row `row`); the vector view of the run."""
    e = op.t.itemsize
    step = op.step(r0, n)
    base = (int(op.offs[r0]) + c0 * op.cs) * e
    on_chip = ctx.resident_at(op.t, base)
    if on_chip is not None:        # the previous node left it in VEC
        return View(Buf.VEC, on_chip, step, op.cs)
    cols = cn if op.cs else 1
    width = cn if op.cs else 1
    addr = area + row * width
    rows = n if step else 1
    ctx.load(op.buf, addr, op.t, base, rows, cols, step * e, e, width)
    return View(op.buf, addr, width if step else 0, op.cs)

"""Co-simulation (docs/HW.md, "Co-simulation"): the RTL core (RtlDevice) against the Simulator, stream by stream.
Both start from the same DRAM image and must end every stream (at FINISH) with the same DRAM, bit for bit; their
cycle counts are put side by side.

CosimDevice is a Device that drives both: a model run on it (FpgaModel(device=CosimDevice(...))) co-simulates every
stream it runs, with the host regions between them computed from the Simulator's results. A stream the RTL core
cannot run (a VOP of a function its vector engine has no unit for yet, EXP, SIN, COS, TANH, ERF; or an engine the
core was built without) runs on the Simulator alone and is reported as skipped, with the RTL's one-line reason; the
RTL's DRAM is then brought back to the Simulator's, so the next stream starts from the same image again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codegen.fpga.config import FpgaConfig
from ..codegen.fpga.isa import Instr
from ..errors import VerificationError
from .fpga import Simulator, checked_stream
from .rtl import RtlDevice, RtlUnsupportedError

__all__ = ["CosimDevice", "CosimMismatchError", "StreamReport", "first_difference", "format_reports"]

CHUNK = 1 << 26   # bytes compared at a time: a preset's 4 GiB of DRAM without a 4 GiB temporary


class CosimMismatchError(VerificationError):
    """The RTL core and the Simulator ended a stream with different DRAM contents."""


@dataclass
class StreamReport:
    label: str
    instructions: int
    sim: dict[str, Any]
    rtl: dict[str, Any] | None = None      # None: the RTL did not run it (`skipped` says why)
    skipped: str | None = None
    mismatch: str | None = None            # the first differing byte, when the DRAMs differ


def first_difference(want: np.ndarray, got: np.ndarray, regions: Sequence[tuple[int, int, str]] = ()) -> str | None:
    """None if the two DRAMs hold the same bytes; else where they first differ (the named region `[lo, hi)` holding
    that address, if any), the two bytes, and how many differ."""
    n = min(want.size, got.size)
    count, first = 0, -1
    for lo in range(0, n, CHUNK):
        diff = np.flatnonzero(want[lo:lo + CHUNK] != got[lo:lo + CHUNK])
        if diff.size and first < 0:
            first = lo + int(diff[0])
        count += diff.size
    if first < 0:
        return None
    inside = [f" in {name} (byte {first - lo} of its {hi - lo})" for lo, hi, name in regions if lo <= first < hi]
    return (f"DRAM byte {first:#x}{inside[0] if inside else ''} differs: Simulator {int(want[first]):#04x}, RTL "
            f"{int(got[first]):#04x} ({count} byte{'s' if count != 1 else ''} differ)")


class CosimDevice:
    """A Device over a Simulator and an RtlDevice of the same config and DRAM size. write: into both; read: the
    Simulator's (equal to the RTL's after every compared run); run: the Simulator's stats, with a StreamReport per
    run in `reports`. `regions`: named DRAM ranges `(lo, hi, name)` for the mismatch message. A mismatch raises
    CosimMismatchError at once (the streams after it would only repeat it)."""

    def __init__(self, config: FpgaConfig | str, *, dram_bytes: int | None = None,
                 regions: Sequence[tuple[int, int, str]] = (), max_cycles: int | None = None, **rtl_options):
        self.sim = Simulator(config, dram_bytes=dram_bytes)
        self.rtl = RtlDevice(self.sim.config, dram_bytes=self.sim.dram.size,
                             **({"max_cycles": max_cycles} if max_cycles else {}), **rtl_options)
        self.config = self.sim.config
        self.regions = list(regions)
        self.reports: list[StreamReport] = []
        self.stats: dict[str, Any] = {}
        self._skip: str | None = None
        self._count = 0
        self._written: list[tuple[int, int]] = []
        self.next_label: str | None = None     # the next run's name in the report (default: "stream <n>")

    def write(self, addr: int, data: Any) -> None:
        self.sim.write(addr, data)
        self.rtl.write(addr, data)

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        return self.sim.read(addr, nbytes)

    def load_stream(self, stream: Sequence[Instr] | bytes) -> None:
        self.sim.load_stream(stream)
        instrs, views = checked_stream(stream, self.config, self.sim.dram.size)
        self._count = len(instrs)
        # the DRAM bytes the stream may write: what a skipped stream changes on the Simulator alone
        self._written = [(v.lo, v.hi + 1) for vs in views for v in vs if v.mem is None and v.write and not v.empty]
        try:
            self.rtl.load_stream(stream)
            self._skip = None
        except RtlUnsupportedError as e:
            self._skip = f"not supported by this RTL core (instruction {e.index} is a {e.op.name})"

    def run(self) -> dict[str, Any]:
        label, self.next_label = self.next_label or f"stream {len(self.reports)}", None
        self.stats = self.sim.run()
        report = StreamReport(label, self._count, self.stats)
        self.reports.append(report)
        if self._skip is None:
            try:
                report.rtl = self.rtl.run()
            except RtlUnsupportedError as e:      # the core stopped at a VOP it has no unit for
                self._skip = f"not supported by the RTL core yet: {e}"
        if self._skip is not None:
            report.skipped = self._skip
            for lo, hi in self._written:           # the next stream starts from the same image again
                self.rtl.dram[lo:hi] = self.sim.dram[lo:hi]
            return self.stats
        report.mismatch = first_difference(self.sim.dram, self.rtl.dram, self.regions)
        if report.mismatch:
            raise CosimMismatchError(f"co-simulation: {label} ({self._count} instructions) ended with different DRAM "
                                     f"on the RTL core: {report.mismatch}")
        return self.stats


def format_reports(reports: Sequence[StreamReport]) -> str:
    """The two devices side by side, a line per stream: cycles, their ratio, DRAM bytes, the verdict."""
    rows = [("stream", "instrs", "Simulator cycles", "RTL cycles", "RTL / Sim", "DRAM read / written", "DRAM at FINISH")]
    for r in reports:
        sim = f"{r.sim['cycles']:,}"
        moved = f"{r.sim['dram_read_bytes']:,} / {r.sim['dram_write_bytes']:,}"
        if r.rtl is None:
            rows.append((r.label, str(r.instructions), sim, "-", "-", moved, str(r.skipped)))
            continue
        ratio = f"{r.rtl['cycles'] / r.sim['cycles']:.2f}" if r.sim["cycles"] else "-"
        rows.append((r.label, str(r.instructions), sim, f"{r.rtl['cycles']:,}", ratio, moved,
                     "identical" if r.mismatch is None else f"DIFFERENT: {r.mismatch}"))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]) - 1)]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] + "\n" for row in rows)

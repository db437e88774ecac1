"""The ternary report: what fold-ternary did to each linear or conv layer, why, and what it cost in accuracy.

Per layer: name, shape, mode, whether the fold was exact, scale granularity, fraction of zero
trits, relative error of the folded weight and of the layer's output on a random input, and the
weight's bytes before (float32) and after (2 bits per trit plus float32 scales).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..ir.ternary import TernaryWeight

PROBE_ROWS = 16  # rows of the random input the output error is measured on
PROBE_SEED = 0


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    mode: str  # the fold mode used, or "float" when the layer was left alone
    exact: bool
    granularity: str
    zero_fraction: float | None
    weight_rel_error: float | None
    output_rel_error: float | None
    bytes_before: int
    bytes_after: int
    source: str = "float"
    note: str = ""  # why the layer was folded (the scale found) or left in float
    op: str = "matmul"  # the layer's op: matmul or conv (whose shape is its im2col matrix's)

    @property
    def folded(self) -> bool:
        return self.mode != "float"


@dataclass
class TernaryReport:
    mode: str = ""
    layers: list[LayerReport] = field(default_factory=list)

    def folded(self) -> list[LayerReport]:
        return [lay for lay in self.layers if lay.folded]

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "layers": [asdict(lay) for lay in self.layers],
                           "summary": self.summary()}, indent=2)

    def summary(self) -> dict[str, float | int]:
        before = sum(lay.bytes_before for lay in self.layers)
        after = sum(lay.bytes_after for lay in self.layers)
        return {"layers": len(self.layers), "folded": len(self.folded()),
                "exact": sum(1 for lay in self.layers if lay.exact), "bytes_before": before, "bytes_after": after}

    def table(self) -> str:
        head = ("layer", "shape", "mode", "exact", "scale", "zeros", "w err", "out err", "bytes", "-> bytes", "note")
        rows = [head]
        for lay in self.layers:
            rows.append((lay.name, f"{lay.shape[0]}x{lay.shape[1]}", lay.mode, "yes" if lay.exact else "no",
                         lay.granularity or "-", _pct(lay.zero_fraction), _sci(lay.weight_rel_error),
                         _sci(lay.output_rel_error), str(lay.bytes_before), str(lay.bytes_after), lay.note))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        s = self.summary()
        lines.append(f"{s['folded']} of {s['layers']} linear layers ternary ({s['exact']} exact); "
                     f"weights {s['bytes_before']} -> {s['bytes_after']} bytes")
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a.astype(np.float64)))
    diff = float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))
    return diff / denom if denom > 0 else diff


def measure(name: str, w: np.ndarray, tern: TernaryWeight | None, mode: str, *, exact: bool, note: str,
            source: str = "float", op: str = "matmul") -> LayerReport:
    """The report line of one layer: errors are measured against the float weight `w`."""
    k, n = w.shape
    before = w.size * 4
    if tern is None:
        return LayerReport(name, (k, n), "float", False, "", None, None, None, before, before, source, note, op)
    if exact:  # the trits times the scales are W itself: both errors are 0 (no need to compare 2 GB of weights)
        weight_err = output_err = 0.0
    else:
        wq = tern.dequantize()
        x = np.random.default_rng(PROBE_SEED).standard_normal((PROBE_ROWS, k)).astype(np.float32)
        weight_err, output_err = _rel(w, wq), _rel(x @ w, x @ wq)
    return LayerReport(name, (k, n), mode, exact, tern.granularity + (f"/{tern.group_size}" if tern.group_size else ""),
                       float(np.count_nonzero(tern.trits == 0)) / max(tern.trits.size, 1), weight_err, output_err, before,
                       tern.packed_bytes(), source, note, op)

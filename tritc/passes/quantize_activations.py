"""quantize-activations: float-activation ternary layers take int8 activations (the FPGA's matrix unit needs them).

    %y = ternary_matmul(%x, %w) {act = "float"} : f32[1,64]
    ->
    %y = ternary_matmul(%x, %w) {act = "int8", act_eps = 1e-05, act_max = 127.0, act_scale = "div"} : f32[1,64]

The accelerator's matrix unit multiplies int8 activations by trits (docs/ISA.md); a layer whose activations are
float (what fold-ternary makes of a float model) has to be quantised per token first, BitNet b1.58's absmax
quantisation with the defaults of docs/TERNARY.md. This changes numerics, so it is a pass of the fpga pipeline,
visible in the IR, not something the lowering does behind the interpreter's back: the interpreter of the final IR
computes what the device computes. `tritc compile --target fpga --fpga-float-act host` leaves these layers float
(they then run on the host, reported as such). ternary_conv is quantised the same way (one factor per image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph
from .pass_manager import Pass, PassResult, register

QUANTIZED_OPS = ("ternary_matmul", "ternary_conv")


def int8_act_attrs(act_max: float, act_eps: float) -> dict[str, object]:
    """The attributes of per-token absmax int8 activations (the `div` form), as float32 values the verifier takes."""
    return {"act": "int8", "act_max": float(np.float32(act_max)), "act_eps": float(np.float32(act_eps)),
            "act_scale": "div"}


@dataclass
class QuantizeReport:
    layers: list[str]

    def comment_lines(self) -> list[str]:
        if not self.layers:
            return []
        return [f"// quantize-activations: {len(self.layers)} float-activation ternary layer(s) now take int8 "
                f"activations (per-token absmax, act_max 127): {', '.join(self.layers)}"]


@register
@dataclass(frozen=True)
class QuantizeActivations(Pass):
    name = "quantize-activations"
    summary = "float-activation ternary layers -> int8 activations (per-token absmax), as the FPGA matrix unit needs"

    act_max: float = 127.0
    act_eps: float = 1e-5

    def run(self, graph: Graph) -> PassResult:
        changed = []
        for node in graph:
            if node.op in QUANTIZED_OPS and node.attrs.get("act", "float") == "float":
                node.attrs.update(int8_act_attrs(self.act_max, self.act_eps))
                changed.append(node.describe())
        return PassResult(bool(changed), QuantizeReport(changed))

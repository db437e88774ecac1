"""fold-radix3: float linear layers (what fold-ternary left float: an LM head) -> balanced-ternary digit planes.

    %y = matmul(%x, %w) : f32[1,128256]            (w: f32[2560,128256], not ternary)
    ->
    %x5 = concat(%x, %x, %x, %x, %x) {axis = -1} : f32[1,12800]
    %y = ternary_matmul(%x5, %w.r3) {act = "int8", ...} : f32[1,128256]
                                                   (w.r3: t2[12800,128256] {scale = "per_group", group = 2560})

The accelerator's matrix unit multiplies int8 activations by trits only (docs/ISA.md). A weight that is not
ternary is quantised per output channel to integers q in [-121, 121] (scale s_n = max|W[:, n]| / 121, round half
to even), and q is written in balanced ternary, q = sum_{i<5} 3^i d_i with digits d_i in {-1, 0, 1}: five ternary
planes. Stacked along K with one scale group per plane (s_n * 3^i), they are one per-group ternary_matmul of the
activations repeated five times; its int8 quantisation of the repeated row is that of the row itself. So the layer
runs on the matrix unit with about 7.9-bit weights (243 levels) at 5 x 1.625 = 8.1 bits per weight of DRAM traffic,
no multiplier, and the interpreter of the rewritten IR computes what the device computes. The rewrite changes
numerics (as any int8 quantisation would); the report gives each layer's largest weight error relative to its
largest weight. `tritc compile --target fpga --fpga-float-layers host` keeps these layers float, on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph
from ..ir.ternary import TernaryWeight
from ..ir.types import DType, TensorType
from .fold_ternary import find_linears
from .pass_manager import Pass, PassResult, register
from .quantize_activations import int8_act_attrs

DIGITS = 5
LEVELS = (3 ** DIGITS - 1) // 2  # 121: the largest integer five balanced-ternary digits write


def radix3_planes(w: np.ndarray) -> TernaryWeight:
    """W[K, N] (float32) as five stacked balanced-ternary planes [5K, N] with per-plane, per-channel scales."""
    w = np.asarray(w, dtype=np.float32)
    k, n = w.shape
    peak = np.max(np.abs(w), axis=0)
    scale = np.where(peak > 0, peak / np.float32(LEVELS), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale), -LEVELS, LEVELS).astype(np.int32)
    planes = np.empty((DIGITS, k, n), np.int8)
    r = q
    for i in range(DIGITS):
        d = (r + 1) % 3 - 1             # the balanced digit: r = 3 * r' + d, d in {-1, 0, 1}
        planes[i] = d
        r = (r - d) // 3
    assert not r.any(), "five balanced-ternary digits hold [-121, 121]"
    scales = (scale[None, :] * (np.float32(3) ** np.arange(DIGITS, dtype=np.float32))[:, None]).astype(np.float32)
    return TernaryWeight(planes.reshape(DIGITS * k, n), scales, group_size=k)


@dataclass
class Radix3Report:
    layers: list[tuple[str, float]] = field(default_factory=list)  # (name, largest |W - W'| / largest |W|)

    def comment_lines(self) -> list[str]:
        if not self.layers:
            return []
        return [f"// fold-radix3: {len(self.layers)} float linear layer(s) as {DIGITS} balanced-ternary planes "
                f"(per-channel, {2 * LEVELS + 1} levels)"] + \
               [f"//   {name}: largest weight error {err:.2e} of the largest weight" for name, err in self.layers]


@register
@dataclass(frozen=True)
class FoldRadix3(Pass):
    name = "fold-radix3"
    summary = "float linear layers -> five balanced-ternary planes in one per-group ternary_matmul (FPGA)"

    act_max: float = 127.0
    act_eps: float = 1e-5

    def run(self, graph: Graph) -> PassResult:
        report = Radix3Report()
        for lin in find_linears(graph):
            node = lin.node
            x = node.inputs[0]
            if node.op != "matmul" or lin.source != "float" or x is None or x.type.dtype is not DType.F32 \
                    or x.type.shape is None or not x.type.shape:
                continue
            if not np.isfinite(lin.weight).all():  # NaN or Inf has no per-channel scale: the layer stays float, on the host
                continue
            tern = radix3_planes(lin.weight)
            peak = float(np.max(np.abs(lin.weight))) or 1.0
            err = float(np.max(np.abs(tern.dequantize().reshape(DIGITS, *lin.weight.shape).sum(0) - lin.weight))) / peak
            key = lin.name + ".r3"
            while key in graph.weights:
                key += "_"
            wv = graph.add_weight(key, tern, TensorType(DType.T2, tern.shape), name=key,
                                  attrs={"scale": "per_group", "group": tern.group_size}, before=node)
            shape = list(x.type.shape)
            last = shape[-1]
            shape[-1] = DIGITS * last if isinstance(last, int) else f"{DIGITS}*{last}"
            x5 = graph.add("concat", [x] * DIGITS, [TensorType(x.type.dtype, tuple(shape))], {"axis": -1},
                           node.name, before=node)
            new = graph.add("ternary_matmul", [x5.outputs[0], wv], [v.type for v in node.outputs],
                            int8_act_attrs(self.act_max, self.act_eps), node.name, before=node)
            graph.replace_node(node, new.outputs)
            report.layers.append((lin.name, err))
        if report.layers:
            graph.prune_weights()
        return PassResult(bool(report.layers), report)

"""tile-attention: choose the online-softmax tiling of every fused_attention node and size its scratch result.

    %y, %s = fused_attention(...) {...} : f32[...], f32[0]
    ->  %y, %s = fused_attention(...) {kv_block = 32, q_block = 64, scratch_size = 181248, tasks = 8, ...} : f32[...], f32[181248]

q_block query rows and kv_block keys per step, from the cache sizes (a block of K or V rows in half of L1, a unit's
working rows in half of L2), overridable; `tasks` work items (4 per thread) each get a slot of the scratch, plus room
for split-K partial results. The memory plan then places the scratch in the arena like any other value, so the
kernel's working memory is part of the plan and does not grow with the sequence. docs/ATTENTION.md has the details.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..ir.graph import Graph
from ..ir.ops.attention_fused import scratch_floats
from ..ir.types import DType, TensorType
from .pass_manager import Pass, register

TASKS_PER_THREAD = 4  # work items are claimed dynamically: a few per thread even out uneven cores
FALLBACK_L1, FALLBACK_L2 = 32 << 10, 512 << 10


def host_caches() -> tuple[int, int]:
    """(L1 data, L2) bytes of this machine's first CPU, from sysfs; common sizes where it does not say."""
    l1, l2 = FALLBACK_L1, FALLBACK_L2
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in root.glob("index*"):
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            size = _bytes((index / "size").read_text().strip())
            if level == "1" and kind in ("Data", "Unified"):
                l1 = size
            elif level == "2":
                l2 = size
    except (OSError, ValueError):
        pass
    return l1, l2


def _bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def _pow2_in(x: float, lo: int, hi: int) -> int:
    return 1 << max(int(math.log2(lo)), min(int(math.log2(hi)), int(math.log2(max(x, 1)))))


def choose_tiles(d: int, dv: int, l1: int, l2: int) -> tuple[int, int]:
    """(q_block, kv_block): kv_block keys of K (then of V) in L1, so each query row of a unit reads them from L1;
    q_block rows of Q, scores and running sums in half of L2. Powers of two: kv_block 16..128, q_block 4..64."""
    kv = _pow2_in(l1 / (4 * max(d, dv)), 16, 128)
    q = _pow2_in(l2 / 2 / (4 * (d + dv + kv)), 4, 64)
    return q, kv


@register
@dataclass(frozen=True)
class TileAttention(Pass):
    name = "tile-attention"
    summary = "choose fused_attention's query / key blocks from the cache sizes and size its scratch"
    q_block: int = 0  # 0: from the cache sizes
    kv_block: int = 0
    l1: int = 0  # bytes; 0: this machine's
    l2: int = 0
    threads: int = 0  # the work items are 4 per thread; 0: this machine's CPUs
    split_k: bool = True  # room for split-K partials (decoding at long context uses every thread)

    def run(self, graph: Graph) -> bool:
        host_l1, host_l2 = host_caches() if not (self.l1 and self.l2) else (0, 0)
        l1, l2 = self.l1 or host_l1, self.l2 or host_l2
        tasks = TASKS_PER_THREAD * (self.threads or os.cpu_count() or 1)
        changed = False
        for node in graph:
            if node.op != "fused_attention" or node.inputs[0] is None or node.inputs[2] is None:
                continue
            q, v = node.inputs[0].type.shape, node.inputs[2].type.shape
            if q is None or v is None or not isinstance(q[3], int) or not isinstance(v[3], int):
                continue
            q_block, kv_block = choose_tiles(q[3], v[3], l1, l2)
            q_block, kv_block = self.q_block or q_block, -(-(self.kv_block or kv_block) // 16) * 16
            size = scratch_floats(q_block, kv_block, q[3], v[3], tasks, self.split_k)
            attrs = {"q_block": q_block, "kv_block": kv_block, "tasks": tasks, "scratch_size": size}
            if all(node.attrs.get(k) == v for k, v in attrs.items()):
                continue
            node.attrs.update(attrs)
            node.outputs[1].type = TensorType(DType.F32, (size,))
            changed = True
        return changed


__all__ = ["TileAttention", "choose_tiles", "host_caches"]

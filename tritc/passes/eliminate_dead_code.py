"""eliminate-dead-code: erase nodes whose results reach no graph output, and unused weights.

    %a = relu(%x) : f32[4]     // %a is never used
    (nothing)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph
from .pass_manager import Pass, register


@register
@dataclass(frozen=True)
class EliminateDeadCode(Pass):
    name = "eliminate-dead-code"
    summary = "remove nodes whose results are never used, and weights no node references"

    def run(self, graph: Graph) -> bool:
        live: set[int] = {id(v) for v in graph.outputs}
        dead = []
        # Walk backwards once: a node is live if any result is live; its operands then are too.
        node = graph.last
        while node is not None:
            if any(id(v) in live for v in node.outputs):
                live.update(id(v) for v in node.inputs if v is not None)
            else:
                dead.append(node)
            node = node.prev
        for n in dead:  # already in reverse order: users before producers
            graph.erase(n)
        pruned = graph.prune_weights()
        return bool(dead) or pruned > 0

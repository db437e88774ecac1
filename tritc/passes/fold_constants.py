"""fold-constants: evaluate, at compile time, every node whose operands are all constants.

    %s = shape(%x) : i64[2]              (x: f32[4,8])
    %n = gather(%s, %c0) : i64[]    ->   %n = constant 4 : i64[]

Folding runs the node in the reference interpreter, so folded values mean exactly what the
node meant. `shape` and `size` of a value whose type is static fold even though the value is not
a constant. Results over `max_bytes` are left to run time; a result whose declared size is
beyond `limit_bytes` is refused as a folding bomb (ResourceLimitError) before anything is
allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.interpreter import Interpreter
from ..ir.types import DType, TensorType
from ..limits import DEFAULT_LIMITS, Limits
from .eliminate_common_subexpressions import IMPURE
from .pass_manager import Pass, register

INLINE_MAX_ELEMENTS = 8
NEVER_FOLD = IMPURE | {"weight", "constant"}


def make_constant(graph: Graph, array: np.ndarray, like: Value, before: Node, key_hint: str | None = None) -> Value:
    """A constant (inline if small, else a new weight keyed `key_hint` or like the value) holding
    `array`, placed before `before`."""
    t = TensorType(DType.from_numpy(array.dtype), tuple(array.shape))
    if array.size <= INLINE_MAX_ELEMENTS:
        node = graph.make_node("constant", [], [t], {"value": array}, None, [like.name + ".c"])
    else:
        key = key_hint or like.name
        while key in graph.weights:
            key += "_"
        graph.weights[key] = array
        node = graph.make_node("weight", [], [t], {"ref": key}, None, [like.name + ".c"])
    graph.insert_before(before, node)
    return node.outputs[0]


@register
@dataclass(frozen=True)
class FoldConstants(Pass):
    name = "fold-constants"
    summary = "evaluate nodes with constant operands (and shape/size of statically shaped values)"
    max_bytes: int = 64 * 2**20
    limit_bytes: int = DEFAULT_LIMITS.max_fold_bytes  # the driver sets it from Limits.max_fold_bytes

    def run(self, graph: Graph) -> bool:
        interp = Interpreter(graph, check_types=True)
        changed = False
        for node in graph.nodes:
            if node.op in NEVER_FOLD or node.graph is None:
                continue
            if node.op in ("shape", "size") and node.inputs[0] is not None and node.inputs[0].type.is_static:
                results = [self._shape_of(node)]
            else:
                consts = [graph.const_value(v) if v is not None else None for v in node.inputs]
                if any(v is not None and c is None for v, c in zip(node.inputs, consts)):
                    continue
                if any(c is not None and not isinstance(c, np.ndarray) for c in consts):
                    continue  # e.g. ternary weights: folding would undo them
                if not self._within_budget(node):
                    continue
                args = list(consts)
                with np.errstate(all="ignore"):
                    results = interp.run_node(node, args)
            # A weight computed from one weight (a transposed Gemm weight, say) keeps that weight's name,
            # so layer patterns such as --ternary-include 'head*' still find it.
            refs = [v.producer.attrs["ref"] for v in node.inputs if v is not None and v.producer is not None
                    and v.producer.op == "weight"]
            hint = f"{refs[0]}.{node.op}" if len(refs) == 1 and len(node.outputs) == 1 else None
            new = [make_constant(graph, np.asarray(r), v, node, hint) for v, r in zip(node.outputs, results)]
            graph.replace_node(node, new)
            changed = True
        if changed:
            graph.prune_weights()
        return changed

    def _shape_of(self, node: Node) -> np.ndarray:
        shape = node.inputs[0].type.shape  # type: ignore[union-attr]
        if node.op == "size":
            return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
        rank = len(shape)
        start = node.attrs.get("start", 0)
        end = node.attrs.get("end", rank)
        start = min(max(start + rank if start < 0 else start, 0), rank)
        end = min(max(end + rank if end < 0 else end, 0), rank)
        return np.array(shape[start:end], dtype=np.int64)

    def _within_budget(self, node: Node) -> bool:
        total = 0
        for v in node.outputs:
            n = v.type.numel()
            if n is None:
                return True  # unknown until computed; constant inputs are bounded by their own budget
            total += n * v.type.dtype.itemsize
        if total > self.limit_bytes:
            raise Limits(max_fold_bytes=self.limit_bytes).exceeded("max_fold_bytes", total,
                                                                  f"node {node.describe()} would fold to")
        return total <= self.max_bytes

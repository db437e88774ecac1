"""fuse-elementwise: merge chains of elementwise ops into one `fused_elementwise` node.

    %t = mul(%a, %b) : f32[n,64]; %y = relu(%t) : f32[n,64]
    %y = fused_elementwise(%a, %b) {body = "graph @fused(...) { %t = mul(..) .. %y = relu(%t) .. }"} : f32[n,64]

A producer joins a group when it is elementwise, every user of its result is in that group, it
is not a graph output, and it has the group's result shape (so fusing never recomputes anything
and no value escapes the group but the root's). The fused node takes the root's place.
Small inline constants are copied into the body so backends see them as immediates.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import dims
from ..ir.graph import Graph, Node, Value
from ..ir.ops import OPS
from ..ir.text import format_node, format_type
from ..ir.types import TensorType
from .pass_manager import Pass, register

# Ops that apply independently to each element (with numpy broadcasting of their operands).
ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "pow", "mod", "neg", "abs", "sign", "reciprocal", "sqrt", "exp", "log",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid",
    "erf", "floor", "ceil", "round", "is_nan", "is_inf", "max", "min", "sum", "mean", "equal", "less", "greater",
    "less_or_equal", "greater_or_equal", "and", "or", "xor", "not", "where", "cast", "clip", "relu", "leaky_relu",
    "elu", "selu", "celu", "gelu", "hard_sigmoid", "hard_swish", "softplus", "softsign", "mish", "prelu",
    "thresholded_relu", "shrink", "swish", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "bit_shift",
})
INLINE_CONSTANT_MAX = 1  # scalars only: the body is evaluated per element


def is_elementwise(node: Node) -> bool:
    return node.op in ELEMENTWISE and node.op in OPS and len(node.outputs) == 1


def _same_shape(a: TensorType, b: TensorType) -> bool:
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    return all(dims.equal(x, y) is True for x, y in zip(a.shape, b.shape))


def _erased_type(t: TensorType) -> str:
    return format_type(TensorType(t.dtype, None))


def build_body(group: list[Node], inputs: list[Value], inline: list[Node], root: Node) -> str:
    """The body graph text: one line, operands renamed %in0.., unknown-rank types."""
    names: dict[int, str] = {id(v): f"in{i}" for i, v in enumerate(inputs)}
    lines = []
    for c in inline:
        names[id(c.outputs[0])] = f"c{len(lines)}"
        text = format_node(_renamed(c, names, keep_shape=True))
        lines.append(text)
    for k, n in enumerate(group):
        for v in n.outputs:
            names[id(v)] = f"t{k}"
        lines.append(format_node(_renamed(n, names)))
    args = ", ".join(f"%{names[id(v)]}: {_erased_type(v.type)}" for v in inputs)
    out = root.outputs[0]
    header = f"graph @fused({args}) -> (%{names[id(out)]}: {_erased_type(out.type)})"
    return header + " { " + "  ".join(lines) + f"  return %{names[id(out)]} }}"


def _renamed(node: Node, names: dict[int, str], keep_shape: bool = False) -> Node:
    ins = [None if v is None else Value(names[id(v)], v.type) for v in node.inputs]
    outs = [Value(names[id(v)], v.type if keep_shape else TensorType(v.type.dtype, None)) for v in node.outputs]
    return Node(node.op, ins, outs, node.attrs, None)


@register
@dataclass(frozen=True)
class FuseElementwise(Pass):
    name = "fuse-elementwise"
    summary = "merge chains of elementwise ops into fused_elementwise nodes (one loop each)"
    min_ops: int = 2

    def run(self, graph: Graph) -> bool:
        outputs = {id(v) for v in graph.outputs}
        root_of: dict[int, Node] = {}
        # Walk backwards so each consumer's group is known before its producers are considered.
        members: dict[int, list[Node]] = {}
        node = graph.last
        while node is not None:
            if is_elementwise(node):
                out = node.outputs[0]
                users = out.users
                roots = {id(root_of[id(u)]) for u in users if id(u) in root_of}
                root = None
                if (id(out) not in outputs and users and len(roots) == 1 and all(id(u) in root_of for u in users)):
                    candidate = root_of[id(users[0])]
                    if _same_shape(out.type, candidate.outputs[0].type):
                        root = candidate
                if root is None:
                    root = node
                root_of[id(node)] = root
                members.setdefault(id(root), []).append(node)
            node = node.prev
        changed = False
        for group in members.values():
            group.reverse()  # topological order, root last
            if len(group) < self.min_ops:
                continue
            self._fuse(graph, group)
            changed = True
        return changed

    def _fuse(self, graph: Graph, group: list[Node]) -> None:
        root = group[-1]
        inside = {id(v) for n in group for v in n.outputs}
        inputs: list[Value] = []
        inline: list[Node] = []
        seen: set[int] = set()
        for n in group:
            for v in n.inputs:
                if v is None or id(v) in inside or id(v) in seen:
                    continue
                seen.add(id(v))
                p = v.producer
                numel = v.type.numel()
                if p is not None and p.op == "constant" and numel is not None and numel <= INLINE_CONSTANT_MAX:
                    inline.append(p)
                else:
                    inputs.append(v)
        body = build_body(group, inputs, inline, root)
        fused = graph.add("fused_elementwise", inputs, [root.outputs[0].type], {"body": body}, root.name, before=root,
                          output_names=[root.outputs[0].name + ".fused"])
        out = root.outputs[0]
        graph.replace_all_uses(out, fused.outputs[0])
        for n in reversed(group):
            graph.erase(n)


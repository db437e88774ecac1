"""fuse-bitlinear: BitNet's activation quantisation in front of a ternary matmul or conv -> int8 mode.

    %s = div(127, clip(reduce_max(abs(%x), [-1]), 1e-5)); %q = clip(round(mul(%x, %s)), -128, 127)
    %y = ternary_matmul(div(%q, %s), %w)                 ->   %y = ternary_matmul(%x, %w) {act = "int8"}

For ternary_conv the absmax is per image (reduce_max over every axis but the batch axis), and only the
dequantise-then-conv form is recognised.

Both forms torch.onnx exports are recognised: dequantise-then-matmul (above) and
matmul-then-dequantise (``div(ternary_matmul(%q, %w), %s)``). Operand order of commutative ops,
`clip` or `max`/`min` for the clamps, and `max`/`min` written as clip are all accepted. The int8
semantics (rounding half to even, clip to [-128, 127], int32 accumulation) are defined in
tritc/ir/ops/ternary.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Node, Value
from .pass_manager import Pass, register


def _scalar(graph: Graph, v: Value | None) -> float | None:
    c = graph.const_value(v)
    if isinstance(c, np.ndarray) and c.size == 1:
        return float(c.reshape(-1)[0])
    return None


def _prod(v: Value | None, *ops: str) -> Node | None:
    if v is None or v.producer is None or v.producer.op not in ops:
        return None
    return v.producer


def _clamp(graph: Graph, v: Value) -> tuple[Value, float | None, float | None] | None:
    """v = clamp(x, lo, hi) written as clip or as max/min with a constant: (x, lo, hi)."""
    n = _prod(v, "clip", "max", "min")
    if n is None:
        return None
    if n.op == "clip":
        lo = _scalar(graph, n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else None
        hi = _scalar(graph, n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
        if (len(n.inputs) > 1 and n.inputs[1] is not None and lo is None) or (len(n.inputs) > 2 and n.inputs[2] is not None and hi is None):
            return None
        return n.inputs[0], lo, hi  # type: ignore[return-value]
    if len(n.inputs) != 2:
        return None
    for i in (0, 1):
        k = _scalar(graph, n.inputs[1 - i])
        if k is not None:
            inner = n.inputs[i]
            # max(min(x, hi), lo) / min(max(x, lo), hi): peel the second clamp too.
            rest = _clamp(graph, inner) if inner is not None else None
            lo, hi = (k, None) if n.op == "max" else (None, k)
            if rest is not None and rest[1 if n.op == "min" else 2] is None and (rest[1] is not None or rest[2] is not None):
                x, lo2, hi2 = rest
                return x, lo if lo is not None else lo2, hi if hi is not None else hi2
            return inner, lo, hi  # type: ignore[return-value]
    return None


def _reduces_over(graph: Graph, n: Node, rank: int | None, over: str) -> bool:
    """Whether reduce_max node n keeps dims and reduces exactly the last axis (over="row": per token) or every
    axis but the first (over="image": one factor per batch element, what a conv's int8 mode takes)."""
    axes = graph.const_value(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else None
    if not isinstance(axes, np.ndarray) or rank is None or int(n.attrs.get("keepdims", 1)) != 1:
        return False
    got = sorted({int(a) + rank if int(a) < 0 else int(a) for a in axes.reshape(-1)})
    return got == ([rank - 1] if over == "row" else list(range(1, rank)))


def match_scale(graph: Graph, s: Value, over: str = "row") -> tuple[Value, float, float, str] | None:
    """s = act_max / clamp(max|x| over the last axis (over="image": all but the batch axis), min=eps), written as
    a division or as act_max * reciprocal(...): (x, act_max, eps, form) with form "div" or "mul_reciprocal"."""
    d = _prod(s, "div", "mul")
    if d is None or len(d.inputs) != 2:
        return None
    den: Value | None = None
    act_max: float | None = None
    form = "div"
    if d.op == "div":
        act_max, den = _scalar(graph, d.inputs[0]), d.inputs[1]
    else:
        for i in (0, 1):
            r = _prod(d.inputs[i], "reciprocal")
            k = _scalar(graph, d.inputs[1 - i])
            if r is not None and k is not None:
                act_max, den, form = k, r.inputs[0], "mul_reciprocal"
    if act_max is None or den is None:
        return None
    clamped = _clamp(graph, den)
    if clamped is None or clamped[1] is None or clamped[2] is not None:
        return None
    m, eps = clamped[0], clamped[1]
    r = _prod(m, "reduce_max")
    if r is None:
        return None
    a = _prod(r.inputs[0], "abs")
    if a is None or a.inputs[0] is None or not _reduces_over(graph, r, a.inputs[0].type.rank, over):
        return None
    return a.inputs[0], act_max, eps, form


def match_codes(graph: Graph, q: Value, over: str = "row") -> tuple[Value, Value, float, float, str] | None:
    """q = clip(round(x * s), -128, 127) (or round of the clip): (x, s, act_max, eps, scale form)."""
    inner: Value | None
    rnd = _prod(q, "round")
    if rnd is not None:
        clamped = _clamp(graph, rnd.inputs[0]) if rnd.inputs[0] is not None else None
        if clamped is None:
            return None
        inner, lo, hi = clamped
    else:
        clamped = _clamp(graph, q)
        if clamped is None:
            return None
        rnd = _prod(clamped[0], "round")
        if rnd is None:
            return None
        inner, lo, hi = rnd.inputs[0], clamped[1], clamped[2]
    if (lo, hi) != (-128.0, 127.0):
        return None
    m = _prod(inner, "mul")
    if m is None:
        return None
    for i in (0, 1):
        x, s = m.inputs[i], m.inputs[1 - i]
        if x is None or s is None:
            continue
        found = match_scale(graph, s, over)
        if found is not None and found[0] is x:
            return x, s, found[1], found[2], found[3]
    return None


@register
@dataclass(frozen=True)
class FuseBitlinear(Pass):
    name = "fuse-bitlinear"
    summary = "fold BitNet per-token int8 activation quantisation into ternary_matmul {act = int8}"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes:
            if node.graph is not graph or node.attrs.get("act", "float") != "float":
                continue
            if node.op == "ternary_matmul":
                changed |= self._dequant_first(graph, node, "row") or self._dequant_after(graph, node)
            elif node.op == "ternary_conv":  # a window mixes pixels: only a per-image factor is one rescale
                changed |= self._dequant_first(graph, node, "image")
        return changed

    def _fuse(self, graph: Graph, node: Node, codes: tuple, replace: Value) -> None:
        x, _, act_max, eps, form = codes
        attrs = {**node.attrs, "act": "int8", "act_max": float(np.float32(act_max)), "act_eps": float(np.float32(eps))}
        if form != "div":
            attrs["act_scale"] = form
        new = graph.add(node.op, [x] + node.inputs[1:], [replace.type], attrs, node.name, before=node)
        graph.replace_all_uses(replace, new.outputs[0])

    def _dequant_first(self, graph: Graph, node: Node, over: str) -> bool:
        d = _prod(node.inputs[0], "div")
        if d is None or d.inputs[0] is None:
            return False
        codes = match_codes(graph, d.inputs[0], over)
        if codes is None or codes[1] is not d.inputs[1]:
            return False
        self._fuse(graph, node, codes, node.outputs[0])
        graph.erase(node)
        return True

    def _dequant_after(self, graph: Graph, node: Node) -> bool:
        codes = match_codes(graph, node.inputs[0]) if node.inputs[0] is not None else None
        out = node.outputs[0]
        if codes is None or len(out.uses) != 1 or any(v is out for v in graph.outputs):
            return False
        user = out.uses[0][0]
        if user.op != "div" or user.inputs[0] is not out or user.inputs[1] is not codes[1] or len(node.inputs) > 2:
            return False
        self._fuse(graph, node, codes, user.outputs[0])
        graph.erase(user)
        graph.erase(node)
        return True

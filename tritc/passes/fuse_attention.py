"""fuse-attention: softmax(Q K^T * scale + mask) V, as the exporters write it, and the ONNX Attention op -> one
fused_attention node that reads each KV head once, absorbs the past concatenation and keeps masks small.

    %s = softmax(add(matmul(mul(%q, 0.5), mul(transpose(%k), 0.5)), where(%m, 0, -inf)))
    %y = matmul(where(is_nan(%s), 0, %s), %v)        ->  %y = fused_attention(%q, %k, %v, %m) {nan_to_zero = 1, ...}

What is recognised, and how the result differs from the unfused graph (only where a masked key's K or V is inf / NaN),
is in docs/ATTENTION.md. A softmax or Attention node left as it is gets a line in the report saying why: the pass
returns an AttentionReport, and `tritc dump --after fuse-attention` prints it as `//` comments above the IR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir import dims
from ..ir.graph import Graph, Node, Value
from ..ir.types import Dim, DType, TensorType
from .attention_patterns import (
    Miss,
    conjuncts,
    equal_given,
    is_causal_term,
    is_true,
    past_concat,
    peel_scale,
    producer,
    repeated_kv,
    same_dims,
    scalar,
    symbolic_values,
    untranspose_keys,
)
from .infer_shapes import infer_node_types
from .pass_manager import Pass, PassResult, register

# where(mask, 0, c) with c at most this is a boolean mask with mask_value c: a row with a true key then ignores its
# false keys exactly as the unfused softmax does (exp(logit + c - max) is 0 in f32 for logits below |c| / 2)
MASK_VALUE_LIMIT = -1e9


@dataclass(frozen=True)
class AttentionLine:
    """One attention candidate: the node it was found at, whether it fused, and what was made or why not."""

    node: str
    fused: bool
    detail: str


@dataclass
class AttentionReport:
    lines: list[AttentionLine] = field(default_factory=list)

    @property
    def fused(self) -> int:
        return sum(line.fused for line in self.lines)

    def comment_lines(self) -> list[str]:
        """The report as IR comments (the text format skips `//` lines); none for a graph with no candidate."""
        if not self.lines:
            return []
        head = f"// fuse-attention: {self.fused} of {len(self.lines)} attention candidates fused"
        return [head] + [f"//   {line.node}: {'fused: ' if line.fused else 'not fused: '}{line.detail}" for line in self.lines]

    def table(self) -> str:
        return "\n".join(self.comment_lines()) + "\n"


@dataclass(frozen=True)
class _Match:
    """What fused_attention needs, found around one softmax or Attention node."""

    q: Value
    k: Value
    v: Value
    past_k: Value | None
    past_v: Value | None
    mask: Value | None
    scale: float
    softcap: float
    causal: bool
    nan_to_zero: bool
    heads: int
    kv_heads: int
    y: Value  # the value the fused node's Y replaces
    presents: tuple[Value | None, Value | None]  # values its present_key / present_value replace
    anchor: Node  # the fused node goes right before this one
    mask_note: str
    mask_value: float = -math.inf
    merge_heads: bool = False  # y is 3-D [batch, queries, heads * dv] (the 3-D Attention op): Y goes back to that


@register
@dataclass(frozen=True)
class FuseAttention(Pass):
    name = "fuse-attention"
    summary = "softmax(Q K^T * scale + mask) V and the ONNX Attention op -> fused_attention"

    def run(self, graph: Graph) -> PassResult:
        report = AttentionReport()
        syms = symbolic_values(graph)
        changed = False
        for node in list(graph):
            if node.graph is not graph or node.op not in ("softmax", "attention"):
                continue
            found = match_decomposed(graph, syms, node) if node.op == "softmax" else match_attention_op(graph, syms, node)
            where = node.name or f"%{node.outputs[0].name}"
            if isinstance(found, Miss):
                report.lines.append(AttentionLine(where, False, found.reason))
                continue
            fused = _rewrite(graph, found)
            report.lines.append(AttentionLine(where, True, _describe(fused, found)))
            changed = True
        return PassResult(changed, report)


# ---- the decomposed form ------------------------------------------------------------------------------------------


def match_decomposed(graph: Graph, syms: dict, sm: Node) -> _Match | Miss:
    """softmax(scores) feeding matmul(probs, V), where scores = Q K^T * scale (softcapped) + one additive mask."""
    scores, probs = sm.inputs[0], sm.outputs[0]
    if scores is None or scores.type.rank != 4 or scores.type.dtype is not DType.F32:
        return Miss("scores are not a 4-D f32 tensor")
    if int(sm.attrs.get("axis", -1)) not in (-1, 3) or int(sm.attrs.get("coerce_2d", 0)):
        return Miss("softmax is not over the last axis")
    nan_to_zero = False
    users = probs.users
    if len(users) == 2 and {u.op for u in users} == {"is_nan", "where"}:  # sdpa: where(isnan(p), 0, p)
        isnan = next(u for u in users if u.op == "is_nan")
        w = next(u for u in users if u.op == "where")
        if w.inputs[0] is not isnan.outputs[0] or w.inputs[2] is not probs or scalar(graph, w.inputs[1]) != 0.0 \
                or len(isnan.outputs[0].users) != 1:
            return Miss("the probabilities' NaN guard is not where(is_nan(p), 0, p)")
        probs, users, nan_to_zero = w.outputs[0], w.outputs[0].users, True
    if len(users) != 1 or users[0].op != "matmul" or users[0].inputs[0] is not probs or probs in graph.outputs:
        return Miss("the probabilities are not used by exactly one matmul with V")
    pv = users[0]
    logits, mask, mask_note = _split_mask(graph, scores)
    if isinstance(logits, Miss):
        return logits
    fill = producer(scores, "add")
    mask_value = -math.inf
    if mask is not None and mask.type.dtype is DType.BOOL:  # the where's fill value
        w = next(producer(x, "where") for x in fill.inputs if producer(x, "where") is not None and producer(x, "where").inputs[0] is mask)
        mask_value = scalar(graph, w.inputs[2])
    logits, softcap = _peel_softcap(graph, logits)
    logits, scale = peel_scale(graph, logits)
    qk = producer(logits, "matmul")
    if qk is None or None in qk.inputs:
        return Miss(f"%{logits.name} is not a matmul of Q and K^T")
    q, q_scale = peel_scale(graph, qk.inputs[0])
    kt, k_scale = peel_scale(graph, qk.inputs[1])
    k = untranspose_keys(graph, kt)
    if isinstance(k, Miss):
        return k
    if isinstance(k, tuple):  # K^T = transpose(X, perm): K = transpose(X, perm'), made before the fused node
        t, perm = k
        k = graph.add("transpose", [t.inputs[0]], [TensorType(DType.F32, _permuted(t.inputs[0], perm))], {"perm": perm},
                      after=t).outputs[0]
    scale *= q_scale * k_scale  # (s1 Q)(s2 K)^T = s1 s2 Q K^T, inside the softcap as well
    return _assemble(graph, syms, q, k, pv.inputs[1], mask, mask_note, scale=scale, softcap=softcap, causal=False,
                     nan_to_zero=nan_to_zero, y=pv.outputs[0], anchor=pv, mask_value=mask_value)


def _permuted(x: Value, perm: list[int]) -> tuple | None:
    s = x.type.shape
    return None if s is None else tuple(s[i] for i in perm)


def _split_mask(graph: Graph, scores: Value) -> tuple[Value | Miss, Value | None, str]:
    """scores = logits + mask (either order) or logits alone: (logits, mask as fused_attention takes it, a note). A
    where(cond, 0, -inf) mask becomes its boolean condition; any other f32 mask is added as it is."""
    a = producer(scores, "add")
    if a is None or None in a.inputs:
        return scores, None, "no mask"
    for i in (0, 1):
        logits, m = a.inputs[i], a.inputs[1 - i]
        if producer(_through_scale(graph, logits), "matmul") is None or logits.type.rank != 4:
            continue
        if m.type.rank is None or m.type.rank > 4:
            return Miss(f"mask %{m.name} has rank above 4"), None, ""
        w = producer(m, "where")
        fill = scalar(graph, w.inputs[2]) if w is not None and None not in w.inputs else None
        if w is not None and fill is not None and scalar(graph, w.inputs[1]) == 0.0 and w.inputs[0].type.dtype is DType.BOOL \
                and fill <= MASK_VALUE_LIMIT and m.type.dtype is DType.F32:
            return logits, w.inputs[0], "boolean mask" if fill == -math.inf else f"boolean mask, masked scores + {fill:g}"
        if m.type.dtype is DType.F32:
            return logits, m, "additive f32 mask"
        return Miss(f"mask %{m.name} is neither where(bool, 0, -inf) nor f32"), None, ""
    return Miss("the scores are an add, but neither operand is Q K^T"), None, ""


def _through_scale(graph: Graph, v: Value) -> Value:
    tanh_free, _ = _peel_softcap(graph, v)
    return peel_scale(graph, tanh_free)[0]


def _peel_softcap(graph: Graph, v: Value) -> tuple[Value, float]:
    """v = tanh(x / cap) * cap -> (x, cap); else (v, 0)."""
    m = producer(v, "mul")
    if m is None or None in m.inputs:
        return v, 0.0
    for i in (0, 1):
        cap = scalar(graph, m.inputs[1 - i])
        t = producer(m.inputs[i], "tanh")
        if cap is None or cap <= 0 or t is None:
            continue
        x, factor = peel_scale(graph, t.inputs[0])
        if math.isclose(factor * cap, 1.0, rel_tol=1e-6):
            return x, cap
    return v, 0.0


# ---- the ONNX Attention op ----------------------------------------------------------------------------------------


def match_attention_op(graph: Graph, syms: dict, node: Node) -> _Match | Miss:
    """attention(Q, K, V, mask?, past_key?, past_value?) with f32 operands, no windows, valid lengths, qk output or
    softmax precision: fused_attention has the same semantics up to rounding (Attention scales Q and K by sqrt(scale)).
    The 3-D form (Q [batch, seq, heads * d], K / V [batch, kv_seq, kv_heads * d]) is split into heads by a reshape and
    a transpose per operand, and the fused node's Y merged back, all with symbolic batch and sequence dims."""
    a = node.attrs
    ins = list(node.inputs) + [None] * (7 - len(node.inputs))
    q, k, v, mask, past_k, past_v, nonpad = ins
    three_d = all(x.type.rank == 3 for x in (q, k, v))
    if any(x is not None and x.type.dtype is not DType.F32 for x in (q, k, v, past_k, past_v)):
        return Miss("Q, K, V and the past are not all f32")
    if any(x is not None and x.type.rank != 4 for x in (past_k, past_v)) or \
            not three_d and any(x.type.rank != 4 for x in (q, k, v)):
        return Miss("Q, K and V are not all 3-D or all 4-D, with a 4-D past")
    if nonpad is not None:
        return Miss("nonpad_kv_seqlen is not supported by fused_attention")
    if int(a.get("left_window_size", -1)) >= 0 or int(a.get("right_window_size", -1)) >= 0:
        return Miss("sliding windows are not supported by fused_attention")
    if len(node.outputs) > 3 and node.outputs[3].users:
        return Miss("the qk_matmul_output result is used")
    if a.get("softmax_precision") not in (None, DType.F32):
        return Miss("softmax_precision is not f32")
    if three_d:
        split = _split_qkv(graph, node, q, k, v)
        if isinstance(split, Miss):
            return split
        q, k, v = split
    head = q.type.shape[3] if q.type.shape is not None else None
    if not isinstance(head, int):
        return Miss("the head size is not static")
    scale = a.get("scale")
    presents = tuple(node.outputs[i] if i < len(node.outputs) and (node.outputs[i].users or node.outputs[i] in graph.outputs)
                     else None for i in (1, 2))
    found = _assemble(graph, syms, q, k, v, mask, "attn_mask" if mask is not None else "no mask",
                      scale=float(scale) if scale is not None else 1.0 / math.sqrt(head), softcap=float(a.get("softcap", 0.0)),
                      causal=bool(a.get("is_causal", 0)), nan_to_zero=False, y=node.outputs[0], anchor=node,
                      past=(past_k, past_v), presents=presents, merge_heads=three_d)
    if isinstance(found, Miss) and three_d:  # the split nodes made for it go again: the graph stays as it was
        for x in (q, k, v):
            _erase_dead(graph, x.producer)
    return found


def _split_qkv(graph: Graph, node: Node, q: Value, k: Value, v: Value) -> tuple[Value, Value, Value] | Miss:
    """The 3-D Attention op's Q, K, V as fused_attention takes them, [batch, heads, seq, d], made right before `node`
    once the static head widths are checked (should the match miss later, the caller erases them again)."""
    heads, kv_heads = node.attrs.get("q_num_heads"), node.attrs.get("kv_num_heads")
    if not isinstance(heads, int) or not isinstance(kv_heads, int) or heads <= 0 or kv_heads <= 0:
        return Miss("the 3-D form has no q_num_heads / kv_num_heads")
    widths = [x.type.shape[2] if x.type.shape is not None else None for x in (q, k, v)]
    if any(not isinstance(w, int) for w in widths) or widths[0] % heads or widths[1] % kv_heads or widths[2] % kv_heads:
        return Miss("the 3-D Q, K, V widths are not static multiples of q_num_heads / kv_num_heads")
    return tuple(_split_heads(graph, x, n, node) for x, n in ((q, heads), (k, kv_heads), (v, kv_heads)))


def _split_heads(graph: Graph, x: Value, heads: int, before: Node) -> Value:
    """x [batch, seq, heads * d] -> transpose(reshape(x, [0, 0, heads, d]), [0, 2, 1, 3]): [batch, heads, seq, d]
    (the 0s copy batch and seq, whatever symbols they are), as the Attention op's definition splits it."""
    shape = graph.add_constant(np.array([0, 0, heads, x.type.shape[2] // heads], np.int64), TensorType(DType.I64, (4,)),
                               before=before)
    r = _add_typed(graph, "reshape", [x, shape], {}, before, x.name + ".split")
    return _add_typed(graph, "transpose", [r], {"perm": [0, 2, 1, 3]}, before, x.name + ".heads")


def _merge_heads(graph: Graph, y: Value, before: Node) -> Value:
    """y [batch, heads, seq, dv] -> reshape(transpose(y, [0, 2, 1, 3]), [0, 0, heads * dv]): the 3-D op's Y."""
    _, heads, _, dv = y.type.shape
    t = _add_typed(graph, "transpose", [y], {"perm": [0, 2, 1, 3]}, before, y.name + ".t")
    shape = graph.add_constant(np.array([0, 0, heads * dv], np.int64), TensorType(DType.I64, (3,)), before=before)
    return _add_typed(graph, "reshape", [t, shape], {}, before, y.name + ".merged")


def _add_typed(graph: Graph, op: str, inputs: list[Value], attrs: dict, before: Node, name: str) -> Value:
    """A new node before `before` whose result type is what the op's type rule gives (symbolic dims included)."""
    n = graph.add(op, inputs, [TensorType(DType.F32, None)], attrs, before=before, output_names=[graph.fresh_name(name)])
    n.outputs[0].type = infer_node_types(graph, n)[0]
    return n.outputs[0]


# ---- shared: heads, repeat-KV, past, mask -------------------------------------------------------------------------


def _assemble(graph: Graph, syms: dict, q: Value, k4: Value, v4: Value, mask: Value | None, mask_note: str, *,
              scale: float, softcap: float, causal: bool, nan_to_zero: bool, y: Value, anchor: Node,
              past: tuple[Value | None, Value | None] = (None, None),
              presents: tuple[Value | None, Value | None] = (None, None), mask_value: float = -math.inf,
              merge_heads: bool = False) -> _Match | Miss:
    if q.type.rank != 4 or q.type.shape is None or k4.type.shape is None or v4.type.shape is None:
        return Miss("Q, K or V is not 4-D with a known shape")
    heads = q.type.shape[1]
    if not isinstance(heads, int):
        return Miss("the number of heads is not static")
    k, k_rep = repeated_kv(k4)
    v, v_rep = repeated_kv(v4)
    if k_rep != v_rep or (k_rep > 1 and presents != (None, None)):  # an Attention op's present is the repeated K
        k, v = k4, v4
    kv_heads = k.type.shape[1]
    if not isinstance(kv_heads, int) or v.type.shape[1] != kv_heads or heads % kv_heads:
        return Miss(f"K and V have {kv_heads} and {v.type.shape[1]} heads for {heads} query heads")
    past_k, past_v = past
    if past_k is None:
        pk, k_new = past_concat(k)
        pv, v_new = past_concat(v)
        if pk is not None and pv is not None:
            presents = (k if _needed(graph, k) else None, v if _needed(graph, v) else None)
            past_k, past_v, k, v = pk, pv, k_new, v_new
    if not same_dims(q.type.shape[:1] + q.type.shape[3:], k.type.shape[:1] + k.type.shape[3:]):
        return Miss("Q and K disagree on batch or head size")
    want = (q.type.shape[0], heads, q.type.shape[2], v.type.shape[3])
    if merge_heads:
        want = (want[0], want[2], dims.mul(heads, want[3]))
    if y.type.shape is None or len(y.type.shape) != len(want) or any(dims.equal(a, b) is False for a, b in zip(y.type.shape, want)):
        return Miss(f"the result %{y.name} is not (batch, " + ("queries, heads * value size)" if merge_heads else
                                                              "heads, queries, value size)"))
    total = dims.add(past_k.type.shape[2], k.type.shape[2]) if past_k is not None and past_k.type.shape is not None \
        else k.type.shape[2]
    past_len = past_k.type.shape[2] if past_k is not None and past_k.type.shape is not None else 0
    relations: dict[str, Dim] = {}
    if mask is not None and mask_note != "attn_mask" and not same_dims(mask.type.shape[-1:], (total,)):
        # The mask is added to scores over `total` keys. A symbolic length of its own (an attention_mask's `total`)
        # is taken to be that count: the relation the model implies (total = past + seq), which the runtime checks.
        m_len = mask.type.shape[-1]
        if not isinstance(m_len, str) or not dims.is_polynomial(m_len) or len(dims.symbols(m_len)) != 1 \
                or m_len not in dims.symbols(m_len) or m_len in dims.symbols(total):
            return Miss(f"mask %{mask.name} does not cover the {total} keys (it broadcasts over them)")
        if total is not None:
            relations[m_len] = total
        mask_note += f" (taking {m_len} = {total if total is not None else 'the key count'})"
    if mask is not None and mask.type.dtype is DType.BOOL:
        mask, causal, mask_note = _simplify_bool_mask(graph, syms, mask, causal, mask_note, q.type.shape[2], total, past_len,
                                                      relations)
    return _Match(q, k, v, past_k, past_v, mask, scale, softcap, causal, nan_to_zero, heads, kv_heads, y, presents,
                  anchor, mask_note, mask_value if mask is not None else -math.inf, merge_heads)


def _needed(graph: Graph, v: Value) -> bool:
    """Whether v is used beyond the attention being fused (a present output of the model, typically)."""
    return v in graph.outputs or len(v.users) > 1


def _simplify_bool_mask(graph: Graph, syms: dict, mask: Value, causal: bool, note: str, q_len, total, past,
                        relations: dict[str, Dim]):
    """Drop the causal term (and constant trues) from an `and` of boolean masks: causal becomes the attribute and
    the rest (typically the padding mask, [batch, 1, 1, total]) stays the mask; None when nothing is left."""
    terms = conjuncts(mask)
    rest = [t for t in terms if not is_true(graph, t)]
    kept = [t for t in rest if not is_causal_term(graph, syms, t, q_len, total, past, relations)]
    if (len(kept) == len(rest) and len(rest) == len(terms)) or \
            any(t.type.rank is None or t.type.rank > 4 or not equal_given(t.type.shape[-1], total, relations) for t in kept):
        return mask, causal, note  # (a term broadcast over the keys cannot be a fused_attention mask by itself)
    found_causal = len(kept) < len(rest)
    note = ("causal" if found_causal else "") + (" + " if found_causal and kept else "") + \
        (f"boolean mask %{kept[0].name}" if len(kept) == 1 else "boolean masks" if kept else "")
    if not kept:
        return None, causal or found_causal, note
    out = kept[0]
    for t in kept[1:]:
        shape = _broadcast(out.type.shape, t.type.shape)
        out = graph.add("and", [out, t], [TensorType(DType.BOOL, shape)], before=mask.producer).outputs[0]
    return out, causal or found_causal, note


def _broadcast(a, b):
    from ..ir.ops.rules import broadcast_shapes

    return broadcast_shapes(a, b)


# ---- the rewrite --------------------------------------------------------------------------------------------------


def _rewrite(graph: Graph, m: _Match) -> Node:
    q, k, v = m.q, m.k, m.v
    batch, _, q_len, _ = q.type.shape
    dv = v.type.shape[3]
    y_type = TensorType(DType.F32, (batch, m.heads, q_len, dv))
    want_present = m.presents != (None, None)
    out_types = [y_type, TensorType(DType.F32, (0,))] + ([_present_type(m.past_k, k), _present_type(m.past_v, v)] if want_present else [])
    attrs = {"heads": m.heads, "kv_heads": m.kv_heads, "scale": _f32(m.scale), "causal": int(m.causal),
             "softcap": _f32(m.softcap), "nan_to_zero": int(m.nan_to_zero)}
    if m.mask_value != -math.inf:
        attrs["mask_value"] = _f32(m.mask_value)
    inputs = [q, k, v, m.mask, m.past_k, m.past_v]
    while inputs[-1] is None:
        inputs.pop()
    fused = graph.add("fused_attention", inputs, out_types, attrs, before=m.anchor,
                      output_names=[graph.fresh_name(m.y.name + ".fused"), graph.fresh_name(m.y.name + ".scratch")]
                      + [None] * (len(out_types) - 2))
    graph.replace_all_uses(m.y, _merge_heads(graph, fused.outputs[0], m.anchor) if m.merge_heads else fused.outputs[0])
    _erase_dead(graph, m.anchor)  # first, so that the old attention's reads of the past concatenation are gone
    for i, was in ((2, m.presents[0]), (3, m.presents[1])):
        if want_present and was is not None and was.graph is graph:
            _replace_later_uses(graph, was, fused.outputs[i], fused)
            if was.producer is not None:
                _erase_dead(graph, was.producer)
    return fused


def _replace_later_uses(graph: Graph, old: Value, new: Value, at: Node) -> None:
    """Uses of `old` after node `at` (and the graph outputs) read `new`; earlier ones (shape arithmetic an exporter
    left on the concatenation, say) keep `old`, which then stays."""
    before = set()
    n = at.prev
    while n is not None:
        before.add(id(n))
        n = n.prev
    early = [(u, i) for u, i in old.uses if id(u) in before]
    if not early:
        graph.replace_all_uses(old, new)
        return
    for u, i in list(old.uses):
        if id(u) not in before:
            u.set_input(i, new)
    if any(v is old for v in graph.outputs):
        name = old.name
        graph.rename(old, graph.fresh_name(name + ".old"))
        graph.rename(new, name)
        graph.outputs = [new if v is old else v for v in graph.outputs]


def _f32(x: float) -> float:
    """Float attributes are float32 values in the IR (as in ONNX)."""
    return float(np.float32(x))


def _present_type(past: Value | None, new: Value) -> TensorType:
    if past is None:
        return new.type
    s, n = past.type.shape, new.type.shape
    return TensorType(DType.F32, (s[0], s[1], dims.add(s[2], n[2]), s[3]))


def _erase_dead(graph: Graph, start: Node) -> None:
    """Erase `start` and, transitively, the producers of its operands that nothing else uses any more."""
    outputs = {id(v) for v in graph.outputs}
    stack = [start]
    while stack:
        n = stack.pop()
        if n.graph is not graph or any(v.users or id(v) in outputs for v in n.outputs):
            continue
        operands = [v.producer for v in n.inputs if v is not None and v.producer is not None]
        graph.erase(n)
        stack.extend(operands)


def _describe(node: Node, m: _Match) -> str:
    a = node.attrs
    parts = [f"{a['heads']} heads" + (f" over {a['kv_heads']} kv heads" if a["kv_heads"] != a["heads"] else ""),
             f"scale {a['scale']:.6g}", m.mask_note if m.mask_note else "no mask"]
    if a["causal"] and "causal" not in m.mask_note:
        parts.append("causal")
    if m.past_k is not None:
        parts.append("past concatenation absorbed")
    if a["softcap"]:
        parts.append(f"softcap {a['softcap']:g}")
    if a["nan_to_zero"]:
        parts.append("NaN rows to zero")
    if m.merge_heads:
        parts.append("3-D Q, K, V split into heads")
    return ", ".join(parts) + f" -> %{node.outputs[0].name}"


__all__ = ["AttentionLine", "AttentionReport", "FuseAttention", "match_attention_op", "match_decomposed"]

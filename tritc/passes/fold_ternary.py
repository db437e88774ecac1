"""fold-ternary: turn the weights of linear and conv layers into ternary weights (trits times scales).

    %y = matmul(%x, %w) : f32[b,N]          (w: f32[K,N], values s_n * {-1,0,1})
    %y = ternary_matmul(%x, %w.t2) {act = "float"} : f32[b,N]      (w.t2: t2[K,N] per_channel)

A conv's weight W[M, C/g, k...] folds as its im2col matrix [C/g * prod(k), M] into `ternary_conv`.
Modes: `exact` folds every weight that already is trits times a per-tensor, per-output-channel
or per-group scale (lossless: what a BitNet-trained model exports, or a 2-bit narrow-range
QONNX Quant / a DequantizeLinear of integer codes in {-1,0,1}, int8 or INT4 / INT2), the head and tied
embeddings too; `absmean` quantises any float weight as BitNet b1.58 does (scale = mean|W|, trit =
clip(round(W/scale), -1, 1)) and keeps the output head and embedding tables in float (ternary_policy.py);
`off`. `include` / `exclude` patterns override. Every layer considered gets a line in the report, with why.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import OptionError
from ..ir.casts import int_values
from ..ir.graph import Graph, Node, Value
from ..ir.ops.qonnx import int_range
from ..ir.ops.quant import expand_param
from ..ir.ternary import TernaryWeight
from ..ir.types import DType, TensorType
from .pass_manager import Pass, PassResult, register
from .ternary_policy import embedding_tables, output_heads, tied_to_embedding
from .ternary_report import TernaryReport, measure

# Group sizes tried (largest first) when a weight is ternary per group along K but not per channel.
GROUP_SIZES = (256, 128, 64, 32, 16)
LINEAR_OPS = ("matmul", "conv")


@dataclass
class Linear:
    """A layer fold-ternary may fold: y = x @ W with a constant W[K, N], or a conv seen as its im2col matrix."""

    node: Node
    name: str  # what patterns match and the report shows
    names: tuple[str, ...]  # every name the layer answers to (weight key, node location)
    source: str  # "float", "dequantize_linear", "quant", "bipolar_quant"
    weight: np.ndarray  # the float32 values of W[K, N] as the model computes them (a conv's [C/g * prod(k), M])
    codes: np.ndarray | None  # the integer codes where the source gives them
    scale: np.ndarray | None  # the source's scale where it gives one
    note: str = ""


# ---- finding the layers ---------------------------------------------------------------------------


def _constant(graph: Graph, v: Value | None) -> np.ndarray | None:
    c = graph.const_value(v)
    return c if isinstance(c, np.ndarray) else None


def _weight_of(graph: Graph, v: Value) -> tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None, str, str] | None:
    """(source, W, codes, scale, key, note) for a constant weight value, seen through its quantiser."""
    p = v.producer
    if p is None:
        return None
    if p.op in ("weight", "constant"):
        w = _constant(graph, v)
        if w is None or w.ndim < 2 or w.dtype not in (np.float32, np.float16, np.float64):
            return None
        return "float", w.astype(np.float32, copy=False), None, None, p.attrs.get("ref", v.name), ""
    if p.op == "dequantize_linear":
        q, s = _constant(graph, p.inputs[0]), _constant(graph, p.inputs[1])
        zp = _constant(graph, p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] is not None else np.zeros((), np.int8)
        if q is None or s is None or zp is None or q.ndim != 2 or not DType.from_numpy(q.dtype).is_int:
            return None
        try:  # a per-axis zero point broadcasts along `axis`, not numpy's trailing axis
            zp = expand_param(zp, q.shape, int(p.attrs.get("axis", 1)), int(p.attrs.get("block_size", 0)), "x_zero_point")
        except ValueError:
            return None
        codes = int_values(q) - int_values(zp)  # 8/16/32-bit codes, and INT4 / INT2 ones (ml_dtypes containers)
        values = _evaluate(p, graph)
        key = p.inputs[0].producer.attrs.get("ref", p.inputs[0].name) if p.inputs[0].producer else p.inputs[0].name
        note = ""
        used = set(np.unique(codes).tolist())
        if not used <= {-1, 0, 1}:
            note = f"integer codes use {sorted(used - {-1, 0, 1})[:4]}: not ternary"
        return "dequantize_linear", values, codes, s, key, note
    if p.op in ("quant", "bipolar_quant"):
        x, s = _constant(graph, p.inputs[0]), _constant(graph, p.inputs[1])
        if x is None or s is None or x.ndim < 2:
            return None
        values = _evaluate(p, graph)
        key = p.inputs[0].producer.attrs.get("ref", p.inputs[0].name) if p.inputs[0].producer else p.inputs[0].name
        note = ""
        if p.op == "quant":
            bits = _constant(graph, p.inputs[3])
            zp = _constant(graph, p.inputs[2])
            lo, hi = int_range(bool(p.attrs.get("signed", 1)), bool(p.attrs.get("narrow", 0)),
                               int(np.asarray(bits).reshape(-1)[0]) if bits is not None else 0)
            if zp is None or np.any(zp != 0):
                note = "quantiser has a non-zero zero point: not ternary"
            elif (lo, hi) != (-1, 1):
                narrow = "" if p.attrs.get("narrow", 0) else " (not narrow range: -2 is a code)"
                note = f"quantiser range is [{lo}, {hi}]{narrow}: not ternary"
        return p.op, values, None, s, key, note
    return None


def _evaluate(node: Node, graph: Graph) -> np.ndarray:
    from ..ir.interpreter import Interpreter

    args = [graph.const_value(v) if v is not None else None for v in node.inputs]
    with np.errstate(all="ignore"):
        return np.asarray(Interpreter(graph, check_types=False).run_node(node, args)[0], dtype=np.float32)


def _layer_weight(graph: Graph, node: Node) -> tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None, str, str] | None:
    """The weight source of a matmul (W[K, N]) or conv (W[M, C/g, k...] as the matrix [C/g * prod(k), M])."""
    if node.op == "matmul":
        if len(node.inputs) != 2 or node.inputs[1] is None:
            return None
        src = _weight_of(graph, node.inputs[1])
        return src if src is not None and src[1].ndim == 2 else None
    if node.op != "conv" or node.inputs[1] is None or node.inputs[0] is None:
        return None
    src = _weight_of(graph, node.inputs[1])
    if src is None or src[1].ndim < 3:
        return None
    source, w, codes, scale, key, note = src
    if not note and node.inputs[0].type.dtype is not DType.F32:
        note = f"conv with {node.inputs[0].type.dtype} activations (ternary_conv takes f32)"
    matrix = w.reshape(w.shape[0], -1).T  # the row order (channel, kernel offset) of the im2col matrix
    return source, np.ascontiguousarray(matrix), None if codes is None else codes.reshape(codes.shape[0], -1).T, \
        scale, key, note


def find_linears(graph: Graph) -> list[Linear]:
    """Every matmul and conv whose weight is a constant (seen through a quantiser), in graph order."""
    found = []
    for node in graph:
        if node.op not in LINEAR_OPS:
            continue
        src = _layer_weight(graph, node)
        if src is None:
            continue
        source, w, codes, scale, key, note = src
        names = tuple(n for n in (key, node.name, node.outputs[0].name) if n)
        name = key if not key.startswith("onnx::") else (node.name or key)
        found.append(Linear(node, name, names, source, w, codes, scale, note))
    return found


# ---- deciding the trits -----------------------------------------------------------------------


def exact_ternary(w: np.ndarray) -> TernaryWeight | None:
    """W as trits times the coarsest scale that reproduces it exactly, or None. Full-array passes only (no boolean
    indexing): a 0.7B model's 169 layers are checked in about a second."""
    a = np.abs(w)
    trits = np.sign(w).astype(np.int8)
    k, n = w.shape
    if w.size == 0:
        return TernaryWeight(trits, np.array(0.0, np.float32))
    col = a.max(axis=0)
    s = col.max()
    if s == 0:
        return TernaryWeight(trits, np.array(0.0, np.float32))
    zero = a == 0
    if np.logical_or(zero, a == s).all():
        return TernaryWeight(trits, np.array(s, np.float32))
    if np.logical_or(zero, a == col).all():
        return TernaryWeight(trits, col.astype(np.float32))
    for g in GROUP_SIZES:
        if g >= k or k % g:
            continue
        block = a.reshape(k // g, g, n).max(axis=1)
        if np.logical_or(zero, a == np.repeat(block, g, axis=0)).all():
            return TernaryWeight(trits, block.astype(np.float32), g)
    return None


def absmean_ternary(w: np.ndarray, granularity: str, eps: float = 1e-5) -> TernaryWeight:
    """BitNet b1.58: scale = mean|W| (per tensor or per output channel), trits = clip(round(W/scale))."""
    a = np.abs(w).astype(np.float32)
    if granularity == "per_channel":
        scale = np.maximum(a.mean(axis=0, dtype=np.float32), np.float32(eps)).astype(np.float32)
    else:
        scale = np.array(max(np.float32(a.mean(dtype=np.float32)), np.float32(eps)), np.float32)
    trits = np.clip(np.rint(w / scale), -1, 1).astype(np.int8)
    return TernaryWeight(trits, scale)


def _describe_failure(w: np.ndarray) -> str:
    mags = np.unique(np.abs(w[w != 0]))
    return f"not exactly ternary: {len(mags)} distinct magnitudes, no per-tensor/channel/group scale fits"


# ---- the pass ---------------------------------------------------------------------------------------


CONV_ATTRS = ("auto_pad", "dilations", "group", "pads", "strides")


@register
@dataclass(frozen=True)
class FoldTernary(Pass):
    name = "fold-ternary"
    summary = "replace linear and conv layers' weights by ternary weights (exact, absmean or off)"
    mode: Literal["exact", "absmean", "off"] = "exact"
    # Activation mode of the ternary nodes made here: "int8" quantises activations (per token for a matmul,
    # per image for a conv) even when the model has no such quantisation; fuse-bitlinear sets it when it does.
    act: Literal["float", "int8"] = "float"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    granularity: Literal["per_tensor", "per_channel"] = "per_tensor"

    def run(self, graph: Graph) -> PassResult:
        return PassResult(*self.fold(graph))

    def fold(self, graph: Graph) -> tuple[bool, TernaryReport]:
        """Fold what the mode and the policy allow; (changed, the report of every layer considered)."""
        linears = find_linears(graph)
        self._check_patterns(linears)
        lossy = self.mode == "absmean"
        # The keep-in-float policy protects accuracy, so it applies to the lossy mode only (ternary_policy.py).
        heads = output_heads(graph, [lin.node for lin in linears]) if lossy else set()
        tables = embedding_tables(graph) if lossy else []
        report = TernaryReport(mode=self.mode)
        changed = False
        for lin in linears:
            included = next((p for p in self.include if self._matches(lin, p)), None)
            excluded = next((p for p in self.exclude if self._matches(lin, p)), None)
            role = ""
            if id(lin.node) in heads:
                role = "output head"
            elif lossy and tied_to_embedding(lin.node.inputs[1], lin.weight, tables):
                role = "embedding table shared with a gather"
            reason = ""
            if excluded is not None:
                reason = f"excluded by pattern '{excluded}'"
            elif self.mode == "off":
                reason = "mode off"
            elif role and included is None:
                reason = f"{role}: kept in float in absmean mode (--ternary-include to fold)"
            tern, exact, note = None, False, lin.note
            if not reason:
                tern, exact, note = self._fold(lin)
                if tern is not None and role:
                    note += f" ({role}, included by pattern '{included}')"
            rep = measure(lin.name, lin.weight, tern, self.mode if tern is not None else "float", exact=exact,
                          note=reason or note, source=lin.source, op=lin.node.op)
            report.layers.append(rep)
            if tern is None:
                continue
            w_value = lin.node.inputs[1]
            self._replace(graph, lin, tern)
            self._release(graph, lin, w_value)
            changed = True
        if changed:
            graph.prune_weights()
        return changed, report

    def _fold(self, lin: Linear) -> tuple[TernaryWeight | None, bool, str]:
        """(ternary weight or None, whether it is lossless, why: the scale found or why not)."""
        if lin.note:  # a quantiser that is not ternary, or a conv the op cannot take: left alone whatever the mode
            return None, False, lin.note
        if not np.isfinite(lin.weight).all():  # trits would drop a NaN (0) or make one (0 * inf): keep the float
            return None, False, "weight has non-finite values (NaN or inf)"
        tern = exact_ternary(lin.weight)
        if tern is not None:
            return tern, True, f"exact: {scale_words(tern)}"
        if self.mode == "absmean" and lin.source == "float":
            tern = absmean_ternary(lin.weight, self.granularity)
            return tern, False, f"absmean: {scale_words(tern)}"
        return None, False, _describe_failure(lin.weight)

    def _replace(self, graph: Graph, lin: Linear, tern: TernaryWeight) -> None:
        node = lin.node
        key = lin.name + ".t2"
        while key in graph.weights:
            key += "_"
        wv = graph.add_weight(key, tern, TensorType(DType.T2, tern.shape), name=key,
                              attrs={"scale": tern.granularity, **({"group": tern.group_size} if tern.group_size else {})},
                              before=node)
        types = [v.type for v in node.outputs]
        if node.op == "conv":
            w = node.inputs[1]
            assert w is not None and w.type.shape is not None
            attrs = {k: node.attrs[k] for k in CONV_ATTRS if node.attrs.get(k) is not None}
            attrs.update(kernel_shape=[int(d) for d in w.type.shape[2:]], act=self.act)
            new = graph.add("ternary_conv", [node.inputs[0], wv] + node.inputs[2:3], types, attrs, node.name, before=node)
        else:
            new = graph.add("ternary_matmul", [node.inputs[0], wv], types, {"act": self.act}, node.name, before=node)
        graph.replace_node(node, new.outputs)

    @staticmethod
    def _release(graph: Graph, lin: Linear, w_value: Value | None) -> None:
        """Drop a folded layer's float weight as soon as nothing reads it, so that a model's float weights are not
        all held next to their trits (a 0.7B model: 2.6 GB of floats, freed layer by layer)."""
        lin.weight = np.zeros((0, 0), np.float32)
        p = None if w_value is None else w_value.producer
        if p is None or p.op != "weight" or w_value.uses or w_value in graph.outputs:
            return
        key = p.attrs.get("ref")
        graph.erase(p)
        if key is not None and not any(n.op == "weight" and n.attrs.get("ref") == key for n in graph):
            graph.weights.pop(key, None)

    @staticmethod
    def _matches(lin: Linear, pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(n, pattern) for n in lin.names)

    def _check_patterns(self, linears: list[Linear]) -> None:
        for flag, patterns in (("--ternary-include", self.include), ("--ternary-exclude", self.exclude)):
            for p in patterns:
                if not any(self._matches(lin, p) for lin in linears):
                    names = ", ".join(lin.name for lin in linears[:5]) + (", ..." if len(linears) > 5 else "")
                    raise OptionError(f"{flag} pattern '{p}' matches no linear layer (layers: {names or 'none'})")


def scale_words(tern: TernaryWeight) -> str:
    """'per-channel scale', 'per-group scale (group 64)': how a folded weight is scaled, for the report."""
    words = tern.granularity.replace("_", "-") + " scale"
    return words + (f" (group {tern.group_size})" if tern.group_size else "")


def fold_report(graph: Graph, **options) -> TernaryReport:
    """Run fold-ternary with `options` on graph (in place), verify the result, and return the report."""
    from ..ir.verify import verify

    report = FoldTernary(**options).fold(graph)[1]
    verify(graph)
    return report

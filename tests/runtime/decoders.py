"""Tiny decoders with a KV cache, built with onnx.helper for the generation tests (tests/runtime/test_generate*.py).

Two forms, as exporters write them: the optimum / transformers layout (past key/values concatenated with the new
ones, `present` outputs; names and stacking of several exporters), and the opset-23 native Attention op with its
past_key / past_value inputs. Weights are seeded random; linear layers are trits x a per-column scale, so the
default fold-ternary pass makes them ternary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # onnxruntime 1.3x reads up to 10/11; onnx 1.23's helpers would stamp 14


@dataclass(frozen=True)
class DecoderSpec:
    """What a test decoder looks like: sizes, and the names and layout its cache inputs and outputs use."""

    layers: int = 2
    hidden: int = 32
    heads: int = 4
    kv_heads: int = 4  # the optimum form is multi-head; the Attention form may group queries
    ffn: int = 64
    vocab: int = 64
    positions: int = 128  # rows of the learned position table: the model's maximum context
    naming: str = "optimum"  # optimum | dynamo | gpt2 (stacked [2, ...] past_i) | attention | opaque
    position_ids: bool = True  # a position_ids input; else positions are computed from the past length
    attention_mask: bool = True
    mask_dim: str = "past+seq"  # attention_mask's second dim: "past+seq" or a separate symbol "total"
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def cache_names(spec: DecoderSpec, layer: int) -> list[tuple[str, str]]:
    """(input, output) name pairs of one layer's cache, in the naming of `spec`."""
    i = layer
    if spec.naming == "optimum":
        return [(f"past_key_values.{i}.key", f"present.{i}.key"), (f"past_key_values.{i}.value", f"present.{i}.value")]
    if spec.naming == "dynamo":
        return [(f"past_key_values_key_cache_{i}", f"present_key_cache_{i}"),
                (f"past_key_values_value_cache_{i}", f"present_value_cache_{i}")]
    if spec.naming == "gpt2":
        return [(f"past_{i}", f"present_{i}")]
    if spec.naming == "attention":
        return [(f"past_key_{i}", f"present_key_{i}"), (f"past_value_{i}", f"present_value_{i}")]
    if spec.naming == "opaque":  # names that say nothing: only the graph's structure pairs them
        return [(f"cache_in_{i}_a", f"cache_out_{i}_x"), (f"cache_in_{i}_b", f"cache_out_{i}_y")]
    raise ValueError(spec.naming)


class _Builder:
    def __init__(self, spec: DecoderSpec, opset: int):
        self.spec = spec
        self.opset = opset
        self.rng = np.random.default_rng(spec.seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def node(self, op: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(hint or op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name("n_" + op), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ternary(self, rows: int, cols: int, hint: str) -> str:
        trits = self.rng.integers(-1, 2, size=(rows, cols)).astype(np.float32)
        scale = self.rng.uniform(0.5, 1.5, size=(1, cols)).astype(np.float32) / np.sqrt(rows)
        return self.const((trits * scale).astype(np.float32), hint)

    def dense(self, rows: int, cols: int, hint: str, std: float = 1.0) -> str:
        return self.const((self.rng.standard_normal((rows, cols)) * std).astype(np.float32), hint)

    def heads_first(self, x: str, heads: int) -> str:
        """[b, s, heads*d] -> [b, heads, s, d]."""
        r = self.node("Reshape", [x, self.const(np.array([0, 0, heads, self.spec.head_dim], np.int64))])
        return self.node("Transpose", [r], perm=[0, 2, 1, 3])


def _positions(b: _Builder, past_len: str) -> str:
    """position_ids if the model takes them, else past .. past+seq computed in the graph ([1, seq])."""
    if b.spec.position_ids:
        return "position_ids"
    seq = b.node("Squeeze", [b.node("Shape", ["input_ids"], start=1, end=2), b.const(np.array([0], np.int64))])
    stop = b.node("Add", [past_len, seq])
    r = b.node("Range", [past_len, stop, b.const(np.array(1, np.int64))])
    return b.node("Unsqueeze", [r, b.const(np.array([0], np.int64))])


def _past_length(b: _Builder, first_past: str, seq_axis: int) -> str:
    return b.node("Squeeze", [b.node("Shape", [first_past], start=seq_axis, end=seq_axis + 1),
                              b.const(np.array([0], np.int64))])


def _embed(b: _Builder, positions: str) -> str:
    s = b.spec
    tok = b.node("Gather", [b.dense(s.vocab, s.hidden, "embed_tokens"), "input_ids"], axis=0)
    pos = b.node("Gather", [b.dense(s.positions, s.hidden, "embed_positions", 0.5), positions], axis=0)
    return b.node("Add", [tok, pos])


def _mlp_and_head(b: _Builder, x: str) -> str:
    s = b.spec
    h = b.node("Relu", [b.node("MatMul", [x, b.ternary(s.hidden, s.ffn, "ffn_up")])])
    return b.node("Add", [x, b.node("MatMul", [h, b.ternary(s.ffn, s.hidden, "ffn_down")])])


def _norm(b: _Builder, x: str) -> str:
    """Scale by 1/rms so that activations stay O(1) over the layers."""
    sq = b.node("Mul", [x, x])
    ms = b.node("ReduceMean", [sq, b.const(np.array([-1], np.int64))], keepdims=1) if b.opset >= 18 else \
        b.node("ReduceMean", [sq], axes=[-1], keepdims=1)
    return b.node("Div", [x, b.node("Sqrt", [b.node("Add", [ms, b.const(np.array(1e-5, np.float32))])])])


def _io(spec: DecoderSpec, cache_shape: list, stacked: bool) -> tuple[list, list]:
    total = "past+seq" if spec.mask_dim == "past+seq" else "total"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if spec.attention_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", total]))
    if spec.position_ids:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", spec.vocab])]
    full = [2, *cache_shape] if stacked else cache_shape
    present = [d if d != "past" else "past+seq" for d in full]
    for layer in range(spec.layers):
        for past, out in cache_names(spec, layer):
            inputs.append(helper.make_tensor_value_info(past, TensorProto.FLOAT, full))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, present))
    return inputs, outputs


def _model(b: _Builder, inputs: list, outputs: list) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, f"decoder_{b.spec.naming}", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def concat_decoder(spec: DecoderSpec = DecoderSpec()) -> onnx.ModelProto:
    """The optimum layout: per layer Concat(past, new) -> present, attention by MatMul / Softmax, causal and
    padding masks built from position_ids (or the past length) and attention_mask (opset 17)."""
    s = spec
    assert s.kv_heads == s.heads, "the Concat form is multi-head"
    b = _Builder(s, 17)
    stacked = s.naming == "gpt2"
    first_past = cache_names(s, 0)[0][0]
    past_len = _past_length(b, first_past, 3 if stacked else 2)
    positions = _positions(b, past_len)
    x = _embed(b, positions)
    # Mask [b, 1, s, T]: key j is allowed for the query at position p if j <= p and attention_mask[j] is 1.
    qpos = b.node("Unsqueeze", [positions, b.const(np.array([1, 3], np.int64))])  # [b, 1, s, 1]
    total = b.node("Add", [past_len, b.node("Squeeze", [b.node("Shape", ["input_ids"], start=1, end=2),
                                                        b.const(np.array([0], np.int64))])])
    keys = b.node("Range", [b.const(np.array(0, np.int64)), total, b.const(np.array(1, np.int64))])
    allowed = b.node("LessOrEqual", [keys, qpos])
    if s.attention_mask:
        pad = b.node("Cast", [b.node("Unsqueeze", ["attention_mask", b.const(np.array([1, 2], np.int64))])],
                     to=TensorProto.BOOL)
        allowed = b.node("And", [allowed, pad])
    bias = b.node("Where", [allowed, b.const(np.array(0.0, np.float32)), b.const(np.array(-1e9, np.float32))])
    scale = b.const(np.array(1 / np.sqrt(s.head_dim), np.float32))
    for layer in range(s.layers):
        h = _norm(b, x)
        q = b.heads_first(b.node("MatMul", [h, b.ternary(s.hidden, s.hidden, f"l{layer}_q")]), s.heads)
        k = b.heads_first(b.node("MatMul", [h, b.ternary(s.hidden, s.hidden, f"l{layer}_k")]), s.heads)
        v = b.heads_first(b.node("MatMul", [h, b.ternary(s.hidden, s.hidden, f"l{layer}_v")]), s.heads)
        names = cache_names(s, layer)
        if stacked:
            (past, present), = names
            pk = b.node("Squeeze", [b.node("Slice", [past, *(b.const(np.array([a], np.int64)) for a in (0, 1, 0))]),
                                    b.const(np.array([0], np.int64))])
            pv = b.node("Squeeze", [b.node("Slice", [past, *(b.const(np.array([a], np.int64)) for a in (1, 2, 0))]),
                                    b.const(np.array([0], np.int64))])
            k = b.node("Concat", [pk, k], axis=2)
            v = b.node("Concat", [pv, v], axis=2)
            zero = b.const(np.array([0], np.int64))
            b.nodes.append(helper.make_node("Concat", [b.node("Unsqueeze", [k, zero]), b.node("Unsqueeze", [v, zero])],
                                            [present], axis=0))
        else:
            (pk, ok), (pv, ov) = names
            b.nodes.append(helper.make_node("Concat", [pk, k], [ok], axis=2))
            b.nodes.append(helper.make_node("Concat", [pv, v], [ov], axis=2))
            k, v = ok, ov
        scores = b.node("Add", [b.node("Mul", [b.node("MatMul", [q, b.node("Transpose", [k], perm=[0, 1, 3, 2])]), scale]),
                                bias])
        y = b.node("MatMul", [b.node("Softmax", [scores], axis=-1), v])
        y = b.node("Reshape", [b.node("Transpose", [y], perm=[0, 2, 1, 3]), b.const(np.array([0, 0, s.hidden], np.int64))])
        x = b.node("Add", [x, b.node("MatMul", [y, b.ternary(s.hidden, s.hidden, f"l{layer}_o")])])
        x = _mlp_and_head(b, _norm(b, x))
    b.nodes.append(helper.make_node("MatMul", [_norm(b, x), b.dense(s.hidden, s.vocab, "lm_head", 0.5)], ["logits"]))
    inputs, outputs = _io(s, ["batch", s.heads, "past", s.head_dim], stacked)
    return _model(b, inputs, outputs)


def attention_decoder(spec: DecoderSpec = DecoderSpec(naming="attention", kv_heads=2)) -> onnx.ModelProto:
    """The native form: one opset-23 Attention op per layer (3-D Q/K/V, grouped queries, causal, with the padding
    mask from attention_mask) taking past_key / past_value graph inputs and giving present_key / present_value."""
    s = spec
    b = _Builder(s, 23)
    first_past = cache_names(s, 0)[0][0]
    past_len = _past_length(b, first_past, 2)
    x = _embed(b, _positions(b, past_len))
    mask = None
    if s.attention_mask:
        # [b, 1, seq, total]: onnxruntime wants the query length in the mask's dim -2.
        rows = b.node("Concat", [b.const(np.array([1, 1], np.int64)), b.node("Shape", ["input_ids"], start=1, end=2),
                                 b.const(np.array([1], np.int64))], axis=0)
        pad = b.node("Unsqueeze", ["attention_mask", b.const(np.array([1, 2], np.int64))])
        mask = b.node("Cast", [b.node("Expand", [pad, rows])], to=TensorProto.BOOL)
    kv_width = s.kv_heads * s.head_dim
    for layer in range(s.layers):
        h = _norm(b, x)
        q = b.node("MatMul", [h, b.ternary(s.hidden, s.hidden, f"l{layer}_q")])
        k = b.node("MatMul", [h, b.ternary(s.hidden, kv_width, f"l{layer}_k")])
        v = b.node("MatMul", [h, b.ternary(s.hidden, kv_width, f"l{layer}_v")])
        (pk, ok), (pv, ov) = cache_names(s, layer)
        y = b.name("attn")
        b.nodes.append(helper.make_node("Attention", [q, k, v, mask or "", pk, pv], [y, ok, ov], name=b.name("n_attn"),
                                        is_causal=1, q_num_heads=s.heads, kv_num_heads=s.kv_heads))
        x = b.node("Add", [x, b.node("MatMul", [y, b.ternary(s.hidden, s.hidden, f"l{layer}_o")])])
        x = _mlp_and_head(b, _norm(b, x))
    b.nodes.append(helper.make_node("MatMul", [_norm(b, x), b.dense(s.hidden, s.vocab, "lm_head", 0.5)], ["logits"]))
    inputs, outputs = _io(s, ["batch", s.kv_heads, "past", s.head_dim], False)
    return _model(b, inputs, outputs)

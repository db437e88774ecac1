"""BitNet-shaped ONNX models built with onnx.helper, for the benchmarks: every linear layer exactly ternary
(random trits times a scale), either as a plain MatMul on the float weight (what tritc folds, and onnxruntime fp32
runs) or as onnxruntime's 2-bit MatMulNBits on the same trits and scales (the twin file).

    spec = DecoderSpec(layers=2, hidden=2560, ffn=6912, heads=20, kv_heads=5, vocab=32000)
    model = decoder(spec, nbits=False)     # input_ids, attention_mask, position_ids, past_key_values.N.key|value
                                           # -> logits, present.N.key|value (the optimum / transformers layout)

Decoder layer (BitNet b1.58): RMSNorm, per-token int8 absmax quantisation of every linear layer's input, q/k/v
projections with rotary embeddings, the past concatenation, grouped-query attention (repeat-KV by Expand) with a
causal and padding mask built from attention_mask, o_proj into the residual stream, RMSNorm, ReLU^2-gated FFN,
down_proj into the residual stream; a final RMSNorm and a ternary LM head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NBITS_BLOCK = 128
SEED = 0


def nbits_weights(trits: np.ndarray, scale: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits operands whose dequantised weight is exactly trits * scale (per output channel): codes trit + 2,
    zero point 2. B is [N, K/block, block/4] uint8 with 4 two-bit codes per byte, k-th code of a block at bits
    2*(k%4)."""
    K, N = trits.shape
    codes = (trits.T.astype(np.int16) + 2).astype(np.uint8).reshape(N, K // block, block // 4, 4)
    B = codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)
    scales = np.repeat(np.broadcast_to(scale, (N,))[:, None], K // block, axis=1).reshape(-1).astype(np.float32)
    return np.ascontiguousarray(B, dtype=np.uint8), scales


class Builder:
    """Nodes and initializers of one model; `linear` adds x @ W as MatMul or as MatMulNBits."""

    def __init__(self, nbits: bool, rng: np.random.Generator):
        self.nbits, self.rng = nbits, rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.ternary_bytes = 0  # the ternary weights at 2 bits per trit plus float32 scales

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(value, n))
        return n

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x: str, k: int, n: int, per_channel: bool, label: str) -> str:
        trits = self.rng.choice(np.array([-1, 0, 1], np.int8), size=(k, n), p=[0.3, 0.4, 0.3])
        scale = (self.rng.random(n if per_channel else ()) * 0.02 + 0.01).astype(np.float32)
        self.ternary_bytes += k * n // 4 + 4 * scale.size
        if not self.nbits:
            self.inits.append(numpy_helper.from_array((trits.astype(np.float32) * scale).astype(np.float32), label))
            return self.op("MatMul", [x, label])
        b, s = nbits_weights(trits, scale, NBITS_BLOCK)
        self.inits += [numpy_helper.from_array(b, label), numpy_helper.from_array(s, label + ".scales")]
        out = self.name("matmulnbits")
        self.nodes.append(helper.make_node("MatMulNBits", [x, label, label + ".scales"], [out], domain="com.microsoft",
                                           K=k, N=n, bits=2, block_size=NBITS_BLOCK, accuracy_level=4))
        return out

    def rms_norm(self, x: str, dim: int) -> str:
        sq = self.op("Mul", [x, x])
        mean = self.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        std = self.op("Sqrt", [self.op("Add", [mean, self.const("eps", np.array(1e-6, np.float32))])])
        gain = self.const("gain", (1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        return self.op("Mul", [self.op("Div", [x, std]), gain])

    def act_quant(self, x: str) -> str:
        """BitNet b1.58: s = 127 / max(max|x|, 1e-5) per token; x = clip(round(x * s), -128, 127) / s."""
        absmax = self.op("ReduceMax", [self.op("Abs", [x])], axes=[-1], keepdims=1)
        s = self.op("Div", [self.const("qmax", np.array(127, np.float32)),
                            self.op("Max", [absmax, self.const("eps", np.array(1e-5, np.float32))])])
        q = self.op("Clip", [self.op("Round", [self.op("Mul", [x, s])]), self.const("lo", np.array(-128, np.float32)),
                             self.const("hi", np.array(127, np.float32))])
        return self.op("Div", [q, s])

    def bitlinear(self, x: str, k: int, n: int, per_channel: bool, label: str) -> str:
        return self.linear(self.act_quant(x), k, n, per_channel, label)

    def heads(self, x: str, n: int, head_dim: int) -> str:
        """[b, s, n * d] -> [b, n, s, d]."""
        r = self.op("Reshape", [x, self.const("shape", np.array([0, 0, n, head_dim], np.int64))])
        return self.op("Transpose", [r], perm=[0, 2, 1, 3])


@dataclass(frozen=True)
class DecoderSpec:
    layers: int = 2
    hidden: int = 2560
    ffn: int = 6912
    heads: int = 20
    kv_heads: int = 5
    vocab: int = 32000
    max_positions: int = 8192
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def cache_bytes_per_token(self) -> int:
        """float32 keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 4


class _Decoder(Builder):
    def __init__(self, spec: DecoderSpec, nbits: bool):
        super().__init__(nbits, np.random.default_rng(SEED))  # the same seed: twin files hold the same trits
        self.spec = spec

    def rotary_tables(self) -> tuple[str, str]:
        """cos and sin [max_positions, head_dim / 2]."""
        s = self.spec
        inv = 1.0 / (s.rope_theta ** (np.arange(0, s.head_dim, 2, dtype=np.float64) / s.head_dim))
        angles = np.arange(s.max_positions, dtype=np.float64)[:, None] * inv[None, :]
        return (self.const("cos", np.cos(angles).astype(np.float32)), self.const("sin", np.sin(angles).astype(np.float32)))

    def rotate(self, x: str, cos: str, sin: str) -> str:
        """Rotary embedding (rotate-half form) of x [b, n, s, d] with cos/sin [b, 1, s, d/2]."""
        half = self.spec.head_dim // 2
        x1 = self.op("Slice", [x, self.const("s", np.array([0], np.int64)), self.const("e", np.array([half], np.int64)),
                               self.const("a", np.array([-1], np.int64))])
        x2 = self.op("Slice", [x, self.const("s", np.array([half], np.int64)),
                               self.const("e", np.array([2 * half], np.int64)), self.const("a", np.array([-1], np.int64))])
        r1 = self.op("Sub", [self.op("Mul", [x1, cos]), self.op("Mul", [x2, sin])])
        r2 = self.op("Add", [self.op("Mul", [x2, cos]), self.op("Mul", [x1, sin])])
        return self.op("Concat", [r1, r2], axis=-1)

    def layer(self, x: str, i: int, cos: str, sin: str, mask: str) -> str:
        s = self.spec
        h = self.rms_norm(x, s.hidden)
        q = self.rotate(self.heads(self.bitlinear(h, s.hidden, s.hidden, False, f"layers.{i}.q_proj"), s.heads, s.head_dim),
                        cos, sin)
        cache = []
        for which in ("key", "value"):
            proj = "k_proj" if which == "key" else "v_proj"
            t = self.heads(self.bitlinear(h, s.hidden, s.kv_heads * s.head_dim, False, f"layers.{i}.{proj}"), s.kv_heads,
                           s.head_dim)
            if which == "key":
                t = self.rotate(t, cos, sin)
            present = self.op("Concat", [f"past_key_values.{i}.{which}", t], f"present.{i}.{which}", axis=2)
            t = self.op("Unsqueeze", [present, self.const("axis", np.array([2], np.int64))])  # repeat KV heads
            t = self.op("Expand", [t, self.const("rep", np.array([1, 1, s.heads // s.kv_heads, 1, 1], np.int64))])
            cache.append(self.op("Reshape", [t, self.const("shape", np.array([0, s.heads, -1, s.head_dim], np.int64))]))
        k, v = cache
        scores = self.op("Mul", [self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                                 self.const("scale", np.array(s.head_dim ** -0.5, np.float32))])
        probs = self.op("Softmax", [self.op("Add", [scores, mask])], axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, self.const("shape", np.array([0, 0, s.hidden], np.int64))])
        x = self.op("Add", [x, self.bitlinear(ctx, s.hidden, s.hidden, False, f"layers.{i}.o_proj")])
        h = self.rms_norm(x, s.hidden)
        gate = self.bitlinear(h, s.hidden, s.ffn, True, f"layers.{i}.gate_proj")
        up = self.bitlinear(h, s.hidden, s.ffn, True, f"layers.{i}.up_proj")
        relu = self.op("Relu", [gate])
        act = self.op("Mul", [self.op("Mul", [relu, relu]), up])
        return self.op("Add", [x, self.bitlinear(act, s.ffn, s.hidden, True, f"layers.{i}.down_proj")])

    def mask(self) -> str:
        """Additive mask [b, 1, seq, total]: key j is visible to query i (at position past + i) when j <= past + i
        and attention_mask[b, j] is 1; else -inf (a large negative, so a fully masked row stays finite)."""
        total = self.op("Gather", [self.op("Shape", ["attention_mask"]), self.const("i", np.array(1, np.int64))], axis=0)
        seq = self.op("Gather", [self.op("Shape", ["input_ids"]), self.const("i", np.array(1, np.int64))], axis=0)
        past = self.op("Sub", [total, seq])
        one = self.const("one", np.array(1, np.int64))
        qpos = self.op("Unsqueeze", [self.op("Range", [past, total, one]), self.const("ax", np.array([1], np.int64))])
        kpos = self.op("Unsqueeze", [self.op("Range", [self.const("zero", np.array(0, np.int64)), total, one]),
                                     self.const("ax", np.array([0], np.int64))])
        causal = self.op("LessOrEqual", [kpos, qpos])  # [seq, total]
        pad = self.op("Cast", [self.op("Unsqueeze", ["attention_mask", self.const("ax", np.array([1, 2], np.int64))])],
                      to=TensorProto.BOOL)  # [b, 1, 1, total]
        visible = self.op("And", [causal, pad])
        return self.op("Where", [visible, self.const("zero", np.array(0, np.float32)),
                                 self.const("neg", np.array(-1e9, np.float32))])


def decoder(spec: DecoderSpec, nbits: bool = False) -> onnx.ModelProto:
    """The decoder in the optimum layout (see the module docstring); opset 17 (plus com.microsoft for MatMulNBits)."""
    b = _Decoder(spec, nbits)
    table = b.const("embed_tokens", (0.02 * b.rng.standard_normal((spec.vocab, spec.hidden))).astype(np.float32))
    x = b.op("Gather", [table, "input_ids"], axis=0)
    cos_t, sin_t = b.rotary_tables()
    cos = b.op("Unsqueeze", [b.op("Gather", [cos_t, "position_ids"], axis=0), b.const("ax", np.array([1], np.int64))])
    sin = b.op("Unsqueeze", [b.op("Gather", [sin_t, "position_ids"], axis=0), b.const("ax", np.array([1], np.int64))])
    mask = b.mask()
    for i in range(spec.layers):
        x = b.layer(x, i, cos, sin, mask)
    b.linear(b.act_quant(b.rms_norm(x, spec.hidden)), spec.hidden, spec.vocab, True, "lm_head")
    b.nodes[-1].output[0] = "logits"
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    cache_shape = ["batch", spec.kv_heads, "past", spec.head_dim]
    present_shape = ["batch", spec.kv_heads, "total", spec.head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "seq", spec.vocab])]
    for i in range(spec.layers):
        for which in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{which}", f32, cache_shape))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{which}", f32, present_shape))
    graph = helper.make_graph(b.nodes, f"bitnet_{spec.layers}l_{spec.hidden}", inputs, outputs, initializer=b.inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if nbits else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    model.metadata_props.add(key="ternary_bytes", value=str(b.ternary_bytes))
    return model


def save(model: onnx.ModelProto, path) -> None:
    """Save, with the weights as external data beside the file when the model passes protobuf's 2 GB."""
    # ByteSize itself fails past 2 GB: add up the weights instead
    big = sum(len(t.raw_data) for t in model.graph.initializer) > (1 << 31) - (1 << 24)
    onnx.save(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
              location=f"{path.name}.data" if big else None, size_threshold=1024)

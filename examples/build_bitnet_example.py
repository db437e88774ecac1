"""Build a small BitNet b1.58-style decoder as an ONNX file, with `onnx.helper` only (no torch).

    python examples/build_bitnet_example.py -o examples/bitnet_tiny.onnx [--layers 2 --hidden 128 ...]

Every linear layer of the decoder blocks holds exactly ternary weights times a per-output-channel
float32 scale (what a BitNet-trained model exports); examples/README.md describes the model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Config:
    """The model's sizes and the export choices that change its graph (not its function)."""

    vocab: int = 256
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    max_seq: int = 64  # rows of the constant causal mask (mask="slice")
    eps: float = 1e-5
    opset: int = 17
    rms_op: bool = False  # one RMSNormalization node (opset >= 23) instead of the decomposition
    act_quant: bool = True  # BitNet per-token absmax int8 activation quantization before each linear
    mask: str = "slice"  # "slice": constant [max_seq, max_seq] mask sliced to seq; "trilu": built with Trilu
    gqa: str = "expand"  # "expand": repeat K/V heads (Unsqueeze/Expand/Reshape); "broadcast": 5-D MatMul
    ternary_head: bool = False  # BitNet keeps the output head in float; True makes it ternary too
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def check(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if not 17 <= self.opset <= 23:
            raise ValueError(f"opset {self.opset} is outside the supported 17..23")
        if self.rms_op and self.opset < 23:
            raise ValueError("RMSNormalization needs opset 23 or newer")
        if self.mask not in ("slice", "trilu") or self.gqa not in ("expand", "broadcast"):
            raise ValueError(f"unknown mask {self.mask!r} or gqa layout {self.gqa!r}")
        if min(self.vocab, self.hidden, self.layers, self.heads, self.kv_heads, self.intermediate, self.max_seq) < 1:
            raise ValueError("every size must be positive")


def ternary_weight(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Trits int8[n_in, n_out] (MatMul layout, about a third zeros) and a float32 scale per output column."""
    trits = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(n_in, n_out), p=[1 / 3, 1 / 3, 1 / 3])
    # A scale near 1/sqrt(fan-in * 2/3) keeps activations near unit size through the layers.
    scale = (rng.uniform(0.5, 1.5, size=n_out) / np.sqrt(n_in * 2 / 3)).astype(np.float32)
    return trits, scale


class _Builder:
    """Collects nodes and initializers; each method emits one block and returns its output name."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.consts: dict[str, np.ndarray] = {}  # small constants shared by every user, by name
        self.names: dict[str, int] = {}  # node names used so far, to keep them unique

    # -- primitives ---------------------------------------------------------------------------

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # np.ascontiguousarray would make scalars rank 1
        return name

    def const(self, name: str, array: Any, dtype: Any) -> str:
        """A small constant initializer, created on first use and shared by name."""
        a = np.asarray(array, dtype=dtype)
        if name not in self.consts:
            self.consts[name] = a
            self.init(name, a)
        elif not np.array_equal(self.consts[name], a):
            raise AssertionError(f"constant {name} is given two values")
        return name

    def ints(self, name: str, values: Sequence[int]) -> str:
        return self.const(name, list(values), np.int64)

    def scalar(self, name: str, value: float) -> str:
        return self.const(name, value, np.float32)

    def node(self, op: str, inputs: Sequence[str], out: str, where: str, **attrs: Any) -> str:
        """One node named like a torch export (`/layers.0/attn/MatMul`) whose single output is `out`."""
        name = f"/{where}/{op}"
        k = self.names.get(name, 0)
        self.names[name] = k + 1
        if k:
            name += f"_{k}"  # torch's convention for the second and later nodes of a kind in a scope
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def reduce(self, op: str, x: str, out: str, where: str) -> str:
        """A reduction over the last axis, keepdims; axes is an attribute before opset 18, an input after."""
        if self.cfg.opset >= 18:
            return self.node(op, [x, self.ints("axes_last", [-1])], out, where, keepdims=1)
        return self.node(op, [x], out, where, axes=[-1], keepdims=1)

    # -- blocks -------------------------------------------------------------------------------

    def rms_norm(self, x: str, prefix: str, where: str) -> str:
        c = self.cfg
        gamma = self.init(_param_name(where), self.rng.uniform(0.8, 1.2, size=c.hidden).astype(np.float32))
        if c.rms_op:
            return self.node("RMSNormalization", [x, gamma], f"{prefix}.out", where, axis=-1, epsilon=c.eps)
        sq = self.node("Pow", [x, self.scalar("two", 2.0)], f"{prefix}.sq", where)
        ms = self.reduce("ReduceMean", sq, f"{prefix}.ms", where)
        ms_eps = self.node("Add", [ms, self.scalar("rms_eps", c.eps)], f"{prefix}.ms_eps", where)
        rms = self.node("Sqrt", [ms_eps], f"{prefix}.rms", where)
        normed = self.node("Div", [x, rms], f"{prefix}.normed", where)
        return self.node("Mul", [normed, gamma], f"{prefix}.out", where)

    def act_quant(self, x: str, prefix: str, where: str) -> str:
        """BitNet b1.58 per-token absmax quantization: s = 127 / max|x|, x' = clip(round(x * s), -128, 127) / s."""
        if not self.cfg.act_quant:
            return x
        w = f"{where}/act_quant"
        absx = self.node("Abs", [x], f"{prefix}.abs", w)
        amax = self.reduce("ReduceMax", absx, f"{prefix}.absmax", w)
        amax = self.node("Clip", [amax, self.scalar("aq_min", 1e-5)], f"{prefix}.absmax_clip", w)
        s = self.node("Div", [self.scalar("aq_qmax", 127.0), amax], f"{prefix}.scale", w)
        xs = self.node("Mul", [x, s], f"{prefix}.scaled", w)
        xr = self.node("Round", [xs], f"{prefix}.rounded", w)
        xq = self.node("Clip", [xr, self.scalar("aq_lo", -128.0), self.scalar("aq_hi", 127.0)], f"{prefix}.int8", w)
        return self.node("Div", [xq, s], f"{prefix}.out", w)

    def linear(self, x: str, n_in: int, n_out: int, out: str, where: str, ternary: bool = True) -> str:
        if ternary:
            trits, scale = ternary_weight(self.rng, n_in, n_out)
            w = trits.astype(np.float32) * scale  # exact: each element is 0 or +-scale
        else:
            w = (self.rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        weight = self.init(_param_name(where), w)
        return self.node("MatMul", [x, weight], out, where)

    def causal_mask(self) -> str:
        """An additive f32[seq, seq] mask (0 on and below the diagonal, -inf above), built once."""
        c = self.cfg
        seq = self.node("Shape", ["input_ids"], "seq_len", "mask", start=1, end=2)
        seq2 = self.node("Concat", [seq, seq], "mask_shape", "mask", axis=0)
        if c.mask == "slice":
            full = np.triu(np.full((c.max_seq, c.max_seq), -np.inf, dtype=np.float32), k=1)
            table = self.init("causal_mask_table", full)
            return self.node("Slice", [table, self.ints("zeros2", [0, 0]), seq2], "causal_mask", "mask")
        ninf = helper.make_tensor("value", TensorProto.FLOAT, [1], [-np.inf])
        full = self.node("ConstantOfShape", [seq2], "mask_full", "mask", value=ninf)
        return self.node("Trilu", [full, self.const("k_one", 1, np.int64)], "causal_mask", "mask", upper=1)  # k is 0-D

    def attention(self, x: str, mask: str, p: str, w: str) -> str:
        c = self.cfg
        hd, group = c.head_dim, c.heads // c.kv_heads
        xq = self.act_quant(x, f"{p}.qkv_in", w)
        q = self.linear(xq, c.hidden, c.heads * hd, f"{p}.q", f"{w}/q_proj")
        k = self.linear(xq, c.hidden, c.kv_heads * hd, f"{p}.k", f"{w}/k_proj")
        v = self.linear(xq, c.hidden, c.kv_heads * hd, f"{p}.v", f"{w}/v_proj")
        if c.gqa == "expand":
            # [b,s,H*hd] -> [b,H,s,hd]; K and V heads repeated `group` times as in HF's repeat_kv.
            q = self.heads_first(q, [0, 0, c.heads, hd], f"{p}.q", w)
            k = self.repeat_kv(self.heads_first(k, [0, 0, c.kv_heads, hd], f"{p}.k", w), f"{p}.k", w)
            v = self.repeat_kv(self.heads_first(v, [0, 0, c.kv_heads, hd], f"{p}.v", w), f"{p}.v", w)
            kt = self.node("Transpose", [k], f"{p}.k_t", w, perm=[0, 1, 3, 2])
        else:
            # [b,kv,group,s,hd] x [b,kv,1,hd,s]: MatMul broadcasts each K/V head over its group.
            q = self.node("Reshape", [q, self.ints("shape_q5", [0, 0, c.kv_heads, group, hd])], f"{p}.q_5d", w)
            q = self.node("Transpose", [q], f"{p}.q_heads", w, perm=[0, 2, 3, 1, 4])
            kv_shape = self.ints("shape_kv5", [0, 0, c.kv_heads, 1, hd])
            k = self.node("Reshape", [k, kv_shape], f"{p}.k_5d", w)
            kt = self.node("Transpose", [k], f"{p}.k_t", w, perm=[0, 2, 3, 4, 1])
            v = self.node("Reshape", [v, kv_shape], f"{p}.v_5d", w)
            v = self.node("Transpose", [v], f"{p}.v_heads", w, perm=[0, 2, 3, 1, 4])
        scores = self.node("MatMul", [q, kt], f"{p}.scores", w)
        scaled = self.node("Mul", [scores, self.scalar("attn_scale", 1 / np.sqrt(hd))], f"{p}.scaled", w)
        masked = self.node("Add", [scaled, mask], f"{p}.masked", w)
        probs = self.node("Softmax", [masked], f"{p}.probs", w, axis=-1)
        ctx = self.node("MatMul", [probs, v], f"{p}.ctx", w)
        perm = [0, 2, 1, 3] if c.gqa == "expand" else [0, 3, 1, 2, 4]
        ctx = self.node("Transpose", [ctx], f"{p}.ctx_t", w, perm=perm)
        ctx = self.node("Reshape", [ctx, self.ints("shape_merge", [0, 0, c.heads * hd])], f"{p}.ctx_merged", w)
        ctx = self.act_quant(ctx, f"{p}.o_in", w)
        return self.linear(ctx, c.heads * hd, c.hidden, f"{p}.out", f"{w}/o_proj")

    def heads_first(self, x: str, shape: list[int], p: str, w: str) -> str:
        split = self.node("Reshape", [x, self.ints(f"shape_heads{shape[2]}", shape)], f"{p}_split", w)
        return self.node("Transpose", [split], f"{p}_heads", w, perm=[0, 2, 1, 3])

    def repeat_kv(self, x: str, p: str, w: str) -> str:
        c = self.cfg
        group = c.heads // c.kv_heads
        if group == 1:
            return x
        x5 = self.node("Unsqueeze", [x, self.ints("axis2", [2])], f"{p}_5d", w)
        rep = self.node("Expand", [x5, self.ints("repeat_shape", [1, 1, group, 1, 1])], f"{p}_rep", w)
        return self.node("Reshape", [rep, self.ints("shape_rep", [0, c.heads, -1, c.head_dim])], f"{p}_all", w)

    def mlp(self, x: str, p: str, w: str) -> str:
        c = self.cfg
        xq = self.act_quant(x, f"{p}.gate_up_in", w)
        gate = self.linear(xq, c.hidden, c.intermediate, f"{p}.gate", f"{w}/gate_proj")
        up = self.linear(xq, c.hidden, c.intermediate, f"{p}.up", f"{w}/up_proj")
        sig = self.node("Sigmoid", [gate], f"{p}.gate_sigmoid", f"{w}/act")
        silu = self.node("Mul", [gate, sig], f"{p}.gate_silu", f"{w}/act")
        h = self.node("Mul", [silu, up], f"{p}.h", w)
        hq = self.act_quant(h, f"{p}.down_in", w)
        return self.linear(hq, c.intermediate, c.hidden, f"{p}.out", f"{w}/down_proj")

    def decoder_layer(self, x: str, mask: str, i: int) -> str:
        p, w = f"layers.{i}", f"model/layers.{i}"
        h = self.rms_norm(x, f"{p}.norm1", f"{w}/input_layernorm")
        attn = self.attention(h, mask, f"{p}.attn", f"{w}/self_attn")
        x = self.node("Add", [x, attn], f"{p}.attn_residual", w)
        h = self.rms_norm(x, f"{p}.norm2", f"{w}/post_attention_layernorm")
        mlp = self.mlp(h, f"{p}.mlp", f"{w}/mlp")
        return self.node("Add", [x, mlp], f"{p}.out", w)

    def model(self) -> onnx.ModelProto:
        c = self.cfg
        table = self.init("model.embed_tokens.weight", self.rng.standard_normal((c.vocab, c.hidden)).astype(np.float32))
        x = self.node("Gather", [table, "input_ids"], "embed", "model/embed_tokens", axis=0)
        mask = self.causal_mask()
        for i in range(c.layers):
            x = self.decoder_layer(x, mask, i)
        x = self.rms_norm(x, "norm", "model/norm")
        if c.ternary_head:
            x = self.act_quant(x, "lm_head.in", "lm_head")
        logits = self.linear(x, c.hidden, c.vocab, "lm_head.out", "lm_head", ternary=c.ternary_head)
        self.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/lm_head/Identity"))
        graph = helper.make_graph(
            self.nodes, "bitnet_tiny",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", c.vocab])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", c.opset)], producer_name="tritc-examples",
                                  doc_string=f"BitNet-style ternary decoder for tritc's examples: {c}")
        # onnx 1.23 stamps IR 14, which onnxruntime 1.31 refuses; use the oldest IR the opset allows
        # (10 up to opset 22, 11 for opset 23).
        model.ir_version = max(10, helper.find_min_ir_version_for(model.opset_import))
        return model


def _param_name(where: str) -> str:
    """The Hugging Face name of the weight of a module scope: model/layers.0/mlp/up_proj -> model.layers.0.mlp.up_proj.weight."""
    return where.replace("/", ".") + ".weight"


def build_model(cfg: Config = Config()) -> onnx.ModelProto:
    """The example model for `cfg` (deterministic for a given seed)."""
    cfg.check()
    return _Builder(cfg).model()


def linear_weights(model: onnx.ModelProto, include_head: bool = False) -> dict[str, np.ndarray]:
    """The [in, out] weight of every decoder-block linear layer (q/k/v/o/gate/up/down), by initializer name."""
    names = LINEAR_NAMES + (("lm_head",) if include_head else ())
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name.endswith(".weight") and t.name.split(".")[-2] in names}


def _parse_args(argv: Sequence[str] | None) -> tuple[Path, Config]:
    d = Config()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("examples/bitnet_tiny.onnx"), help="where to write the model")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=getattr(d, f.name))
        elif f.name in ("mask", "gqa"):
            ap.add_argument(flag, choices={"mask": ("slice", "trilu"), "gqa": ("expand", "broadcast")}[f.name],
                            default=getattr(d, f.name))
        else:
            ap.add_argument(flag, type=float if f.type == "float" else int, default=getattr(d, f.name))
    args = ap.parse_args(argv)
    return args.output, Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def main(argv: Sequence[str] | None = None) -> int:
    out, cfg = _parse_args(argv)
    try:
        model = build_model(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    onnx.checker.check_model(model, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"wrote {out}: {len(model.graph.node)} nodes, {n_params} parameters, opset {cfg.opset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

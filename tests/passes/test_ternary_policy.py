"""fold-ternary's layer policy on small ONNX models built here: which layer is the output head, and exact vs absmean.

Exact mode folds every exactly ternary layer (the head and a tied head too); absmean keeps only the vocabulary
projection (after the last residual add) and embedding tables in float, never a layer that writes into the residual
stream (o_proj, down_proj) nor one whose result also leaves as a `present` cache output (k_proj, v_proj).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritc.frontend.onnx import import_model
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run

from .ternary_helpers import run_pipeline

HIDDEN, FFN, VOCAB = 16, 32, 24
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Builder:
    """An ONNX graph under construction: nodes, initializers (exactly ternary weights), inputs and outputs."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ternary(self, name: str, k: int, n: int, per_tensor: bool = False) -> str:
        """An exactly ternary weight [K, N]: trits times a per-output-channel (or per-tensor) scale."""
        trits = self.rng.choice(np.array([-1, 0, 1], np.float32), size=(k, n))
        scale = np.float32(0.125) if per_tensor else self.rng.uniform(0.05, 0.2, n)
        return self.const(name, (trits * scale).astype(np.float32))

    def linear(self, x: str, name: str, k: int, n: int) -> str:
        return self.op("MatMul", [x, self.ternary(f"{name}.weight", k, n)], name)

    def norm(self, x: str, name: str) -> str:
        """A stand-in for RMSNorm: a per-channel gain (what matters here is that it is not a linear layer)."""
        return self.op("Mul", [x, self.const(f"{name}.gain", np.linspace(0.5, 1.5, HIDDEN, dtype=np.float32))], name)

    def output(self, name: str) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))

    def model(self, inputs: list[onnx.ValueInfoProto]) -> Graph:
        graph = helper.make_graph(self.nodes, "policy", inputs, self.outputs, self.inits)
        return import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10))


def attention(b: Builder, h: str, i: int, present: bool) -> str:
    """Single-head attention without a mask; k and v are also outputs when `present`."""
    n = b.norm(h, f"l{i}.attn_norm")
    q, k, v = (b.linear(n, f"l{i}.{p}", HIDDEN, HIDDEN) for p in PROJECTIONS[:3])
    if present:
        for name in (k, v):
            b.output(b.op("Identity", [name], f"present.{i}.{name.split('.')[-1]}"))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], f"l{i}.kT", perm=[0, 2, 1])], f"l{i}.scores")
    probs = b.op("Softmax", [scores], f"l{i}.probs", axis=-1)
    return b.linear(b.op("MatMul", [probs, v], f"l{i}.ctx"), f"l{i}.o_proj", HIDDEN, HIDDEN)


def feed_forward(b: Builder, h: str, i: int) -> str:
    n = b.norm(h, f"l{i}.ffn_norm")
    gate, up = b.linear(n, f"l{i}.gate_proj", HIDDEN, FFN), b.linear(n, f"l{i}.up_proj", HIDDEN, FFN)
    act = b.op("Mul", [b.op("Relu", [gate], f"l{i}.act"), up], f"l{i}.glu")
    return b.linear(act, f"l{i}.down_proj", FFN, HIDDEN)


def decoder(layers: int = 2, head: str = "none", present: bool = True, post_norm: bool = False) -> Graph:
    """ids -> embedding -> `layers` pre-norm decoder layers (post-norm, BERT style, with post_norm) -> final norm.

    head: "none" (a decoder body: the hidden states are the output), "lm_head" (a vocabulary projection of its own)
    or "tied" (the projection reads the transposed embedding table)."""
    b = Builder()
    emb = b.ternary("embed.weight", VOCAB, HIDDEN, per_tensor=True)  # so that its transpose, a tied head, is exact
    h = b.op("Gather", [emb, "ids"], "embed")
    for i in range(layers):
        for block in (attention, feed_forward):
            y = block(b, h, i, present) if block is attention else block(b, h, i)
            h = b.op("Add", [h, y], f"l{i}.{block.__name__}.residual")
            if post_norm:
                h = b.norm(h, f"l{i}.{block.__name__}.post_norm")
    h = b.norm(h, "final_norm")
    if head == "lm_head":
        h = b.linear(h, "lm_head", HIDDEN, VOCAB)
    elif head == "tied":
        h = b.op("MatMul", [h, b.op("Transpose", [emb], "embed.T", perm=[1, 0])], "lm_head")
    b.output(h)
    return b.model([helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])])


def feeds() -> dict[str, np.ndarray]:
    return {"ids": np.random.default_rng(1).integers(0, VOCAB, (2, 5)).astype(np.int64)}


def fold_and_check(g: Graph, mode: str, **options):
    """Fold through the cpu pipeline; exact folds must leave every output unchanged (to float32 rounding)."""
    want = run(g.copy(), feeds())
    report = run_pipeline(g, mode=mode, **options)
    got = run(g, feeds())
    if all(lay.exact or not lay.folded for lay in report.layers):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
    return report


def notes(report) -> dict[str, str]:
    return {lay.name: lay.note for lay in report.layers}


@pytest.mark.parametrize("mode", ["exact", "absmean"])
@pytest.mark.parametrize("present", [False, True])
def test_a_decoder_body_without_lm_head_folds_every_layer(mode, present):
    # The last layer's o_proj and down_proj reach the output through residual adds only; k_proj and v_proj also
    # reach `present` outputs directly. None of them is a head.
    g = decoder(head="none", present=present)
    report = fold_and_check(g, mode)
    assert len(report.layers) == 2 * len(PROJECTIONS)
    assert all(lay.folded and lay.exact for lay in report.layers), report.table()
    assert all(lay.note.startswith("exact: per-channel scale") for lay in report.layers)
    assert not [n for n in g if n.op == "matmul" and g.const_value(n.inputs[1]) is not None]


@pytest.mark.parametrize("mode", ["exact", "absmean"])
def test_an_encoder_returning_hidden_states_folds_every_layer(mode):
    g = decoder(layers=2, head="none", present=False, post_norm=True)  # post-norm: norm(h + f(h))
    report = fold_and_check(g, mode)
    assert len(report.layers) == 14 and all(lay.folded for lay in report.layers), report.table()


def test_the_vocabulary_projection_is_the_head_in_absmean_only():
    report = fold_and_check(decoder(head="lm_head"), "absmean")
    kept = [lay for lay in report.layers if not lay.folded]
    assert [lay.name for lay in kept] == ["lm_head.weight"], report.table()
    assert kept[0].note == "output head: kept in float in absmean mode (--ternary-include to fold)"
    report = fold_and_check(decoder(head="lm_head"), "exact")
    assert len(report.layers) == 15 and all(lay.folded and lay.exact for lay in report.layers), report.table()
    report = fold_and_check(decoder(head="lm_head"), "absmean", include=("lm_head*",))
    assert notes(report)["lm_head.weight"] == "exact: per-channel scale (output head, included by pattern 'lm_head*')"


def test_a_tied_head_folds_in_exact_mode_and_stays_float_in_absmean():
    g = decoder(head="tied")
    report = fold_and_check(g, "exact")
    (head,) = [lay for lay in report.layers if lay.name not in {f"l{i}.{p}.weight" for i in range(2) for p in PROJECTIONS}]
    assert head.folded and head.exact and head.shape == (HIDDEN, VOCAB), report.table()
    gather = next(n for n in g if n.op == "gather")
    assert g.const_value(gather.inputs[0]).dtype == np.float32  # the embedding lookup keeps its float table
    assert sum(n.op == "ternary_matmul" for n in g) == 15
    report = fold_and_check(decoder(head="tied"), "absmean")
    kept = [lay for lay in report.layers if not lay.folded]
    assert len(kept) == 1 and kept[0].shape == (HIDDEN, VOCAB) and kept[0].note.startswith("output head"), report.table()


def test_a_matmul_reading_an_embedding_table_stays_float_in_absmean():
    # Not the head: the table [VOCAB, HIDDEN] itself projects soft one-hot inputs, and a gather reads it too.
    def model() -> Graph:
        b = Builder()
        emb = b.ternary("embed.weight", VOCAB, HIDDEN)
        h = b.op("Add", [b.op("Gather", [emb, "ids"], "embed"), b.op("MatMul", ["onehot", emb], "proj")], "sum")
        b.output(b.linear(h, "out", HIDDEN, 8))
        return b.model([helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
                        helper.make_tensor_value_info("onehot", TensorProto.FLOAT, ["batch", VOCAB])])

    report = run_pipeline(model(), mode="absmean")
    assert notes(report)["embed.weight"].startswith("embedding table shared with a gather: kept in float"), report.table()
    assert notes(report)["out.weight"].startswith("output head")
    g = model()
    report = run_pipeline(g, mode="absmean", include=("embed*",))
    assert notes(report)["embed.weight"] == "exact: per-channel scale (embedding table shared with a gather, included by pattern 'embed*')"
    assert next(n for n in g if n.op == "gather").inputs[0].type.dtype.ir_name == "f32"


def bitlinear(act_quant: bool) -> Graph:
    """y = x @ W, W exactly ternary; with act_quant, BitNet's per-token absmax int8 quantisation in front."""
    b = Builder()
    x = "x"
    if act_quant:
        amax = b.op("ReduceMax", [b.op("Abs", [x], "abs")], "amax", axes=[-1], keepdims=1)
        clamped = b.op("Clip", [amax, b.const("eps", np.float32(1e-5))], "clamp")
        s = b.op("Div", [b.const("qmax", np.float32(127)), clamped], "s")
        rounded = b.op("Round", [b.op("Mul", [x, s], "xs")], "round")
        q = b.op("Clip", [rounded, b.const("lo", np.float32(-128)), b.const("hi", np.float32(127))], "q")
        x = b.op("Div", [q, s], "dq")
    b.output(b.linear(x, "layer", 64, 48))
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])])


@pytest.mark.parametrize("act_quant", [False, True])
def test_a_single_bitlinear_layer_model_folds(act_quant):
    g = bitlinear(act_quant)
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    want = run(g.copy(), {"x": x})["layer"]
    report = run_pipeline(g)  # the default: exact
    assert report.layers[0].folded and report.layers[0].exact, report.table()
    (node,) = [n for n in g if n.op == "ternary_matmul"]
    assert node.attrs["act"] == ("int8" if act_quant else "float")
    np.testing.assert_allclose(run(g, {"x": x})["layer"], want, rtol=1e-4, atol=1e-5)
    report = run_pipeline(bitlinear(act_quant), mode="absmean")  # in absmean it is the model's output head
    assert report.layers[0].note.startswith("output head")

"""fuse-attention on the exported transformers: every attention block of every fixture fuses (legacy opset 17, dynamo 18
and the opset-23 Attention op; Llama and BitNet), the fused graph equals the unfused one through the interpreter
(padded batches, so fully masked rows too) and compiled; what is not recognised stays and the report says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.frontend.onnx import load_model
from tritc.ir import parse_graph
from tritc.ir.interpreter import run
from tritc.passes import PassManager, parse_pass_list
from tritc.passes.fuse_attention import AttentionReport

FIXTURES = Path(__file__).parents[1] / "fixtures"
TRANSFORMERS = sorted((FIXTURES / "transformers").glob("*.onnx"))
PRE = "infer-shapes,canonicalize,fold-constants,eliminate-common-subexpressions,eliminate-dead-code"
LAYERS = 2  # every fixture decoder has two


def fused(path: Path) -> tuple:
    graph = load_model(path)
    PassManager(parse_pass_list(PRE)).run(graph)
    before = graph.copy()
    pm = PassManager(parse_pass_list("fuse-attention"))
    pm.run(graph)
    return before, graph, pm.result_of("fuse-attention")


def decoder_feeds(graph, batch: int = 2, seq: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    mask = np.ones((batch, seq), np.int64)
    mask[1, :3] = 0  # left padding: the padded queries see no key at all
    feeds = {"input_ids": rng.integers(0, 256, (batch, seq)).astype(np.int64), "attention_mask": mask}
    return {v.name: feeds[v.name] for v in graph.inputs}


@pytest.mark.parametrize("path", TRANSFORMERS, ids=[p.stem for p in TRANSFORMERS])
def test_every_attention_block_fuses(path):
    before, graph, report = fused(path)
    ops = [n.op for n in graph]
    assert ops.count("fused_attention") == LAYERS, report.table()
    assert "softmax" not in ops and "attention" not in ops
    assert isinstance(report, AttentionReport) and report.fused == LAYERS == len(report.lines)
    # the repeat-KV expand of K and V is folded: each kv head is read once
    assert all(n.inputs[1].type.shape[1] == 2 and n.attrs["heads"] == 4 for n in graph if n.op == "fused_attention")
    feeds = decoder_feeds(graph)
    want, got = run(before, feeds), run(graph, feeds)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", [p for p in TRANSFORMERS if "actquant" not in p.stem], ids=lambda p: p.stem)
def test_fused_graph_compiled_equals_the_unfused_interpreted(path):
    graph = load_model(path)
    feeds = decoder_feeds(graph)
    want = run(graph.copy(), feeds)["logits"]
    model = tritc.compile(path, passes=PRE + ",fuse-attention,tile-attention")
    assert any(n.op == "fused_attention" for n in model.graph)
    np.testing.assert_allclose(model.run(["logits"], feeds)[0], want, rtol=1e-4, atol=1e-5)


def test_unrecognised_softmax_stays_and_the_report_says_why():
    g = parse_graph("""graph @g(%q: f32[1,2,3,4], %k: f32[1,2,3,4]) -> (%y: f32[1,2,3,3]) {
  %kt = transpose(%k) {perm = [0, 1, 3, 2]} : f32[1,2,4,3]
  %s = matmul(%q, %kt) : f32[1,2,3,3]
  %p = softmax(%s) {axis = 2} : f32[1,2,3,3]
  %y = matmul(%p, %p) : f32[1,2,3,3]
  return %y
}""")
    pm = PassManager(parse_pass_list("fuse-attention"))
    assert not pm.run(g)
    report = pm.result_of("fuse-attention")
    assert report.fused == 0 and "not over the last axis" in report.lines[0].detail


def test_dump_after_fuse_attention_prints_the_report_as_comments(tmp_path):
    path = FIXTURES / "transformers" / "llama_dynamo23.onnx"
    out = subprocess.run([str(Path(sys.executable).parent / "tritc"), "dump", str(path), "--after", "fuse-attention"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("// fuse-attention: 2 of 2 attention candidates fused\n")
    assert parse_graph(out).nodes  # the comments keep it parseable


def test_optimum_layout_decoder_with_cache_fuses():
    """benchmarks/bitnet_models.py's decoder (the optimum cache layout built with onnx.helper: past concat, repeat-KV,
    a causal + padding mask as where(visible, 0, -1e9) over an attention_mask of its own length `total`)."""
    sys.path.insert(0, str(Path(__file__).parents[2]))
    from benchmarks.bitnet_models import DecoderSpec, decoder
    from tritc.frontend.onnx import load_model_bytes

    model = decoder(DecoderSpec(layers=2, hidden=64, ffn=128, heads=4, kv_heads=2, vocab=100, max_positions=64))
    graph = load_model_bytes(model.SerializeToString())
    PassManager(parse_pass_list(PRE)).run(graph)
    before = graph.copy()
    pm = PassManager(parse_pass_list("fuse-attention"))
    pm.run(graph)
    assert pm.result_of("fuse-attention").fused == 2, pm.result_of("fuse-attention").table()
    past_inputs = {v.name for v in graph.inputs if v.name.startswith("past_key_values")}
    assert not any(n.op == "concat" and {v.name for v in n.inputs if v is not None} & past_inputs for n in graph)
    rng = np.random.default_rng(0)
    b, s, past = 2, 3, 5
    feeds = {"input_ids": rng.integers(0, 100, (b, s)), "attention_mask": np.ones((b, past + s), np.int64),
             "position_ids": np.tile(np.arange(past, past + s), (b, 1))}
    feeds["attention_mask"][1, :2] = 0
    for i in range(2):
        for which in ("key", "value"):
            feeds[f"past_key_values.{i}.{which}"] = rng.standard_normal((b, 2, past, 16)).astype(np.float32)
    want, got = run(before, feeds), run(graph, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    compiled = tritc.compile(model, ternary="off").run(list(want), feeds)
    for name, out in zip(want, compiled):
        np.testing.assert_allclose(out, want[name], rtol=1e-4, atol=1e-5, err_msg=name)


CACHE = sorted((FIXTURES / "cache").glob("*.onnx"))


def cache_feeds(graph, batch: int = 2, seq: int = 3, past: int = 4) -> dict[str, np.ndarray]:
    """Inputs for a cache fixture: a past of `past` tokens, `seq` new ones, batch entry 1 left-padded by 2."""
    rng = np.random.default_rng(1)
    sizes = {"batch": batch, "seq": seq, "past": past, "total": past + seq}
    out = {}
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else sizes[d] for d in v.type.shape)
        if v.name == "input_ids":
            out[v.name] = rng.integers(3, 200, shape).astype(np.int64)
        elif v.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            mask[1, :2] = 0
            out[v.name] = mask
        elif v.name == "position_ids":
            out[v.name] = np.tile(np.arange(past, past + seq), (batch, 1)).astype(np.int64)
        elif v.type.dtype.is_int:
            out[v.name] = np.zeros(shape, np.int64)
        else:
            out[v.name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    return out


@pytest.mark.parametrize("path", CACHE, ids=[p.stem for p in CACHE])
def test_cache_fixtures_fuse(path):
    """The KV-cache decoders (Llama, Qwen2 GQA, GPT-2, BitNet; eager, sdpa and native Attention; legacy 17, dynamo 18
    and 23) and the BERT encoders: every block fuses, the past concatenation with it, and the results are the
    unfused graph's (padded batch, a past of 4 tokens)."""
    graph = load_model(path)
    PassManager(parse_pass_list(PRE)).run(graph)
    before = graph.copy()
    pm = PassManager(parse_pass_list("fuse-attention"))
    pm.run(graph)
    report = pm.result_of("fuse-attention")
    assert report.fused == LAYERS == len(report.lines), report.table()
    assert not any(n.op in ("softmax", "attention") for n in graph)
    has_past = any(v.name.startswith("past_key_values") for v in graph.inputs)
    fused = [n for n in graph if n.op == "fused_attention"]
    assert all((len(n.inputs) > 4 and n.inputs[4] is not None) == has_past for n in fused)
    feeds = cache_feeds(graph)
    want, got = run(before, feeds), run(graph, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


COMPILED = ["llama_eager_dynamo18", "qwen2_dynamo18", "gpt2_dynamo23", "bitnet_native_dynamo23", "bert_eager_dynamo18"]


@pytest.mark.parametrize("name", COMPILED)
def test_cache_fixtures_compiled(name):
    """(Legacy exports with separate `past` / `total` symbols do not compile generically yet: dyn's relations.)"""
    path = FIXTURES / "cache" / f"{name}.onnx"
    graph = load_model(path)
    feeds = cache_feeds(graph)
    want = run(graph.copy(), feeds)
    model = tritc.compile(path, passes=PRE + ",fuse-attention,tile-attention")
    assert sum(n.op == "fused_attention" for n in model.graph) == LAYERS
    for out, (key, ref) in zip(model.run(list(want), feeds), want.items()):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5, err_msg=key)

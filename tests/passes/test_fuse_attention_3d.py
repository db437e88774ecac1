"""fuse-attention on the 3-D form of the ONNX Attention op (Q [batch, seq, heads * d], K / V [batch, kv_seq,
kv_heads * d], the q_num_heads / kv_num_heads attributes): it is split into heads, fused, and its Y merged back, with
symbolic batch, sequence and past dims, so one compile serves every size. Compiled results are onnxruntime's on the
original model at two sizes: grouped (GQA, MQA) and multi-head, with and without past, causal, boolean and f32 masks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import tritc
from tritc.frontend.onnx import load_model_bytes
from tritc.ir import parse_graph, print_graph
from tritc.passes import PassManager, parse_pass_list

PRE = "infer-shapes,canonicalize,fold-constants,eliminate-common-subexpressions,eliminate-dead-code"
# (batch, seq, past, kv_seq): a prefill and a decode step of other sizes
SIZES = [(1, 5, 3, 6), (3, 1, 7, 4)]


def attention_model(heads: int, kv_heads: int, *, d: int = 8, dv: int = 8, past: bool = False, presents: bool = False,
                    causal: bool = False, mask: str | None = None, cross: bool = False, **attrs) -> onnx.ModelProto:
    """One opset-23 Attention op on 3-D Q, K, V as graph inputs; the past (4-D) and the present outputs if asked;
    `cross` gives K / V a length of their own (kv_seq), else they are the new tokens (seq)."""
    kv_len = "kv_seq" if cross else "seq"
    total = "past+seq" if past else kv_len
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f32, ["batch", "seq", heads * d]),
              helper.make_tensor_value_info("k", f32, ["batch", kv_len, kv_heads * d]),
              helper.make_tensor_value_info("v", f32, ["batch", kv_len, kv_heads * dv])]
    names = ["q", "k", "v", ""]
    if mask is not None:  # [batch, 1, seq, total]: onnxruntime wants the query length in dim -2
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL if mask == "bool" else f32,
                                                    ["batch", 1, "seq", total]))
        names[3] = "mask"
    if past:
        inputs += [helper.make_tensor_value_info("past_key", f32, ["batch", kv_heads, "past", d]),
                   helper.make_tensor_value_info("past_value", f32, ["batch", kv_heads, "past", dv])]
        names += ["past_key", "past_value"]
    outputs = [helper.make_tensor_value_info("y", f32, ["batch", "seq", heads * dv])]
    if past or presents:
        outputs += [helper.make_tensor_value_info("present_key", f32, ["batch", kv_heads, total, d]),
                    helper.make_tensor_value_info("present_value", f32, ["batch", kv_heads, total, dv])]
    while not names[-1]:
        names.pop()
    node = helper.make_node("Attention", names, [o.name for o in outputs], name="attn", is_causal=int(causal),
                            q_num_heads=heads, kv_num_heads=kv_heads, **attrs)
    model = helper.make_model(helper.make_graph([node], "attention_3d", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def feeds_for(model: onnx.ModelProto, batch: int, seq: int, past: int, kv_seq: int) -> dict[str, np.ndarray]:
    """Random inputs at one size; a boolean mask allows key 0 to every query (no fully masked row)."""
    rng = np.random.default_rng(batch * 100 + seq)
    sizes = {"batch": batch, "seq": seq, "past": past, "kv_seq": kv_seq, "past+seq": past + seq}
    out = {}
    for i in model.graph.input:
        shape = [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param] for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == TensorProto.BOOL:
            m = rng.random(shape) < 0.7
            m[..., 0] = True
            out[i.name] = m
        else:
            out[i.name] = rng.uniform(-2, 2, shape).astype(np.float32)
    return out


CASES = {
    "gqa-past-causal-bool-mask": dict(heads=4, kv_heads=2, past=True, causal=True, mask="bool"),
    "mha-past-causal": dict(heads=4, kv_heads=4, past=True, causal=True),
    "gqa-causal-f32-mask": dict(heads=4, kv_heads=2, causal=True, mask="f32"),
    "mha-bool-mask-presents": dict(heads=2, kv_heads=2, mask="bool", presents=True),
    "mqa-past-f32-mask-scale": dict(heads=4, kv_heads=1, past=True, mask="f32", dv=16, scale=0.3),
    "gqa-cross-bool-mask": dict(heads=6, kv_heads=3, d=16, dv=4, cross=True, mask="bool"),
}


def fuse(model: onnx.ModelProto):
    graph = load_model_bytes(model.SerializeToString())
    PassManager(parse_pass_list(PRE)).run(graph)
    pm = PassManager(parse_pass_list("fuse-attention"))
    pm.run(graph)
    return graph, pm.result_of("fuse-attention")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fused_and_reported(case):
    graph, report = fuse(attention_model(**case))
    assert report.fused == 1 == len(report.lines), report.table()
    assert report.comment_lines()[1].startswith("//   attn: fused: ") and "3-D Q, K, V split into heads" in report.table()
    f = next(n for n in graph if n.op == "fused_attention")
    assert (f.attrs["heads"], f.attrs["kv_heads"], f.attrs["causal"]) == (case["heads"], case["kv_heads"],
                                                                          int(case.get("causal", False)))
    d = case.get("d", 8)
    assert f.attrs["scale"] == pytest.approx(case.get("scale", 1 / np.sqrt(d)), rel=1e-6)
    assert not any(n.op == "attention" for n in graph)
    # symbolic dims all the way: Q split as [batch, heads, seq, d], Y back to the 3-D output
    assert f.inputs[0].type.shape == ("batch", case["heads"], "seq", d)
    assert graph.outputs[0].type.shape == ("batch", "seq", case["heads"] * case.get("dv", 8))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_compiled_equals_onnxruntime_at_two_sizes(case):
    model = attention_model(**case)
    cm = tritc.compile(model)
    assert cm.program.generic_error is None
    assert any(n.op == "fused_attention" for n in cm.graph) and not any(n.op == "attention" for n in cm.graph)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    for size in SIZES:
        feeds = feeds_for(model, *size)
        for name, got, want in zip(names, cm.run(names, feeds), session.run(names, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{name} at {size}")
    assert cm.stats["compilations"] == 1  # one generic code for both sizes


def test_dump_says_fused(tmp_path):
    path = tmp_path / "attn.onnx"
    onnx.save(attention_model(4, 2, past=True, causal=True, mask="bool"), path)
    out = subprocess.run([str(Path(sys.executable).parent / "tritc"), "dump", str(path), "--after", "fuse-attention"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("// fuse-attention: 1 of 1 attention candidates fused\n"
                          "//   attn: fused: 4 heads over 2 kv heads, scale 0.353553, attn_mask, causal, past concatenation "
                          "absorbed, 3-D Q, K, V split into heads -> %y.fused\n"), out
    g = parse_graph(out)
    assert [n.op for n in g if n.op in ("reshape", "transpose", "fused_attention")] == \
        ["reshape", "transpose"] * 3 + ["fused_attention", "transpose", "reshape"]


def test_a_miss_leaves_the_graph_as_it_was():
    """A 3-D Attention op that passes the early checks but not the later ones (here: a result of unknown shape) gets no
    split nodes left behind."""
    text = """graph @g(%q: f32[b,s,32], %k: f32[b,s,16], %v: f32[b,s,16]) -> (%y: f32[*]) {
  %y = attention(%q, %k, %v) {kv_num_heads = 2, q_num_heads = 4} : f32[*]
  return %y
}"""
    g = parse_graph(text)
    before = print_graph(g)
    pm = PassManager(parse_pass_list("fuse-attention"))
    assert not pm.run(g)
    assert "is not (batch, queries, heads * value size)" in pm.result_of("fuse-attention").lines[0].detail
    assert print_graph(g) == before

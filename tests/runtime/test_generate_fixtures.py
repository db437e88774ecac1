"""tritc.generate on the exported KV-cache fixtures (tests/fixtures/cache/: Llama, Qwen2, GPT-2 and BitNet from both
torch exporters, opsets 17, 18 and 23, the native Attention op): 32 greedy tokens equal onnxruntime's and torch's."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import tritc
from tritc.driver import build_passes
from tritc.frontend.onnx import load_model
from tritc.passes.pass_manager import PassManager

from .compiled_fixtures import compiled as compiled_model
from .generate_reference import InterpreterSession

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cache"
DECODERS = sorted(p for p in FIXTURES.glob("*.onnx") if not p.stem.startswith("bert"))
NEW_TOKENS = 32


def expected(model: Path) -> np.lib.npyio.NpzFile:
    return np.load(FIXTURES / f"{model.stem.rsplit('_', 1)[0]}.expected.npz")  # llama_dynamo18.onnx -> llama.expected.npz


@functools.cache
def ort_tokens(model: Path, prompt_of: Path | None = None) -> list[int]:
    """onnxruntime's greedy tokens, the plain loop: each present.N.* fed back as past_key_values.N.*."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ids = expected(prompt_of or model)["prompt_ids"]
    past = {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32) for i in session.get_inputs()
            if i.name.startswith("past_key_values.")}
    tokens: list[int] = []
    for _ in range(NEW_TOKENS):
        cached = next(iter(past.values())).shape[2]
        total = cached + ids.shape[1]
        out = dict(zip(names, session.run(names, {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                                                  "position_ids": np.arange(cached, total)[None], **past})))
        tokens.append(int(out["logits"][0, -1].argmax()))
        ids = np.array([[tokens[-1]]], np.int64)
        past = {n.replace("present.", "past_key_values."): v for n, v in out.items() if n.startswith("present.")}
    return tokens


def test_there_are_fixtures():
    assert len(DECODERS) >= 12, f"expected the cache fixtures in {FIXTURES}"


@pytest.mark.parametrize("model", DECODERS, ids=lambda p: p.stem)
def test_32_greedy_tokens_equal_onnxruntime(model):
    """The loop over tritc's interpreter running the cpu pipeline's final IR (BitNet's layers folded to ternary): fast
    today, while compiled code still compiles each step's shape (test_compiled_fixtures below)."""
    graph = load_model(model)
    PassManager(build_passes(pipeline="cpu")).run(graph)
    if model.stem.startswith("bitnet"):
        assert sum(n.op == "ternary_matmul" for n in graph) == 15  # every linear layer, lm_head too
    result = tritc.generate(InterpreterSession(graph), expected(model)["prompt_ids"], NEW_TOKENS)
    assert list(result.tokens) == ort_tokens(model) == expected(model)["greedy_tokens"].tolist()


def exactly_ternary(model: Path, folder: Path) -> Path:
    """The fixture with every linear layer's weight made exactly ternary: trits (|w| > 0.5 mean|w| of its column)
    times the column's mean magnitude, so that the default fold (exact mode) folds each one."""
    proto = onnx.load(str(model))
    feeds_matmul = {n.input[1] for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1}
    for init in proto.graph.initializer:
        if init.name in feeds_matmul and len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT:
            w = onnx.numpy_helper.to_array(init)
            scale = np.abs(w).mean(axis=0, keepdims=True).astype(np.float32)
            trits = np.where(np.abs(w) > 0.5 * scale, np.sign(w), 0).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array((trits * scale).astype(np.float32), init.name))
    out = folder / f"{model.stem}_ternary.onnx"
    onnx.save(proto, str(out))
    return out


def linear_layers(model: Path) -> int:
    proto = onnx.load(str(model))
    weights = {i.name for i in proto.graph.initializer if len(i.dims) == 2}
    return sum(1 for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights)


@pytest.mark.parametrize("model", DECODERS, ids=lambda p: p.stem)
def test_compiled_32_greedy_tokens_one_compile(model):
    """Compiled code (one generic compile, threads=1): 32 greedy tokens equal onnxruntime's, and nothing compiles
    after the first call (the counter tritc.generate reads)."""
    compiled = compiled_model(model)
    assert compiled.program.generic_error is None, compiled.program.generic_error
    assert compiled.stats["compilations"] == 1
    result = tritc.generate(compiled, expected(model)["prompt_ids"], NEW_TOKENS)
    assert list(result.tokens) == ort_tokens(model)
    assert compiled.stats["compilations"] == 1, "decoding compiled code after the first call"


@pytest.mark.parametrize("model", [m for m in DECODERS if not m.stem.startswith("bitnet")], ids=lambda p: p.stem)
def test_exactly_ternary_layers_fold_and_decode(model, tmp_path):
    """The same fixture with every linear layer exactly ternary: each folds to ternary_matmul (exact mode, no
    activation quantisation, so the result is the float model's), and 32 compiled greedy tokens equal
    onnxruntime's on that model."""
    path = exactly_ternary(model, tmp_path)
    compiled = tritc.compile(str(path), threads=1)
    assert sum(n.op == "ternary_matmul" for n in compiled.graph) == linear_layers(path) > 0
    result = tritc.generate(compiled, expected(model)["prompt_ids"], NEW_TOKENS)
    assert list(result.tokens) == ort_tokens(path, prompt_of=model)
    assert compiled.stats["compilations"] == 1

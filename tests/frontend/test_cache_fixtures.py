"""The committed KV-cache fixtures (tests/fixtures/cache/) through the frontend and the interpreter: prefill from an
empty (zero-length) past, then decode steps with the cache fed back, checked against onnxruntime, which is itself
checked against the greedy tokens torch generated when the fixtures were made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tritc.ir.interpreter import run

from .test_transformer_fixtures import _graph, _ids, _ort, _session  # onnxruntime sessions and graphs, cached per file
from .test_transformer_fixtures import test_bitnet_weights_are_trits_times_scale as check_trits_times_scale

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cache"
FILES = sorted(FIXTURES.glob("*.onnx"))
DECODERS = [p for p in FILES if not p.stem.startswith("bert")]
ENCODERS = [p for p in FILES if p.stem.startswith("bert")]
EXPECTED_STEMS = sorted([*(f"{m}_{e}" for m in ("llama", "qwen2", "gpt2", "bitnet") for e in ("legacy17", "dynamo18", "dynamo23")),
                         "llama_eager_legacy17", "llama_eager_dynamo18", "llama_native_dynamo23", "bitnet_native_dynamo23",
                         "bert_eager_legacy17", "bert_eager_dynamo18", "bert_sdpa_legacy17", "bert_sdpa_dynamo18", "bert_sdpa_dynamo23"])
NEW_TOKENS = 32  # greedy tokens stored per decoder
INTERP_DECODE_STEPS = 3  # decode steps run through the interpreter after the prefill (each one feeds its present back)
# Interpreter vs onnxruntime: both float32 on the same graph; logits are O(1).
INTERP_ATOL = 1e-4
# onnxruntime vs torch: other kernels and accumulation orders; measured <= 4e-6 when the fixtures were made.
TORCH_ATOL = 1e-4


def _expected(model: Path) -> np.lib.npyio.NpzFile:
    # llama_native_dynamo23.onnx -> llama_native.expected.npz
    return np.load(FIXTURES / f"{model.stem.rsplit('_', 1)[0]}.expected.npz")


def _export_key(model: Path) -> str:
    return model.stem.rsplit("_", 1)[1]  # legacy17, dynamo18, dynamo23



def _empty_past(model: Path) -> dict[str, np.ndarray]:
    """Batch 1, zero cached tokens: [1, kv_heads, 0, head_dim] with the file's static head sizes."""
    return {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)
            for i in _session(model).get_inputs() if i.name.startswith("past_key_values.")}


def _step_feeds(model: Path, ids: np.ndarray, past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call of batch 1: the new tokens, a mask of ones over cache + new, positions past .. past + seq - 1."""
    cached = next(iter(past.values())).shape[2]
    total = cached + ids.shape[1]
    feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
             "position_ids": np.arange(cached, total, dtype=np.int64)[None], **past}
    names = {i.name for i in _session(model).get_inputs()}
    return {k: v for k, v in feeds.items() if k in names}


def _next_past(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n.replace("present.", "past_key_values."): v for n, v in out.items() if n.startswith("present.")}


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert set(got) == set(want), where
    for name, w in want.items():
        g = got[name]
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{where} {name}: {g.dtype}{list(g.shape)} vs onnxruntime {w.dtype}{list(w.shape)}"
        diff = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max())
        assert diff <= INTERP_ATOL, f"{where} {name}: max |interpreter - onnxruntime| = {diff:.3g}"


def test_fixture_set_is_complete() -> None:
    assert [p.stem for p in FILES] == EXPECTED_STEMS
    for p in FILES:
        proto = onnx.load(str(p), load_external_data=False)
        assert proto.ir_version <= 10, f"{p.name}: IR version {proto.ir_version} is newer than onnxruntime reads"
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer), f"{p.name}: external data"
    for p in DECODERS:
        proto = onnx.load(str(p), load_external_data=False)
        kv = [f"{i}.{part}" for i in range(2) for part in ("key", "value")]
        assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", "position_ids", *(f"past_key_values.{n}" for n in kv)]
        assert [o.name for o in proto.graph.output] == ["logits", *(f"present.{n}" for n in kv)]
        npz = _expected(p)
        assert npz["prompt_ids"].shape == (1, 7) and npz["greedy_tokens"].shape == (NEW_TOKENS,)
        assert npz[f"{_export_key(p)}_prefill_logits"].shape == (1, 7, 256)
        assert npz["greedy_margins"].min() >= 1e-3  # no near-tie along the greedy path


@pytest.mark.parametrize("model", [p for p in DECODERS if p.stem.startswith("bitnet")], ids=_ids)
def test_bitnet_every_linear_is_trits_times_scale(model: Path) -> None:
    # "Every layer exactly ternary": all 15 MatMul weights, lm_head included, are trits x scale (the no-cache BitNet's check).
    check_trits_times_scale(model)


@pytest.mark.parametrize("model", DECODERS, ids=_ids)
def test_onnxruntime_decodes_torch_greedy_tokens(model: Path) -> None:
    npz = _expected(model)
    ids, past, tokens = npz["prompt_ids"], _empty_past(model), []
    for step in range(NEW_TOKENS):
        out = _ort(model, _step_feeds(model, ids, past))
        if step == 0:
            assert np.abs(out["logits"] - npz["torch_prefill_logits"]).max() <= TORCH_ATOL
        tokens.append(int(out["logits"][0, -1].argmax()))
        ids, past = np.array([[tokens[-1]]], np.int64), _next_past(out)
    assert tokens == npz["greedy_tokens"].tolist()


@pytest.mark.parametrize("model", DECODERS, ids=_ids)
def test_interpreter_prefill_and_decode_match_onnxruntime(model: Path) -> None:
    npz, graph = _expected(model), _graph(model)
    ids, ort_past = npz["prompt_ids"], _empty_past(model)
    past = dict(ort_past)
    for step in range(1 + INTERP_DECODE_STEPS):
        got = run(graph, _step_feeds(model, ids, past))  # the interpreter is fed its own cache
        want = _ort(model, _step_feeds(model, ids, ort_past))
        _assert_close(got, want, f"{model.name} step {step}")
        if step < 2:  # what the generator stored from the onnxruntime it ran
            stored = npz[f"{_export_key(model)}_{'prefill' if step == 0 else 'step1'}_logits"]
            assert np.abs(got["logits"] - stored).max() <= INTERP_ATOL
        token = int(got["logits"][0, -1].argmax())
        assert token == npz["greedy_tokens"][step]
        ids, past, ort_past = np.array([[token]], np.int64), _next_past(got), _next_past(want)
    assert next(iter(past.values())).shape[2] == 7 + INTERP_DECODE_STEPS


@pytest.mark.parametrize("seq", (5, 11))
@pytest.mark.parametrize("model", ENCODERS, ids=_ids)
def test_encoder_interpreter_matches_onnxruntime_and_torch(model: Path, seq: int) -> None:
    npz = _expected(model)
    feeds = {k: npz[f"s{seq}_{k}"] for k in ("input_ids", "attention_mask")}
    assert feeds["attention_mask"][1, -2:].tolist() == [0, 0]  # row 1 is padded: the padding mask is exercised
    want = _ort(model, feeds)
    assert np.abs(want["last_hidden_state"] - npz[f"s{seq}_last_hidden_state"]).max() <= TORCH_ATOL
    _assert_close(run(_graph(model), feeds), want, f"{model.name} seq {seq}")

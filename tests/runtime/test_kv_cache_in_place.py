"""The KV cache appended in place (issue 8, item 2): tritc.generate runs a tritc model's capacity form
(kv-cache-in-place, compiled once), feeding the cache buffers whole with past_len and binding the present outputs to
the same buffers, on every exported decoder fixture (tests/fixtures/cache/: Llama, Qwen2, GPT-2, BitNet; legacy 17,
dynamo 18 and 23, the native Attention op). Every decoder fixture takes the in-place path (IN_PLACE); a model that
cannot (GPT-2's stacked [2, ...] cache, any onnxruntime session) generates through the concatenated form and says
why."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import tritc
from tritc.errors import InputShapeError
from tritc.runtime.kv_cache import KVCache

from .decoders import DecoderSpec, concat_decoder
from .generate_reference import ort_greedy, ort_session
from .test_generate_fixtures import DECODERS, NEW_TOKENS, expected, ort_tokens

IN_PLACE = [m.stem for m in DECODERS]  # the fixtures that take the in-place path: all of them


@functools.cache
def lazily_compiled(path: Path):
    """The fixture compiled without code (generation compiles what it runs: the capacity form)."""
    return tritc.compile(str(path), threads=1, lazy=True)


class Recorder:
    """Wraps the capacity-form model's run: checks at every step that each present output is bound to its past
    input's very buffer, that the kernel wrote the step's rows there and nothing after them, and counts the times
    the buffers were replaced (growth)."""

    def __init__(self, model, pairs: dict[str, str]):
        self.model, self.run, self.pairs = model, model.run, pairs
        self.steps, self.replaced, self.buffers = 0, 0, None

    def __call__(self, names, feed, run_options=None, *, outputs=None):
        past = int(feed["past_len"][0])
        n = feed["input_ids"].shape[1]
        assert outputs is not None and set(outputs) == set(self.pairs)
        for present, past_input in self.pairs.items():
            assert outputs[present] is feed[past_input], f"{present} is not bound to the buffer fed as {past_input}"
            assert not feed[past_input][:, :, past:].any(), "rows after the cache's length were written before"
        buffers = [feed[p] for p in self.pairs.values()]
        if self.buffers is not None and any(a is not b for a, b in zip(buffers, self.buffers)):
            self.replaced += 1
        self.buffers = buffers
        results = self.run(names, feed, run_options, outputs=outputs)
        for present, past_input in self.pairs.items():
            rows = feed[past_input]
            assert np.abs(rows[:, :, past:past + n]).sum(axis=(0, 1, 3)).all(), f"{present}: the step's rows not written"
            assert not rows[:, :, past + n:].any(), f"{present}: rows after the step's were written"
        self.steps += 1
        return results


def ort_presents(model: Path, ids: list[int]) -> dict[str, np.ndarray]:
    """onnxruntime's present outputs for the whole sequence at once (an empty past): every position's keys/values."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
            "position_ids": np.arange(len(ids))[None]}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            feed[i.name] = np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)
    names = [o.name for o in session.get_outputs()]
    return {n: a for n, a in zip(names, session.run(names, feed)) if n.startswith("present.")}


@pytest.mark.parametrize("model", DECODERS, ids=lambda p: p.stem)
def test_32_greedy_tokens_with_the_cache_in_place(model, monkeypatch):
    """32 greedy tokens equal onnxruntime's; the capacity form is compiled once and the ONNX form never; each step
    binds the presents to the very buffers it feeds and the kernel writes only the new rows (nothing is copied:
    KVCache.append, the concatenated form's copy, never runs); the buffers hold onnxruntime's keys and values."""
    cm = lazily_compiled(model)
    capacity_form, reason = cm.with_cache_in_place()
    assert capacity_form is not None, reason
    assert model.stem in IN_PLACE
    pairs = {f"present.{p.name.removeprefix('past_key_values.')}": p.name for p in capacity_form.get_inputs()
             if p.name.startswith("past_key_values.")}
    recorder = Recorder(capacity_form, pairs)
    monkeypatch.setattr(capacity_form, "run", recorder)
    monkeypatch.setattr(KVCache, "append", lambda *a: pytest.fail("the cache was copied out of a present output"))
    prompt = expected(model)["prompt_ids"]
    result = tritc.generate(cm, prompt, NEW_TOKENS)
    assert result.stats.cache_in_place and result.stats.cache_reason == ""
    assert list(result.tokens) == ort_tokens(model)
    assert recorder.steps == NEW_TOKENS and result.stats.cache_grows == recorder.replaced == 2  # 16 -> 32 -> 38 rows
    assert capacity_form.stats["compilations"] == 1 and cm.stats["compilations"] == 0
    sequence = [*prompt[0].tolist(), *result.tokens[:-1]]  # the last token is never fed
    for present, rows in ort_presents(model, sequence).items():
        buffer = recorder.buffers[list(pairs).index(present)]
        np.testing.assert_allclose(buffer[:, :, :len(sequence)], rows, rtol=1e-4, atol=1e-4, err_msg=present)
    again = tritc.generate(cm, prompt, 8, max_context=prompt.shape[1] + 7)  # buffers allocated once: no growth
    assert list(again.tokens) == list(result.tokens[:8]) and again.stats.cache_grows == 0
    assert capacity_form.stats["compilations"] == 1 and cm.stats["compilations"] == 0, "generating again compiled code"


def test_the_relations_hold_on_the_valid_rows():
    """A legacy export's total = past+seq (read before fuse-attention) still holds in the capacity form, with past
    the rows past_len says, not the buffers' capacity: a mask of past_len + seq keys runs, another length is one
    clear error."""
    model = next(m for m in DECODERS if m.stem == "llama_legacy17")
    capacity_form, _ = lazily_compiled(model).with_cache_in_place()
    assert capacity_form.graph.source_relations == {"total": "past+seq"}
    past, capacity = 5, 12
    feed = {"input_ids": np.array([[3, 4]], np.int64), "position_ids": np.array([[5, 6]], np.int64),
            "past_len": np.array([past], np.int64)}
    for p in capacity_form.get_inputs():
        if p.name.startswith("past_key_values."):
            feed[p.name] = np.zeros((1, p.shape[1], capacity, p.shape[3]), np.float32)
    capacity_form.run(["logits"], {**feed, "attention_mask": np.ones((1, past + 2), np.int64)})
    with pytest.raises(InputShapeError, match=r"input 'attention_mask' dim 1 \('total'\) is 14, but the model needs "
                                              r"total = past\+seq = 7"):
        capacity_form.run(["logits"], {**feed, "attention_mask": np.ones((1, capacity + 2), np.int64)})


def test_a_model_that_cannot_take_the_form_copies_the_cache():
    """GPT-2's stacked cache ([2, batch, heads, past, head], one input per layer) reaches the attention through a
    split, not as its past operand: the model generates through the concatenated form, onnxruntime's tokens, and
    the stats say why."""
    spec = DecoderSpec(naming="gpt2")
    model = concat_decoder(spec)
    cm = tritc.compile(model, threads=1)
    result = tritc.generate(cm, [1, 2, 3], 8)
    assert not result.stats.cache_in_place
    assert "fused_attention" in result.stats.cache_reason and "is not a graph input" in result.stats.cache_reason
    assert list(result.tokens) == ort_greedy(model, spec, [1, 2, 3], 8)
    assert cm.stats["compilations"] == 1


def test_a_session_that_is_not_tritcs_copies_the_cache():
    spec = DecoderSpec()
    model = concat_decoder(spec)
    result = tritc.generate(ort_session(model), [1, 2, 3], 4)
    assert not result.stats.cache_in_place and result.stats.cache_reason == "the model is not compiled by tritc (InferenceSession)"
    assert list(result.tokens) == ort_greedy(model, spec, [1, 2, 3], 4)

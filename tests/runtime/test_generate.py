"""tritc.generate: greedy tokens equal onnxruntime's loop on every cache layout (compiled code, the interpreter and an
onnxruntime session driven by the same loop), sampling reproducible for a seed, stop tokens, streaming order, the
maximum context and the cache's growth."""

from __future__ import annotations

import numpy as np
import pytest

import tritc
from tritc.runtime.generate import Generation, GenerationResult

from .decoders import DecoderSpec, attention_decoder, concat_decoder
from .generate_reference import CountingSession, InterpreterSession, ort_greedy, ort_session

PROMPT = [1, 2, 3]

# (id, spec, builder): every layout the loop must drive.
LAYOUTS = [
    ("optimum", DecoderSpec(), concat_decoder),
    ("dynamo-names", DecoderSpec(naming="dynamo"), concat_decoder),
    ("gpt2-stacked", DecoderSpec(naming="gpt2"), concat_decoder),
    ("no-position-ids", DecoderSpec(position_ids=False), concat_decoder),
    ("no-attention-mask", DecoderSpec(attention_mask=False), concat_decoder),
    ("total-symbol", DecoderSpec(mask_dim="total"), concat_decoder),
    ("attention-op", DecoderSpec(naming="attention", kv_heads=2), attention_decoder),
    ("attention-op-no-positions", DecoderSpec(naming="attention", kv_heads=2, position_ids=False), attention_decoder),
]


@pytest.fixture(scope="module")
def optimum():
    spec = DecoderSpec()
    return spec, concat_decoder(spec)


@pytest.mark.parametrize("spec,build", [pytest.param(s, b, id=i) for i, s, b in LAYOUTS])
def test_greedy_equals_onnxruntime_on_every_layout(spec, build):
    """The loop (cache buffers, positions, mask, fed-back presents) over onnxruntime's own session gives the tokens of
    the plain reference loop, 32 of them."""
    model = build(spec)
    expected = ort_greedy(model, spec, PROMPT, 32)
    result = tritc.generate(ort_session(model), PROMPT, 32)
    assert list(result.tokens) == expected
    assert result.stop_reason == "max_new_tokens" and result.prompt == tuple(PROMPT)
    assert len(set(expected)) > 4  # a sequence that could differ, not one repeated token


@pytest.mark.parametrize("spec,build", [
    pytest.param(DecoderSpec(), concat_decoder, id="optimum"),
    pytest.param(DecoderSpec(naming="attention", kv_heads=2), attention_decoder, id="attention-op"),
])
def test_compiled_greedy_equals_onnxruntime(spec, build):
    """tritc's compiled code (ternary layers folded) decodes onnxruntime's 16 greedy tokens with one generic code:
    nothing is compiled after tritc.compile but the model's capacity form, once (the KV cache in place)."""
    model = build(spec)
    cm = tritc.compile(model)
    assert cm.ternary_report.summary()["folded"] > 0
    assert cm.program.generic_error is None and cm.stats["compilations"] == 1
    result = tritc.generate(cm, PROMPT, 16)
    assert list(result.tokens) == ort_greedy(model, spec, PROMPT, 16)
    assert cm.stats["compilations"] == 1 and len(cm.specializations) == 1
    s = result.stats
    assert s.prompt_tokens == 3 and s.new_tokens == 16 and s.prefill_seconds > 0 and s.decode_seconds > 0
    assert s.prefill_tokens_per_second > 0 and s.decode_tokens_per_second > 0
    # a model object is ready; what generate compiled is its capacity form (the KV cache in place), once
    assert s.cache_in_place and s.load_seconds > 0 and s.time_to_first_token == s.load_seconds + s.prefill_seconds
    again = tritc.generate(cm, PROMPT, 2).stats
    assert again.cache_in_place and again.load_seconds < s.load_seconds / 10


@pytest.mark.parametrize("naming", ["attention", "opaque"])
def test_interpreter_on_the_native_attention_form(naming):
    """The opset-23 Attention form through tritc's IR and interpreter; with names that say nothing ('cache_in_0_a' ->
    'cache_out_0_x') the inputs are paired with outputs through the attention node's past_key / present_key slots."""
    spec = DecoderSpec(naming=naming, kv_heads=2)
    model = attention_decoder(spec)
    session = InterpreterSession(tritc.compile(model))
    result = tritc.generate(session, PROMPT, 24)
    assert list(result.tokens) == ort_greedy(model, spec, PROMPT, 24)
    assert session.runs == 24  # one prefill and 23 decode steps: the last token is never fed


def test_an_onnx_path_is_compiled_and_a_tritc_path_loaded(tmp_path, optimum):
    import onnx

    spec, model = optimum
    path = tmp_path / "dec.onnx"
    onnx.save(model, path)
    expected = ort_greedy(model, spec, PROMPT, 3)
    from_onnx = tritc.generate(str(path), PROMPT, 3, threads=1)
    assert list(from_onnx.tokens) == expected and from_onnx.stats.load_seconds > 0
    assert from_onnx.stats.time_to_first_token == pytest.approx(from_onnx.stats.load_seconds + from_onnx.stats.prefill_seconds)
    cm = tritc.compile(model)
    cm.save(tmp_path / "dec.tritc")
    assert list(tritc.generate(tmp_path / "dec.tritc", PROMPT, 3).tokens) == expected


# ---- sampling ----------------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_for_a_seed(optimum):
    _, model = optimum
    session = ort_session(model)
    runs = [tritc.generate(session, PROMPT, 24, temperature=1.5, seed=seed).tokens for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    greedy = tritc.generate(session, PROMPT, 24).tokens
    assert runs[0] != greedy  # at temperature 1.5 the samples leave the greedy path
    # top_k=1 and a nucleus that holds one token leave only the most likely token: greedy again.
    assert tritc.generate(session, PROMPT, 24, temperature=1.5, top_k=1, seed=3).tokens == greedy
    assert tritc.generate(session, PROMPT, 24, temperature=1.5, top_p=1e-9, seed=3).tokens == greedy


def test_numpy_array_prompts(optimum):
    _, model = optimum
    session = ort_session(model)
    expected = tritc.generate(session, PROMPT, 4).tokens
    assert tritc.generate(session, np.array(PROMPT, np.int32), 4).tokens == expected
    assert tritc.generate(session, np.array([PROMPT]), 4).tokens == expected


# ---- stopping ----------------------------------------------------------------------------------------------------


def test_stop_tokens(optimum):
    spec, model = optimum
    session = ort_session(model)
    greedy = ort_greedy(model, spec, PROMPT, 16)
    stop = greedy[5]
    first = greedy.index(stop)
    never = next(t for t in range(spec.vocab) if t not in greedy)
    result = tritc.generate(session, PROMPT, 16, stop_ids=[never, stop])
    assert list(result.tokens) == greedy[:first + 1]  # the stop token is the last one returned
    assert result.stop_reason == "stop_token"
    assert tritc.generate(session, PROMPT, 16, stop_ids=stop).tokens == result.tokens  # one id alone


def test_maximum_context(optimum):
    """The cache holds at most max_context tokens: with a 3-token prompt and max_context 8, 8 - 3 + 1 tokens come
    (the last one is never fed), allocated once; without it the buffers start small and double."""
    spec, model = optimum
    session = ort_session(model)
    result = tritc.generate(session, PROMPT, 32, max_context=8)
    assert list(result.tokens) == ort_greedy(model, spec, PROMPT, 6)
    assert result.stop_reason == "max_context"
    assert result.stats.cache_capacity == 8 and result.stats.cache_grows == 0
    grown = tritc.generate(session, PROMPT, 40)
    assert grown.stats.cache_capacity == 3 + 40 - 1 and grown.stats.cache_grows == 2  # 16 -> 32 -> 42
    exact = tritc.generate(session, PROMPT, 1, max_context=3)  # a prompt that fills the context: one token still
    assert len(exact.tokens) == 1 and exact.stop_reason == "max_new_tokens"
    full = tritc.generate(session, PROMPT, 5, max_context=3)
    assert len(full.tokens) == 1 and full.stop_reason == "max_context"


def test_the_model_position_table_bounds_the_context():
    spec = DecoderSpec(positions=6)
    model = concat_decoder(spec)
    session = InterpreterSession(tritc.compile(model))
    result = tritc.generate(session, PROMPT, 10)
    assert len(result.tokens) == 4 and result.stop_reason == "max_context"
    assert list(result.tokens) == ort_greedy(model, spec, PROMPT, 4)


# ---- streaming ---------------------------------------------------------------------------------------------------


def test_streaming_yields_tokens_in_order_as_they_come(optimum):
    _, model = optimum
    session = CountingSession(ort_session(model))
    expected = tritc.generate(session, PROMPT, 10).tokens
    session.runs = 0
    seen: list[int] = []
    generation = tritc.generate(session, PROMPT, 10, stream=True, on_token=seen.append)
    assert isinstance(generation, Generation) and session.runs == 0  # nothing runs before the first token is asked for
    got = []
    for token in generation:
        got.append(token)
        assert session.runs == len(got) and seen == got  # each token comes right after its own step
    assert tuple(got) == expected
    result = generation.result
    assert isinstance(result, GenerationResult) and result.tokens == expected and list(generation) == []


def test_callback_without_streaming(optimum):
    _, model = optimum
    seen: list[int] = []
    result = tritc.generate(ort_session(model), PROMPT, 6, on_token=seen.append)
    assert tuple(seen) == result.tokens and len(seen) == 6


def test_result_of_a_stream_read_early_runs_to_the_end(optimum):
    _, model = optimum
    generation = tritc.generate(ort_session(model), PROMPT, 5, stream=True)
    first = next(generation)
    result = generation.result
    assert result.tokens[0] == first and len(result.tokens) == 5
    assert result.stats.decode_tokens_per_second is not None and result.stats.as_dict()["new_tokens"] == 5

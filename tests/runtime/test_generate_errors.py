"""Bad input to tritc.generate: one clear error each, raised before the model runs; and how decoder_layout.py reads the
layouts (names of each exporter, the sequence axis, what it refuses)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import tritc
from tritc.errors import CompilerError, OptionError, UnsupportedError
from tritc.frontend.onnx import import_model
from tritc.runtime.decoder_layout import Port, decoder_layout

from .decoders import DecoderSpec, concat_decoder
from .generate_reference import CountingSession, InterpreterSession, ort_session

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)


@pytest.fixture(scope="module")
def model():
    return concat_decoder(DecoderSpec())


@pytest.fixture
def session(model):
    return CountingSession(ort_session(model))


def without_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [o for o in m.graph.output if o.name != name]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    return m


@pytest.mark.parametrize("runner", ["onnxruntime", "tritc"])
def test_a_cache_input_without_its_output(model, runner):
    bad = without_output(model, "present.1.value")
    session = ort_session(bad) if runner == "onnxruntime" else InterpreterSession(tritc.compile(bad))
    with pytest.raises(UnsupportedError, match=r"^input past_key_values\.1\.value has no matching output: .*outputs left: "
                                               r"none$"):
        tritc.generate(session, [1, 2], 4)


@pytest.mark.parametrize("kwargs,message", [
    ({"input_ids": list(range(1, 20)), "max_context": 8}, "the prompt has 19 tokens, more than the maximum context of 8"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1, not 0"),
    ({"max_new_tokens": -3}, "max_new_tokens must be an integer >= 1, not -3"),
    ({"max_new_tokens": 2.0}, "max_new_tokens must be an integer >= 1, not 2.0"),
    ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1, not True"),
    ({"input_ids": [1, 64]}, r"token id 64 \(position 1 of the prompt\) is outside the vocabulary \[0, 64\)"),
    ({"input_ids": [-1]}, r"token id -1 \(position 0 of the prompt\) is outside the vocabulary \[0, 64\)"),
    ({"stop_ids": [2, 99]}, r"stop id 99 is outside the vocabulary \[0, 64\)"),
    ({"stop_ids": ["eos"]}, "stop_ids must be integer token ids, not 'eos'"),
    ({"input_ids": []}, "the prompt is empty: give at least one token id"),
    ({"input_ids": np.zeros((1, 0), np.int64)}, "the prompt is empty"),
    ({"input_ids": [[1, 2], [3, 4]]}, r"input_ids must be one prompt, .* not an array of shape \[2, 2\]"),
    ({"input_ids": [1.5, 2.0]}, "input_ids must be integer token ids, not float64 values"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"temperature": 0.8, "top_p": 2.0}, r"top_p must be in \(0, 1\]"),
    ({"top_k": 40}, "top_k 40 has no effect with greedy decoding"),
    ({"max_context": 0}, "max_context must be an integer >= 1, not 0"),
])
def test_bad_arguments(session, kwargs, message):
    args = {"input_ids": [1, 2, 3], "max_new_tokens": 4, **kwargs}
    with pytest.raises(OptionError, match=message):
        tritc.generate(session, args.pop("input_ids"), args.pop("max_new_tokens"), **args)
    assert session.runs == 0


def test_the_position_table_bounds_the_context():
    session = CountingSession(InterpreterSession(tritc.compile(concat_decoder(DecoderSpec(layers=1)))))
    with pytest.raises(OptionError, match=r"the prompt has 129 tokens, more than the maximum context of 128 \(the rows "
                                          r"of the model's position table 'embed_positions_\d+'\)"):
        tritc.generate(session, [1] * 129, 2)
    with pytest.raises(OptionError, match=r"a maximum context of 500 tokens is more than the model's 128 positions"):
        tritc.generate(session, [1], 2, max_context=500)
    assert session.runs == 0


def test_compile_options_do_not_apply_to_an_artifact(tmp_path, model):
    tritc.compile(model).save(tmp_path / "m.tritc")
    with pytest.raises(OptionError, match=r"compile options \(ternary\) apply to an .onnx model, not to .*m\.tritc"):
        tritc.generate(str(tmp_path / "m.tritc"), [1], 1, ternary="off")
    with pytest.raises(OptionError, match=r"compile options \(pipeline\) apply to an .onnx model, not to a model object "
                                          r"\(InferenceSession\)"):
        tritc.generate(ort_session(model), [1], 1, pipeline="none")


def test_not_a_model():
    with pytest.raises(TypeError, match="cannot generate with a int"):
        tritc.generate(3, [1], 1)


# ---- layouts -----------------------------------------------------------------------------------------------------


def ports(*items: tuple[str, np.dtype, tuple]) -> list[Port]:
    return [Port(n, d, s) for n, d, s in items]


TOKENS = ("input_ids", I64, ("batch", "seq"))
LOGITS = ("logits", F32, ("batch", "seq", 32))


@pytest.mark.parametrize("past,present,shape,axis", [
    ("past_key_values.0.key", "present.0.key", ("batch", 2, "past", 8), 2),  # optimum, transformers.onnx
    ("past_key_values_key_cache_0", "present_key_cache_0", ("s1", 2, "s3", 8), 2),  # torch.onnx dynamo, DynamicCache
    ("past_key_values.0.key", "present_key_values.0.key", ("batch", 2, "past", 8), 2),
    ("past_0", "present_0", (2, "batch", 2, "past", 8), 3),  # GPT-2 (onnxruntime's converter): key and value stacked
    ("past_key_values.0.key_value", "present.0.key_value", ("batch", "past", 16), 1),  # GPTBigCode, multi-query
    ("past_key_0", "present_key_0", ("batch", 2, "past", 8), 2),
])
def test_exporters_names_pair_and_the_sequence_axis_is_found(past, present, shape, axis):
    batch = shape[0] if shape[0] != 2 else shape[1]
    grown = tuple(f"{d}+seq" if i == axis else d for i, d in enumerate(shape))
    layout = decoder_layout(ports(("input_ids", I64, (batch, "seq")), (past, F32, shape)),
                            ports(LOGITS, ("other", F32, (1,)), (present, F32, grown)))
    (slot,) = layout.slots
    assert (slot.input, slot.output, slot.seq_axis) == (past, present, axis)
    assert slot.shape_for(5)[axis] == 5 and 1 in slot.shape_for(5) and layout.vocab == 32


def test_unnamed_dims_are_batch_then_length():
    layout = decoder_layout(ports(("input_ids", I64, ("input_ids.0", "input_ids.1")),
                                  ("past_key_values.0.key", F32, ("past_key_values.0.key.0", 2, "past_key_values.0.key.2", 8))),
                            ports(("logits", F32, None), ("present.0.key", F32, None)))
    assert layout.slots[0].seq_axis == 2 and layout.slots[0].shape == (1, 2, None, 8) and layout.vocab is None


@pytest.mark.parametrize("inputs,outputs,message", [
    ([("ids", I64, ("b", "s"))], [LOGITS], "the model has no input 'input_ids' to take the tokens .*its inputs: ids"),
    ([("input_ids", F32, ("b", "s"))], [LOGITS], r"input input_ids: float32\[b,s\] is not a \[batch, seq\] tensor"),
    ([TOKENS, ("past.0", F32, ("batch", 2, "past", 8))], [("out", F32, None)], "the model has no output 'logits'"),
    ([TOKENS], [LOGITS], "the model has no past key/value inputs: it cannot be run with a KV cache"),
    ([TOKENS, ("token_type_ids", I64, ("batch", "seq"))], [LOGITS], "input token_type_ids: int64.* is not one tritc "
                                                                     "generate knows how to feed"),
    ([TOKENS, ("past_0", F32, ("batch", 2, 4, 8))], [LOGITS, ("present_0", F32, ("batch", 2, 5, 8))],
     "the cache length .* is fixed at 4; a static cache is not supported"),
    ([TOKENS, ("past_0", F32, ("batch", "heads", "past", 8))], [LOGITS, ("present_0", F32, None)],
     "cannot tell which dim is the cache's length"),
    ([TOKENS, ("past_0", F32, ("batch", 2, "past", 8))], [LOGITS, ("present_0", np.dtype(np.float16), None)],
     "differ in dtype or rank"),
])
def test_layouts_it_cannot_drive(inputs, outputs, message):
    with pytest.raises(UnsupportedError, match=message):
        decoder_layout(ports(*inputs), ports(*outputs))


def test_vocab_from_the_embedding_when_logits_do_not_say():
    graph = import_model(concat_decoder(DecoderSpec(vocab=48)))
    ins = [Port(v.name, v.type.dtype.np_dtype, tuple(v.type.shape)) for v in graph.inputs]
    outs = [Port(v.name, v.type.dtype.np_dtype, tuple(v.type.shape)) for v in graph.outputs]
    outs[0] = Port("logits", F32, ("batch", "seq", "vocab"))
    layout = decoder_layout(ins, outs, graph)
    assert layout.vocab == 48 and layout.positions_limit == 128


def test_errors_are_user_errors():
    assert issubclass(UnsupportedError, CompilerError) and issubclass(OptionError, CompilerError)

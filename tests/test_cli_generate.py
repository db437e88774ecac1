"""`tritc generate`: tokens streamed as they come, the speed line, --json, .tritc artifacts, sampling flags, and one-line
errors with exit status 2 for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from tritc import cli

from .runtime.decoders import DecoderSpec, attention_decoder, concat_decoder
from .runtime.generate_reference import ort_greedy
from .runtime.test_generate_errors import without_output

ROOT = Path(__file__).resolve().parents[1]
SPEC = DecoderSpec()
SPEED = re.compile(r"prefill 3 tokens in [\d.]+ [mu]?s, [\d.]+ tokens/s; decode (\d+) tokens in [\d.]+ [mu]?s, [\d.]+ tokens/s; "
                   r"first token after [\d.]+ [mu]?s \(model ready in [\d.]+ [mu]?s\); stopped: ([a-z-]+); "
                   r"KV cache (in place|copied each step)")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "decoder.onnx"
    model = concat_decoder(SPEC)
    onnx.save(model, path)
    return path, model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["generate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tokens_then_the_speed_line(decoder, capsys):
    path, model = decoder
    code, out, err = run(capsys, str(path), "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--threads", "1")
    assert code == 0 and err == ""
    tokens, speed = out.splitlines()
    assert [int(t) for t in tokens.split()] == ort_greedy(model, SPEC, [1, 2, 3], 4)
    m = SPEED.fullmatch(speed)
    assert m is not None, speed
    assert m.groups() == ("3", "max-new-tokens", "in place")


def test_tokens_are_printed_as_they_come(decoder):
    """The first token reaches the reader while the later ones are still being computed: the reader holds it before
    the process ends."""
    path, _ = decoder
    proc = subprocess.Popen([sys.executable, "-m", "tritc.cli", "generate", str(path), "--prompt-ids", "1,2,3",
                             "--max-new-tokens", "6", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        first = b""
        while not first.endswith(b" "):
            c = proc.stdout.read(1)  # type: ignore[union-attr]
            assert c, proc.stderr.read().decode()  # type: ignore[union-attr]
            first += c
        assert proc.poll() is None  # still generating
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    tokens = (first + rest).decode().splitlines()[0].split()
    assert len(tokens) == 6


def test_json(decoder, capsys):
    path, model = decoder
    code, out, err = run(capsys, str(path), "--prompt-ids", "1,2,3", "--max-new-tokens", "3", "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["prompt"] == [1, 2, 3] and doc["tokens"] == ort_greedy(model, SPEC, [1, 2, 3], 3)
    assert doc["stop_reason"] == "max_new_tokens"
    stats = doc["stats"]
    assert stats["new_tokens"] == 3 and stats["load_seconds"] > 0 and stats["decode_tokens_per_second"] > 0
    assert stats["time_to_first_token"] == pytest.approx(stats["load_seconds"] + stats["prefill_seconds"])


def test_an_artifact_sampling_and_stop_ids(tmp_path, capsys):
    spec = DecoderSpec(naming="attention", kv_heads=2, layers=1)
    model = attention_decoder(spec)
    onnx.save(model, tmp_path / "att.onnx")
    assert cli.main(["compile", str(tmp_path / "att.onnx"), "-o", str(tmp_path / "att.tritc"), "-q"]) == 0
    capsys.readouterr()
    art = str(tmp_path / "att.tritc")
    code, out, _ = run(capsys, art, "--prompt-ids", "5", "--max-new-tokens", "3")
    assert code == 0 and [int(t) for t in out.splitlines()[0].split()] == ort_greedy(model, spec, [5], 3)
    sampled = [run(capsys, art, "--prompt-ids", "5", "--max-new-tokens", "3", "--temperature", "2", "--top-k", "20",
                   "--top-p", "0.95", "--seed", "4", "--json") for _ in range(2)]
    assert sampled[0][0] == 0 and json.loads(sampled[0][1])["tokens"] == json.loads(sampled[1][1])["tokens"]
    first = json.loads(sampled[0][1])["tokens"][0]
    code, out, _ = run(capsys, art, "--prompt-ids", "5", "--max-new-tokens", "3", "--temperature", "2", "--top-k", "20",
                       "--top-p", "0.95", "--seed", "4", "--stop-ids", f"{first}")
    assert code == 0 and out.splitlines()[0] == str(first) and "stopped: stop-token; " in out.splitlines()[1]


@pytest.mark.parametrize("args,message", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1, not 0"),
    (["--prompt-ids", ""], "the prompt is empty: give at least one token id"),
    (["--prompt-ids", "1,two"], "--prompt-ids: 'two' is not a token id"),
    (["--top-k", "5"], r"--top-k 5 has no effect with greedy decoding \(--temperature 0\)"),
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--temperature", "1", "--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["--temperature", "1", "--seed", "-2"], "--seed must be an integer >= 0"),
    (["--max-context", "2"], "the prompt has 3 tokens, more than the maximum context of 2"),
    (["--prompt-ids", "1,64"], r"token id 64 \(position 1 of the prompt\) is outside the vocabulary \[0, 64\)"),
    (["--stop-ids", "70"], r"stop id 70 is outside the vocabulary \[0, 64\)"),
    (["--max-context", "4096"], "a maximum context of 4096 tokens is more than the model's 128 positions"),
])
def test_bad_input(decoder, capsys, args, message):
    path, _ = decoder
    argv = [str(path), "--prompt-ids", "1,2,3", *args] if "--prompt-ids" not in args else [str(path), *args]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and re.match(rf"tritc: error: {message}", err), err


def test_a_model_it_cannot_drive(decoder, tmp_path, capsys):
    _, model = decoder
    onnx.save(without_output(model, "present.1.value"), tmp_path / "bad.onnx")
    code, out, err = run(capsys, str(tmp_path / "bad.onnx"), "--prompt-ids", "1")
    assert code == 2 and out == ""
    assert err.startswith("tritc: error: input past_key_values.1.value has no matching output") and err.count("\n") == 1


def test_compile_flags_with_an_artifact(tmp_path, capsys):
    (tmp_path / "m.tritc").write_bytes(b"")
    code, _, err = run(capsys, str(tmp_path / "m.tritc"), "--prompt-ids", "1", "--ternary", "off", "-O", "1")
    assert code == 2 and err == (f"tritc: error: --ternary*, -O: compile options apply to an .onnx model; "
                                 f"{tmp_path / 'm.tritc'} is compiled already\n")


def test_a_step_that_fails_ends_the_token_line(decoder, capsys, monkeypatch):
    """A run error after some tokens: the tokens printed so far keep their line (it ends), then one error line."""
    from tritc.errors import RunError
    from tritc.runtime import generate as gen

    step = gen.DecoderStep.__call__
    calls = []

    def failing(self, tokens, cache):
        calls.append(len(tokens))
        if len(calls) == 3:
            raise RunError("node 'x' (attention): out of memory")
        return step(self, tokens, cache)

    monkeypatch.setattr(gen.DecoderStep, "__call__", failing)
    path, model = decoder
    code, out, err = run(capsys, str(path), "--prompt-ids", "1,2,3", "--max-new-tokens", "5")
    assert code == 2 and err == "tritc: error: node 'x' (attention): out of memory\n"
    assert out == " ".join(map(str, ort_greedy(model, SPEC, [1, 2, 3], 2))) + "\n"

"""The FPGA target end to end: compile --target fpga, run on the Simulator, compare with the interpreter of the final
IR (what the device must compute), save / load, the CLI, and the bad inputs of the configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.codegen.fpga.config import PRESETS, FpgaConfigError
from tritc.errors import ResourceLimitError
from tritc.ir import interpreter

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "fixtures" / "digits"
TRANSFORMERS = ROOT / "tests" / "fixtures" / "transformers"
STATS_KEYS = {"cycles", "seconds", "dram_read_bytes", "dram_write_bytes", "ternary_ops", "matrix_utilisation",
              "engines", "host_seconds", "host_device_bytes", "energy_joules"}


def reference(model, feed):
    """The interpreter on the model's final IR: what the device and host regions together must compute."""
    out = interpreter.run(model.graph, feed)
    return [out[o.name] for o in model.outputs]


@pytest.fixture(scope="module")
def digits_mlp():
    return tritc.compile(str(DIGITS / "ternary_mlp.onnx"), target="fpga", shapes={"batch": 4})


def test_digits_mlp_runs_on_the_simulator_bit_exact(digits_mlp):
    held = np.load(DIGITS / "heldout.npz")
    x = held["images"][:4].astype(np.float32)
    (logits,) = digits_mlp.run(None, {"x": x})
    (want,) = reference(digits_mlp, {"x": x})
    np.testing.assert_array_equal(logits, want)   # int8 activations x trits, fp32 rescale in the same order
    stats = digits_mlp.stats
    assert STATS_KEYS <= set(stats)
    assert stats["ternary_ops"] > 0 and stats["cycles"] > 0 and stats["dram_read_bytes"] > 0
    assert 0 < stats["matrix_utilisation"] <= 1
    assert stats["host_device_bytes"] >= x.nbytes + logits.nbytes


def test_digits_mlp_keeps_its_accuracy_on_the_device(digits_mlp):
    held = np.load(DIGITS / "heldout.npz")
    images, labels = held["images"].astype(np.float32), held["labels"]
    n = (len(images) // 4) * 4
    preds = np.concatenate([digits_mlp.run(None, {"x": images[i:i + 4]})[0].argmax(-1) for i in range(0, n, 4)])
    accuracy = float((preds == labels[:n]).mean())
    recorded = json.loads((DIGITS / "accuracy.json").read_text())["models"]["ternary"]["heldout_accuracy"]
    assert accuracy >= recorded - 0.01, (accuracy, recorded)   # int8 activations: within a point of the float run


def test_fpga_artifact_round_trips(digits_mlp, tmp_path):
    path = tmp_path / "mlp.tritc"
    digits_mlp.save(path)
    loaded = tritc.load(path)
    assert loaded.target_kind == "fpga" and loaded.config == digits_mlp.config
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    np.testing.assert_array_equal(loaded.run(None, {"x": x})[0], digits_mlp.run(None, {"x": x})[0])
    assert loaded.compilations == 0   # the stored stream ran: nothing lowered again for batch 4


def test_streams_lowered_at_run_time_are_capped(digits_mlp):
    """A stream per size is lowered at its first run; of those, the most recently used max_runtime_codes stay (a
    decoder lowers one per context length): the compile-time stream stays, an evicted size is lowered again and
    runs right, and no host model is served to the wrong region."""
    program = digits_mlp.program
    saved = program.max_runtime_codes
    program.max_runtime_codes = 2
    try:
        rng = np.random.default_rng(1)
        feeds = {b: rng.random((b, 64), dtype=np.float32) for b in (1, 2, 3)}
        before = digits_mlp.compilations
        for b in (1, 2, 3, 1):
            (y,) = digits_mlp.run(None, {"x": feeds[b]})
            np.testing.assert_array_equal(y, reference(digits_mlp, {"x": feeds[b]})[0])
        assert digits_mlp.compilations - before == 4 and program.evictions >= 2   # batch 1 was evicted, lowered again
        assert (("batch", 4),) in program.codes and len(program.codes) == 3         # the compiled batch 4, and two
    finally:
        program.max_runtime_codes = saved


def test_bitnet_fixture_runs_with_its_layers_on_the_device():
    model = tritc.compile(str(TRANSFORMERS / "bitnet_actquant_dynamo18.onnx"), target="fpga",
                          shapes={"batch": 1, "seq": 5})
    ids = np.array([[3, 17, 42, 7, 99]], np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    (logits,) = model.run(None, feed)
    (want,) = reference(model, feed)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    stats = model.stats
    assert stats["ternary_ops"] > 0
    # every ternary layer is on the device; the host only looks up the embedding (and what the report names)
    code = next(iter(model.program.codes.values()))
    on_host = [n.op for r in code.regions if r.kind == "host" for n in r.nodes]
    assert "ternary_matmul" not in on_host


def test_unknown_preset_and_too_small_dram():
    with pytest.raises(FpgaConfigError, match="unknown FPGA preset 'nope'"):
        tritc.compile(str(DIGITS / "ternary_mlp.onnx"), target="fpga", fpga_config="nope")
    tiny = {**PRESETS["edge"].to_json(), "name": "tiny", "dram_bytes": 4096}
    with pytest.raises(ResourceLimitError, match="too large for this device"):
        tritc.compile(str(DIGITS / "ternary_mlp.onnx"), target="fpga", fpga_config=tiny)


def tritc_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tritc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_cli_compile_run_inspect_asm(tmp_path):
    out = tmp_path / "mlp.tritc"
    r = tritc_cli("compile", DIGITS / "ternary_mlp.onnx", "--target", "fpga", "--fpga-config", "datacenter",
                  "--shape", "batch=2", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "fpga, config datacenter" in r.stdout and "instructions" in r.stdout
    r = tritc_cli("inspect", out, "--asm")
    assert r.returncode == 0, r.stderr
    assert "GEMM" in r.stdout and "FINISH" in r.stdout
    from tritc.codegen.fpga.asm import parse_listing

    body = "\n".join(line for line in r.stdout.splitlines() if not line.startswith("#"))
    assert len(parse_listing(body)) > 3
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).random((2, 64), dtype=np.float32))
    r = tritc_cli("run", out, "--input", f"x={x}")
    assert r.returncode == 0, r.stderr
    assert "cycles" in r.stderr and "logits" in r.stdout


def test_cli_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "board.json"
    bad.write_text(json.dumps({**PRESETS["edge"].to_json(), "dram_bandwidth": 0}))
    r = tritc_cli("compile", DIGITS / "ternary_mlp.onnx", "--target", "fpga", "--fpga-config", bad,
                  "-o", tmp_path / "m.tritc")
    assert r.returncode != 0
    assert "dram_bandwidth must be positive" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.tritc").exists()


def test_bundled_example_runs_on_the_device(tmp_path):
    path = tmp_path / "ex.onnx"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "build_bitnet_example.py"), "-o", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    model = tritc.compile(str(path), target="fpga", shapes={"batch": 1, "seq": 6})
    feed = {"input_ids": np.array([[1, 5, 9, 200, 3, 77]], np.int64)}
    (logits,) = model.run(None, feed)
    (want,) = reference(model, feed)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    regions = model.stats["regions"]
    assert len(regions) == 2 and regions[0].startswith("host region: 1 node (gather)"), regions
    assert "ternary_matmul x15" in regions[1] and "fused_attention x2" in regions[1]


def test_cli_bench_and_generate_on_the_fpga(tmp_path):
    r = tritc_cli("bench", DIGITS / "ternary_mlp.onnx", "--target", "fpga", "--shape", "batch=1", "--runs", "2",
                  "--warmup", "1")
    assert r.returncode == 0, r.stderr
    assert "cycles" in r.stdout and "host share" in r.stdout and "modelled" in r.stdout
    fixture = ROOT / "tests" / "fixtures" / "cache" / "llama_dynamo18.onnx"
    r = tritc_cli("generate", fixture, "--target", "fpga", "--prompt-ids", "1,2,3", "--max-new-tokens", "3")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()[0].split()) == 3 and "KV cache in place" in r.stdout


def test_float_layers_are_reported_either_way(tmp_path):
    model = DIGITS / "float_mlp.onnx"
    r = tritc_cli("compile", model, "--target", "fpga", "-o", tmp_path / "a.tritc")
    assert r.returncode == 0, r.stderr
    assert "radix3    3 float linear layer(s) on the matrix unit" in r.stdout and "  host  " not in r.stdout
    r = tritc_cli("compile", model, "--target", "fpga", "--fpga-float-layers", "host", "-o", tmp_path / "b.tritc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("float matmul with a constant weight") == 3 and "radix3    " not in r.stdout

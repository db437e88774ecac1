"""`tritc compile`, `run`, `inspect`, `verify` and `bench` on small models and the bundled example: the happy
paths, and every bad input as one line on stderr with exit status 2 and nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tritc
from tritc import cli
from tritc.commands.inputs import output_file_names, random_input
from tritc.commands.output import human_bytes
from tritc.commands.verify import compare
from tritc.ir.types import DType, TensorType
from tritc.passes.pipelines import PIPELINES
from tritc.runtime.artifact import FORMAT_VERSION, HEADER, read_artifact

from .frontend.models import model, vi
from .test_cli import mlp_model, save

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
I64 = TensorProto.INT64


def call(*argv: str) -> tuple[int, str, str]:
    """tritc in this process: (exit status, stdout, stderr). argparse's exits count as statuses."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_user_error(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, (out, err)
    assert err.startswith("tritc: error: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err, err


def gather_model(ir_version: int = 9) -> onnx.ModelProto:
    """Token ids and a mask in, an embedding (float) and its argmax (int64) out: integer inputs must stay
    below the table's 32 rows, and the mask must be all ones for the output to be non-zero."""
    table = numpy_helper.from_array(np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32), "table")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "axes"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["y"]),
             helper.make_node("ArgMax", ["y"], ["idx"], axis=2, keepdims=0)]
    return model(nodes, [vi("ids", ("batch", 4), I64), vi("attention_mask", ("batch", 4), I64)],
                 [vi("y", ("batch", 4, 8)), vi("idx", ("batch", 4), I64)], [table, axes], ir_version=ir_version)


def odd_names_model() -> onnx.ModelProto:
    """Outputs whose names would leave the output folder, or hide, or collide once made safe."""
    names = ["../../escape", "a/b", "a_b", ".hidden", "/abs", "..", "ok"]
    ops = ["Identity", "Relu", "Neg", "Abs", "Sigmoid", "Exp", "Tanh"]
    nodes = [helper.make_node(op, ["x"], [n]) for op, n in zip(ops, names)]
    return model(nodes, [vi("x", (2, 3))], [vi(n, (2, 3)) for n in names], ir_version=9)


# ---- shared compiled models ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def example(work: Path) -> Path:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import build_bitnet_example
    finally:
        sys.path.remove(str(EXAMPLES))
    path = work / "bitnet_tiny.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert build_bitnet_example.main(["-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def example_compiled(example: Path) -> tuple[Path, str, str]:
    out = example.with_suffix(".tritc")
    code, stdout, stderr = call("compile", str(example), "-o", str(out), "--shape", "batch=1,seq=8", "--progress")
    assert code == 0, stderr
    return out, stdout, stderr


@pytest.fixture(scope="module")
def mlp(work: Path) -> tuple[Path, Path]:
    """The two-layer MLP (x: f32[batch, 8]) and its artifact, compiled for batch=3 with the head ternary too."""
    src = save(work / "mlp.onnx", mlp_model())
    out = work / "mlp.tritc"
    code, _, err = call("compile", str(src), "-o", str(out), "--shape", "batch=3", "--ternary-include", "fc2.weight",
                        "--threads", "1", "-q")
    assert code == 0, err
    return src, out


def _npy(path: Path, a: np.ndarray) -> str:
    np.save(path, a)
    return str(path)


# ---- compile --------------------------------------------------------------------------------------------


def test_compile_the_example(example_compiled, example):
    out, stdout, stderr = example_compiled
    lines = stdout.splitlines()
    assert lines[0] == f"wrote {out} ({human_bytes(out.stat().st_size)})"
    fields = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:]}
    assert set(fields) == {"model", "target", "shapes", "ternary", "time"}
    assert fields["shapes"] == "every size (batch, seq at run time); batch=1, seq=8"
    assert fields["ternary"].startswith("14 of 15 linear layers (14 exact)")
    assert fields["model"] == "input_ids: i64[batch,seq] -> logits: f32[batch,seq,256]"
    # Progress: one line per long step, each with the elapsed time.
    steps = [line.split("] ", 1)[1] for line in stderr.splitlines()]
    assert all(line.startswith("[") and "s] " in line for line in stderr.splitlines())
    assert steps[:3] == [f"importing {example}", "reading the relations between the model's sizes",
                         f"pass [1/{len(PIPELINES['cpu'])}] infer-shapes"]
    assert "compiling for every size" in steps
    assert "compiling for batch=1, seq=8" in steps and steps[-1] == f"writing {out}"
    # The artifact runs, and agrees with onnxruntime.
    m = tritc.load(out)
    ids = np.random.default_rng(0).integers(0, 256, (1, 8), dtype=np.int64)
    expected = ort.InferenceSession(str(example), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(m.run(None, {"input_ids": ids})[0], expected, atol=1e-4, rtol=1e-3)
    assert [s.bindings for s in m.specializations] == [{}, {"batch": 1, "seq": 8}]
    ids = np.random.default_rng(1).integers(0, 256, (2, 5), dtype=np.int64)  # another size: the generic code
    expected = ort.InferenceSession(str(example), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(m.run(None, {"input_ids": ids})[0], expected, atol=1e-4, rtol=1e-3)
    assert m.stats["compilations"] == 0


def test_compile_options(work, capsys):
    src = save(work / "mlp_opts.onnx", mlp_model(head_ternary=False))
    out = work / "mlp_opts.tritc"
    code, stdout, stderr = call("compile", str(src), "-o", str(out), "-O", "1", "--threads", "1", "--shape", "batch=2",
                                "-p", "infer-shapes,fold-ternary{mode=absmean},eliminate-dead-code",
                                "--ternary-include", "fc2.weight", "--timings", "-q")
    assert code == 0, stderr
    assert "2 of 2 linear layers (1 exact)" in stdout and "-O1, 1 thread\n" in stdout
    assert stderr.splitlines()[0].split() == ["pass", "ms", "changed"] and "fold-ternary{mode=absmean" in stderr
    manifest = read_artifact(out).manifest
    assert manifest["target"]["opt_level"] == 1 and manifest["threads"] == 1
    assert manifest["meta"]["passes"] == ["infer-shapes", "fold-ternary{mode=absmean,include=[fc2.weight]}",
                                          "eliminate-dead-code"]
    assert [s["bindings"] for s in manifest["specializations"]] == [{}, {"batch": 2}]  # generic code, and batch=2


def test_compile_portable(work):
    src = save(work / "mlp_generic.onnx", mlp_model())
    out = work / "mlp_generic.tritc"
    code, stdout, stderr = call("compile", str(src), "-o", str(out), "--cpu-features", "generic")
    assert code == 0 and stderr == ""  # no progress lines unless stderr is a terminal (or --progress)
    assert "portable kernels" in stdout and read_artifact(out).manifest["target"]["isa"] == "portable"
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(tritc.load(out).run(None, {"x": x})[0],
                               ort.InferenceSession(str(src)).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


COMPILE_BAD = {
    "missing_folder": (["-o", "{tmp}/no/such/m.tritc"], "the folder {tmp}/no/such does not exist"),
    "output_is_a_folder": (["-o", "{tmp}"], "is a directory"),
    "bad_shape": (["-o", "{tmp}/m.tritc", "--shape", "batch"], "bad --shape 'batch'"),
    "unknown_dim": (["-o", "{tmp}/m.tritc", "--shape", "seq=4"], "--shape names unknown dim(s) seq"),
    "unknown_target": (["-o", "{tmp}/m.tritc", "--target", "fpga2"], "invalid choice: 'fpga2'"),
    "zero_threads": (["-o", "{tmp}/m.tritc", "--threads", "0"], "threads must be at least 1"),
    "unknown_cpu_feature": (["-o", "{tmp}/m.tritc", "--cpu-features", "+avx9000"], "unknown CPU feature 'avx9000'"),
    "unknown_pass": (["-o", "{tmp}/m.tritc", "-p", "infer-shapes,vectorize"], "unknown pass 'vectorize'"),
    "malformed_option": (["-o", "{tmp}/m.tritc", "-p", "fold-ternary{mode=}"], "option 'mode' must be one of"),
    "unknown_pipeline": (["-o", "{tmp}/m.tritc", "--pipeline", "tpu"], "unknown pipeline 'tpu'"),
    "include_matches_nothing": (["-o", "{tmp}/m.tritc", "--ternary-include", "lm_head*"],
                                "--ternary-include pattern 'lm_head*' matches no linear layer"),
    "missing_model": (["-o", "{tmp}/m.tritc", "--", "{tmp}/nope.onnx"], "no such file"),
}


@pytest.mark.parametrize("case", COMPILE_BAD)
def test_compile_bad_input(tmp_path, case):
    argv, expected = COMPILE_BAD[case]
    src = save(tmp_path / "m.onnx", mlp_model())
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    model_arg = [] if "--" in argv else [str(src)]
    code, out, err = call("compile", *model_arg, *argv)
    assert_user_error(code, out, err, expected.replace("{tmp}", str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no artifact, no temporary file, no folder


# ---- run ------------------------------------------------------------------------------------------------


def test_run_prints_a_summary(mlp, tmp_path):
    src, art = mlp
    x = np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)
    code, out, err = call("run", str(art), "--input", f"x={_npy(tmp_path / 'x.npy', x)}")
    assert code == 0 and err == ""
    y = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    name, shape, *stats = out.split()
    assert (name, shape) == ("y", "f32[3,4]")
    values = dict(zip(stats[0::2], map(float, stats[1::2])))
    assert values == pytest.approx({"min": y.min(), "max": y.max(), "mean": y.mean()}, rel=1e-4, abs=1e-4)


def test_run_writes_outputs(mlp, tmp_path):
    src, art = mlp
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)  # batch 5: the generic code, no compile
    code, out, err = call("run", str(art), "--input", f"x={_npy(tmp_path / 'x.npy', x)}", "--output-dir",
                          str(tmp_path / "out" / "deep"))
    assert code == 0 and "compiling" not in err
    assert os.listdir(tmp_path / "out" / "deep") == ["y.npy"] and out.startswith("y: f32[5,4]")
    y = np.load(tmp_path / "out" / "deep" / "y.npy", allow_pickle=False)
    np.testing.assert_allclose(y, tritc.load(art).run(None, {"x": x})[0], rtol=0, atol=0)
    np.testing.assert_allclose(y, ort.InferenceSession(str(src)).run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_output_names_never_leave_the_folder(work, tmp_path):
    src = save(work / "odd.onnx", odd_names_model())
    art = work / "odd.tritc"
    assert call("compile", str(src), "-o", str(art), "-q")[0] == 0
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    dest = tmp_path / "a" / "b"
    code, out, err = call("run", str(art), "--input", f"x={_npy(tmp_path / 'x.npy', x)}", "--output-dir", str(dest))
    assert code == 0, err
    files = ["_.._escape.npy", "a_b.npy", "a_b_2.npy", "hidden.npy", "_abs.npy", "output.npy", "ok.npy"]
    assert output_file_names([o.name for o in odd_names_model().graph.output]) == files
    assert sorted(os.listdir(dest)) == sorted(files)
    assert sorted(os.listdir(tmp_path)) == ["a", "x.npy"] and os.listdir(tmp_path / "a") == ["b"]
    np.testing.assert_array_equal(np.load(dest / "a_b_2.npy"), -x)  # "a_b" is the Neg, "a/b" the Relu
    np.testing.assert_array_equal(np.load(dest / "a_b.npy"), np.maximum(x, 0))


class _Marker:
    """Unpickling this writes a file: the test that .npy pickles are never loaded."""

    path = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _bad_npy(tmp_path: Path, kind: str) -> str:
    p = tmp_path / f"{kind}.npy"
    good = np.ones((3, 8), np.float32)
    if kind == "random_bytes":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        np.save(p, good)
        p.write_bytes(p.read_bytes()[:-20])
    elif kind == "huge_header":
        np.save(p, good)
        p.write_bytes(p.read_bytes().replace(b"(3, 8)", b"(9, 8)"))  # the header promises 3x the data there is
    elif kind == "pickle":
        marker = _Marker()
        marker.path = str(tmp_path / "PICKLE_RAN")
        np.save(p, np.array([marker], dtype=object), allow_pickle=True)
    elif kind == "plain_pickle":
        p.write_bytes(pickle.dumps(good))
    elif kind == "npz":
        np.savez(p.with_suffix(".npz"), x=good)
        p.write_bytes(p.with_suffix(".npz").read_bytes())
    return str(p)


RUN_BAD = {
    "random_bytes": ("x={random_bytes}", "not a .npy file"),
    "truncated": ("x={truncated}", "truncated"),
    "huge_header": ("x={huge_header}", "truncated (the header promises 288 bytes"),
    "pickle": ("x={pickle}", "holds Python objects (a pickle)"),
    "plain_pickle": ("x={plain_pickle}", "not a .npy file"),
    "npz": ("x={npz}", "not a .npy file"),
    "missing_file": ("x={tmp}/nope.npy", "no such file"),
    "folder_as_file": ("x={tmp}", "not a file"),
    "unknown_name": ("z={good}", "unknown input name 'z'; the model takes x: f32[batch,8]"),
    "wrong_dtype": ("x={f64}", "input 'x' has dtype float64, expected float32"),
    "wrong_size": ("x={wrong_size}", "input 'x' has size 7 in dim 1, expected 8"),
    "wrong_rank": ("x={wrong_rank}", "input 'x' has rank 1"),
    "malformed": ("x", "bad --input 'x' (expected NAME=FILE.npy"),
    "no_input": (None, "missing --input for x"),
}


@pytest.mark.parametrize("case", RUN_BAD)
def test_run_bad_input(mlp, tmp_path, case):
    _, art = mlp
    item, expected = RUN_BAD[case]
    files = {"good": _npy(tmp_path / "good.npy", np.ones((3, 8), np.float32)),
             "f64": _npy(tmp_path / "f64.npy", np.ones((3, 8))),
             "wrong_size": _npy(tmp_path / "ws.npy", np.ones((3, 7), np.float32)),
             "wrong_rank": _npy(tmp_path / "wr.npy", np.ones(8, np.float32)), "tmp": str(tmp_path)}
    if case in ("random_bytes", "truncated", "huge_header", "pickle", "plain_pickle", "npz"):
        files[case] = _bad_npy(tmp_path, case)
    before = sorted(os.listdir(tmp_path))
    argv = ["run", str(art), "--output-dir", str(tmp_path / "out")]
    if item is not None:
        argv += ["--input", item.format(**files)]
    code, out, err = call(*argv)
    assert_user_error(code, out, err, expected)
    assert sorted(os.listdir(tmp_path)) == before  # no output folder, no outputs, and the pickle never ran


def test_run_refuses_a_duplicate_input(mlp, tmp_path):
    good = _npy(tmp_path / "x.npy", np.ones((3, 8), np.float32))
    assert_user_error(*call("run", str(mlp[1]), "--input", f"x={good}", "--input", f"x={good}"), "--input x is given twice")


def test_run_output_dir_is_a_file(mlp, tmp_path):
    good = _npy(tmp_path / "x.npy", np.ones((3, 8), np.float32))
    (tmp_path / "out").write_text("keep")
    code, out, err = call("run", str(mlp[1]), "--input", f"x={good}", "--output-dir", str(tmp_path / "out"))
    assert_user_error(code, out, err, "--output-dir must be a folder")
    assert (tmp_path / "out").read_text() == "keep"


# ---- inspect --------------------------------------------------------------------------------------------


def test_inspect_summary(example_compiled):
    art = example_compiled[0]
    code, out, err = call("inspect", str(art))
    assert code == 0 and err == ""
    m = read_artifact(art).manifest
    head, sections = out.split("\n\n")
    fields = {line.split()[0]: line.split(None, 1)[1] for line in head.splitlines()}
    assert fields["format"] == f"{FORMAT_VERSION} (written by tritc {tritc.__version__})"
    assert fields["target"].startswith(f"{m['target']['triple']}, cpu {m['target']['cpu']}, {m['target']['isa']} kernels")
    assert fields["inputs"] == "input_ids: i64[batch,seq]" and fields["outputs"] == "logits: f32[batch,seq,256]"
    generic, specialised = fields["shapes"].split("; ")
    assert generic.startswith("every size (batch, seq at run time) (arena ") and "*batch*seq" in generic
    assert specialised.startswith("batch=1, seq=8 (arena ") and fields["source"] == "bitnet_tiny.onnx"
    assert fields["weights"].endswith(f"in {len(m['weights'])} tensors (14 ternary, {len(m['weights']) - 14} dense)")
    rows = [line.split() for line in sections.splitlines()]
    assert rows[0] == ["section", "offset", "bytes", "sha256"]
    assert [r[0] for r in rows[1:]] == ["ir", "weights", "object.0", "bitcode.0", "object.1", "bitcode.1"]
    data = art.read_bytes()
    for (name, offset, length, digest), s in zip(rows[1:], m["sections"]):
        assert (name, int(length), digest) == (s["name"], s["length"], s["sha256"])
        assert data[int(offset):int(offset) + int(length)] == read_artifact(art).sections[name]  # offsets in the file


def test_inspect_json_ir_llvm_asm(example_compiled):
    art = example_compiled[0]
    code, out, _ = call("inspect", str(art), "--json")
    assert code == 0 and json.loads(out) == read_artifact(art).manifest
    code, out, _ = call("inspect", str(art), "--ir")
    assert code == 0 and out == tritc.load(art).ir_text
    code, out, _ = call("inspect", str(art), "--llvm")
    assert code == 0 and "define" in out and "@tritc_main(" in out and "target triple" in out
    code, out, _ = call("inspect", str(art), "--asm")
    assert code == 0 and "tritc_main:" in out and "\tret" in out
    code, out, _ = call("inspect", str(art), "--ir", "--llvm")
    assert code == 0 and out.startswith("graph @") and "; ---- llvm of shape 1: batch=1, seq=8 ----" in out


def _damaged(art: Path, tmp_path: Path, kind: str) -> Path:
    data = bytearray(art.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "bit_flip":
        data[-100] ^= 0x10  # inside the last section
    elif kind == "newer_version":
        magic, _, flags, mlen, mhash, reserved = HEADER.unpack_from(data)
        data[: HEADER.size] = HEADER.pack(magic, FORMAT_VERSION + 1, flags, mlen, mhash, reserved)
    elif kind == "empty":
        data = bytearray()
    elif kind == "not_an_artifact":
        data = bytearray(b"\x7fELF" + bytes(200))
    p = tmp_path / f"{kind}.tritc"
    p.write_bytes(bytes(data))
    return p


ARTIFACT_BAD = {
    "truncated": "truncated",
    "bit_flip": "hash mismatch (corrupted or tampered)",
    "newer_version": f"artifact format {FORMAT_VERSION + 1} > supported {FORMAT_VERSION}",
    "empty": "truncated (0 bytes",
    "not_an_artifact": "not a tritc artifact",
}


@pytest.mark.parametrize("command", ["inspect", "run"])
@pytest.mark.parametrize("case", ARTIFACT_BAD)
def test_damaged_artifact(mlp, tmp_path, case, command):
    bad = _damaged(mlp[1], tmp_path, case)
    extra = ["--input", f"x={_npy(tmp_path / 'x.npy', np.ones((3, 8), np.float32))}"] if command == "run" else ["--asm"]
    code, out, err = call(command, str(bad), *extra)
    assert_user_error(code, out, err, ARTIFACT_BAD[case])
    assert str(bad) in err


# ---- verify ---------------------------------------------------------------------------------------------


def test_verify_the_example(example):
    code, out, err = call("verify", str(example), "-q")
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0] == "shapes     batch=4 (default), seq=4 (default)"
    assert lines[1] == "input      input_ids: i64[4,4] random integers in [0, 32)"
    assert lines[2].startswith(f"reference  onnxruntime {ort.__version__} (CPUExecutionProvider)")
    row = next(line.split() for line in lines if line.startswith("logits"))
    assert row[:3] == ["logits", "[4,4,256]", "f32"] and row[5] == "PASS" and row[7] == "PASS"
    assert float(row[3]) <= 1e-4 and lines[-1].startswith("PASS: 1 output within tolerance")


def test_verify_integer_inputs_masks_and_exact_integer_outputs(work):
    src = save(work / "gather.onnx", gather_model())
    code, out, err = call("verify", str(src), "--shape", "batch=3", "-q")
    assert code == 0, out + err
    assert "shapes     batch=3\n" in out
    assert "input      ids: i64[3,4] random integers in [0, 32)" in out
    assert "input      attention_mask: i64[3,4] all ones (a mask)" in out
    idx = next(line.split() for line in out.splitlines() if line.startswith("idx"))
    assert idx[-2:] == ["PASS", "(exact)"] and idx[3] == "0.00e+00"


def test_verify_with_input_files(work, tmp_path):
    src = save(work / "gather_files.onnx", gather_model())
    ids = _npy(tmp_path / "ids.npy", np.arange(10, dtype=np.int64).reshape(5, 2).repeat(2, axis=1))
    code, out, err = call("verify", str(src), "--input", f"ids={ids}", "-q")
    assert code == 0, out + err
    assert out.startswith("shapes     batch=5 (from --input ids)\n") and "ids: i64[5,4] from file" in out


def test_verify_mismatch_exits_1(work):
    """absmean quantises a float weight: the compiled model is no longer the ONNX model, and verify says so."""
    src = save(work / "float_head.onnx", mlp_model(head_ternary=False))
    code, out, err = call("verify", str(src), "--ternary", "absmean", "--ternary-include", "fc2.weight", "-q")
    assert code == 1 and err == ""
    row = next(line.split() for line in out.splitlines() if line.startswith("y "))
    assert row[5] == "FAIL" and float(row[3]) > 1e-2  # against onnxruntime on the original model
    assert row[-1] == "PASS"  # the interpreter runs the same quantised IR
    assert out.splitlines()[-2].startswith("FAIL: the compiled model differs from onnxruntime")
    assert out.splitlines()[-1].startswith("note: fold-ternary quantised 1 layer that is not exactly ternary (fc2.weight)")
    code, out, _ = call("verify", str(src), "--ternary", "absmean", "--ternary-include", "fc2.weight", "-q", "--atol", "10")
    assert code == 0 and "PASS" in out.splitlines()[-1]


def test_verify_falls_back_when_onnxruntime_refuses(work, monkeypatch):
    """Whether a given onnxruntime release refuses a model is its business (1.32 reads the IR 14 model 1.31 refused):
    the refusal is built here, with a session class that raises as onnxruntime's do."""
    def refusing_session(path, *args, **kwargs):
        raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : Load model from {path} failed: stub refusal for the test")

    monkeypatch.setattr(ort, "InferenceSession", refusing_session)
    src = save(work / "mlp.onnx", mlp_model())
    code, out, err = call("verify", str(src), "-q")
    assert code == 0, out + err
    assert "reference  onnx.reference.ReferenceEvaluator (onnxruntime refused the model: " in out
    assert "failed: stub refusal for the test" in out
    assert out.splitlines()[-1].startswith("PASS")


def test_verify_refuses_when_no_reference_runs(work, monkeypatch):
    """onnxruntime and onnx's ReferenceEvaluator both refusing: one line naming both reasons, exit 2."""
    def refusing(*args, **kwargs):
        raise RuntimeError("stub refusal")

    monkeypatch.setattr(ort, "InferenceSession", refusing)
    monkeypatch.setattr("onnx.reference.ReferenceEvaluator", refusing)
    src = save(work / "mlp.onnx", mlp_model())
    assert_user_error(*call("verify", str(src), "-q"), "no reference to compare with: onnxruntime refused the model")


VERIFY_BAD = {
    "negative_tolerance": (["--atol", "-1"], "tolerances must be non-negative"),
    "unknown_input": (["--input", "nope={ids}"], "unknown input name 'nope'"),
    "shape_conflicts_with_file": (["--input", "ids={ids}", "--shape", "batch=2"], "dim 'batch' is 2 (--shape) but 5"),
    "unknown_dim": (["--shape", "seq=3"], "--shape names unknown dim(s) seq"),
    "include_matches_nothing": (["--ternary-include", "nothing*"], "matches no linear layer"),
    "bad_npy": (["--input", "ids={tmp}/bad.npy"], "not a .npy file"),
}


@pytest.mark.parametrize("case", VERIFY_BAD)
def test_verify_bad_input(tmp_path, case):
    argv, expected = VERIFY_BAD[case]
    src = save(tmp_path / "m.onnx", gather_model())
    ids = _npy(tmp_path / "ids.npy", np.zeros((5, 4), np.int64))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    if case == "include_matches_nothing":
        src = save(tmp_path / "m.onnx", mlp_model())
    before = sorted(os.listdir(tmp_path))
    argv = [a.format(ids=ids, tmp=tmp_path) for a in argv]
    assert_user_error(*call("verify", str(src), "-q", *argv), expected)
    assert sorted(os.listdir(tmp_path)) == before


def test_compare_tolerance_rule():
    b = np.array([100.0, 0.0, 1.0], np.float32)
    assert compare(np.array([100.1, 0.0, 1.0], np.float32), b, 1e-3, 1e-4).ok  # 0.1 <= 1e-4 + 1e-3 * 100
    c = compare(np.array([100.2, 5e-5, 1.0], np.float32), b, 1e-3, 1e-4)
    assert not c.ok and c.bad == 1 and c.max_abs == pytest.approx(0.2, rel=1e-3) and c.max_rel == np.inf
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    assert compare(np.array([nan, inf, -inf]), np.array([nan, inf, -inf]), 0, 0).ok  # equal NaNs and infinities
    assert not compare(np.array([nan, 1.0], np.float32), np.array([1.0, 1.0], np.float32), 1, 1).ok
    assert not compare(np.array([1, 2]), np.array([1, 3]), 1, 1, exact=True).ok
    assert compare(np.array([1, 2]), np.array([1, 3]), 1, 1).ok
    assert compare(np.ones(3, np.float32), np.ones(4, np.float32), 1, 1).detail == "shape [3] vs [4]"
    assert compare(np.ones(3, np.float32), np.ones(3), 1, 1).detail == "dtype float32 vs float64"


def test_random_inputs_respect_dtype_and_shape():
    rng = np.random.default_rng(0)
    ids, how = random_input("input_ids", TensorType(DType.I64, ("batch", "past+seq")), {"batch": 2, "past": 3, "seq": 4}, rng)
    assert ids.dtype == np.int64 and ids.shape == (2, 7) and ids.min() >= 0 and ids.max() < 32
    mask, how = random_input("AttentionMask", TensorType(DType.BOOL, (2, 3)), {}, rng)
    assert mask.dtype == np.bool_ and mask.all() and how == "all ones (a mask)"
    h, _ = random_input("h", TensorType(DType.F16, (64,)), {}, rng)
    assert h.dtype == np.float16 and 0.5 < h.std() < 1.5
    u, _ = random_input("u", TensorType(DType.U8, (1000,)), {}, rng)
    assert u.dtype == np.uint8 and len(np.unique(u)) == 32


# ---- bench ----------------------------------------------------------------------------------------------


def test_bench(work):
    src = save(work / "mlp_bench.onnx", mlp_model())
    code, out, err = call("bench", str(src), "--shape", "batch=2", "--threads", "1", "--warmup", "1", "--runs", "3", "-q")
    assert code == 0 and err == "", err
    machine, result = out.splitlines()
    assert machine.startswith("machine: ") and "1 thread each; shapes batch=2" in machine
    assert result.startswith("tritc ") and " onnxruntime " in result and "median of 3 interleaved runs" in result
    assert result.endswith("faster than onnxruntime") or result.endswith("slower than onnxruntime")


@pytest.mark.parametrize("argv,expected", [(["--runs", "0"], "--runs >= 1"), (["--shape", "n=2"], "unknown dim(s) n"),
                                           (["--threads", "0"], "threads must be at least 1")])
def test_bench_bad_input(tmp_path, argv, expected):
    src = save(tmp_path / "m.onnx", mlp_model())
    assert_user_error(*call("bench", str(src), "-q", *argv), expected)


# ---- the console script, in real processes ------------------------------------------------------------


def _script() -> Path:
    script = Path(sys.executable).with_name("tritc")
    if not script.exists():
        pytest.skip("the tritc console script is not installed here (make install installs it)")
    return script


def test_console_script_compile_and_run(tmp_path):
    script = _script()
    save(tmp_path / "m.onnx", mlp_model())
    np.save(tmp_path / "x.npy", np.ones((1, 8), np.float32))  # batch 1: the size compiled
    proc = subprocess.run([str(script), "compile", "m.onnx", "-o", "m.tritc", "--progress"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("wrote m.tritc (")
    assert "] importing m.onnx\n" in proc.stderr and proc.stderr.endswith("] writing m.tritc\n")
    proc = subprocess.run([str(script), "run", "m.tritc", "--input", "x=x.npy", "--output-dir", "out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "" and os.listdir(tmp_path / "out") == ["y.npy"]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"),
                               ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": np.ones((1, 8), np.float32)})[0],
                               rtol=1e-4, atol=1e-4)
    proc = subprocess.run([str(script), "compile", "m.onnx", "-o", "missing/m.tritc"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "tritc: error: missing/m.tritc: the folder missing does not exist\n"


def test_demo_stops_loudly_at_a_failing_step(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tritc_demo_under_test", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, demo)  # its dataclasses look their module up there
    spec.loader.exec_module(demo)
    monkeypatch.setattr(demo, "SHAPES", ((1, 3),))
    monkeypatch.setattr(demo, "compiled_steps", lambda path, out_dir: demo.tritc("inspect", str(tmp_path / "gone.tritc")))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = demo.main(["--out-dir", str(tmp_path), "--no-dump"])
    assert code == 1 and "OK: every step passed" not in out.getvalue()
    assert f"$ tritc inspect {tmp_path / 'gone.tritc'}" in out.getvalue()
    assert err.getvalue().endswith("\nFAILED: `tritc inspect` exited with status 2\n")


# ---- every line printed or written ends with a newline --------------------------------------------------------


def test_every_line_printed_or_written_ends_with_a_newline(mlp, tmp_path):
    src, art = mlp
    x = _npy(tmp_path / "x.npy", np.ones((3, 8), np.float32))
    t = str(tmp_path)
    commands = [
        ["dump", str(src)], ["dump", str(src), "--format", "dot"], ["dump", str(src), "--timings", "-o", f"{t}/d.ir"],
        ["dump", str(src), "--ternary-report"], ["dump", str(src), "--ternary-report", "--json", "-o", f"{t}/r.json"],
        ["dump", str(src), "--after", "all", "-o", f"{t}/steps"], ["dump", str(src), "--after", "all", "-o", f"{t}/dots",
                                                                    "--format", "dot"],
        ["dump", str(src), "--pipeline", "cpu", "--after", "eliminate-dead-code"],  # a note on stderr
        ["compile", str(src), "-o", f"{t}/m.tritc", "--timings", "--progress", "--shape", "batch=3"],
        ["run", str(art), "--input", f"x={x}"], ["run", str(art), "--input", f"x={x}", "--output-dir", f"{t}/out"],
        ["inspect", str(art)], ["inspect", str(art), "--json"], ["inspect", str(art), "--ir", "--llvm", "--asm"],
        ["verify", str(src), "--shape", "batch=2", "-q"], ["verify", str(src), "--ternary", "absmean", "-q"],
        ["bench", str(src), "--runs", "1", "--warmup", "0", "--threads", "1", "-q"],
        ["dump", f"{t}/nope.onnx"], ["dump", str(src), "--ternary", "bogus"], ["compile", str(src)], [], ["dump", "--help"],
    ]
    printed = 0
    for argv in commands:
        code, out, err = call(*argv)
        for text in (out, err):
            assert text == "" or text.endswith("\n"), (argv, text[-200:])
        printed += bool(out) + bool(err)
    assert printed >= len(commands)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".ir", ".dot", ".json")]
    assert len(written) == 2 + 2 * len(PIPELINES["cpu"])
    for path in written:
        assert path.read_text().endswith("\n"), path

"""The `tritc` command line: `dump` (text and dot), atomic output, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritc import __version__, cli
from tritc.errors import UnsupportedError, VerificationError
from tritc.frontend.onnx import load_model
from tritc.ir.dot import escape, to_dot
from tritc.ir.graph import Graph
from tritc.ir.text import print_graph
from tritc.passes import load_all
from tritc.passes.pass_manager import PASSES, Pass
from tritc.passes.pipelines import PIPELINES

from .frontend.models import chain_model, external_tensor, model, relu_model, vi, weighted_model

CPU = PIPELINES["cpu"]

ROOT = Path(__file__).resolve().parents[1]


def save(path: Path, m: onnx.ModelProto | bytes) -> Path:
    path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tritc.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


# ---- dump -------------------------------------------------------------------------------------


def test_dump_prints_the_ir(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", weighted_model())
    code, out, err = run(capsys, "dump", str(path))
    assert code == 0 and err == ""
    assert out == print_graph(load_model(path))
    assert "weight \"w\"" in out and "relu(" in out


def test_dump_to_a_file(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", weighted_model())
    out_file = tmp_path / "out" / "m.ir"
    out_file.parent.mkdir()
    code, out, err = run(capsys, "dump", str(path), "-o", str(out_file))
    assert (code, out, err) == (0, "", "")
    assert out_file.read_text() == print_graph(load_model(path))
    assert os.listdir(out_file.parent) == ["m.ir"]  # no temporary file left behind


def test_dump_replaces_an_existing_file_and_a_symlink_not_its_target(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", relu_model())
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    link = tmp_path / "link.ir"
    link.symlink_to(target)
    assert run(capsys, "dump", str(path), "-o", str(link))[0] == 0
    assert target.read_text() == "keep me" and not link.is_symlink()
    assert link.read_text() == print_graph(load_model(path))


def test_failed_dump_leaves_the_destination_alone(tmp_path, capsys):
    bad = save(tmp_path / "bad.onnx", b"\x89PNG\r\n\x1a\n" + bytes(20))
    dest = tmp_path / "out.ir"
    dest.write_text("previous")
    code, out, err = run(capsys, "dump", str(bad), "-o", str(dest))
    assert code == 2 and dest.read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx", "out.ir"]


def test_output_into_a_missing_folder(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", relu_model())
    code, out, err = run(capsys, "dump", str(path), "-o", str(tmp_path / "no" / "such" / "x.ir"))
    assert code == 2 and out == "" and err.startswith("tritc: error: ") and err.count("\n") == 1
    assert "x.ir" in err and not (tmp_path / "no").exists()


def test_write_atomic_cleans_up_after_a_failure(tmp_path, monkeypatch):
    dest = tmp_path / "a.ir"
    dest.write_text("old")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(cli.OptionError, match="No space left"):
        cli.write_atomic(dest, b"new")
    assert dest.read_text() == "old" and os.listdir(tmp_path) == ["a.ir"]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"tritc {__version__}"


def test_no_command(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "usage: tritc" in err and "dump" in err


def test_bad_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["dump", "m.onnx", "--format", "png"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_warnings_are_one_line_each(tmp_path, capsys):
    newest = onnx.defs.onnx_opset_version()
    path = save(tmp_path / "m.onnx", relu_model(opset=newest + 1))
    code, out, err = run(capsys, "dump", str(path))
    assert code == 0 and out.startswith("graph @g")
    assert err.startswith("tritc: warning: ") and f"opset {newest + 1}" in err and err.count("\n") == 1


# ---- dot --------------------------------------------------------------------------------------

ODD_NAMES = ['q"uote', "back\\slash", "new\nline", "nul\x00char", "ünï©ødé ✓", "{brace}", "a -> b; c", "<html>",
             "\\N\\G\\l", "x" * 500, "", "-", "123"]


def odd_model() -> onnx.ModelProto:
    """A chain whose node and value names are all awkward for dot."""
    names = [f"v{i}:{n}" for i, n in enumerate(ODD_NAMES)]
    nodes = [helper.make_node("Relu", [a], [b], name=n) for a, b, n in zip(["x", *names], names, ODD_NAMES)]
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), 'w"\\eight\n')
    nodes.append(helper.make_node("Add", [names[-1], w.name], ["y"], name="add"))
    return model(nodes, [vi("x", ('b"at\\ch', 3))], [vi("y", ('b"at\\ch', 3))], [w], name='gr"aph\\')


def test_dot_output(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", odd_model())
    code, out, err = run(capsys, "dump", "--format", "dot", str(path))
    assert code == 0 and err == ""
    assert out == to_dot(load_model(path))
    assert out.startswith('digraph "gr\\"aph\\\\" {') and out.rstrip().endswith("}")
    assert out.count("shape=box, style=rounded") == len(ODD_NAMES) + 1  # one box per op
    assert 'label="f32[\\"b\\\\\\"at\\\\\\\\ch\\",3]"' in out  # edge labels are the (escaped) tensor types
    assert "\x00" not in out and "\\\\x00" in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (apt-get install graphviz)")
def test_dot_output_is_valid_graphviz(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", odd_model())
    out_file = tmp_path / "m.dot"
    assert run(capsys, "dump", "--format", "dot", str(path), "-o", str(out_file))[0] == 0
    proc = subprocess.run(["dot", "-Tsvg", str(out_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.count('class="node"') == len(ODD_NAMES) + 4  # ops, the weight, the input and the output
    assert proc.stdout.count('class="edge"') == len(ODD_NAMES) + 3


def test_escape():
    assert escape('a"b\\c\nd\x01') == 'a\\"b\\\\c\\nd\\\\x01'
    assert escape("\ud800") == "\\\\ud800"


# ---- bad input: one line, the file named, status 2 --------------------------------------------


def _cycle() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2")]
    return model(nodes, [vi("x")], [vi("b")])


def _undefined_input() -> onnx.ModelProto:
    return model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], [vi("x")], [vi("y")])


def _escaping_external_data() -> onnx.ModelProto:
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", (4,))], [vi("y", (4,))],
                 [external_tensor("w", (4,), "../secret.bin")])


def _unsupported_op() -> onnx.ModelProto:
    return model([helper.make_node("TfIdfVectorizer", ["x"], ["y"], name="tfidf")], [vi("x")], [vi("y")])


def _duplicate_initializer() -> onnx.ModelProto:
    m = weighted_model()
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((4, 4), np.float32), "w"))
    return m


def _string_input() -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", (2,), TensorProto.STRING)], [vi("y", (2,))])


BAD_INPUTS = {
    "missing_file": (None, "no such file"),
    "empty_file": (b"", "empty"),
    "random_bytes": (np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes(), "not"),
    "png_header": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40), "PNG"),
    "text": (b"this is not a model\n" * 4, "text"),
    "truncated": (weighted_model().SerializeToString()[:-7], "not"),
    "cycle": (_cycle(), "cycle"),
    "undefined_input": (_undefined_input(), "'ghost'"),
    "external_data_escapes": (_escaping_external_data(), "outside the model's folder"),
    "opset_999": (relu_model(opset=999), "opset 999"),
    "unsupported_op": (_unsupported_op(), "TfIdfVectorizer"),
    "duplicate_initializer": (_duplicate_initializer(), "defined twice"),
    "string_input": (_string_input(), "STRING"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, case):
    data, expected = BAD_INPUTS[case]
    (tmp_path / "secret.bin").write_bytes(b"MARKER" * 10)
    path = tmp_path / "models" / f"{case}.onnx"
    path.parent.mkdir()
    if data is not None:
        save(path, data)
    code, out, err = run(capsys, "dump", str(path))
    assert code == 2 and out == ""
    assert err.startswith("tritc: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert f"{case}.onnx" in err and expected in err and "Traceback" not in err and "MARKER" not in err


def test_directory_as_model(tmp_path, capsys):
    code, out, err = run(capsys, "dump", str(tmp_path))
    assert code == 2 and "directory" in err and err.count("\n") == 1


@pytest.mark.parametrize("case", ["missing_file", "truncated", "cycle"])
def test_bad_input_in_a_real_process(tmp_path, case):
    data, expected = BAD_INPUTS[case]
    if data is not None:
        save(tmp_path / "m.onnx", data)
    proc = run_subprocess("dump", "m.onnx", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("tritc: error: m.onnx: ") and proc.stderr.count("\n") == 1 and expected in proc.stderr


def test_an_internal_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """Not a CompilerError: a bug in tritc, so no friendly one-liner hides it."""
    import tritc.driver  # noqa: F401  (imported before the patch: it binds load_model at import, and must keep the real one)
    import tritc.frontend.onnx as frontend

    def broken(path, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(frontend, "load_model", broken)
    code = cli.main(["dump", "m.onnx"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "RuntimeError: bug" in err
    assert err.endswith("\n") and err.splitlines()[-1].startswith("tritc: internal error: this is a bug in tritc")
    save(tmp_path / "m.onnx", relu_model())
    code = ("import sys, tritc.cli, tritc.frontend.onnx as f\n"
            "def broken(path, **kw): raise RuntimeError('bug')\n"
            "f.load_model = broken\n"
            "sys.exit(tritc.cli.main(['dump', 'm.onnx']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RuntimeError: bug" in proc.stderr


def test_closed_pipe_is_not_an_error(tmp_path):
    save(tmp_path / "m.onnx", chain_model(3000))
    proc = subprocess.run(f"'{sys.executable}' -m tritc.cli dump m.onnx | head -n 1", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.startswith("graph @g(") and proc.stderr == ""


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("tritc")
    if not script.exists():
        pytest.skip("the tritc console script is not installed here (make install installs it)")
    save(tmp_path / "m.onnx", relu_model())
    proc = subprocess.run([str(script), "dump", "m.onnx"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("graph @g(")
    proc = subprocess.run([str(script), "dump", "nope.onnx"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == "tritc: error: nope.onnx: no such file\n"


# ---- dump after passes --------------------------------------------------------------------------

TRITS_SEED = 3


def ternary_weight(k: int, n: int, seed: int) -> np.ndarray:
    """trits x one positive scale per output column: what fold-ternary's exact mode recovers."""
    rng = np.random.default_rng([TRITS_SEED, seed])
    trits = rng.integers(-1, 2, size=(k, n)).astype(np.float32)
    return trits * rng.uniform(0.5, 1.5, size=n).astype(np.float32)


def mlp_model(*, head_ternary: bool = True, ir_version: int = 9) -> onnx.ModelProto:
    """y = relu(x @ fc1) @ fc2 with x f32[batch, 8]: two linear layers, exactly ternary; fc2 is the output head."""
    fc1 = numpy_helper.from_array(ternary_weight(8, 16, 1), "fc1.weight")
    w2 = ternary_weight(16, 4, 2) if head_ternary else np.random.default_rng(5).standard_normal((16, 4)).astype(np.float32)
    fc2 = numpy_helper.from_array(w2, "fc2.weight")
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "fc2.weight"], ["y"], name="fc2")]
    return model(nodes, [vi("x", ("batch", 8))], [vi("y", ("batch", 4))], [fc1, fc2], ir_version=ir_version)


def _parse(text: str):
    from tritc.ir.text import parse_graph

    return parse_graph(text)


def _after_each(path: Path, pipeline: str) -> list[str]:
    """The IR after each pass of `pipeline`, computed here without the CLI."""
    from tritc.passes.pass_manager import PassManager
    from tritc.passes.pipelines import pipeline as named

    texts: list[str] = []
    graph = load_model(path)
    PassManager(named(pipeline), after=lambda n, p, g: texts.append(print_graph(g))).run(graph)
    return texts


def test_dump_after_a_pipeline(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu")
    assert code == 0 and err == ""
    assert out == _after_each(path, "cpu")[-1]
    assert "ternary_matmul" in out and "ternary_matmul" not in print_graph(load_model(path))
    assert print_graph(_parse(out)) == out  # the dump is the round-trippable IR text


def test_dump_with_a_pass_list(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model(head_ternary=False))  # fc2 is a float weight, not trits x scale
    code, out, err = run(capsys, "dump", str(path), "-p", "infer-shapes,fold-ternary{mode=absmean,include=[fc2.weight]}")
    assert code == 0 and err == ""
    assert out.count("ternary_matmul(") == 2 and "= matmul(" not in out  # absmean quantises the float fc2 too
    code, out, err = run(capsys, "dump", str(path), "-p", "infer-shapes,fold-ternary{include=[fc2.weight]}")
    assert code == 0 and out.count("ternary_matmul(") == 1 and "= matmul(%r, %fc2.weight)" in out  # exact: fc2 stays


def test_dump_after_one_pass(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    expected = _after_each(path, "cpu")
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--after", "fold-ternary")
    assert code == 0 and err == "" and out == expected[5]
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--after", "3")
    assert code == 0 and out == expected[2]


def test_dump_after_a_pass_that_runs_twice(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    expected = _after_each(path, "cpu")
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--after", "eliminate-dead-code")
    assert code == 0 and out == expected[4]
    last = len(CPU) - CPU[::-1].index("eliminate-dead-code")  # the step of the cpu pipeline's second eliminate-dead-code
    assert err.startswith(f"tritc: note: eliminate-dead-code runs at steps 5, {last}") and err.count("\n") == 1
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--after", str(last))
    assert code == 0 and out == expected[last - 1] and err == ""


def test_dump_after_every_pass(tmp_path, capsys):
    from tritc.passes.pipelines import PIPELINES

    path = save(tmp_path / "m.onnx", mlp_model())
    folder = tmp_path / "dumps" / "cpu"
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--after", "all", "-o", str(folder))
    assert code == 0 and out == "" and f"wrote {len(CPU)} files into {folder}" in err
    names = [f"{i:02d}-{p}.ir" for i, p in enumerate(PIPELINES["cpu"], 1)]
    assert sorted(os.listdir(folder)) == names
    for name, text in zip(names, _after_each(path, "cpu")):
        assert (folder / name).read_text() == text
        assert print_graph(_parse(text)) == text


def test_dump_after_every_pass_as_dot(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    code, _, _ = run(capsys, "dump", str(path), "-p", "infer-shapes,fold-ternary", "--after", "all", "-o",
                     str(tmp_path / "d"), "--format", "dot")
    assert code == 0 and sorted(os.listdir(tmp_path / "d")) == ["01-infer-shapes.dot", "02-fold-ternary.dot"]
    assert (tmp_path / "d" / "02-fold-ternary.dot").read_text().startswith("digraph")


def test_dump_timings(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--timings")
    assert code == 0 and out.startswith("graph @")
    lines = err.splitlines()
    assert lines[0].split() == ["pass", "ms", "changed"] and lines[-1].startswith("total")
    assert len(lines) == 2 + len(CPU) and lines[6].startswith("fold-ternary") and lines[6].endswith("yes")


def test_dump_ternary_report(tmp_path, capsys):
    import json

    path = save(tmp_path / "m.onnx", mlp_model())
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary-report", "--ternary", "absmean")
    assert code == 0 and err == ""
    assert out.splitlines()[0].split()[:3] == ["layer", "shape", "mode"]
    assert "fc1.weight" in out and "output head" in out  # absmean keeps the head in float (exact mode folds it)
    last = out.rstrip().splitlines()[-1]
    before = (8 * 16 + 16 * 4) * 4  # both weights in float32
    assert last.startswith(f"1 of 2 linear layers ternary (1 exact); weights {before} -> ")
    assert 16 * 4 * 4 < int(last.split()[-2]) < before  # the float head plus fc1 at 2 bits a weight and its scales
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary-report", "--json",
                         "--ternary-include", "fc2.*")
    report = json.loads(out)
    assert code == 0 and report["summary"]["folded"] == 2 and report["summary"]["exact"] == 2
    assert {lay["name"]: lay["mode"] for lay in report["layers"]} == {"fc1.weight": "exact", "fc2.weight": "exact"}


def test_dump_ternary_options(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    code, out, _ = run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary-exclude", "fc1*")
    assert code == 0 and out.count("ternary_matmul(") == 1 and "= matmul(%x, %fc1.weight)" in out  # fc1 excluded
    code, out, _ = run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary-include", "fc2.weight",
                       "--ternary-act", "int8")
    assert code == 0 and out.count("ternary_matmul(") == 2 and out.count('act = "int8"') == 2
    code, out, _ = run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary", "off")
    assert code == 0 and "ternary_matmul" not in out



def test_dump_report_and_after_run_the_cpu_pipeline_by_default(tmp_path, capsys):
    """The commands the passes issue named: no --pipeline needed for the report or the IR after a pass."""
    path = save(tmp_path / "m.onnx", mlp_model())
    expected = _after_each(path, "cpu")
    code, out, err = run(capsys, "dump", str(path), "--ternary-report")
    assert (code, err) == (0, "") and out == run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary-report")[1]
    assert out.rstrip().splitlines()[-1].startswith("2 of 2 linear layers ternary (2 exact)")
    code, out, err = run(capsys, "dump", str(path), "--after", "fold-ternary")
    assert (code, err) == (0, "") and out == expected[5]
    folder = tmp_path / "steps"
    code, out, err = run(capsys, "dump", str(path), "--after", "all", "-o", str(folder))
    assert code == 0 and err == f"wrote {len(CPU)} files into {folder}\n"
    assert [(folder / n).read_text() for n in sorted(os.listdir(folder))] == expected
    code, out, err = run(capsys, "dump", str(path), "--ternary-act", "int8")  # a --ternary* flag is about passes too
    assert code == 0 and out.count("ternary_matmul(") == 2 and 'act = "int8"' in out
    assert out == run(capsys, "dump", str(path), "--pipeline", "cpu", "--ternary-act", "int8")[1]
    code, out, err = run(capsys, "dump", str(path))  # plain dump: the graph as imported
    assert code == 0 and out == print_graph(load_model(path))


def test_dump_target_chooses_the_pipeline(tmp_path, capsys):
    fpga = PIPELINES["fpga"]
    path = save(tmp_path / "m.onnx", mlp_model())
    folder = tmp_path / "fpga"
    code, out, err = run(capsys, "dump", str(path), "--target", "fpga", "--after", "all", "-o", str(folder))
    assert code == 0 and sorted(os.listdir(folder)) == [f"{i:02d}-{p}.ir" for i, p in enumerate(fpga, 1)]
    assert (folder / sorted(os.listdir(folder))[-1]).read_text() == _after_each(path, "fpga")[-1]
    code, out, err = run(capsys, "dump", str(path), "--target", "fpga")  # the partition, as comments, above the IR
    assert code == 0 and out.endswith(_after_each(path, "fpga")[-1]) and "ternary_matmul" in out
    assert out.startswith("// fpga partition: ") and "device region" in out
    code, out, err = run(capsys, "dump", str(path), "--target", "fpga", "--timings")
    assert code == 0 and len(err.splitlines()) == 2 + len(fpga)
    code, out, err = run(capsys, "dump", str(path), "--target", "fpga", "--pipeline", "none")  # the explicit choice wins
    assert code == 0 and out == print_graph(load_model(path))


def test_ternary_flags_are_options_of_fold_ternary(tmp_path, capsys):
    """--ternary MODE is fold-ternary{mode=MODE}, and so on: the same graph as the option written in -p."""
    path = save(tmp_path / "m.onnx", mlp_model(head_ternary=False))
    flags = ["--ternary", "absmean", "--ternary-include", "fc2.weight", "--ternary-act", "int8"]
    code, by_flags, err = run(capsys, "dump", str(path), "--pipeline", "cpu", *flags)
    assert code == 0 and by_flags.count('act = "int8"') == 2, err
    written = [("fold-ternary{mode=absmean,include=[fc2.weight],act=int8}" if p == "fold-ternary" else p) for p in CPU]
    code, by_option, _ = run(capsys, "dump", str(path), "-p", ",".join(written))
    assert code == 0 and by_option == by_flags
    # A repeatable flag gives a list option its items one by one; a pattern may hold a comma or brackets.
    code, out, err = run(capsys, "dump", str(path), "--ternary-report", "--json", "--ternary-include", "fc[12].weight",
                         "--ternary-include", "x,y*", "--ternary-exclude", "fc1*", "--ternary", "absmean")
    assert code == 2 and "pattern 'x,y*' matches no linear layer" in err
    code, out, err = run(capsys, "dump", str(path), "--ternary-report", "--ternary-include", "fc[12].weight",
                         "--ternary-exclude", "fc1*", "--ternary", "absmean")
    assert code == 0 and "excluded by pattern 'fc1*'" in out and "1 of 2 linear layers ternary" in out


@pytest.mark.parametrize("flag,value,option", [("--ternary", "bogus", "mode"), ("--ternary-act", "int4", "act")])
def test_a_bad_ternary_flag_reads_like_the_bad_option(tmp_path, capsys, flag, value, option):
    """One validator: the flag's message is the -p option's, naming the flag; the Python keyword gives it too."""
    import tritc
    from tritc.errors import OptionError

    path = save(tmp_path / "m.onnx", mlp_model())
    code, _, by_option = run(capsys, "dump", str(path), "-p", f"fold-ternary{{{option}={value}}}")
    assert code == 2 and by_option.startswith(f"tritc: error: pass 'fold-ternary': option '{option}' must be one of ")
    code, _, by_flag = run(capsys, "dump", str(path), flag, value)
    assert code == 2 and by_flag.count("\n") == 1
    prefix = f"tritc: error: {flag} (option '{option}' of pass 'fold-ternary')"
    assert by_flag.startswith(prefix) and by_flag[len(prefix):] == by_option.split(f"option '{option}'", 1)[1]
    with pytest.raises(OptionError) as e:
        tritc.compile(str(path), **{flag[2:].replace("-", "_"): value})
    assert f"tritc: error: {e.value}\n" == by_flag

DUMP_BAD_OPTIONS = {
    "unknown_pass": (["-p", "infer-shapes,fold-everything"], "unknown pass 'fold-everything'"),
    "malformed_option": (["-p", "fold-ternary{mode}"], "malformed option 'mode'"),
    "bad_option_value": (["-p", "fold-ternary{mode=fancy}"], "must be one of exact, absmean, off"),
    "unknown_option": (["-p", "fold-ternary{speed=2}"], "has no option 'speed'"),
    "malformed_list": (["-p", "infer-shapes,,{"], "malformed pass list"),
    "unknown_pipeline": (["--pipeline", "gpu"], "unknown pipeline 'gpu'"),
    "include_matches_nothing": (["--pipeline", "cpu", "--ternary-include", "decoder.*"],
                                "--ternary-include pattern 'decoder.*' matches no linear layer"),
    "exclude_matches_nothing": (["--pipeline", "cpu", "--ternary-exclude", "nope"], "'nope' matches no linear layer"),
    "bad_ternary_mode": (["--ternary", "binary"], "--ternary (option 'mode' of pass 'fold-ternary') must be one of "
                                                  "exact, absmean, off, not 'binary'"),
    "bad_ternary_act": (["--pipeline", "cpu", "--ternary-act", "int4"],
                        "--ternary-act (option 'act' of pass 'fold-ternary') must be one of float, int8, not 'int4'"),
    "ternary_without_fold": (["--pipeline", "none", "--ternary", "absmean"],
                             "--ternary configures the fold-ternary pass, which the pipeline 'none' does not run"),
    "ternary_flags_without_fold": (["-p", "infer-shapes", "--ternary-act", "int8", "--ternary-include", "fc*"],
                                   "--ternary-include, --ternary-act configure the fold-ternary pass, which the -p "
                                   "'infer-shapes' does not run"),
    "after_all_without_passes": (["--pipeline", "none", "--after", "all", "-o", "{tmp}/d"],
                                 "--after all writes one file per pass, and the pipeline 'none' has none"),
    "unknown_target": (["--target", "gpu"], "argument --target: invalid choice: 'gpu'"),
    "after_unknown_pass": (["--pipeline", "cpu", "--after", "fold-everything"], "unknown pass 'fold-everything'"),
    "after_pass_not_run": (["-p", "infer-shapes", "--after", "fold-ternary"], "does not run in this pipeline"),
    "after_step_out_of_range": (["--pipeline", "cpu", "--after", "99"], f"there are {len(CPU)} steps"),
    "after_all_without_folder": (["--pipeline", "cpu", "--after", "all"], "give the folder with -o DIR"),
    "json_without_report": (["--json"], "--json goes with --ternary-report"),
    "pipeline_and_passes": (["--pipeline", "cpu", "-p", "infer-shapes"], "not both"),
    "report_without_fold": (["-p", "infer-shapes", "--ternary-report"],
                            "--ternary-report shows what fold-ternary did, and the -p 'infer-shapes' does not run it"),
}


@pytest.mark.parametrize("case", DUMP_BAD_OPTIONS)
def test_dump_bad_options(tmp_path, capsys, case):
    argv, expected = DUMP_BAD_OPTIONS[case]
    path = save(tmp_path / "m.onnx", mlp_model())
    dest = tmp_path / "out" / "x.ir"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "all" not in argv:
        argv = [*argv, "-o", str(dest)]
    if case == "unknown_target":  # argparse's own error: SystemExit
        with pytest.raises(SystemExit) as e:
            cli.main(["dump", str(path), *argv])
        code, (out, err) = e.value.code, capsys.readouterr()
    else:
        code, out, err = run(capsys, "dump", str(path), *argv)
    assert code == 2 and out == "", err
    assert err.startswith("tritc: error: ") and err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # nothing written, no folder made


def test_dump_after_all_into_a_file_is_refused(tmp_path, capsys):
    path = save(tmp_path / "m.onnx", mlp_model())
    (tmp_path / "f").write_text("keep")
    code, out, err = run(capsys, "dump", str(path), "--pipeline", "cpu", "--after", "all", "-o", str(tmp_path / "f"))
    assert code == 2 and "must be a folder" in err and err.count("\n") == 1
    assert (tmp_path / "f").read_text() == "keep"


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compile", "m.onnx"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("tritc: error: compile: the following arguments are required: -o/--output")


# ---- a pass that goes wrong: a bug (exit 1, traceback) or the input's fault (exit 2, one line) ---------------


@dataclass(frozen=True)
class RaisesKeyError(Pass):
    name = "test-raises-key-error"

    def run(self, graph: Graph) -> bool:
        return {}["no such key"]


@dataclass(frozen=True)
class BreaksTheGraph(Pass):
    name = "test-breaks-the-graph"

    def run(self, graph: Graph) -> bool:
        next(n for n in graph if n.inputs).inputs[0].uses.clear()  # a use list that forgets a use
        return True


@dataclass(frozen=True)
class RefusesTheModel(Pass):
    name = "test-refuses-the-model"

    def run(self, graph: Graph) -> bool:
        raise UnsupportedError("node 'fc1': this pass does not handle it")


@pytest.fixture
def test_passes(monkeypatch):
    """The three passes above, registered for one test only (the property tests run every registered pass)."""
    load_all()
    for cls in (RaisesKeyError, BreaksTheGraph, RefusesTheModel):
        monkeypatch.setitem(PASSES, cls.name, cls)


BUGGY_PASSES = {
    "raises": ("test-raises-key-error", "failed (after infer-shapes): KeyError: 'no such key'", "\nKeyError: 'no such key'"),
    "breaks_the_graph": ("test-breaks-the-graph", "left an invalid graph (after infer-shapes)",
                         "\ntritc.errors.VerificationError: graph @g is invalid"),
}


@pytest.mark.parametrize("command", ["dump", "compile"])
@pytest.mark.parametrize("case", BUGGY_PASSES)
def test_a_bug_in_a_pass_exits_1_with_its_traceback(tmp_path, capsys, test_passes, command, case):
    name, message, cause = BUGGY_PASSES[case]
    path = save(tmp_path / "m.onnx", mlp_model())
    argv = [command, str(path), "-p", f"infer-shapes,{name}"] + (["-o", str(tmp_path / "m.tritc")] if command == "compile" else [])
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert "Traceback (most recent call last)" in err and cause in err  # the original exception, then ours
    assert f"tritc.errors.InternalError: pass '{name}' {message}" in err
    assert "tritc: error:" not in err and err.splitlines()[-1].startswith("tritc: internal error: this is a bug in tritc")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_a_bug_in_a_pass_is_no_compiler_error_in_python_either(tmp_path, test_passes):
    import tritc
    from tritc.errors import CompilerError, InternalError

    path = save(tmp_path / "m.onnx", mlp_model())
    with pytest.raises(InternalError, match=r"pass 'test-raises-key-error' failed \(the first pass\)") as e:
        tritc.compile(str(path), passes="test-raises-key-error")
    assert not isinstance(e.value, CompilerError) and isinstance(e.value.__cause__, KeyError)
    with pytest.raises(InternalError, match="left an invalid graph") as e:
        tritc.compile(str(path), passes="infer-shapes,test-breaks-the-graph")
    assert isinstance(e.value.__cause__, VerificationError) and "missing from the uses" in str(e.value)


@pytest.mark.parametrize("command", ["dump", "compile"])
def test_the_inputs_fault_found_by_a_pass_stays_a_user_error(tmp_path, capsys, test_passes, command):
    import tritc

    path = save(tmp_path / "m.onnx", mlp_model())
    argv = [command, str(path), "-p", "infer-shapes,test-refuses-the-model"]
    code, out, err = run(capsys, *argv, *(["-o", str(tmp_path / "m.tritc")] if command == "compile" else []))
    expected = ("tritc: error: pass 'test-refuses-the-model' (after infer-shapes): node 'fc1': this pass does not "
                "handle it\n")
    assert (code, out, err) == (2, "", expected)
    with pytest.raises(UnsupportedError, match="this pass does not handle it"):
        tritc.compile(str(path), passes="test-refuses-the-model")

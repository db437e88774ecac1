"""The `tritc` command line: `dump` (text and dot), atomic output, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritc import __version__, cli
from tritc.frontend.onnx import load_model
from tritc.ir.dot import escape, to_dot
from tritc.ir.text import print_graph

from .frontend.models import chain_model, external_tensor, model, relu_model, vi, weighted_model

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


def test_an_internal_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Not a CompilerError: a bug in tritc, so no friendly one-liner hides it."""
    import tritc.frontend.onnx as frontend

    def broken(path):
        raise RuntimeError("bug")

    monkeypatch.setattr(frontend, "load_model", broken)
    with pytest.raises(RuntimeError, match="bug"):
        cli.main(["dump", "m.onnx"])
    save(tmp_path / "m.onnx", relu_model())
    code = ("import sys, tritc.cli, tritc.frontend.onnx as f\n"
            "def broken(path): raise RuntimeError('bug')\n"
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

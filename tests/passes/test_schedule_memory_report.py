"""`tritc dump --memory-report` and `tritc dump --after schedule-memory`: the numbers, the formula, the memory block
of the IR text, and one clear error for each misuse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tritc import cli
from tritc.ir import parse_graph
from tritc.ir.memory import current_schedule, numbers
from tritc.ir.sizes import Size

LLAMA = Path(__file__).parents[1] / "fixtures" / "transformers" / "llama_dynamo23.onnx"
BITNET = LLAMA.with_name("bitnet_dynamo23.onnx")  # fold-ternary changes it


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def field(out: str, name: str) -> int:
    return int(re.search(rf"^{name}\s+(\d+) bytes", out, re.M).group(1))


def test_memory_report_numbers_match_the_schedule(capsys):
    code, out, err = run(capsys, "dump", str(LLAMA), "--memory-report", "--shape", "batch=2,seq=100")
    assert code == 0 and err == "", err
    code, ir, _ = run(capsys, "dump", str(LLAMA), "--after", "schedule-memory")
    g = parse_graph(ir)  # the memory block parses back into the schedule
    n = numbers(g, current_schedule(g), {"batch": 2, "seq": 100})
    assert out.startswith("memory schedule of @main_graph") and "at batch=2, seq=100\n" in out
    assert (field(out, "peak arena"), field(out, "lower bound"), field(out, "naive total")) == (n.arena, n.lower_bound, n.naive)
    assert n.lower_bound <= n.arena <= 1.15 * n.lower_bound < n.naive
    formulas = formulas_in(out)
    for name, value in (("peak arena", n.arena), ("lower bound", n.lower_bound), ("naive total", n.naive)):
        bound = formulas[name].evaluate({"batch": 2, "seq": 100})
        assert value <= bound <= 1.06 * value + 64 * len(g.nodes), name  # 'at most': within 5% and 63 bytes a slot
        assert formulas[name].symbols() == {"batch", "seq"}
    rows = [r.split() for r in out.split("the 10 largest values\n")[1].splitlines()]
    assert rows[0] == ["value", "type", "bytes", "(formula)", "bytes", "storage"] and len(rows) == 11
    assert [(r[0].removeprefix("%"), int(r[3])) for r in rows[1:]] == list(n.largest)
    assert all("offset " in " ".join(r) for r in rows[1:])  # every one in the arena, directly or through an alias


def formulas_in(report: str) -> dict[str, Size]:
    """The formulas of the report: 'NAME  [at most ]TEXT', or 'NAME  [at most ]the largest of' and one term a line."""
    section = report.split("as formulas of the symbols")[1].split("\n\n")[0].splitlines()[1:]
    out: dict[str, list[str]] = {}
    name = ""
    for line in section:
        if line.startswith(" "):
            out[name].append(line.strip())
        else:
            name, text = line[:13].strip(), line[13:].strip().removeprefix("at most ")
            out[name] = [] if text == "the largest of" else [text]
    return {k: Size.parse(f"max({', '.join(v)})") for k, v in out.items()}


def test_memory_report_defaults_unnamed_dims_to_one(capsys):
    code, out, _ = run(capsys, "dump", str(LLAMA), "--memory-report", "--shape", "seq=16")
    assert code == 0 and "at batch=1, seq=16 (batch not given: 1)" in out


def test_after_schedule_memory_shows_offsets_and_sizes(capsys):
    code, ir, _ = run(capsys, "dump", str(LLAMA), "--after", "schedule-memory")
    block = ir.split("  memory {\n")[1]
    assert code == 0 and re.search(r'^    %\S+ = arena "\d+\*batch\*seq"( above %\S+(, %\S+)*)?$', block, re.M)
    assert "= view %" in block and "= inplace %" in block


@pytest.mark.parametrize("argv, message", [
    (["--memory-report", "--pipeline", "none"], "does not run it"),
    (["--memory-report", "-p", "schedule-memory,fold-ternary"], "run schedule-memory last"),
    (["--shape", "seq=4"], "--shape goes with --memory-report"),
    (["--memory-report", "--shape", "tokens=4"], "tokens: not a dim of the model (its dims: batch, seq)"),
    (["--memory-report", "--shape", "seq"], "bad --shape 'seq'"),
    (["--memory-report", "--ternary-report"], "both choose what to print"),
])
def test_memory_report_misuse(capsys, argv, message):
    code, out, err = run(capsys, "dump", str(BITNET), *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1, err

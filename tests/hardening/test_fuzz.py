"""The short run of the fuzzers (HARDENING.md J54; docs/FUZZING.md): fixed seeds of the differential graph fuzzer
in its watched worker (a hang or a crash fails), and every kept finding replayed from fuzz_regressions/.

The long run is `make fuzz`. A finding is kept here once fixed: its model and feeds (<name>.onnx, .npz) or its bytes
(<name>.bin, for a reader of untrusted bytes), and <name>.json saying what it was; a finding not fixed carries an
"xfail" reason in its .json and runs as a strict xfail; a model tritc must refuse names the error ("expect", "match").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnx
import pytest

from tritc.fuzz import campaign, inputs
from tritc.fuzz.campaign import Worker, load_feeds
from tritc.fuzz.generate import generate
from tritc.fuzz.oracle import check

from .harness import Sandbox, isolated

REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
# Seeds whose cases make, between them, each of the 94 ONNX ops generator 5 makes in seeds 0-399 (a greedy cover),
# with symbolic dims fed at two sizes, ternary graphs through the FPGA simulator, two threads and artifacts saved and
# loaded (checked below). A change of the generator changes its cases: choose the cover again (docs/FUZZING.md).
SEEDS = [5, 13, 20, 36, 46, 51, 60, 65, 72, 79, 113, 116, 146, 147, 151, 172, 193, 215, 235, 246, 321, 329, 356, 375,
         399]
CASE_TIMEOUT = 60.0


def test_fixed_seeds_in_the_watched_worker():
    worker = Worker()
    outcomes = {}
    try:
        for seed in SEEDS:
            outcomes[seed] = worker.check(seed, CASE_TIMEOUT)
    finally:
        worker.stop()
    findings = {s: f"{o.kind} in {o.phase}: {o.message}" for s, o in outcomes.items() if o.finding}
    assert not findings, findings
    assert sum(o.kind == "pass" for o in outcomes.values()) >= len(SEEDS) - 2, {s: o.kind for s, o in outcomes.items()}


def test_a_case_over_its_time_is_a_timeout_finding_and_a_new_worker_goes_on():
    worker = Worker()
    try:
        late = worker.check(SEEDS[0], 0.01)   # killed while it starts: a hang at any stage is a finding
        assert (late.kind, late.finding) == ("timeout", True) and "no answer within" in late.message
        assert worker.check(SEEDS[0], CASE_TIMEOUT).kind == "pass"
    finally:
        worker.stop()


def test_the_fixed_seeds_cover_the_generator():
    cases = [generate(s) for s in SEEDS]
    ops = {op for c in cases for op in c.ops}
    assert len(ops) >= 94, sorted(ops)
    assert any(c.ternary for c in cases) and any(len(c.feeds) > 1 for c in cases)
    assert any(c.options["reload"] for c in cases) and any(c.options["threads"] > 1 for c in cases)


def test_a_hang_is_a_timeout_finding(monkeypatch, tmp_path):
    def hang(_data: bytes) -> None:
        while True:
            time.sleep(0.01)

    monkeypatch.setitem(inputs.TARGETS, "stream", hang)
    counts = campaign.run_input_campaign("stream", 0, tmp_path, execs=1, timeout=0.5, say=lambda _m: None)
    assert counts["finding"] == 1
    (record,) = tmp_path.glob("*.json")
    assert "timeout" in json.loads(record.read_text())["problem"]


def _regressions() -> list:
    params = []
    for meta_path in sorted(REGRESSIONS.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        marks = [pytest.mark.xfail(reason=meta["xfail"], strict=True)] if "xfail" in meta else []
        params.append(pytest.param(meta_path.with_suffix(""), meta, id=meta_path.stem, marks=marks))
    return params


@pytest.mark.parametrize(("stem", "meta"), _regressions())
def test_kept_finding(stem: Path, meta: dict, sb: Sandbox):
    if "target" in meta:  # a reader of untrusted bytes: in a subprocess under the harness's memory and time limits
        code = f"from tritc.fuzz.inputs import run_target\nRESULT = run_target({meta['target']!r}, " \
               f"open({str(stem.with_suffix('.bin'))!r}, 'rb').read())"
        out = isolated(sb, code, timeout=60)
        assert out.ok and out.result == "None", f"{out.result or out.message}\n{out.stderr}"
        return
    model = onnx.load(str(stem.with_suffix(".onnx")))
    o = check(model, load_feeds(stem.with_suffix(".npz")), fpga=bool(meta.get("fpga")),
              **meta.get("options", {}))
    if "expect" in meta:  # a model tritc must refuse: the clean error it must give
        assert (o.kind, meta["match"] in o.message) == (meta["expect"], True), f"{o.kind} in {o.phase}: {o.message}"
        return
    assert not o.finding, f"{o.kind} in {o.phase}: {o.message}"

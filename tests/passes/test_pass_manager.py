"""The PassManager's record of a run (a StepResult per step, fold-ternary's report among them), pass options given by
flags through the same conversion as `-p`, and which failures inside a pass are the input's and which are bugs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tritc.errors import CompilerError, InternalError, OptionError, UnsupportedError, VerificationError
from tritc.ir.graph import Graph
from tritc.ir.text import parse_graph, print_graph
from tritc.passes import PassManager, make_pass, parse_pass_list
from tritc.passes.fold_ternary import FoldTernary
from tritc.passes.pass_manager import Pass, PassResult, configure
from tritc.passes.pipelines import PIPELINES, pipeline, with_ternary_flags
from tritc.passes.ternary_report import TernaryReport

# Two linear layers with exactly ternary weights (per output channel); `head` is the output head.
MLP = """graph @g(%x: f32[batch,4]) -> (%y: f32[batch,3]) {
  %w1 = constant [0.5, 0.0, -2.0, -0.5, 2.0, 0.0, 0.0, 0.0, 2.0, 0.5, -2.0, 0.0] : f32[4,3]
  %h = matmul(%x, %w1) : f32[batch,3] loc("layers.0.fc")
  %r = relu(%h) : f32[batch,3]
  %w2 = constant [1.0, 1.0, -1.0, 0.0, -1.0, 1.0, -1.0, 0.0, 1.0] : f32[3,3]
  %y = matmul(%r, %w2) : f32[batch,3] loc("head")
  return %y
}
"""


@dataclass(frozen=True)
class Counts(Pass):
    """A pass that returns a plain bool (most passes do) and changes nothing."""

    name = "test-counts"

    def run(self, graph: Graph) -> bool:
        return False


def test_a_step_result_per_step_and_the_report_of_fold_ternary():
    # absmean keeps the head in float: the second fold-ternary, told to include it, folds it
    pm = PassManager(parse_pass_list("infer-shapes,fold-ternary{mode=absmean},eliminate-dead-code,"
                                     "fold-ternary{mode=absmean,include=[head]}"))
    assert pm.run(parse_graph(MLP)) is True
    assert [(s.step, s.name, s.changed) for s in pm.steps] == [
        (1, "infer-shapes", False), (2, "fold-ternary{mode=absmean}", True), (3, "eliminate-dead-code", True),
        (4, "fold-ternary{mode=absmean,include=[head]}", True)]
    assert all(s.seconds >= 0 for s in pm.steps) and [s.data for s in pm.steps][:1] == [None]
    first, last = pm.steps[1].data, pm.steps[3].data
    assert isinstance(first, TernaryReport) and isinstance(last, TernaryReport)
    assert [(lay.name, lay.folded) for lay in first.layers] == [("w1", True), ("w2", False)]
    assert [(lay.name, lay.folded) for lay in last.layers] == [("w2", True)]  # w1 is folded already: no longer a matmul
    assert pm.result_of("fold-ternary") is last and pm.result_of("fuse-epilogue") is None


def test_timings_come_from_the_steps():
    pm = PassManager(parse_pass_list("infer-shapes,fold-ternary"))
    pm.run(parse_graph(MLP))
    lines = pm.timing_table().splitlines()
    assert pm.timing_table().endswith("\n") and len(lines) == 4
    assert [line.split()[0] for line in lines] == ["pass", "infer-shapes", "fold-ternary", "total"]
    assert [line.split()[-1] for line in lines[1:3]] == ["no", "yes"]
    total = float(lines[-1].split()[-1])
    assert total == pytest.approx(sum(s.seconds for s in pm.steps) * 1e3, abs=0.02)


def test_the_same_pass_object_gives_each_run_its_own_report():
    """The report is the run's result, not state of the (frozen, shared) pass: a second run does not add to the first."""
    fold = FoldTernary(include=("head",))
    reports = []
    for _ in range(2):
        pm = PassManager([fold])
        pm.run(parse_graph(MLP))
        reports.append(pm.result_of("fold-ternary"))
    assert reports[0] is not reports[1] and [len(r.layers) for r in reports] == [2, 2]
    assert fold == FoldTernary(include=("head",))  # nothing about a run is kept in the pass
    result = FoldTernary().run(parse_graph(MLP))
    assert isinstance(result, PassResult) and result.changed and bool(result) and len(result.data.layers) == 2
    assert not PassResult(False, reports[0])  # truthy exactly when the graph changed, like the bool a pass may return


def test_a_run_starts_a_new_record():
    pm = PassManager([Counts(), Counts()])
    assert pm.run(parse_graph(MLP)) is False
    assert pm.run(parse_graph(MLP)) is False
    assert [(s.step, s.changed, s.data) for s in pm.steps] == [(1, False, None), (2, False, None)]


# ---- options: -p and the flags, one conversion ---------------------------------------------------------------


def test_flags_set_the_same_pass_as_the_option_written_in_a_pass_list():
    by_flags = with_ternary_flags(parse_pass_list("infer-shapes,fold-ternary"), "-p",
                                  ternary="absmean", ternary_include=["a*", "layers.[0-3].*"], ternary_act="int8")
    written = parse_pass_list("infer-shapes,fold-ternary{mode=absmean,include=[a*,layers.[0-3].*],act=int8}")
    assert by_flags == written and written[1].include == ("a*", "layers.[0-3].*") and written[1].act == "int8"
    assert with_ternary_flags(written, "-p", ternary=None, ternary_include=(), ternary_act=None) == written
    one = with_ternary_flags(written, "-p", ternary_exclude=["x,y*"], ternary_include="lm_head*")
    assert one[1].exclude == ("x,y*",) and one[1].include == ("lm_head*",)  # a flag's item is one pattern, commas and all
    assert pipeline("cpu", ternary="off")[PIPELINES["cpu"].index("fold-ternary")] == FoldTernary(mode="off")


@pytest.mark.parametrize("options,flags,message", [
    ({"mode": "bogus"}, {}, "pass 'fold-ternary': option 'mode' must be one of exact, absmean, off, not 'bogus'"),
    ({"mode": "bogus"}, {"mode": "--ternary"},
     "--ternary (option 'mode' of pass 'fold-ternary') must be one of exact, absmean, off, not 'bogus'"),
    ({"act": ["float", "int8"]}, {"act": "--ternary-act"}, "--ternary-act (option 'act' of pass 'fold-ternary') takes one value, not 2"),
    ({"granularity": "per_row"}, {}, "option 'granularity' must be one of per_tensor, per_channel, not 'per_row'"),
    ({"speed": "2"}, {}, "pass 'fold-ternary' has no option 'speed' (options: mode, act, include, exclude, granularity)"),
])
def test_one_validator_for_written_options_and_flags(options, flags, message):
    with pytest.raises(OptionError) as e:
        configure(FoldTernary(), options, flags=flags)
    assert message in str(e.value)
    if not flags:  # make_pass, behind -p, converts and says the same
        with pytest.raises(OptionError) as e2:
            make_pass("fold-ternary", options)
        assert str(e2.value) == str(e.value)


def test_a_flag_without_a_fold_ternary_step_is_refused():
    with pytest.raises(OptionError, match="--ternary-exclude configures the fold-ternary pass, which the pipeline 'none'"):
        pipeline("none", ternary_exclude=["x"])
    assert pipeline("none") == []


# ---- failures: the input's (CompilerError) or a bug (InternalError) --------------------------------------------


@dataclass(frozen=True)
class Fails(Pass):
    name = "test-fails"
    what: str = "bug"

    def run(self, graph: Graph) -> bool:
        if self.what == "bug":
            raise IndexError("list index out of range")
        if self.what == "user":
            raise UnsupportedError("node 'head': not handled")
        next(n for n in graph if n.op == "relu").outputs[0].uses.clear()  # "invalid": forget the uses of %r
        return True


@pytest.mark.parametrize("what,error,message", [
    ("bug", InternalError, "pass 'test-fails' failed (after infer-shapes): IndexError: list index out of range"),
    ("invalid", InternalError, "pass 'test-fails{what=invalid}' left an invalid graph (after infer-shapes): graph @g"),
    ("user", UnsupportedError, "pass 'test-fails{what=user}' (after infer-shapes): node 'head': not handled"),
])
def test_a_bug_is_an_internal_error_and_the_inputs_fault_keeps_its_class(what, error, message):
    with pytest.raises(error) as e:
        PassManager([make_pass("infer-shapes"), Fails(what)]).run(parse_graph(MLP))
    assert str(e.value).startswith(message)
    assert isinstance(e.value, CompilerError) == (what == "user")  # only the input's fault is a user error
    if what == "bug":
        assert isinstance(e.value.__cause__, IndexError)
    if what == "invalid":
        assert isinstance(e.value.__cause__, VerificationError) and "missing from the uses of %r" in str(e.value)


def test_an_invalid_graph_is_the_inputs_fault_before_the_first_pass():
    g = parse_graph(MLP)
    next(n for n in g if n.op == "relu").outputs[0].uses.clear()
    with pytest.raises(VerificationError, match="(?s)before the first pass: graph @g is invalid:.*missing from the uses of %r"):
        PassManager([Counts()]).run(g)
    PassManager([Counts()], verify_each=False).run(g)  # not checked when verification is off
    assert print_graph(g)

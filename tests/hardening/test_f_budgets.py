"""HARDENING.md group F, resource budgets (case 34), and the budgets of issue 10's item 2, under the harness contract.

Each budget of tritc.Limits (docs/LIMITS.md) gets a model just over it: refused with a ResourceLimitError naming the
limit and the value, from the API (`limits=`) and from the CLI (`--limit NAME=VALUE`, exit 2, one line), with out/
untouched (an artifact already there stays byte-identical), and accepted with the limit set to exactly what the
model needs. The generated inputs of verify and bench go through the same budget: a model whose input is declared
f32[4194304, 4194304] is refused with one line, under a 2 GiB address-space limit, instead of a MemoryError.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tritc
from tritc.errors import ResourceLimitError, UnsupportedError
from tritc.limits import DEFAULT_LIMITS, NAMES, Limits, parse_limits

from ..frontend.models import chain_model, model, relu_model, vi, weighted_model
from .harness import Sandbox, refuses

OLD_ARTIFACT = b"an artifact from an earlier compile"


# ---- models just over each compile-time budget -------------------------------------------------------------------


def _nested_if() -> onnx.ModelProto:
    """If inside If: subgraphs two levels deep."""
    inner = helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "inner", [], [vi("a")])
    middle = helper.make_graph([helper.make_node("If", ["c"], ["b"], name="inner_if", then_branch=inner,
                                                 else_branch=inner)], "middle", [], [vi("b")])
    node = helper.make_node("If", ["c"], ["y"], name="outer_if", then_branch=middle, else_branch=middle)
    return model([node], [vi("c", (), TensorProto.BOOL), vi("x")], [vi("y")])


def _two_weights() -> onnx.ModelProto:
    w = [numpy_helper.from_array(np.full((4, 4), i, np.float32), f"w{i}") for i in (1, 2)]
    nodes = [helper.make_node("Add", ["x", "w1"], ["s"]), helper.make_node("Add", ["s", "w2"], ["y"])]
    return model(nodes, [vi("x", (4, 4))], [vi("y", (4, 4))], w)


def _fold_bomb() -> onnx.ModelProto:
    """ConstantOfShape([16]) of f32: folds to 64 bytes (the bomb of case 19, at a size a test can afford)."""
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([1.5], np.float32))),
             helper.make_node("Add", ["x", "c"], ["y"])]
    return model(nodes, [vi("x", (16,))], [vi("y", (16,))], [numpy_helper.from_array(np.array([16], np.int64), "s")])


@dataclass(frozen=True)
class Budget:
    make: Callable[[], onnx.ModelProto]
    need: int | None  # what the model needs of the budget (None: the size of its file)
    shown: str  # how the message states the need
    at_need: type[Exception] | None = None  # what a compile raises with the limit at exactly the need (None: nothing)


BUDGETS = {
    "max_model_bytes": Budget(weighted_model, None, "the file has {need} bytes"),
    "max_nodes": Budget(lambda: chain_model(5), 5, "the graph has 5 nodes"),
    "max_nesting_depth": Budget(_nested_if, 2, "node 'inner_if' (If) holds subgraphs nested 2 levels deep",
                                UnsupportedError),  # within the budget, If itself is unsupported (control flow)
    "max_rank": Budget(lambda: relu_model(shape=(1, 2, 3)), 3, "graph input 'x' has rank 3"),
    "max_tensor_bytes": Budget(weighted_model, 64, "initializer 'w' of shape [4, 4] (f32) needs 64 bytes"),
    "max_total_weight_bytes": Budget(_two_weights, 128, "the weights up to initializer 'w2' need 128 bytes"),
    "max_fold_bytes": Budget(_fold_bomb, 64, "would fold to 64 bytes"),
}


def _setup(sb: Sandbox, budget: Budget) -> tuple[str, int]:
    path = sb.save(budget.make())
    (sb.out / "m.tritc").write_bytes(OLD_ARTIFACT)
    sb.mark()
    return str(path), budget.need if budget.need is not None else path.stat().st_size


@pytest.mark.parametrize("name", BUDGETS)
def test_34_budget_just_over_the_limit_api(sb, name):
    path, need = _setup(sb, BUDGETS[name])
    shown = BUDGETS[name].shown.format(need=need)
    refuses(sb, lambda: tritc.compile(path, limits=Limits(**{name: need - 1})), ResourceLimitError,
            names=[shown, f"over the limit {name}={need - 1}", f"--limit {name}=N"])
    at_need = BUDGETS[name].at_need
    if at_need is None:
        tritc.compile(path, limits=Limits(**{name: need}), lazy=True)  # exactly enough: accepted
    else:
        with pytest.raises(at_need):
            tritc.compile(path, limits=Limits(**{name: need}), lazy=True)
    sb.check()
    assert (sb.out / "m.tritc").read_bytes() == OLD_ARTIFACT


@pytest.mark.parametrize("name", BUDGETS)
def test_34_budget_just_over_the_limit_cli(sb, name):
    path, need = _setup(sb, BUDGETS[name])
    sb.cli("compile", path, "-o", sb.out / "m.tritc", "--limit", f"{name}={need - 1}", "-q",
           names=[BUDGETS[name].shown.format(need=need), f"over the limit {name}={need - 1}"], memory=3 * 2**30)
    assert (sb.out / "m.tritc").read_bytes() == OLD_ARTIFACT


# ---- compile wall time -------------------------------------------------------------------------------------------


def test_34_compile_wall_time_stops_between_passes(sb, monkeypatch):
    """A pass that takes longer than the whole budget: it finishes, and the next pass never starts."""
    from tritc.passes.fold_constants import FoldConstants

    slow_run = FoldConstants.run

    def slow(self, graph):
        import time

        time.sleep(0.6)
        return slow_run(self, graph)

    monkeypatch.setattr(FoldConstants, "run", slow)
    path = str(sb.save(weighted_model()))
    steps: list[str] = []
    e = refuses(sb, lambda: tritc.compile(path, limits=Limits(max_compile_seconds=0.5), progress=steps.append),
                ResourceLimitError, names=["over the limit max_compile_seconds=0.5", "seconds before pass '"])
    ran = [s for s in steps if s.startswith("pass [")]
    assert ran[-1].split("] ")[1].startswith("fold-constants"), ran  # the slow pass was the last to run
    after = re.search(r"before pass '([^']+)'", str(e)).group(1)
    assert not any(after in s for s in ran), (after, ran)


def test_34_compile_wall_time_cli(sb):
    path = str(sb.save(weighted_model()))
    (sb.out / "m.tritc").write_bytes(OLD_ARTIFACT)
    sb.mark()
    sb.cli("compile", path, "-o", sb.out / "m.tritc", "--limit", "max_compile_seconds=0.001", "-q",
           names=["over the limit max_compile_seconds=0.001", "seconds before"], memory=3 * 2**30)


# ---- run time: generated inputs, .npy inputs, the arena ----------------------------------------------------------


def _huge_input(shape=(4194304, 4194304)) -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", shape)], [vi("y", shape)], ir_version=10)


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_generated_inputs_of_a_huge_declared_shape(sb, command):
    """Issue 10: `tritc verify` on an input declared [4194304, 4194304] (64 TiB of float32) must say so in one line,
    not die in numpy's MemoryError, under an address-space limit far below the inputs' size."""
    path = sb.save(_huge_input())
    sb.cli(command, path, "-q", memory=2 * 2**30, timeout=120,
           names=["'x' f32[4194304,4194304]", f"{4194304 * 4194304 * 4} bytes",
                  f"over the limit max_input_bytes={DEFAULT_LIMITS.max_input_bytes}", "--shape"])


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_34_generated_inputs_just_over_the_limit(sb, command):
    path = sb.save(relu_model())  # x: f32[2,3], 24 bytes
    sb.cli(command, path, "-q", "--limit", "max_input_bytes=23", memory=3 * 2**30,
           names=["the inputs to generate", "24 bytes", "over the limit max_input_bytes=23"])


def test_34_npy_input_just_over_the_limit(sb):
    path = sb.save(relu_model())
    np.save(sb.model_dir / "x.npy", np.ones((2, 3), np.float32))
    sb.mark()
    sb.cli("verify", path, "-q", "--input", f"x={sb.model_dir / 'x.npy'}", "--limit", "max_input_bytes=23",
           memory=3 * 2**30, names=["--input x", "needs 24 bytes", "over the limit max_input_bytes=23"])


def _two_matmuls() -> onnx.ModelProto:
    """x @ w1 @ w2: the value between the two lives in the arena."""
    w = [numpy_helper.from_array(np.random.default_rng(i).standard_normal((16, 16)).astype(np.float32), f"w{i}")
         for i in (1, 2)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    return model(nodes, [vi("x", ("n", 16))], [vi("y", ("n", 16))], w)


def _arena_need(cm, x: np.ndarray) -> int:
    cm.max_arena_bytes = 0
    with pytest.raises(ResourceLimitError) as info:
        cm.run(None, {"x": x})
    return int(re.search(r"arena .* of (\d+) bytes", str(info.value)).group(1))


def test_34_arena_just_over_the_limit(sb):
    path = str(sb.save(_two_matmuls()))
    x = np.ones((64, 16), np.float32)
    cm = tritc.compile(path, threads=1)
    need = _arena_need(cm, x)
    assert need >= 64 * 16 * 4
    cm.max_arena_bytes = need - 1
    refuses(sb, lambda: cm.run(None, {"x": x}), ResourceLimitError,
            names=["n=64", f"of {need} bytes", f"over the limit max_arena_bytes={need - 1}"])
    cm.max_arena_bytes = need
    assert cm.run(None, {"x": x})[0].shape == (64, 16)
    assert tritc.compile(path, threads=1, limits=Limits(max_arena_bytes=7)).max_arena_bytes == 7


def test_34_arena_just_over_the_limit_cli(sb):
    path = str(sb.save(_two_matmuls()))
    x = np.ones((64, 16), np.float32)
    np.save(sb.model_dir / "x.npy", x)
    cm = tritc.compile(path, threads=1)
    need = _arena_need(cm, x)
    cm.save(str(sb.out / "m.tritc"))
    sb.mark()
    sb.cli("run", sb.out / "m.tritc", "--input", f"x={sb.model_dir / 'x.npy'}", "--limit",
           f"max_arena_bytes={need - 1}", memory=3 * 2**30,
           names=[f"of {need} bytes", f"over the limit max_arena_bytes={need - 1}"])


# ---- the --limit option itself -----------------------------------------------------------------------------------


def test_limit_values_and_errors():
    limits = parse_limits(["max_tensor_bytes=2GiB", "max-nodes=10k", "max_compile_seconds=1.5", "max_rank = 4"])
    assert (limits.max_tensor_bytes, limits.max_nodes, limits.max_compile_seconds) == (2 * 2**30, 10_000, 1.5)
    assert limits.max_rank == 4 and limits.max_arena_bytes == DEFAULT_LIMITS.max_arena_bytes
    for bad in ("bogus=1", "max_nodes", "max_nodes=lots", "max_nodes=1XB", "max_nodes=-1", "max_nodes=1.5"):
        with pytest.raises(tritc.errors.OptionError, match="--limit"):
            parse_limits([bad])


def test_limits_are_documented(sb):
    """Every budget is in docs/LIMITS.md and in --help."""
    from .harness import REPO

    doc = (REPO / "docs" / "LIMITS.md").read_text()
    help_text = sb.cli("compile", "--help", expect_exit=0)  # argparse prints help on stdout; stderr is empty
    assert help_text == ""
    for name in NAMES:
        assert f"`{name}`" in doc, name
    from tritc.cli import build_parser

    compile_help = build_parser()._subparsers._group_actions[0].choices["compile"].format_help()  # type: ignore[union-attr]
    assert "--limit NAME=VALUE" in compile_help and all(name in " ".join(compile_help.split()) for name in NAMES)


def test_default_limits_admit_a_2b_parameter_model():
    """2e9 float32 parameters (8 GB) with a 2 GiB embedding table as the largest tensor, and a few thousand nodes."""
    params, embedding = 2 * 10**9, 128_256 * 4096 * 4
    assert DEFAULT_LIMITS.max_total_weight_bytes >= params * 4
    assert DEFAULT_LIMITS.max_tensor_bytes >= embedding
    assert DEFAULT_LIMITS.max_nodes >= 100_000 and DEFAULT_LIMITS.max_compile_seconds >= 3600

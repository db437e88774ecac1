"""The compiled code's memory (codegen/llvm/memory.py): schedule-memory's order, aliases and placement run on the graph
codegen lowers, with each node's kernel scratch as a slot of its own. Over random graphs no two buffers live at the same
step overlap (values and scratch) and the compiled results equal the interpreter's; on every fixture the arena the
compiled code asks for is within 1.15x of the lower bound; an in-place result's parameters are not noalias."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tritc
from tritc.codegen.llvm.compiler import compile_code
from tritc.codegen.llvm.symbolic import evaluate
from tritc.codegen.llvm.target import host_target
from tritc.codegen.llvm.weights import layout_weights
from tritc.ir import parse_graph
from tritc.ir.interpreter import run
from tritc.ir.memory import Alias, check_schedule, numbers, unordered_pairs

from ..passes.test_schedule_memory import IN_PLACE_CHAIN, sized_graphs, symbol_sizes
from ..properties import budget

ROOT = Path(__file__).parents[2]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "transformers").glob("*.onnx"))
MAX_RATIO = 1.15
# decode to long prompts, batch 1 to 8 (the example's mask table has 64 rows: its sequences stay within 64)
SIZES = [(b, s) for b in (1, 3, 8) for s in (1, 7, 16, 64, 100, 1024)]
EXAMPLE_SIZES = [(b, s) for b, s in SIZES if s <= 64]


def check_code(spec, bindings) -> None:
    """The code's schedule is valid at `bindings` and its arena is the one the runtime allocates."""
    g, sched = spec.graph, spec.schedule
    assert check_schedule(g, sched, bindings) == []
    n = numbers(g, sched, bindings)
    assert evaluate(spec.arena_bytes, bindings) == n.arena == sched.arena_bytes(bindings)
    assert n.lower_bound <= n.arena <= n.naive


@settings(max_examples=budget(12))
@given(g=sized_graphs(), at=st.lists(symbol_sizes, min_size=1, max_size=3), pipeline=st.sampled_from(["none", "cpu"]))
def test_compiled_code_keeps_live_buffers_apart_and_matches_the_interpreter(g, at, pipeline):
    """Generic code when the graph has it ([n,n] products need static sizes: then code per binding), each code's
    schedule checked at the sizes it runs at."""
    model = tritc.compile(g, pipeline=pipeline, threads=1)
    for b in at:
        bindings = {k: v for k, v in b.items() if k in model.symbols}
        rng = np.random.default_rng(0)
        feeds = {v.name: rng.standard_normal((bindings[v.type.shape[0]], 4)).astype(np.float32) for v in g.inputs}
        got = model.run(None, feeds)
        _, spec = model.program.code_for(bindings, {})
        assert not unordered_pairs(spec.graph, spec.schedule), "two buffers live at the same time are not ordered"
        check_code(spec, bindings)
        want = run(model.graph, feeds)
        for name, have in zip([o.name for o in model.outputs], got):
            w = want[name]
            # float sums in another order, and int8 codes they may flip by one: near, not equal
            tol = 1e-3 * max(1.0, float(np.abs(w[np.isfinite(w)]).max(initial=0.0)))
            np.testing.assert_allclose(have, w, rtol=1e-3, atol=tol, err_msg=f"{name} at {bindings}")


def test_in_place_parameters_are_not_noalias():
    """relu written over %a (dead after it): its function's operand and result share bytes, so neither is noalias;
    tanh's, which has a slot of its own, keep noalias. The code still equals the interpreter."""
    g = parse_graph(IN_PLACE_CHAIN)
    layout, _ = layout_weights(g)
    spec = compile_code(g, layout, {}, host_target(), threads=2, keep_ir=True)
    assert spec.schedule.entries["b"] == Alias("inplace", "a")
    defines = {m.group(1): m.group(2) for m in re.finditer(r"define internal i32 @\"?(node\.\d+)\"?\((.*)\)", spec.llvm_ir)}
    calls = re.findall(r"call i32 @\"?(node\.\d+)\"?\(ptr %\"?([\w.]+)\"?, ptr %\"?([\w.]+)\"?", spec.llvm_ir)
    (relu,) = [fn for fn, a, b in calls if a == b]  # the in-place call: one pointer for operand and result
    assert "noalias" not in defines[relu].split(", ptr")[0] and defines[relu].count("noalias") == 2  # scratch, dims
    others = [params for fn, params in defines.items() if fn != relu]
    assert others and all(p.count("noalias") == p.count("ptr") for p in others)
    model = tritc.compile(g, pipeline="none", threads=2)
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    np.testing.assert_allclose(model.run(None, {"x": x})[0], run(g, {"x": x})["y"], rtol=1e-6, atol=1e-6)


def worst_ratio(model, sizes) -> float:
    assert model.program.generic_error is None, model.program.generic_error
    (spec,) = model.specializations
    assert not unordered_pairs(spec.graph, spec.schedule)
    worst = 0.0
    for batch, seq in sizes:
        bindings = {k: v for k, v in {"batch": batch, "seq": seq}.items() if k in model.symbols}
        check_code(spec, bindings)
        worst = max(worst, evaluate(spec.arena_bytes, bindings) / numbers(spec.graph, spec.schedule, bindings).lower_bound)
    return worst


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_transformer_fixture_arena_is_near_the_lower_bound(path):
    """The arena of the generic code (opt_level 0: the plan does not depend on it) at every size."""
    assert worst_ratio(tritc.compile(str(path), threads=1, opt_level=0), SIZES) <= MAX_RATIO


def test_bundled_example_arena_is_near_the_lower_bound(tmp_path):
    out = tmp_path / "bitnet_tiny.onnx"
    subprocess.run([sys.executable, str(ROOT / "examples" / "build_bitnet_example.py"), "-o", str(out)], check=True,
                   capture_output=True)
    model = tritc.compile(str(out), threads=1, opt_level=0)
    assert model.specializations[0].stats["scratch_slots"] > 0  # int8 ternary layers: quantisation scratch
    assert worst_ratio(model, EXAMPLE_SIZES) <= MAX_RATIO

"""schedule-memory: slots never overlap while live at any binding, offsets are aligned, results are unchanged, the order
lowers the peak, in-place and views share storage only where legal, and the schedule goes stale when the graph
changes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.errors import OptionError
from tritc.ir import DType, Graph, TensorType, dims, parse_graph, print_graph, run, verify
from tritc.ir.memory import Alias, Placement, check_schedule, current_schedule, numbers, unordered_pairs
from tritc.ir.ternary import TernaryWeight
from tritc.passes import PassManager, make_pass, parse_pass_list
from tritc.passes.memory_order import peak_bytes
from tritc.passes.schedule_memory import bytes_at, reference_bindings

from ..properties import budget
from .test_properties import feeds, graphs

F32 = DType.F32


def T(*shape):
    return TensorType(F32, tuple(shape))


def schedule(g: Graph, **options):
    return make_pass("schedule-memory", {k: str(v) for k, v in options.items()}).run(g).data


@st.composite
def sized_graphs(draw):
    """Random graphs whose values have many sizes in two symbols: [n,k] and [m,k] rows for k in 4, 8, 64, their
    concatenation [m+n,k], [n,n] products, elementwise ops (in place), reshapes (views), values read much later, and
    ternary matmuls (int8: the compiled kernel's quantisation scratch; on f16 copies: the f32 copies at its edge)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = Graph("sized")
    vals = [g.add_input("x", T("n", 4)), g.add_input("y", T("m", 4))]
    for _ in range(draw(st.integers(1, 14))):
        x = draw(st.sampled_from(vals))
        kind = draw(st.sampled_from(["unary", "binary", "widen", "square", "concat", "view", "narrow", "ternary"]))
        rows, k = x.type.shape
        if not isinstance(k, int):  # an [n,n] product: only elementwise ops take it
            kind = "unary"
        if kind == "unary":
            vals.append(g.add(draw(st.sampled_from(["relu", "neg", "tanh"])), [x], [x.type]).output)
        elif kind == "binary":
            same = [v for v in vals if v.type == x.type]
            vals.append(g.add(draw(st.sampled_from(["add", "mul"])), [x, draw(st.sampled_from(same))], [x.type]).output)
        elif kind in ("widen", "narrow"):
            out = draw(st.sampled_from([4, 8, 64])) if kind == "widen" else 4
            w = g.add_weight(g.fresh_name("w"), rng.standard_normal((k, out)).astype(np.float32), T(k, out))
            vals.append(g.add("matmul", [x, w], [T(rows, out)]).output)
        elif kind == "ternary":
            out = draw(st.sampled_from([4, 8, 64]))
            w = TernaryWeight(rng.integers(-1, 2, (k, out)).astype(np.int8), rng.uniform(0.5, 2, out).astype(np.float32))
            wv = g.add_weight(g.fresh_name("t"), w, TensorType(DType.T2, (k, out)), attrs={"scale": w.granularity})
            if draw(st.booleans()):
                vals.append(g.add("ternary_matmul", [x, wv], [T(rows, out)], {"act": "int8"}).output)
            else:
                h = g.add("cast", [x], [TensorType(DType.F16, (rows, k))], {"to": DType.F16}).output
                y = g.add("ternary_matmul", [h, wv], [TensorType(DType.F16, (rows, out))], {"act": "int8"}).output
                vals.append(g.add("cast", [y], [T(rows, out)], {"to": F32}).output)
        elif kind == "square" and rows in ("n", "m") and k == 4:
            t = g.add("transpose", [x], [T(k, rows)], {"perm": [1, 0]}).output
            vals.append(g.add("matmul", [x, t], [T(rows, rows)]).output)
        elif kind == "concat":
            other = draw(st.sampled_from([v for v in vals if v.type.shape[1] == k]))
            rows2 = other.type.shape[0]
            vals.append(g.add("concat", [x, other], [T(dims.add(rows, rows2), k)], {"axis": 0}).output)
        elif kind == "view":
            s = g.add_constant(np.array([-1], np.int64), TensorType(DType.I64, (1,)))
            flat = g.add("reshape", [x, s], [TensorType(F32, (None,))]).output
            s2 = g.add_constant(np.array([-1, k], np.int64), TensorType(DType.I64, (2,)))
            vals.append(g.add("reshape", [flat, s2], [x.type]).output)
    g.outputs = draw(st.lists(st.sampled_from(vals[2:] or vals), min_size=1, max_size=2, unique_by=id))
    PassManager(parse_pass_list("infer-shapes")).run(g)
    return g


symbol_sizes = st.fixed_dictionaries({"n": st.integers(0, 70), "m": st.integers(0, 70)})


@settings(max_examples=budget(60))
@given(g=sized_graphs(), at=st.lists(symbol_sizes, min_size=1, max_size=4))
def test_live_slots_never_overlap_and_results_are_kept(g, at):
    verify(g)
    sizes = [dict(b) for b in at]
    inputs = [{"x": np.random.default_rng(0).standard_normal((b["n"], 4)).astype(np.float32),
               "y": np.random.default_rng(1).standard_normal((b["m"], 4)).astype(np.float32)} for b in sizes]
    want = [run(g.copy(), f) for f in inputs]
    sched = schedule(g)
    verify(g)
    assert current_schedule(g) is sched
    assert not unordered_pairs(g, sched), "two slots live at the same time are not ordered: they may overlap"
    for b, f, w in zip(sizes, inputs, want):
        assert check_schedule(g, sched, b) == []
        n = numbers(g, sched, b)
        assert n.lower_bound <= n.arena <= n.naive
        have = run(g.copy(), f)
        for k in w:
            np.testing.assert_array_equal(have[k], w[k])
    text = print_graph(g)
    assert "  memory {" in text and print_graph(parse_graph(text, g.weights)) == text


@settings(max_examples=budget(40))
@given(g=graphs(), n=st.integers(0, 40))
def test_random_graphs_of_the_pass_properties(g, n):
    """The strategy every pass's property test uses, with bindings of its symbol."""
    want = run(g.copy(), feeds(g))
    sched = schedule(g)
    assert not unordered_pairs(g, sched) and check_schedule(g, sched, {"n": n}) == []
    have = run(g.copy(), feeds(g))
    for k in want:
        np.testing.assert_array_equal(have[k], want[k])


def parsed(text: str) -> Graph:
    g = parse_graph(text)
    verify(g)
    return g


# %b = relu(%a) may go over %a (no later reader); %c = tanh(%b) may not go over %b (add reads it)
IN_PLACE_CHAIN = """graph @g(%x: f32[n,64]) -> (%y: f32[n,64]) {
  %a = neg(%x) : f32[n,64]
  %b = relu(%a) : f32[n,64]
  %c = tanh(%b) : f32[n,64]
  %y = add(%b, %c) : f32[n,64]
  return %y
}"""


def test_elementwise_results_go_in_place_only_over_operands_that_die_there():
    g = parsed(IN_PLACE_CHAIN)
    sched = schedule(g)
    assert sched.entries["b"] == Alias("inplace", "a")  # %a dies at relu
    assert isinstance(sched.entries["c"], Placement)  # %b is read again by add
    assert isinstance(sched.entries["a"], Placement)  # never over a graph input: the caller's array
    assert all(not isinstance(e, Alias) for e in schedule(g.copy(), inplace=False).entries.values())


def test_no_in_place_over_a_broadcast_operand_or_another_element_size():
    g = parsed("""graph @g(%x: f32[n,1], %z: f32[n,64]) -> (%y: f32[n,64], %w: f16[n,1]) {
      %a = neg(%x) : f32[n,1]
      %b = add(%a, %z) : f32[n,64]
      %e = exp(%x) : f32[n,1]
      %w = cast(%e) {to = f16} : f16[n,1]
      %y = relu(%b) : f32[n,64]
      return %y, %w
    }""")
    sched = schedule(g, order="keep")
    assert isinstance(sched.entries["b"], Placement)  # %a is [n,1], broadcast against [n,64]
    assert "w" not in sched.entries  # a graph output: the caller's buffer


def test_views_alias_their_operand_and_keep_it_live():
    g = parsed("""graph @g(%x: f32[n,64]) -> (%y: f32[n,64]) {
      %s = constant [-1] : i64[1]
      %a = neg(%x) : f32[n,64]
      %v = reshape(%a, %s) : f32["64*n"]
      %b = exp(%x) : f32[n,64]
      %c = relu(%v) : f32["64*n"]
      %s2 = constant [-1, 64] : i64[2]
      %d = reshape(%c, %s2) : f32[n,64]
      %y = add(%d, %b) : f32[n,64]
      return %y
    }""")
    sched = schedule(g, order="keep")
    assert sched.entries["v"] == Alias("view", "a") and sched.entries["d"] == Alias("view", "c")
    assert sched.entries["c"] == Alias("inplace", "v") and sched.root("d") == "a"
    # %a lives on through %v until relu reads it: %b, computed in between, must not share its slot
    assert unordered_pairs(g, sched) == [] and "a" in _ordered_with(sched, "b")


def _ordered_with(sched, name):
    out = set(sched.entries[name].below)
    for k, e in sched.entries.items():
        if isinstance(e, Placement) and name in e.below:
            out.add(k)
    return out


def test_the_order_frees_big_values_early():
    """Three big branches computed before any is reduced: the greedy order reduces each as soon as it exists."""
    lines = [f"  %{b} = exp(%x) : f32[n,1024]\n" for b in "pqr"]
    lines += [f"  %{b}s = reduce_sum(%{b}, %ax) {{keepdims = 1}} : f32[n,1]\n" for b in "pqr"]
    g = parsed("graph @g(%x: f32[n,1024]) -> (%y: f32[n,1]) {\n  %ax = constant [1] : i64[1]\n" + "".join(lines) +
               "  %pq = add(%ps, %qs) : f32[n,1]\n  %y = add(%pq, %rs) : f32[n,1]\n  return %y\n}\n")
    nbytes = bytes_at(reference_bindings(g))
    before = peak_bytes(g, g.nodes, nbytes)
    x = {"x": np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)}
    want = run(g.copy(), x)
    sched = schedule(g)
    assert peak_bytes(g, g.nodes, nbytes) < before / 2
    assert [n.op for n in g][1:5] == ["exp", "reduce_sum", "exp", "reduce_sum"]
    np.testing.assert_array_equal(run(g.copy(), x)["y"], want["y"])
    assert numbers(g, sched, {"n": 3}).arena < 2 * 3 * 4096 + 1024
    kept = parsed(print_graph(g))
    assert not make_pass("schedule-memory", {}).run(kept)  # a second run changes nothing


def test_the_schedule_survives_copies_and_goes_stale_when_the_graph_changes():
    g = parsed("""graph @g(%x: f32[n,64]) -> (%y: f32[n,64]) {
      %a = neg(%x) : f32[n,64]
      %b = relu(%a) : f32[n,64]
      %dead = exp(%x) : f32[n,64]
      %y = tanh(%b) : f32[n,64]
      return %y
    }""")
    sched = schedule(g)
    copy = g.copy()
    assert current_schedule(copy) is sched and "memory {" in print_graph(copy)
    make_pass("eliminate-dead-code", {}).run(copy)
    assert current_schedule(copy) is None and "memory" not in print_graph(copy)
    assert current_schedule(g) is sched  # the original is untouched
    assert make_pass("schedule-memory", {}).run(copy) and current_schedule(copy) is not None


def test_options():
    g = parsed("graph @g(%x: f32[n,4]) -> (%y: f32[n,4]) {\n  %y = relu(%x) : f32[n,4]\n  return %y\n}\n")
    with pytest.raises(OptionError, match="expected name=size"):
        make_pass("schedule-memory", {"at": "[n]"}).run(g)
    with pytest.raises(OptionError, match="auto, keep"):
        make_pass("schedule-memory", {"order": "best"})
    assert reference_bindings(g, ("n=7",)) == {"n": 7}
    assert reference_bindings(parsed(print_graph(g).replace("[n,4]", "[n,m]")), ("n=7",)) == {"n": 7, "m": 128}
    assert make_pass("schedule-memory", {"at": "[n=7]"}).describe() == "schedule-memory{at=[n=7]}"


def test_parse_refuses_a_broken_memory_block():
    head = "graph @g(%x: f32[4]) -> (%y: f32[4]) {\n  %a = neg(%x) : f32[4]\n  %b = neg(%a) : f32[4]\n" \
           "  %y = neg(%b) : f32[4]\n  return %y\n  memory {\n"
    from tritc.errors import IRParseError
    for body, msg in [("    %a = arena 16 above %b\n    %b = arena 16 above %a\n", "above itself"),
                      ("    %a = arena 16\n    %a = arena 16\n", "twice"),
                      ("    %a = arena \"16*\"\n", "size expression"),
                      ("    %a = somewhere\n", "expected arena"),
                      ("    %a = arena 16 above %zz\n", "used before")]:
        with pytest.raises(IRParseError, match=msg):
            parse_graph(head + body + "  }\n}\n")


def test_a_view_of_unknown_shape_keeps_its_operands_bytes():
    """Regression (ONNX's expanded RotaryEmbedding): a reshape typed [?,?] of an arena value is a view of it; the checker
    took its unknown size for a different one."""
    g = parsed("""graph @g(%x: f32[4,8], %s: i64[2]) -> (%y: f32[?,?]) {
      %a = neg(%x) : f32[4,8]
      %v = reshape(%a, %s) : f32[?,?]
      %y = relu(%v) : f32[?,?]
      return %y
    }""")
    sched = schedule(g)
    assert sched.entries["v"] == Alias("view", "a") and check_schedule(g, sched, {}) == []


def test_the_checks_find_what_is_wrong():
    """check_schedule and unordered_pairs, which the property tests hold every schedule to, do fail on bad ones."""
    from tritc.ir.memory import MemorySchedule, fingerprint
    from tritc.ir.sizes import Size

    g = parsed("""graph @g(%x: f32[n]) -> (%y: f32[n]) {
      %a = neg(%x) : f32[n]
      %b = relu(%a) : f32[n]
      %y = add(%a, %b) : f32[n]
      return %y
    }""")
    size = Size.parse("4*n")
    unordered = MemorySchedule({"a": Placement(size), "b": Placement(size)}, fingerprint(g))
    assert unordered_pairs(g, unordered) == [("a", "b")]
    assert any("overlaps" in p for p in check_schedule(g, unordered, {"n": 5}))
    inplace = MemorySchedule({"a": Placement(size), "b": Alias("inplace", "a")}, fingerprint(g))
    assert check_schedule(g, inplace, {"n": 5}) == ["%b is written in place over %a, which is read later"]
    wrong_size = MemorySchedule({"a": Placement(Size.parse("2*n")), "b": Placement(size, ("a",))}, fingerprint(g))
    assert any("slot size 2*n is not its type's 4*n" in p for p in check_schedule(g, wrong_size, {"n": 5}))
    assert check_schedule(parsed(print_graph(g).replace("relu", "tanh")), schedule(g), {"n": 5})[0].startswith(
        "the schedule was made for another graph")


def test_empty_values_at_a_static_size_are_placed_without_a_cycle():
    """Regression: at a binding that makes sizes 0 (codegen specialises n=0), a new slot's gap start equals the empty
    live slot's offset, and that slot was put both under and over it, a cycle (the placement then looped forever)."""
    g = parsed("""graph @g(%x: f32[0,4]) -> (%y: f32[0,4]) {
      %a = neg(%x) : f32[0,4]
      %b = exp(%x) : f32[0,4]
      %c = add(%a, %b) : f32[0,4]
      %d = tanh(%c) : f32[0,4]
      %y = add(%d, %a) : f32[0,4]
      return %y
    }""")
    sched = schedule(g)
    assert sched.slots and not unordered_pairs(g, sched) and check_schedule(g, sched, {}) == []

"""Property tests over random graphs: every pass keeps the graph valid, keeps its results,
and is idempotent (a second run changes nothing)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.ir import DType, Graph, TensorType, print_graph, run, verify
from tritc.passes import PASSES, load_all, make_pass

from ..properties import budget

load_all()
F32 = DType.F32


def T(*shape):
    return TensorType(F32, tuple(shape))


@st.composite
def graphs(draw):
    """Random f32 graphs over [n, 4] and [4, n]-shaped values (n symbolic), with weights."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = Graph("rand")
    rows = [g.add_input("x", T("n", 4))]
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "noop", "linear", "ternary", "reshape", "transpose", "shape"]))
        x = draw(st.sampled_from(rows))
        if kind == "unary":
            op = draw(st.sampled_from(["relu", "sigmoid", "tanh", "neg", "abs"]))
            rows.append(g.add(op, [x], [x.type]).output)
        elif kind == "binary":
            y = draw(st.sampled_from(rows))
            op = draw(st.sampled_from(["add", "sub", "mul"]))
            if draw(st.booleans()):
                y = g.add_constant(rng.standard_normal(4).astype(np.float32), T(4))
            rows.append(g.add(op, [x, y], [x.type]).output)
        elif kind == "noop":
            op = draw(st.sampled_from(["identity", "cast"]))
            attrs = {"to": F32} if op == "cast" else {}
            rows.append(g.add(op, [x], [x.type], attrs).output)
        elif kind in ("linear", "ternary"):
            w = rng.standard_normal((4, 4)).astype(np.float32)
            if kind == "ternary":
                w = (rng.integers(-1, 2, (4, 4)) * rng.uniform(0.5, 2, 4)).astype(np.float32)
            wv = g.add_weight(g.fresh_name("w"), w, T(4, 4))
            rows.append(g.add("matmul", [x, wv], [x.type], name=g.fresh_name("fc")).output)
        elif kind == "reshape":
            s = g.add_constant(np.array([-1, 2, 2], np.int64), TensorType(DType.I64, (3,)))
            r = g.add("reshape", [x, s], [T("n", 2, 2)]).output
            s2 = g.add_constant(np.array([-1, 4], np.int64), TensorType(DType.I64, (2,)))
            rows.append(g.add("reshape", [r, s2], [T("n", 4)]).output)
        elif kind == "transpose":
            t = g.add("transpose", [x], [T(4, "n")], {"perm": [1, 0]}).output
            rows.append(g.add("transpose", [t], [T("n", 4)], {"perm": [1, 0]}).output)
        elif kind == "shape":
            s = g.add("shape", [x], [TensorType(DType.I64, (2,))]).output
            rows.append(g.add("reshape", [x, s], [x.type]).output)
    g.outputs = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=3, unique_by=id))
    return g


def feeds(g: Graph) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}


PASS_NAMES = sorted(PASSES)
# Passes of the fpga pipeline that quantise by design (docs/PASSES.md): ~8-bit weights (fold-radix3) and int8
# activations; their results are held to the quantisation error, a fraction of the output's magnitude.
QUANTISING = {"fold-radix3": 0.05, "quantize-activations": 0.05}


@pytest.mark.parametrize("name", PASS_NAMES)
@settings(max_examples=budget(25))
@given(g=graphs())
def test_pass_keeps_validity_results_and_is_idempotent(name, g):
    verify(g)
    want = run(g.copy(), feeds(g))
    p = make_pass(name, {})
    p.run(g)
    verify(g)
    have = run(g.copy(), feeds(g))
    assert list(have) == list(want), "output names changed"
    for k in want:
        if name in QUANTISING:
            scale = 1.0 + float(np.max(np.abs(want[k]), initial=0.0))
            assert np.max(np.abs(have[k] - want[k]), initial=0.0) <= QUANTISING[name] * scale, f"{name}: output {k}"
            continue
        # int8 activation quantisation (fuse-bitlinear) changes rounding; others keep float results
        np.testing.assert_allclose(have[k], want[k], rtol=2e-5, atol=2e-5, err_msg=f"{name}: output {k}")
    text = print_graph(g)
    again = make_pass(name, {})
    changed = again.run(g)
    assert print_graph(g) == text, f"{name} is not idempotent"
    assert not changed, f"{name} reported a change on its second run"


def test_cse_leaves_naming_identities_alone():
    """Regression (found by hypothesis): three equal results that are all graph outputs. The first run keeps one
    relu and gives the other two outputs their names with identities; a second run used to merge those identities
    into a chain identity(identity(relu)), so the pass was not idempotent."""
    g = Graph("rand")
    x = g.add_input("x", T("n", 4))
    g.outputs = [g.add("relu", [x], [x.type]).output for _ in range(3)]
    want = run(g.copy(), feeds(g))
    cse = make_pass("eliminate-common-subexpressions", {})
    assert cse.run(g)
    once = print_graph(g)
    assert [n.op for n in g].count("relu") == 1 and [n.op for n in g].count("identity") == 2, once
    assert not make_pass("eliminate-common-subexpressions", {}).run(g)
    assert print_graph(g) == once
    have = run(g.copy(), feeds(g))
    assert list(have) == list(want)
    for k in want:
        np.testing.assert_array_equal(have[k], want[k])

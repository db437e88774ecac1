"""Symbolic dim arithmetic: exact where provable, unknown (None) where not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tritc.ir import dims


def test_sums_and_products_normalise():
    assert dims.add("past", "seq") == "past+seq"
    assert dims.add("seq", "past") == "past+seq"
    assert dims.mul("batch", 4) == "4*batch"
    assert dims.sub(dims.add("past", "seq"), "past") == "seq"
    assert dims.mul(dims.add("a", 1), 2) == "2*a+2"
    assert dims.product([2, "batch", "seq", 3]) == "6*batch*seq"


def test_exact_division_only():
    assert dims.div_exact("6*batch*seq", "seq") == "6*batch"
    assert dims.div_exact("6*batch*seq", 3) == "2*batch*seq"
    assert dims.div_exact("batch", 2) is None
    assert dims.div_exact(12, 5) is None
    assert dims.div_exact("batch+seq", "seq") is None


def test_unknown_propagates():
    assert dims.add(None, 3) is None
    assert dims.mul("a", None) is None
    assert dims.mul(0, None) == 0


def test_equality_is_three_valued():
    assert dims.equal("past+seq", "seq+past") is True
    assert dims.equal(3, 4) is False
    assert dims.equal("a", "b") is None
    assert dims.equal("a", None) is None


def test_opaque_names_are_symbols():
    assert dims.add("batch size", 1) == "\"batch size\"+1"  # quoted inside a polynomial, so it parses back
    assert dims.evaluate(dims.add("batch size", 1), {"batch size": 7}) == 8
    assert dims.add("x.0", 0) == "x.0" and dims.equal(dims.add("x.0", "y.0"), dims.add("y.0", "x.0"))
    assert dims.evaluate("batch size", {"batch size": 7}) == 7


@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 9))
def test_evaluate_agrees_with_integers(a, b, k):
    env = {"a": a, "b": b}
    e = dims.mul(dims.add("a", dims.mul("b", k)), "a")
    assert dims.evaluate(e, env) == (a + b * k) * a
    assert dims.symbols(e) == {"a", "b"}

"""Size expressions (tritc/ir/sizes.py): evaluation, text round trip, and that `le` only proves what holds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.ir import DType, TensorType
from tritc.ir.sizes import ALIGN, Size

from ..properties import budget

SYMBOLS = ("n", "m")


def T(*shape, dtype=DType.F32):
    return TensorType(dtype, tuple(shape))


def test_sizes_of_types():
    assert str(Size.of_type(T("seq", 128))) == "512*seq"
    assert str(Size.of_type(T("past+seq", 2, dtype=DType.I64))) == "16*past+16*seq"
    assert Size.of_type(T("seq", None)) is None and Size.of_type(TensorType(DType.F32, None)) is None
    assert Size.of_type(T()).evaluate({}) == 4


def test_align_keeps_multiples_of_align_as_polynomials():
    assert str(Size.of_type(T("seq", 16)).aligned()) == "64*seq"
    assert str(Size.of_type(T("seq")).aligned()) == "align(4*seq)"
    assert str(Size.parse("100*seq+8").aligned()) == "64*seq+align(36*seq+8)"
    assert Size.const(1).aligned().evaluate({}) == ALIGN and Size.const(0).aligned().evaluate({}) == 0
    assert Size.parse("align(4*seq)").evaluate({"seq": 17}) == 128


def test_max_drops_provably_smaller_terms():
    a, b = Size.parse("512*seq"), Size.parse("16*seq*seq")
    assert str(a.max(b)) == "max(16*seq*seq, 512*seq)"
    assert str(a.max(Size.parse("256*seq+64"))) == "max(256*seq+64, 512*seq)"  # 256*seq+64 > 512*seq at seq=0
    assert str(a.max(Size.parse("256*seq"))) == "512*seq"
    assert (a.max(b) + Size.const(64)).evaluate({"seq": 10}) == 5184


def test_le_uses_monotonic_align():
    small, big = Size.parse("align(4*seq)"), Size.parse("align(8*seq)")
    assert small.le(big) and not big.le(small)
    assert not Size.parse("512*seq").le(Size.parse("16*seq*seq"))  # false for seq < 32


def test_parse_errors():
    for bad in ("seq/2", "max()", "align(1, 2)", "-max(seq, 1)", "align(seq)*align(seq)", "2 ** seq", "x.y"):
        with pytest.raises(ValueError):
            Size.parse(bad)


def test_opaque_symbols_round_trip():
    s = Size.of_type(T("x.0", 3)) + Size.parse('align(4*"x.0")')
    assert str(s) == '12*"x.0"+align(4*"x.0")'
    assert Size.parse(str(s)) == s and s.evaluate({"x.0": 5}) == 124


@st.composite
def sizes(draw, depth: int = 2):
    """Random Sizes: polynomials with non-negative coefficients in n and m, aligned, summed and maxed."""
    if depth == 0 or draw(st.booleans()):
        mono = draw(st.sampled_from([(), ("n",), ("m",), ("n", "n"), ("m", "n")]))
        p = {mono: draw(st.integers(0, 300))} | {(): draw(st.integers(0, 100))}
        s = Size.of_poly(p)
        return s.aligned() if draw(st.booleans()) else s
    a, b = draw(sizes(depth=depth - 1)), draw(sizes(depth=depth - 1))
    return a + b if draw(st.booleans()) else a.max(b)


bindings = st.fixed_dictionaries({s: st.integers(0, 200) for s in SYMBOLS})


@settings(max_examples=budget(200))
@given(a=sizes(), b=sizes(), at=st.lists(bindings, min_size=1, max_size=5))
def test_le_is_sound_and_arithmetic_evaluates(a, b, at):
    """What le proves holds at every binding; sums, maxima and the text form evaluate as numbers do."""
    for bind in at:
        va, vb = a.evaluate(bind), b.evaluate(bind)
        if a.le(b):
            assert va <= vb, (str(a), str(b), bind)
        assert (a + b).evaluate(bind) == va + vb
        assert a.max(b).evaluate(bind) == max(va, vb)
        assert a.aligned().evaluate(bind) % ALIGN == 0 and 0 <= a.aligned().evaluate(bind) - va < ALIGN
        assert Size.parse(str(a)).evaluate(bind) == va
        assert va <= a.bounded().evaluate(bind) <= a.simplified().evaluate(bind)
    assert str(Size.parse(str(a))) == str(a)
    assert a.le(a) and a.le(a + b) and a.le(a.max(b))

"""The text format: print_graph and parse_graph are exact inverses, and bad text fails clearly."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.errors import IRParseError
from tritc.ir import DType, Graph, TensorType, parse_graph, print_graph, verify
from tritc.ir.text import format_float, parse_type

from ..properties import budget

T = TensorType


def _example() -> Graph:
    g = Graph("main")
    x = g.add_input("x", T(DType.F32, ("batch", 4)))
    w = g.add_weight("fc.weight", np.arange(16, dtype=np.float32).reshape(4, 4), T(DType.F32, (4, 4)))
    c = g.add_constant(np.array([0.1, -0.0, np.inf], np.float32), T(DType.F32, (3,)), "c")
    a = g.add("add", [x, w], [T(DType.F32, ("batch", 4))], name="/layers.0/Add")
    r = g.add("leaky_relu", [a.output], [T(DType.F32, ("batch", 4))], {"alpha": float(np.float32(0.1))})
    g.outputs = [r.output, c]
    return g


def test_print_example_is_stable():
    text = print_graph(_example())
    assert text == (
        "graph @main(%x: f32[batch,4]) -> (%leaky_relu: f32[batch,4], %c: f32[3]) {\n"
        "  %c = constant [0.1, -0.0, inf] : f32[3]\n"
        '  %fc.weight = weight "fc.weight" : f32[4,4]\n'
        '  %Add = add(%x, %fc.weight) : f32[batch,4] loc("/layers.0/Add")\n'
        "  %leaky_relu = leaky_relu(%Add) {alpha = 0.1} : f32[batch,4]\n"
        "  return %leaky_relu, %c\n"
        "}\n"
    )


def test_round_trip_keeps_weights_by_reference():
    g = _example()
    g2 = parse_graph(print_graph(g), g.weights)
    assert print_graph(g2) == print_graph(g)
    assert g2.weights["fc.weight"] is g.weights["fc.weight"]
    verify(g2)


def test_attribute_values_round_trip():
    g = Graph()
    x = g.add_input("x", T(DType.F32, (2,)))
    # Not a real op signature check: verify is not called, the printer and parser are generic.
    attrs = {"i": -3, "f": float(np.float32(1e-5)), "s": 'quo"te\n', "ints": [1, -2], "floats": [0.5, float("-inf")],
             "strs": ["a", "é"], "dt": DType.BF16, "empty": [],
             "t": np.array([[1, 2]], np.int64), "tb": np.array(True), "th": np.array([1.5], ml_dtypes.bfloat16)}
    n = g.add("relu", [x, None], [T(DType.F32, (2,))], attrs)
    g.outputs = [n.output]
    g2 = parse_graph(print_graph(g))
    got = g2.nodes[0].attrs
    for k in ("i", "f", "s", "ints", "strs", "dt", "empty"):
        assert got[k] == attrs[k], k
    assert got["floats"][0] == 0.5 and got["floats"][1] == float("-inf")
    np.testing.assert_array_equal(got["t"], attrs["t"])
    assert got["t"].dtype == np.int64 and got["tb"].dtype == np.bool_ and got["th"].dtype == ml_dtypes.bfloat16
    assert g2.nodes[0].inputs[1] is None
    assert print_graph(g2) == print_graph(g)


@pytest.mark.parametrize("dtype", [DType.F32, DType.F16, DType.F64, DType.BF16])
def test_floats_round_trip_bit_exactly(dtype):
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200),
                           [0.0, -0.0, np.inf, -np.inf, 1e-45, 3.4e38, 65504.0, 6e-8]])
    with np.errstate(over="ignore"):
        arr = vals.astype(dtype.np_dtype)
    text = [format_float(float(v), dtype) for v in arr]
    back = np.array([float(t) for t in text]).astype(dtype.np_dtype)
    assert back.tobytes() == arr.tobytes()
    assert all(("." in t or "e" in t or t.lstrip("-") in ("inf", "nan")) for t in text)


@pytest.mark.parametrize("dtype, lo, hi", [(DType.I4, -8, 7), (DType.U4, 0, 15), (DType.I2, -2, 1), (DType.U2, 0, 3)])
def test_sub_byte_types_and_literals_round_trip(dtype, lo, hi):
    """i4 / u4 / i2 / u2 print and parse as types, literals (in ml_dtypes containers) and cast targets; a literal out
    of the range is refused."""
    g = Graph()
    x = g.add_input("x", T(dtype, ("n", 3)))
    c = g.add_constant(np.arange(lo, hi + 1).astype(dtype.np_dtype), T(dtype, (hi - lo + 1,)), "c")
    n = g.add("cast", [x], [T(DType.F32, ("n", 3))], {"to": DType.F32})
    back = g.add("cast", [n.output], [T(dtype, ("n", 3))], {"to": dtype})
    g.outputs = [back.output, c]
    text = print_graph(g)
    assert f"%x: {dtype}[n,3]" in text and f"[{', '.join(map(str, range(lo, hi + 1)))}] : {dtype}[{hi - lo + 1}]" in text
    g2 = parse_graph(text)
    assert print_graph(g2) == text
    value = g2.nodes[0].attrs["value"]
    assert value.dtype == dtype.np_dtype and value.view(np.uint8).tolist() == [v & ((1 << dtype.bits) - 1) for v in range(lo, hi + 1)]
    assert g2.nodes[-1].attrs["to"] is dtype
    with pytest.raises(IRParseError, match=f"{hi + 1} does not fit {dtype}"):
        parse_graph(f"graph @g() -> (%c: {dtype}[1]) {{\n  %c = constant [{hi + 1}] : {dtype}[1]\n  return %c\n}}\n")


def test_nan_constant_round_trips():
    g = Graph()
    c = g.add_constant(np.array([np.nan, 1.0], np.float32), T(DType.F32, (2,)))
    g.outputs = [c]
    v = parse_graph(print_graph(g)).nodes[0].attrs["value"]
    assert math.isnan(v[0]) and v[1] == 1.0


@pytest.mark.parametrize("text, dims", [
    ("f32[batch,?,4]", ("batch", None, 4)),
    ("i64[]", ()),
    ('f16["batch size",past+seq]', ("batch size", "past+seq")),
])
def test_parse_type(text, dims):
    assert parse_type(text).shape == dims


def test_unknown_rank():
    assert parse_type("bool[*]").shape is None


def test_weird_names_round_trip():
    g = Graph("weird graph")
    names = [".", "123", "_", "ünï", "a/b:c", "nul\x00x", "x" * 300, "none", "%"]
    prev = g.add_input(names[0], T(DType.F32, (1,)))
    for nm in names[1:]:
        prev = g.add("relu", [prev], [T(DType.F32, (1,))], name=nm, output_names=[nm]).output
    g.outputs = [prev]
    text = print_graph(g)
    g2 = parse_graph(text)
    assert [v.name for v in g2.values()] == [v.name for v in g.values()]
    assert print_graph(g2) == text


@pytest.mark.parametrize("text, needle", [
    ("graph @g() -> () {\n  return\n", "expected a %value .found 'end of input'"),
    ("graph @g(%x: f32[2]) -> (%y: f32[2]) {\n  return %y\n}\n", "used before it is defined"),
    ("graph @g(%x: f32[2]) -> (%x: f32[2]) {\n  %x = relu(%x) : f32[2]\n  return %x\n}\n", "defined twice"),
    ("graph @g(%x: f32[2]) -> (%x: f32[2]) {\n  return %x $\n}\n", "unexpected character"),
    ("graph @g() -> (%c: i8[1]) {\n  %c = constant [300] : i8[1]\n  return %c\n}\n", "does not fit"),
    ("graph @g() -> (%c: i8[2]) {\n  %c = constant [1] : i8[2]\n  return %c\n}\n", "needs 2"),
    ("graph @g(%x: f32[2]) -> (%y: f32[2]) {\n  return %x\n}\n", "do not match"),
])
def test_parse_errors_name_the_problem(text, needle):
    with pytest.raises(IRParseError, match=needle):
        parse_graph(text)


def test_parse_error_gives_line_and_column():
    with pytest.raises(IRParseError, match=r"line 2, column 8: expected a name"):
        parse_graph("graph @g(%x: f32[2]) -> (%x: f32[2]) {\n  %y = (%x) : f32[2]\n  return %x\n}\n")


def test_missing_weight_is_reported():
    g = _example()
    with pytest.raises(IRParseError, match="fc.weight"):
        parse_graph(print_graph(g), {})


def test_comments_are_ignored():
    text = print_graph(_example())
    commented = text.replace("{\n", "{ // the body\n", 1)
    assert print_graph(parse_graph(commented, _example().weights)) == text


# ---- property: any graph built from the API round-trips ------------------------------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_dims = st.one_of(st.integers(0, 5), st.sampled_from(["batch", "seq", "past+seq", "2*n", "weird dim", None]))
_float_dtypes = st.sampled_from([DType.F32, DType.F16, DType.F64, DType.BF16])


@st.composite
def graphs(draw):
    g = Graph(draw(_names))
    shape = tuple(draw(st.lists(_dims, max_size=3)))
    dtype = draw(_float_dtypes)
    t = T(dtype, shape)
    values = [g.add_input(g.fresh_name(draw(_names)), t)]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["add", "relu", "leaky_relu", "const"]))
        if kind == "const":
            arr = np.array(draw(st.lists(st.floats(allow_nan=False, width=16), min_size=1, max_size=4)), dtype.np_dtype)
            values.append(g.add_constant(arr, T(dtype, arr.shape), g.fresh_name(draw(_names))))
            continue
        a = draw(st.sampled_from([v for v in values if v.type == t]))
        ins = [a, draw(st.sampled_from([v for v in values if v.type == t]))] if kind == "add" else [a]
        attrs = {"alpha": float(np.float32(draw(st.floats(-10, 10))))} if kind == "leaky_relu" else {}
        loc = draw(st.one_of(st.none(), _names))
        values.append(g.add(kind, ins, [t], attrs, loc, output_names=[g.fresh_name(draw(_names))]).output)
    g.outputs = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3, unique_by=id))
    return g


@settings(max_examples=budget(150))
@given(graphs())
def test_random_graphs_round_trip(g):
    text = print_graph(g)
    g2 = parse_graph(text, g.weights)
    assert print_graph(g2) == text
    verify(g2, check_types=False)


@pytest.mark.parametrize("text", ["f32[-3]", "f32[3.5]", "f32[1e3]", "f32[a b]", "f32[*,3]", "f32[,]"])
def test_malformed_dims_are_rejected(text):
    with pytest.raises(ValueError, match="bad dim"):
        parse_type(text)


def test_polynomial_dims_print_bare():
    from tritc.ir.types import format_type

    assert format_type(parse_type("f32[2*seq,past+seq]")) == "f32[2*seq,past+seq]"


def test_bare_words_are_string_attributes_and_numpy_scalars_print():
    from tritc.ir.text import format_attr

    g = parse_graph('graph @g() -> (%w: f32[2]) {\n  %w = weight "w" {scale = per_channel} : f32[2]\n  return %w\n}\n')
    assert g.nodes[0].attrs["scale"] == "per_channel"
    assert format_attr(np.int64(3)) == "3" and format_attr(np.float32(0.5)) == "0.5"

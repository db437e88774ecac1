"""infer-shapes follows shape arithmetic symbolically (tritc/ir/symvalues.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritc.frontend.onnx import load_model
from tritc.ir import parse_graph, run
from tritc.ir.symvalues import SymValue, propagate
from tritc.ir.types import DType, TensorType
from tritc.passes import PassManager
from tritc.passes.infer_shapes import InferShapes
from tritc.passes.pipelines import pipeline

TORCH_STYLE = """graph @g(%x: f32[batch,seq,64]) -> (%y: f32[?,?,?,?], %m: f32[?,?], %r: i64[?], %h: f32[?,?,?]) {
  %s = shape(%x) : i64[3]
  %i0 = constant 0 : i64[]
  %i1 = constant 1 : i64[]
  %b = gather(%s, %i0) {axis = 0} : i64[]
  %n = gather(%s, %i1) {axis = 0} : i64[]
  %ax = constant [0] : i64[1]
  %bu = unsqueeze(%b, %ax) : i64[1]
  %nu = unsqueeze(%n, %ax) : i64[1]
  %rest = constant [4, 16] : i64[2]
  %shp = concat(%bu, %nu, %rest) {axis = 0} : i64[4]
  %y = reshape(%x, %shp) : f32[?,?,?,?]
  %big = constant [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0] : f32[4,4]
  %z = constant [0, 0] : i64[2]
  %end = concat(%nu, %nu) {axis = 0} : i64[2]
  %m = slice(%big, %z, %end) : f32[?,?]
  %one = constant 1 : i64[]
  %r = range(%i0, %n, %one) : i64[?]
  %half = constant 2 : i64[]
  %d = gather(%s, %ax) {axis = 0} : i64[1]
  %last = constant [-1] : i64[1]
  %dl = shape(%x) {start = -1} : i64[1]
  %mid = div(%dl, %half) : i64[1]
  %big3 = constant [0.0] : f32[1,1,1]
  %h = slice(%x, %mid, %last, %last) : f32[?,?,?]
  return %y, %m, %r, %h
}"""


def test_torch_style_shape_arithmetic_becomes_symbolic():
    g = parse_graph(TORCH_STYLE)
    InferShapes().run(g)
    types = {v.name: v.type for v in g.outputs}
    assert types["y"] == TensorType(DType.F32, ("batch", "seq", 4, 16))
    assert types["m"] == TensorType(DType.F32, ("seq", "seq"))  # a constant mask sliced to the sequence
    assert types["r"] == TensorType(DType.I64, ("seq",))
    assert types["h"] == TensorType(DType.F32, ("batch", "seq", 31))  # x[..., 32:-1]
    x = np.random.default_rng(0).standard_normal((2, 3, 64)).astype(np.float32)
    out = run(g, {"x": x})  # the interpreter checks every declared type against the real shapes
    assert out["y"].shape == (2, 3, 4, 16) and out["m"].shape == (3, 3) and out["h"].shape == (2, 3, 31)


def test_a_range_between_two_symbolic_bounds():
    """range(total - seq, total): seq elements (the positions of the new tokens, as a mask builder writes them); a
    difference that could be negative for some sizes (range(seq, total)) is taken as the length, and the assumption
    total >= seq is recorded for the runtime to check (dims.recording)."""
    g = parse_graph("""graph @g(%m: i64[batch,total], %ids: i64[batch,seq]) -> (%r: i64[?], %u: i64[?]) {
  %one = constant 1 : i64[]
  %total = shape(%m) {end = 2, start = 1} : i64[1]
  %seq = shape(%ids) {end = 2, start = 1} : i64[1]
  %t = squeeze(%total) : i64[]
  %s = squeeze(%seq) : i64[]
  %past = sub(%t, %s) : i64[]
  %r = range(%past, %t, %one) : i64[?]
  %u = range(%s, %t, %one) : i64[?]
  return %r, %u
}""")
    from tritc.ir import dims

    with dims.recording() as assumed:
        InferShapes().run(g)
    types = {v.name: v.type for v in g.outputs}
    assert types["r"] == TensorType(DType.I64, ("seq",)) and types["u"] == TensorType(DType.I64, ("-seq+total",))
    assert [(a, b, how) for a, b, _, how in assumed] == [("-seq+total", 0, ">=")]
    out = run(g, {"m": np.ones((1, 7), np.int64), "ids": np.ones((1, 3), np.int64)})
    np.testing.assert_array_equal(out["r"], [4, 5, 6])


def test_values_propagate_through_elementwise_and_where():
    seq = SymValue(("seq",), 1)
    minus_one = np.array([-1], np.int64)
    eq = propagate("equal", [seq, None], [None, minus_one], {}, [None, None])
    assert eq == SymValue((0,), 1)
    picked = propagate("where", [eq, None, seq], [None, np.array([1], np.int64), None], {}, [None] * 3)
    assert picked == SymValue(("seq",), 1)
    assert propagate("mul", [seq, None], [None, np.array(2, np.int64)], {}, [None, None]) == SymValue(("2*seq",), 1)
    assert propagate("div", [SymValue(("2*seq",), 1), None], [None, np.array(2, np.int64)], {}, [None] * 2) \
        == SymValue(("seq",), 1)
    assert propagate("div", [seq, None], [None, np.array(2, np.int64)], {}, [None] * 2) == SymValue((None,), 1)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "fixtures" / "transformers").glob("*.onnx")))
def test_fixtures_are_fully_typed_after_the_pipeline(name):
    g = load_model(Path(__file__).parents[1] / "fixtures" / "transformers" / f"{name}.onnx")
    PassManager(pipeline("cpu")).run(g)
    unknown = [f"%{v.name}: {v.type}" for v in g.values() if v.type.shape is None or None in v.type.shape]
    assert not unknown, f"{len(unknown)} values with unknown dims, e.g. {unknown[:3]}"

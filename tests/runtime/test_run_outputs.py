"""CompiledModel.run(..., outputs={name: array}): outputs written into the caller's arrays, each bad binding one clear
error; and inputs that give a symbol by value (Graph.value_symbols), bound like input dims."""

from __future__ import annotations

import numpy as np
import pytest

import tritc
from tritc.errors import InputShapeError
from tritc.ir import parse_graph

GRAPH = """graph @g(%x: f32[batch,seq]) -> (%y: f32[batch,seq], %w: f32[batch,seq]) {
  %y = relu(%x) : f32[batch,seq]
  %w = neg(%x) : f32[batch,seq]
  return %y, %w
}"""


@pytest.fixture(scope="module")
def model():
    return tritc.compile(parse_graph(GRAPH), pipeline="none", threads=1)


X = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)


def test_bound_outputs_are_written_and_returned(model):
    y, w = np.full((2, 3), 7, np.float32), np.full((2, 3), 7, np.float32)
    got_y, got_w = model.run(None, {"x": X}, outputs={"y": y, "w": w})
    assert got_y is y and got_w is w
    np.testing.assert_array_equal(y, np.maximum(X, 0))
    np.testing.assert_array_equal(w, -X)
    only = np.zeros((2, 3), np.float32)
    (fetched,) = model.run(["y"], {"x": X}, outputs={"w": only})  # bound but not fetched: written all the same
    np.testing.assert_array_equal(only, -X)
    np.testing.assert_array_equal(fetched, np.maximum(X, 0))


def _strided() -> np.ndarray:
    return np.zeros((2, 6), np.float32)[:, ::2]


def _read_only() -> np.ndarray:
    a = np.zeros((2, 3), np.float32)
    a.setflags(write=False)
    return a


SHARED = np.zeros((2, 3), np.float32)

BAD = [
    ("unknown", lambda: {"z": np.zeros((2, 3), np.float32)}, ValueError, "cannot bind unknown output(s) 'z'; outputs are y, w"),
    ("not an array", lambda: {"y": [[0.0] * 3] * 2}, TypeError, "output 'y' (f32[batch,seq]) is bound to a list, not a numpy array"),
    ("dtype", lambda: {"y": np.zeros((2, 3))}, TypeError,
     "output 'y' (f32[batch,seq]) is bound to an array of dtype float64, expected float32"),
    ("shape", lambda: {"y": np.zeros((3, 2), np.float32)}, ValueError,
     "output 'y' (f32[batch,seq]) is bound to an array of shape [3, 2]; this call writes [2, 3]"),
    ("strided", lambda: {"y": _strided()}, ValueError, "output 'y' (f32[batch,seq]) is bound to an array that is not C-contiguous"),
    ("read-only", lambda: {"y": _read_only()}, ValueError, "output 'y' (f32[batch,seq]) is bound to a read-only array"),
    ("two outputs, one array", lambda: {"y": SHARED, "w": SHARED}, ValueError, "is bound to memory that output"),
]


@pytest.mark.parametrize("outputs,exc,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_binding_is_one_clear_error(model, outputs, exc, message):
    with pytest.raises(exc) as info:
        model.run(None, {"x": X}, outputs=outputs())
    assert message in str(info.value)


def test_an_output_may_not_overwrite_an_input(model):
    """Only a capacity-form present may share its past input's array (tests/runtime/test_kv_cache_in_place.py)."""
    x = X.copy()
    with pytest.raises(ValueError, match="output 'y' is bound to memory that input 'x' uses too: the model has no output "
                                         "that may share an input's array"):
        model.run(None, {"x": x}, outputs={"y": x})
    with pytest.raises(ValueError, match="output 'w' is bound to memory that input 'x' uses too"):
        model.run(None, {"x": x}, outputs={"y": np.zeros((2, 3), np.float32), "w": x})
    np.testing.assert_array_equal(x, X)  # refused before anything ran


def test_an_input_that_gives_a_size_by_value():
    """`%n: i64[1] = len` binds `len` from its value: the output's shape, and one clear error when it disagrees
    with a dim that gives `len` too."""
    g = parse_graph("""graph @g(%x: f32[len], %n: i64[1] = len) -> (%r: i64[len]) {
  %one = constant 1 : i64[]
  %zero = constant 0 : i64[]
  %e = squeeze(%n) : i64[]
  %r = range(%zero, %e, %one) : i64[len]
  return %r
}""")
    model = tritc.compile(g, pipeline="none", threads=1)
    assert model.program.generic_error is None and model.symbols == ["len"]
    for n in (1, 4):
        (r,) = model.run(None, {"x": np.zeros(n, np.float32), "n": np.array([n], np.int64)})
        np.testing.assert_array_equal(r, np.arange(n))
    with pytest.raises(InputShapeError, match="input 'n' gives 'len' = 3, but 'len' is 4 in another input \\(input 'x' dim 0\\)"):
        model.run(None, {"x": np.zeros(4, np.float32), "n": np.array([3], np.int64)})
    assert model.stats["compilations"] == 1


STATIC = """graph @h(%x: f32[2,3], %i: i64[1,2]) -> (%y: f32[2,3], %z: f32[1,2,3]) {
  %y = relu(%x) : f32[2,3]
  %z = gather(%x, %i) {axis = 0} : f32[1,2,3]
  return %y, %z
}"""


def test_static_call_is_run_without_the_checks():
    """The lean call of a static model (the FPGA runtime's host regions): run's results; an array of another shape
    or dtype goes through run and gets its error; a model with sizes has none."""
    m = tritc.compile(parse_graph(STATIC), pipeline="none", threads=1)
    call = m.static_call()
    feed = {"x": X, "i": np.array([[1, 0]], np.int64)}
    for got, want in zip(call(feed), m.run(None, feed)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="input 'x' has size 4 in dim 1, expected 3"):
        call({**feed, "x": np.zeros((2, 4), np.float32)})
    with pytest.raises(TypeError, match="input 'i' has dtype int32, expected int64"):
        call({**feed, "i": np.array([[1, 0]], np.int32)})
    strided = np.zeros((2, 6), np.float32)[:, ::2]
    strided[:] = X
    np.testing.assert_array_equal(call({**feed, "x": strided})[0], np.maximum(X, 0))  # copied by run, not misread
    assert tritc.compile(parse_graph(GRAPH), pipeline="none", threads=1).static_call() is None

"""The interpreter checks feeds and every result against the declared types."""

from __future__ import annotations

import numpy as np
import pytest

from tritc.errors import VerificationError
from tritc.ir import DType, Graph, Interpreter, TensorType, parse_graph, run


def _g(text: str) -> Graph:
    return parse_graph(text)


ADD = _g("""graph @g(%x: f32[batch,3], %y: f32[batch,3]) -> (%z: f32[batch,3]) {
  %z = add(%x, %y) : f32[batch,3]
  return %z
}""")


def test_runs_and_binds_symbols():
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(run(ADD, {"x": x, "y": x})["z"], 2 * x)


def test_feed_errors_name_the_input():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="missing input 'y'"):
        run(ADD, {"x": x})
    with pytest.raises(TypeError, match="input 'y' has dtype float64"):
        run(ADD, {"x": x, "y": x.astype(np.float64)})
    with pytest.raises(ValueError, match=r"input 'y'.*'batch' is 2 elsewhere"):
        run(ADD, {"x": x, "y": np.ones((4, 3), np.float32)})
    with pytest.raises(ValueError, match="rank 1"):
        run(ADD, {"x": x, "y": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="unknown input"):
        run(ADD, {"x": x, "y": x, "w": x})


def test_wrong_declared_type_is_caught():
    g = _g("""graph @g(%x: f32[2]) -> (%z: f32[3]) {
  %z = relu(%x) : f32[3]
  return %z
}""")
    with pytest.raises(VerificationError, match=r"produced shape \[2\] for %z, declared f32\[3\]"):
        run(g, {"x": np.ones(2, np.float32)})


def test_values_are_freed_after_last_use():
    g = _g("""graph @g(%x: f32[2]) -> (%c: f32[2]) {
  %a = relu(%x) : f32[2]
  %b = relu(%a) : f32[2]
  %c = relu(%b) : f32[2]
  return %c
}""")
    interp = Interpreter(g)
    seen = []
    original = interp.run_node

    def spy(node, args):
        seen.append(len(args))
        return original(node, args)

    interp.run_node = spy  # type: ignore[method-assign]
    out = interp.run({"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(out["c"], [0.0, 2.0])
    assert seen == [1, 1, 1]


def test_weights_resolve_from_the_store():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (2,)))
    w = g.add_weight("w", np.array([1.0, -3.0], np.float32), TensorType(DType.F32, (2,)))
    n = g.add("add", [x, w], [TensorType(DType.F32, (2,))])
    g.outputs = [n.output]
    np.testing.assert_array_equal(run(g, {"x": np.zeros(2, np.float32)})["add"], [1.0, -3.0])

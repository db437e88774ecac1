"""A small compiled model shared by the artifact cases (groups G and H) and tests/runtime/test_artifact.py."""

from __future__ import annotations

import numpy as np

import tritc
from tritc.ir import parse_graph

GRAPH = """graph @g(%x: f32[batch,4]) -> (%y: f32[batch,4]) {
  %b = constant [1.0, -2.0, 3.0, -4.0] : f32[4]
  %a = add(%x, %b) : f32[batch,4]
  %y = relu(%a) : f32[batch,4]
  return %y
}"""


def reference(x: np.ndarray, last: float = -4.0) -> np.ndarray:
    return np.maximum(x + np.array([1, -2, 3, last], np.float32), 0)


def compile_small(last: float = -4.0):  # -> CompiledModel
    """The model of GRAPH (its last constant `last`), with code for batch 2, one thread."""
    return tritc.compile(parse_graph(GRAPH.replace("-4.0", repr(float(last)))), pipeline="none", shapes={"batch": 2},
                         threads=1)

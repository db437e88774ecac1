"""Regression tests for LLVM behaviours the backend depends on being configured around.

LLVM 22's loop vectoriser, run without LLVM's unroller, miscompiled short maxnum/minnum
reductions (the tail of a 5..10-element loop was dropped) and aborted on an assertion for 37
elements. jit.optimize keeps the unroller on; these tests fail if that regresses.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper as h

import tritc


def _dynamic_quantize(n: int):
    g = h.make_graph([h.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                     [h.make_tensor_value_info("x", TP.FLOAT, [n])],
                     [h.make_tensor_value_info("y", TP.UINT8, [n]), h.make_tensor_value_info("s", TP.FLOAT, []),
                      h.make_tensor_value_info("z", TP.UINT8, [])])
    return tritc.compile(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9), pipeline="none")


@pytest.mark.parametrize("n", [3, 5, 6, 7, 9, 10, 17, 37, 100])
def test_short_min_max_reductions_see_every_element(n):
    x = -np.arange(1, n + 1, dtype=np.float32)  # the minimum is the last element
    _, scale, zero = _dynamic_quantize(n).run(None, {"x": x})
    assert scale * 255 == pytest.approx(n, rel=1e-6)
    assert int(zero) == 255

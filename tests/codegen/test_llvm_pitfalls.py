"""Regression tests for LLVM behaviours the backend depends on being configured around.

LLVM 22's loop vectoriser, run without LLVM's unroller, miscompiled short maxnum/minnum
reductions (the tail of a 5..10-element loop was dropped) and aborted on an assertion for 37
elements. jit.optimize keeps the unroller on; these tests fail if that regresses.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as h

import tritc


def _dynamic_quantize(n: int):
    g = h.make_graph([h.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                     [h.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                     [h.make_tensor_value_info("y", TensorProto.UINT8, [n]), h.make_tensor_value_info("s", TensorProto.FLOAT, []),
                      h.make_tensor_value_info("z", TensorProto.UINT8, [])])
    return tritc.compile(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9), pipeline="none")


@pytest.mark.parametrize("n", [3, 5, 6, 7, 9, 10, 17, 37, 100])
def test_short_min_max_reductions_see_every_element(n):
    x = -np.arange(1, n + 1, dtype=np.float32)  # the minimum is the last element
    _, scale, zero = _dynamic_quantize(n).run(None, {"x": x})
    assert scale * 255 == pytest.approx(n, rel=1e-6)
    assert int(zero) == 255


def test_invalid_llvm_ir_is_a_compiler_error():
    from tritc.codegen.llvm.target import host_target
    from tritc.codegen.llvm.worker import compile_text
    from tritc.errors import CompilerError

    bad = "define i32 @f() {\nentry:\n  ret i64 0\n}\n"
    with pytest.raises(CompilerError, match="LLVM IR verify failed|error"):
        compile_text(bad, host_target(), "bad")


def test_a_crashing_llvm_worker_is_an_error_not_a_crash(monkeypatch):
    import subprocess
    import sys

    from tritc.codegen.llvm import worker
    from tritc.codegen.llvm.target import host_target
    from tritc.errors import CompilerError

    w = worker._Worker()
    monkeypatch.setattr(w, "_start", lambda: subprocess.Popen(
        [sys.executable, "-c", "import os, sys; sys.stdin.buffer.read(8); os.abort()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    with pytest.raises(CompilerError, match="LLVM crashed .signal SIGABRT"):
        w.compile("define void @f() {\nentry:\n  ret void\n}\n", host_target(), "m")
    assert w.proc is None  # the next compile starts a fresh worker
    monkeypatch.undo()
    obj, bc = w.compile("define void @f() {\nentry:\n  ret void\n}\n", host_target(), "m")
    assert obj and bc

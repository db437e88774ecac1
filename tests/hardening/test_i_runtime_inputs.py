"""HARDENING.md group I, runtime inputs (cases 45-47): a compiled model's call checks its inputs by name, dtype, rank
and size before any native code runs, reads every kind of numpy array correctly (copying what the code cannot read
as it is), refuses an output bound to an input's memory, and is safe from several threads and re-entrantly
(docs/THREADS.md)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto

import tritc
from tritc.errors import InputShapeError
from tritc.runtime import cpu

from .common import hammer, onnx_model
from .harness import Sandbox, isolated, refuses

K, N = 8, 4


def residual_model() -> onnx.ModelProto:
    """y[batch, N] = sigmoid(x[batch, K] @ W + r[batch, N]): two inputs that share the symbol batch."""
    w = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    nodes = [oh.make_node("MatMul", ["x", "w"], ["h"]), oh.make_node("Add", ["h", "r"], ["z"]),
             oh.make_node("Sigmoid", ["z"], ["y"])]
    return onnx_model("residual", nodes, [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K]),
                                          oh.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", N])],
                      [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])], {"w": w})


@pytest.fixture(scope="module")
def model() -> tritc.CompiledModel:
    return tritc.compile(residual_model(), threads=1)


@pytest.fixture
def native_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls into compiled code (CpuExecutable.__call__) during a test."""
    calls: list[int] = []
    real = cpu.CpuExecutable.__call__

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cpu.CpuExecutable, "__call__", counted)
    return calls


def good(batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {"x": rng.standard_normal((batch, K)).astype(np.float32), "r": rng.standard_normal((batch, N)).astype(np.float32)}


# ---- 45: wrong inputs, refused before native code runs --------------------------------------------------------

BAD_FEEDS = {
    "missing": ({"x": good()["x"]}, ValueError, ["missing", "'r'"]),
    "unknown name": ({**good(), "z": np.zeros(1, np.float32)}, ValueError, ["unknown input", "'z'"]),
    "wrong dtype": ({**good(), "x": good()["x"].astype(np.float64)}, TypeError, ["'x'", "float64", "float32"]),
    "int for float": ({**good(), "r": np.zeros((3, N), np.int32)}, TypeError, ["'r'", "int32"]),
    "object array": ({**good(), "x": np.array([[None] * K] * 3)}, TypeError, ["'x'", "object"]),
    "wrong rank": ({**good(), "x": good()["x"][None]}, ValueError, ["'x'", "rank 3"]),
    "static dim": ({**good(), "x": np.zeros((3, K + 1), np.float32)}, InputShapeError, ["'x'", "dim 1", f"{K + 1}", f"expected {K}"]),
    "symbol clash": ({**good(3), "r": good(4)["r"]}, InputShapeError, ["'r'", "batch", "4", "3"]),
    "not a dict": ([good()["x"], good()["r"]], TypeError, ["input_feed", "list"]),
    "a list (float64)": ({**good(), "x": good()["x"].tolist()}, TypeError, ["'x'", "float64"]),  # no silent cast
}


@pytest.mark.parametrize("case", list(BAD_FEEDS))
def test_45_bad_inputs_are_refused_before_native_code(sb: Sandbox, model, native_calls, case: str):
    feed, error, names = BAD_FEEDS[case]
    refuses(sb, lambda: model.run(None, feed), error, names=names)
    assert native_calls == [], "the compiled code ran"


def test_45_unknown_output_name(sb: Sandbox, model, native_calls):
    refuses(sb, lambda: model.run(["nope"], good()), ValueError, names=["'nope'", "y"])
    assert native_calls == []


def test_45_size_beyond_memory_is_a_clean_error(sb: Sandbox):
    """A dynamic dim far outside what memory holds (generic code takes every size; its limit is memory): a
    zero-stride view of 2^33 rows costs nothing to make, but the call must copy it. A one-line error, no crash,
    no bare MemoryError (E1), in a child under RLIMIT_AS."""
    code = f"""
import numpy as np, tritc
from tests.hardening.test_i_runtime_inputs import residual_model
m = tritc.compile(residual_model(), threads=1)
x = np.broadcast_to(np.float32(1), (2**33, {K}))
r = np.broadcast_to(np.float32(1), (2**33, {N}))
m.run(None, {{"x": x, "r": r}})
"""
    out = isolated(sb, code, timeout=120)
    out.raised(MemoryError, names=["'x'"])
    assert out.error == "RunOutOfMemoryError", out.error


# ---- 46: every layout of array ----------------------------------------------------------------------------------


def _misaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned
    return view


def _readonly(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.setflags(write=False)
    return b


LAYOUTS = {
    "non-contiguous": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "fortran": np.asfortranarray,
    "transposed view": lambda a: np.ascontiguousarray(a.T).T,
    "negative strides": lambda a: np.ascontiguousarray(a[::-1])[::-1],
    "misaligned": _misaligned,
    "read-only": _readonly,
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_46_array_layouts_read_correctly(sb: Sandbox, model, layout: str):
    feed = good(5)
    want = model.run(None, feed)[0]
    odd = {n: LAYOUTS[layout](a) for n, a in feed.items()}
    before = {n: np.array(a, copy=True) for n, a in odd.items()}
    got = model.run(None, odd)[0]
    np.testing.assert_array_equal(got, want)
    for n, a in odd.items():  # the caller's arrays are not written
        np.testing.assert_array_equal(np.asarray(a), before[n])
    sb.check()


def test_46_empty_batch(sb: Sandbox, model):
    y = model.run(None, good(0))[0]
    assert y.shape == (0, N) and y.dtype == np.float32
    sb.check()


def test_46_bound_output_of_a_bad_layout_is_refused(sb: Sandbox, model):
    wide = np.zeros((3, 2 * N), np.float32)
    refuses(sb, lambda: model.run(None, good(), outputs={"y": wide[:, ::2]}), ValueError, names=["'y'", "C-contiguous"])
    ro = np.zeros((3, N), np.float32)
    ro.setflags(write=False)
    refuses(sb, lambda: model.run(None, good(), outputs={"y": ro}), ValueError, names=["'y'", "read-only"])
    refuses(sb, lambda: model.run(None, good(), outputs={"y": np.zeros((3, N), ">f4")}), TypeError, names=["'y'", "dtype"])


# ---- 47: aliasing, threads, re-entrancy ------------------------------------------------------------------------


def test_47_output_bound_to_an_input_is_refused(sb: Sandbox, model, native_calls):
    feed = good()
    refuses(sb, lambda: model.run(None, feed, outputs={"y": feed["r"]}), ValueError, names=["'y'", "input 'r'"])
    big = np.zeros((3, K), np.float32)  # x's memory, seen as an output's
    x = big
    y = big.reshape(-1)[: 3 * N].reshape(3, N)
    refuses(sb, lambda: model.run(None, {"x": x, "r": feed["r"]}, outputs={"y": y}), ValueError, names=["'y'", "input 'x'"])
    assert native_calls == []


def test_47_output_bound_to_a_fresh_array_is_written_in_place(sb: Sandbox, model):
    out = np.full((3, N), np.nan, np.float32)
    (y,) = model.run(None, good(), outputs={"y": out})
    assert y is out and np.array_equal(out, model.run(None, good())[0])
    sb.check()


def test_47_concurrent_calls(model):
    """Several threads at once (the long version with thousands of calls: tests/hardening/test_load.py)."""
    want = {b: model.run(None, good(b))[0] for b in (1, 2, 5)}

    def work(t: int, i: int) -> None:
        b = (1, 2, 5)[(t + i) % 3]
        assert np.array_equal(model.run(None, good(b))[0], want[b])

    hammer(work, 50, threads=4)


class CallsBack:
    """An array-like whose conversion to numpy calls the model: a call inside a call, on the same thread."""

    def __init__(self, model: tritc.CompiledModel, a: np.ndarray):
        self.model, self.a, self.inner = model, a, None

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001, ANN204
        self.inner = self.model.run(None, good(2))[0]
        return self.a if dtype is None else self.a.astype(dtype)


def test_47_reentrant_call(sb: Sandbox, model):
    feed = good(3)
    want_outer, want_inner = model.run(None, feed)[0], model.run(None, good(2))[0]
    x = CallsBack(model, feed["x"])
    got = model.run(None, {"x": x, "r": feed["r"]})[0]
    np.testing.assert_array_equal(got, want_outer)
    np.testing.assert_array_equal(x.inner, want_inner)
    sb.check()

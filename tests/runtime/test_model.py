"""CompiledModel: the onnxruntime-style API, input checks, specialisation, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tritc
from tritc.ir import parse_graph

GRAPH = """graph @g(%x: f32[batch,seq], %m: i64[seq]) -> (%y: f32[batch,seq], %z: i64[seq]) {
  %a = relu(%x) : f32[batch,seq]
  %y = mul(%a, %x) : f32[batch,seq]
  %z = add(%m, %m) : i64[seq]
  return %y, %z
}"""


@pytest.fixture(scope="module")
def model():
    return tritc.compile(parse_graph(GRAPH), pipeline="none", shapes={"batch": 1, "seq": 3})


def feeds(b=2, s=3):
    rng = np.random.default_rng(b * 10 + s)
    return {"x": rng.standard_normal((b, s)).astype(np.float32), "m": np.arange(s, dtype=np.int64)}


def test_run_matches_numpy_and_orders_outputs(model):
    f = feeds()
    y, z = model.run(None, f)
    np.testing.assert_array_equal(y, np.maximum(f["x"], 0) * f["x"])
    np.testing.assert_array_equal(z, 2 * f["m"])
    (z2,) = model.run(["z"], f)
    np.testing.assert_array_equal(z2, z)
    y3, z3 = model(**f)
    np.testing.assert_array_equal(y3, y)


def test_signatures(model):
    assert [i.name for i in model.get_inputs()] == ["x", "m"]
    assert model.get_inputs()[0].shape == ["batch", "seq"]
    assert [o.name for o in model.get_outputs()] == ["y", "z"]


@pytest.mark.parametrize("feed, exc, needle", [
    ({"x": np.ones((2, 3), np.float32)}, ValueError, "missing input"),
    ({**feeds(), "w": np.ones(1)}, ValueError, "unknown input name"),
    ({**feeds(), "x": np.ones((2, 3), np.float64)}, TypeError, "input 'x' has dtype float64"),
    ({**feeds(), "x": np.ones((2, 3, 1), np.float32)}, ValueError, "input 'x' has rank 3"),
    ({**feeds(), "m": np.arange(4, dtype=np.int64)}, ValueError, "'seq'.* is 4, but 'seq' is 3"),
])
def test_bad_inputs_are_named(model, feed, exc, needle):
    with pytest.raises(exc, match=needle):
        model.run(None, feed)


def test_unknown_output_name(model):
    with pytest.raises(ValueError, match="unknown output name"):
        model.run(["nope"], feeds())


def test_odd_layouts_are_copied_correctly(model):
    base = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    cases = [
        base[::2, ::3],                        # non-contiguous view
        np.asfortranarray(base[:2, :3]),       # Fortran order
        base[:2, :3].astype(">f4"),            # big-endian
    ]
    ro = base[:2, :3].copy()
    ro.flags.writeable = False
    cases.append(ro)
    for x in cases:
        x = x[:, :3] if x.shape[1] > 3 else x
        f = {"x": x, "m": np.arange(x.shape[1], dtype=np.int64)}
        y, _ = model.run(None, f)
        xn = np.asarray(x, dtype=np.float32)
        np.testing.assert_array_equal(y, np.maximum(xn, 0) * xn)


def test_zero_size_inputs(model):
    f = {"x": np.ones((0, 3), np.float32), "m": np.arange(3, dtype=np.int64)}
    y, z = model.run(None, f)
    assert y.shape == (0, 3) and z.shape == (3,)


def test_new_sizes_compile_nothing(model):
    """One generic code and the --shape specialisation (batch=1, seq=3): every other size runs the generic code."""
    before = model.stats["compilations"]
    assert sorted(s.key() for s in model.specializations) == [(), (("batch", 1), ("seq", 3))]
    for b, s in [(4, 5), (1, 3), (7, 1), (4, 5)]:
        f = feeds(b, s)
        y, z = model.run(None, f)
        np.testing.assert_array_equal(y, np.maximum(f["x"], 0) * f["x"])
        np.testing.assert_array_equal(z, 2 * f["m"])
    assert model.stats["compilations"] == before
    assert len(model.specializations) == 2


def test_concurrent_calls_from_threads(model):
    errors = []

    def work(k):
        try:
            for _ in range(20):
                f = feeds(1 + k % 3, 3 + k % 2)
                y, _ = model.run(None, f)
                np.testing.assert_array_equal(y, np.maximum(f["x"], 0) * f["x"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_outputs_outlive_the_model():
    m = tritc.compile(parse_graph(GRAPH), pipeline="none", shapes={"batch": 1, "seq": 2})
    y, _ = m.run(None, feeds(1, 2))
    del m
    import gc

    gc.collect()
    assert y.shape == (1, 2) and np.isfinite(y).all()

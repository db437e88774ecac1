"""LLVM lowerings of the shape family against the interpreter: bit-exact results on many shapes and dtypes,
zero-size dims, negative steps and indices. Each test compiles one graph holding all its cases (one node
per case, every node's result a graph output), so the file stays fast.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import tritc
from tritc.codegen.llvm.compiler import SPECIALISED_FOLD_MAX_BYTES, lowered_nodes
from tritc.codegen.llvm.target import host_target
from tritc.codegen.llvm.weights import layout_weights
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run
from tritc.ir.types import DType, TensorType
from tritc.runtime.model import CompiledModel, value_specialised_inputs

from .helpers import Case, Const, build, case_of, interpret_and_compile

rng = np.random.default_rng(7)
ALL = ["f32", "f16", "bf16", "f64", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "bool"]


def data(dtype: str, *shape: int) -> np.ndarray:
    """Random data of an IR dtype: distinct-looking values, NaN included for floats."""
    dt = DType.from_name(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dt is DType.BOOL:
        a = rng.integers(0, 2, n).astype(bool)
    elif dt.is_float:
        a = (rng.standard_normal(n) * 10).astype(dt.np_dtype)
        if n > 3:
            a[3] = np.nan
    else:
        info = np.iinfo(dt.np_dtype)
        a = rng.integers(max(info.min, -1000), min(info.max, 1000), n, endpoint=True).astype(dt.np_dtype)
    return a.reshape(shape)


def vec(*v: int, dtype: type = np.int64) -> Const:
    return Const(np.array(v, dtype=dtype))


def check(*cases: Case, fold: bool = True, **options: Any) -> None:
    """Compile all cases as one graph; every case's node must reach its lowering and its result equal the
    interpreter's bit for bit. fold=False tells the specialiser to fold nothing: ops whose results are known from
    shapes or constant operands (shape, size, range, ...) would otherwise become constants, computed by the
    interpreter, and the test would compare the interpreter with itself."""
    model, expected, got = interpret_and_compile(list(cases), **options) if fold else compile_unfolded(list(cases))
    lowered = Counter(n.op for n in lowered_nodes(model.specializations[-1].graph))
    folded = Counter(c.op for c in cases) - lowered
    assert not folded, f"the specialiser folded {dict(folded)}: no compiled code computes them"
    for name, y in got.items():
        e = expected[name]
        assert y.dtype == e.dtype and y.shape == e.shape, (name, y.dtype, y.shape, e.dtype, e.shape)
        assert y.tobytes() == e.tobytes(), f"{name}: {case_of(cases, name)}\n{y}\n!=\n{e}"


def compile_unfolded(cases: list[Case]) -> tuple[CompiledModel, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """interpret_and_compile, with specialisations that keep every node (CompiledModel fold=False)."""
    g, feeds = build(cases)
    layout, blob = layout_weights(g)
    model = CompiledModel(g, layout, blob, host_target(), threads=1, fold=False)
    got = dict(zip([o.name for o in model.outputs], model.run(None, feeds)))
    return model, run(g, feeds), got


def over(dtypes: list[str]) -> Callable[[Callable[..., list[Case]]], Callable[..., None]]:
    """A test made of `fn(dtype, **params) -> cases` for every dtype, all checked as one compiled graph."""

    def wrap(fn: Callable[..., list[Case]]) -> Callable[..., None]:
        def test(**params: Any) -> None:
            check(*(c for dtype in dtypes for c in fn(dtype=dtype, **params)))

        sig = inspect.signature(fn)
        test.__name__ = fn.__name__
        test.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "dtype"])
        return test

    return wrap


# ---- transpose, slice, expand, tile ----------------------------------------------------------------


@over(ALL)
def test_transpose_every_dtype(dtype):
    return [Case("transpose", [data(dtype, 2, 3, 4)], {"perm": [2, 0, 1]}),
            Case("transpose", [data(dtype, 40, 24)]),  # register blocks of 4..16 elements, ragged edges
            Case("transpose", [data(dtype, 70, 45)]),  # blocks of 32 one- and two-byte elements
            Case("transpose", [data(dtype, 3, 0, 2)], {"perm": [1, 2, 0]})]


@pytest.mark.parametrize("features", [None, "-avx512f"])
def test_transpose_blocked(features):
    """Transposes in n x n register blocks (n from the vector width), the blocked axes anywhere in the nest."""
    check(Case("transpose", [data("f32", 2, 3, 64, 32)], {"perm": [0, 1, 3, 2]}),  # attention's K^T
          Case("transpose", [data("f32", 3, 40, 2, 36)], {"perm": [0, 3, 2, 1]}),  # an axis between the blocked ones
          Case("transpose", [data("i8", 33, 2, 65)], {"perm": [2, 1, 0]}),
          Case("transpose", [data("u16", 48, 17)]),
          Case("transpose", [data("f64", 9, 31)]),
          Case("slice", [data("f32", 40, 36), vec(-1), vec(-100), vec(1), vec(-1)]),  # not a transpose: no blocks
          cpu_features=features)


def test_transpose_shapes():
    check(Case("transpose", [data("f32", 2, 33, 17, 5)], {"perm": [0, 2, 3, 1]}),
          Case("transpose", [data("f32", 2, 20, 37, 3)], {"perm": [0, 2, 1, 3]}),  # rows stay contiguous
          Case("transpose", [data("i8", 70, 3, 65)], {"perm": [2, 1, 0]}),
          Case("transpose", [data("f32", 1, 5, 1)], {"perm": [2, 1, 0]}),
          Case("transpose", [data("f32", 4, 5, 6, 7)], {"perm": [3, 1, 2, 0]}),
          Case("transpose", [data("u16", 16, 16)], {"perm": [1, 0]}),
          Case("transpose", [data("f64", 5)]),
          Case("transpose", [data("f32")], {"perm": []}))


@over(["f32", "bf16", "i8", "i64", "bool"])
def test_slice(dtype):
    x = data(dtype, 5, 6, 7)
    big = 2**63 - 1
    return [Case("slice", [x, vec(1, 0), vec(4, 6)]),
          Case("slice", [x, vec(-1), vec(-big), vec(2), vec(-1)]),  # full reversal of the last axis
          Case("slice", [x, vec(4, 5), vec(0, -100), vec(0, -1), vec(-2, -3)]),
          Case("slice", [x, vec(-3, 1, 0), vec(big, 100, 7), vec(0, 1, 2), vec(1, 2, 3)]),
          Case("slice", [x, vec(10), vec(20), vec(1)]),  # empty: starts past the end
          Case("slice", [x, vec(3, dtype=np.int32), vec(3, dtype=np.int32)]),  # empty
          Case("slice", [x, vec(0, 0, 0), vec(5, 6, 7)]),
          Case("slice", [data(dtype, 4, 0, 3), vec(1), vec(3)])]


@over(["f32", "f16", "u8", "i64", "bool"])
def test_expand(dtype):
    return [Case("expand", [data(dtype, 3, 1), vec(2, 3, 5)]),
          Case("expand", [data(dtype, 1, 4), vec(3, 1)]),
          Case("expand", [data(dtype, 1), vec(7)]),
          Case("expand", [data(dtype), vec(2, 2)]),
          Case("expand", [data(dtype, 2, 1, 3), vec(2, 4, 3)]),
          Case("expand", [data(dtype, 3, 1), vec(3, 0)]),
          Case("expand", [data(dtype, 2, 3), vec(1, 1)])]


@over(["f32", "bf16", "i8", "i32", "u64", "bool"])
def test_tile(dtype):
    return [Case("tile", [data(dtype, 2, 3), vec(2, 3)]),
          Case("tile", [data(dtype, 2, 3), vec(1, 1)]),
          Case("tile", [data(dtype, 2, 1, 3), vec(3, 4, 1)]),
          Case("tile", [data(dtype, 2, 3), vec(0, 2)]),
          Case("tile", [data(dtype, 0, 3), vec(2, 2)]),
          Case("tile", [data(dtype, 5), vec(3)])]


# ---- concat, split --------------------------------------------------------------------------------


@over(["f32", "f16", "i8", "i64", "bool"])
def test_concat(dtype):
    a, b, c = data(dtype, 2, 3, 4), data(dtype, 2, 1, 4), data(dtype, 2, 0, 4)
    return [Case("concat", [a, b, c, a], {"axis": 1}),
          Case("concat", [a, a], {"axis": 0}),
          Case("concat", [a, data(dtype, 2, 3, 2)], {"axis": -1}),
          Case("concat", [data(dtype, 5)], {"axis": 0}),
          Case("concat", [data(dtype, 0, 2), data(dtype, 0, 3)], {"axis": 1})]


@over(["f32", "bf16", "u8", "i32", "bool"])
def test_split(dtype):
    x = data(dtype, 4, 7, 3)
    return [Case("split", [x, vec(2, 0, 5)], {"axis": 1}, n_out=3),
          Case("split", [x], {"axis": -1, "num_outputs": 3}, n_out=3),
          Case("split", [x], {"axis": 1, "num_outputs": 3}, n_out=3),  # uneven: 3, 3, 1
          Case("split", [x, vec(1, 3)], {"axis": 0}, n_out=2)]


# ---- depth_to_space, space_to_depth, pad, center_crop_pad -----------------------------------------


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@over(["f32", "i8", "f64"])
def test_depth_space(mode, dtype):
    return [Case("depth_to_space", [data(dtype, 2, 8, 3, 2)], {"blocksize": 2, "mode": mode}),
          Case("depth_to_space", [data(dtype, 1, 18, 2, 2)], {"blocksize": 3, "mode": mode}),
          Case("space_to_depth", [data(dtype, 2, 3, 4, 6)], {"blocksize": 2, "mode": mode}),
          Case("space_to_depth", [data(dtype, 1, 2, 6, 3)], {"blocksize": 3, "mode": mode})]


@over(["f32", "f16", "bf16", "i8", "u16", "i64", "bool"])
def test_pad_constant(dtype):
    x = data(dtype, 3, 4, 5)
    value = data(dtype)
    return [Case("pad", [x, vec(1, 0, 2, 0, 3, 1)]),
          Case("pad", [x, vec(1, 0, 2, 0, 3, 1), Const(value)]),
          Case("pad", [data(dtype, 3, 4), vec(2, 1, 1, 3), value]),  # the value as run-time data
          Case("pad", [x, vec(-1, 2, 1, -2), Const(value), vec(0, -1)]),  # negative pads crop
          Case("pad", [x, vec(0, 0, 0, 0, 0, 0)]),
          Case("pad", [data(dtype, 2, 0), vec(1, 1, 1, 1), Const(value)])]


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@over(["f32", "i8", "i64", "bool"])
def test_pad_modes(mode, dtype):
    x = data(dtype, 3, 4, 5)
    return [Case("pad", [x, vec(1, 2, 2, 2, 0, 1)], {"mode": mode}),
          Case("pad", [x, vec(0, 2, 3, 1), None, vec(1, -1)], {"mode": mode}),
          Case("pad", [x, vec(-1, 1, 0, 2), None, vec(0, 2)], {"mode": mode}),  # crop then pad
          Case("pad", [data(dtype, 2, 3), vec(0, 7, 0, 8)], {"mode": mode}),  # pads longer than the axis
          Case("pad", [data(dtype, 3, 1), vec(0, 3, 0, 2)], {"mode": mode})]


@over(["f32", "bf16", "u8", "i32"])
def test_center_crop_pad(dtype):
    x = data(dtype, 5, 6, 3)
    return [Case("center_crop_pad", [x, vec(3, 9, 3)]),
          Case("center_crop_pad", [x, vec(8, 2)], {"axes": [0, 1]}),
          Case("center_crop_pad", [x, vec(4, 1)], {"axes": [-2, -1]}),
          Case("center_crop_pad", [x, vec(5, 6, 3)]),
          Case("center_crop_pad", [x, vec(0, 6, 3)])]


# ---- gather family --------------------------------------------------------------------------------


@over(["f32", "f16", "i8", "i64", "bool"])
def test_gather(dtype):
    x = data(dtype, 5, 4, 3)
    idx = np.array([[0, -1, 4], [2, -5, 1]], dtype=np.int64)
    return [Case("gather", [x, idx]),
          Case("gather", [x, idx.astype(np.int32) % 3], {"axis": -1}),
          Case("gather", [x, np.array(-2, dtype=np.int64)], {"axis": 1}),
          Case("gather", [x, np.zeros((0,), dtype=np.int64)], {"axis": 1}),
          Case("gather", [x, Const(idx)]),  # constant indices: a table axis of the copy engine
          Case("gather", [x, Const(np.array(-1, dtype=np.int64))], {"axis": 1}),
          Case("gather", [x, Const(np.array([3, 0, -4], dtype=np.int32))], {"axis": 1}),
          Case("gather", [data(dtype, 3, 0), np.array([1, 2], dtype=np.int64)])]


def test_gather_clamps_out_of_range_indices():
    """The interpreter raises on an index outside [-dim, dim); compiled code clamps it into range."""
    x = data("f32", 5, 4)
    g, feeds = build([Case("gather", [x, np.array([1, 2], dtype=np.int64)])])
    model = tritc.compile(g, pipeline="none")
    y, = model.run(None, {"x0_0": x, "x0_1": np.array([7, -9], dtype=np.int64)})
    np.testing.assert_array_equal(y, x[[4, 0]])
    with pytest.raises(IndexError):
        run(g, {"x0_0": x, "x0_1": np.array([7, -9], dtype=np.int64)})


@over(["f32", "bf16", "u8", "i64", "bool"])
def test_gather_elements(dtype):
    x = data(dtype, 4, 5, 3)
    return [Case("gather_elements", [x, rng.integers(-4, 4, (3, 5, 2))], {"axis": 0}),
          Case("gather_elements", [x, rng.integers(-5, 5, (4, 7, 3)).astype(np.int32)], {"axis": 1}),
          Case("gather_elements", [x, rng.integers(-3, 3, (2, 2, 6))], {"axis": -1}),
          Case("gather_elements", [x, np.zeros((4, 0, 3), dtype=np.int64)], {"axis": 0})]


@over(["f32", "i8", "i64", "bool"])
def test_gather_nd(dtype):
    x = data(dtype, 3, 4, 5)
    return [Case("gather_nd", [x, rng.integers(-3, 3, (2, 1))]),
          Case("gather_nd", [x, np.stack([rng.integers(-3, 3, 6), rng.integers(-4, 4, 6)], -1).reshape(2, 3, 2)]),
          Case("gather_nd", [x, np.array([[0, 1, 2], [-1, -1, -1]], dtype=np.int64)]),
          Case("gather_nd", [x, rng.integers(-4, 4, (3, 2, 1))], {"batch_dims": 1}),
          Case("gather_nd", [x, rng.integers(-4, 4, (3, 4, 1))], {"batch_dims": 2}),
          Case("gather_nd", [x, np.zeros((0, 2), dtype=np.int64)])]


# ---- scatter family -------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@over(["f32", "f16", "bf16", "i8", "u8", "i64", "u64", "bool"])
def test_scatter(dtype, reduction):
    x = data(dtype, 4, 3, 2)
    unique = reduction == "none"  # numpy leaves duplicate plain assignments unspecified
    idx_nd = np.array([[1], [-1], [0]] if unique else [[1], [-3], [0], [1]], dtype=np.int64)
    idx_el = np.array([[1, 0, 3], [-1, 2, 0]], dtype=np.int64) if unique else rng.integers(-4, 4, (5, 3))
    return [Case("scatter_nd", [x, idx_nd, data(dtype, len(idx_nd), 3, 2)], {"reduction": reduction}),
             Case("scatter_nd", [x, np.array([[2, 1], [-1, -2]] if unique else [[2, 1], [-2, 1]], dtype=np.int64),
                                 data(dtype, 2, 2)], {"reduction": reduction}),
             Case("scatter_nd", [x, np.array([[3, 2, 1], [0, 0, 0]], dtype=np.int64), data(dtype, 2)],
                  {"reduction": reduction}),
             Case("scatter_nd", [x, np.zeros((0, 1), dtype=np.int64), data(dtype, 0, 3, 2)], {"reduction": reduction}),
             Case("scatter_elements", [data(dtype, 4, 3), idx_el.astype(np.int32), data(dtype, *idx_el.shape)],
                  {"reduction": reduction}),
             Case("scatter_elements", [data(dtype, 3, 5), (idx_el.T[:2] % 5), data(dtype, 2, idx_el.shape[0])],
                  {"axis": -1, "reduction": reduction})]


# ---- one_hot, reverse_sequence --------------------------------------------------------------------


@over(["f32", "bf16", "i32", "bool"])
def test_one_hot(dtype):
    values = data(dtype, 2)
    idx = np.array([[0, 3, -1], [5, -5, 2]], dtype=np.int64)  # 5 and -5 are out of range for depth 4
    return [Case("one_hot", [idx, Const(np.array(4, dtype=np.int64)), values]),
          Case("one_hot", [idx.astype(np.int32), Const(np.array([4.7], dtype=np.float32)), values], {"axis": 0}),
          Case("one_hot", [np.array([1.9, -0.5, -1.2, 3.0, np.nan], dtype=np.float32), Const(np.array(3)), values],
               {"axis": 0}),
          Case("one_hot", [idx.astype(np.uint8) % 4, Const(np.array(4, dtype=np.int64)), values], {"axis": 1}),
          Case("one_hot", [np.zeros((2, 0), dtype=np.int64), Const(np.array(3, dtype=np.int64)), values])]


@over(["f32", "bf16", "i8", "i64"])
def test_reverse_sequence(dtype):
    return [Case("reverse_sequence", [data(dtype, 4, 3), np.array([4, 0, 2], dtype=np.int64)],
               {"batch_axis": 1, "time_axis": 0}),
          Case("reverse_sequence", [data(dtype, 3, 5, 2, 2), np.array([1, 5, 3], dtype=np.int64)],
               {"batch_axis": 0, "time_axis": 1}),
          Case("reverse_sequence", [data(dtype, 0, 2), np.array([0, 0], dtype=np.int64)])]


# ---- shape, size and generators -------------------------------------------------------------------


def test_shape_and_size():
    x = data("f32", 2, 3, 0, 5)
    check(Case("shape", [x]), Case("shape", [x], {"start": 1}), Case("shape", [x], {"start": -2, "end": -1}),
          Case("shape", [x], {"start": 3, "end": 1}), Case("shape", [x], {"start": -10, "end": 10}),
          Case("shape", [data("i8")]), Case("size", [x]), Case("size", [data("bool", 3, 7)]), Case("size", [data("f16")]),
          fold=False)


def test_range():
    check(Case("range", [Const(np.array(1, np.int64)), Const(np.array(40, np.int64)), Const(np.array(3, np.int64))]),
          Case("range", [Const(np.array(10, np.int32)), Const(np.array(-3, np.int32)), Const(np.array(-4, np.int32))]),
          Case("range", [Const(np.array(0.5, np.float32)), Const(np.array(9.1, np.float32)), Const(np.array(0.3, np.float32))]),
          Case("range", [Const(np.array(1, np.float16)), Const(np.array(3, np.float16)), Const(np.array(0.1, np.float16))]),
          Case("range", [Const(np.array(1, ml_dtypes.bfloat16)), Const(np.array(2, ml_dtypes.bfloat16)),
                         Const(np.array(0.25, ml_dtypes.bfloat16))]),
          Case("range", [Const(np.array(5, np.int16)), Const(np.array(2, np.int16)), Const(np.array(1, np.int16))]),
          Case("range", [Const(np.array(2.0)), Const(np.array(2.0)), Const(np.array(1.0))]), fold=False)


def test_constant_of_shape():
    check(Case("constant_of_shape", [vec(2, 3)]),
          Case("constant_of_shape", [vec(4, 5)], {"value": np.array([1.5], np.float32)}),
          Case("constant_of_shape", [vec(33)], {"value": np.array([-7], np.int64)}),
          Case("constant_of_shape", [vec(3, 1)], {"value": np.array([True])}),
          Case("constant_of_shape", [vec(2, 0)], {"value": np.array([3], np.int32)}),
          Case("constant_of_shape", [vec()], {"value": np.array([2.5], ml_dtypes.bfloat16)}), fold=False)


def test_range_and_constant_of_shape_too_large_to_fold():
    """Results over the specialiser's folding budget (1 MiB) are computed by the compiled code, with the default
    specialisation: the lowerings are reached in real use, not only with fold=False."""
    big = SPECIALISED_FOLD_MAX_BYTES // 8 + 5
    check(Case("range", [Const(np.array(-7, np.int64)), Const(np.array(big - 7, np.int64)), Const(np.array(1, np.int64))]),
          Case("range", [Const(np.array(0.5)), Const(np.array(big / 4)), Const(np.array(0.25))]),
          Case("constant_of_shape", [vec(-(-big // 100), 100)], {"value": np.array([-1.25], np.float64)}))


def test_eye_like():
    check(*(c for k in (0, 1, -2, 5, -9) for c in (
        Case("eye_like", [data("f32", 4, 6)], {"k": k}),
        Case("eye_like", [data("i8", 5, 3)], {"k": k, "dtype": DType.BF16}),
        Case("eye_like", [data("f16", 3, 3)], {"k": k, "dtype": DType.BOOL}),
        Case("eye_like", [data("i64", 0, 3)], {"k": k}))))


@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(upper):
    ks = [None] + [Const(np.array(k, np.int64)) for k in (0, 2, -1, -7, 9)]
    check(*(c for k in ks for c in (
        Case("trilu", [data("f32", 4, 6), k], {"upper": upper}),
        Case("trilu", [data("i8", 2, 3, 5, 3), k], {"upper": upper}),
        Case("trilu", [data("bf16", 1, 1), k], {"upper": upper}),
        Case("trilu", [data("u64", 3, 0, 2), k], {"upper": upper}))))


def test_shape_ops_in_one_graph():
    """A transformer-style chain: shape arithmetic feeding reshape/slice/concat, through the default pipeline."""
    g = Graph("chain")
    x = g.add_input("x", TensorType(DType.F32, (2, 6, 8)))
    t = g.add("transpose", [x], [TensorType(DType.F32, (2, 8, 6))], {"perm": [0, 2, 1]}).outputs[0]
    s = g.add("slice", [t, g.add_constant(np.array([1]), TensorType(DType.I64, (1,))),
                        g.add_constant(np.array([7]), TensorType(DType.I64, (1,))),
                        g.add_constant(np.array([1]), TensorType(DType.I64, (1,)))],
              [TensorType(DType.F32, (2, 6, 6))]).outputs[0]
    c = g.add("concat", [s, t], [TensorType(DType.F32, (2, 14, 6))], {"axis": 1}).outputs[0]
    g.outputs.append(c)
    feeds = {"x": data("f32", 2, 6, 8)}
    got, = tritc.compile(g).run(None, feeds)
    assert got.tobytes() == run(g, feeds)[c.name].tobytes()


def test_value_specialised_inputs():
    """Range's float bounds are specialised on their values; an input whose Shape alone decides a shape is not."""
    g = Graph("v")
    start = g.add_input("start", TensorType(DType.F32, ()))
    x = g.add_input("x", TensorType(DType.F32, (2, 3)))
    r = g.add("range", [start, g.add_constant(np.array(4.0, np.float32), TensorType(DType.F32, ())),
                        g.add_constant(np.array(0.5, np.float32), TensorType(DType.F32, ()))],
              [TensorType(DType.F32, (None,))]).outputs[0]
    s = g.add("shape", [x], [TensorType(DType.I64, (2,))]).outputs[0]
    y = g.add("reshape", [x, s], [TensorType(DType.F32, (2, 3))]).outputs[0]
    g.outputs += [r, y]
    assert [v.name for v in value_specialised_inputs(g)] == ["start"]
    model = tritc.compile(g, pipeline="none")
    x23 = data("f32", 2, 3)
    for v in (1.0, 2.75):
        got_r, got_y = model.run(None, {"start": np.array(v, np.float32), "x": x23})
        np.testing.assert_array_equal(got_r, np.arange(v, 4.0, 0.5, dtype=np.float32))
        np.testing.assert_array_equal(got_y, x23)


"""LLVM lowerings of the reductions against the interpreter: Reduce* over every axes layout (innermost reduced:
vectorised runs; innermost kept: tiles), keepdims, noop_with_empty_axes, empty reductions, nan/inf; arg_max/arg_min
ties and nan; softmax/log_softmax/hardmax along any axis and coerce_2d; cumulative ops; top_k. Integer results are
bit-exact; float sums are reordered (vector lanes), so float results are compared to a few ulps.
"""

from __future__ import annotations

import numpy as np
import pytest

from tritc.ir.types import DType

from .helpers import Const
from .test_lower_elementwise import TOL, Case, check, data

REDUCE = ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1", "reduce_l2",
          "reduce_log_sum", "reduce_log_sum_exp", "reduce_sum_square"]
AXES = [None, [-1], [0], [1], [0, 2], [1, 2]]  # on a [3, 4, 37] input: every reduced/kept layout


def axes(*a: int) -> Const:
    return Const(np.array(a, np.int64))


def _reduce_cases(dtype: str, x: np.ndarray, ops: list[str]) -> list[Case]:
    cases = []
    for k, op in enumerate(ops):
        for i, ax in enumerate(AXES):
            ins = [x] if ax is None else [x, axes(*ax)]
            cases.append(Case(op, ins, {"keepdims": (i + k) % 2}, approx=DType.from_name(dtype).is_float))
        cases.append(Case(op, [x, axes()], {"noop_with_empty_axes": 1}, approx=DType.from_name(dtype).is_float))
    return cases


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
def test_reductions_of_floats(dtype):
    # positive values: sums do not cancel, so reordering them stays within a few ulps; 37 = a vector of 32 + a tail
    x = data(dtype, 3, 4, 37, lo=0.25, hi=2.0, specials=False)
    check(*_reduce_cases(dtype, x, REDUCE if dtype in ("f32", "f16") else ["reduce_sum", "reduce_max", "reduce_log_sum_exp"]))


@pytest.mark.parametrize("dtype", ["i8", "u8", "i32", "i64", "u64"])
def test_reductions_of_integers(dtype):
    # small values: the f64 sums behind mean / log_sum / l2 are exact, so their integer results are too
    x = data(dtype, 3, 4, 37, lo=0, hi=3, specials=False)
    check(*_reduce_cases(dtype, x, REDUCE if dtype in ("i32", "u8") else ["reduce_sum", "reduce_mean", "reduce_min"]))
    wrapping = data(dtype, 4, 9)  # extremes: sums and products wrap around
    check(*(Case(op, [wrapping, axes(1)]) for op in ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "reduce_l1",
                                                     "reduce_sum_square")))


def test_reduce_max_min_of_bools():
    x = data("bool", 3, 5)
    check(*(Case(op, [x] if ax is None else [x, axes(ax)], {"keepdims": 0}) for op in ("reduce_max", "reduce_min")
            for ax in (None, 0, 1)))


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_nan_and_inf_in_reductions(dtype):
    x = data(dtype, 4, 70, lo=-3, hi=3, specials=False)
    x[0, 5], x[1, 66] = np.nan, np.nan  # in the vector part and in the tail
    x[2, 10], x[3, 11] = np.inf, -np.inf
    x[3, :] = -np.inf if dtype != "f64" else x[3, :]
    t = x.T.copy()  # the same rows along the kept-innermost (tiled) path
    ops = ["reduce_max", "reduce_min", "reduce_sum", "reduce_log_sum_exp", "reduce_l1", "reduce_mean"]
    check(*(Case(op, [v, axes(ax)], approx=True) for op in ops for v, ax in ((x, 1), (t, 0))))


@pytest.mark.parametrize("dtype", ["f32", "f16", "i32", "u8"])
def test_empty_reductions_give_the_identity(dtype):
    x, kept_empty = data(dtype, 3, 0, 2), data(dtype, 0, 4)
    check(*(Case(op, [x, axes(1)], approx=True) for op in REDUCE), *(Case(op, [x], approx=True) for op in REDUCE),
          *(Case(op, [kept_empty, axes(1)]) for op in ("reduce_sum", "reduce_max")))


def test_reduction_layouts_and_tiles():
    """Kept innermost dims longer than a tile (256), reduced dims between kept ones, long contiguous rows."""
    a = data("f32", 5, 300, lo=0.5, hi=1.5, specials=False)
    b = data("f32", 2, 3, 600, lo=0.5, hi=1.5, specials=False)
    c = data("i32", 7, 1000)
    d = data("f64", 2, 5, 3, 4, 6, lo=0.5, hi=1.5, specials=False)
    check(Case("reduce_sum", [a, axes(0)], approx=True), Case("reduce_log_sum_exp", [a, axes(0)], approx=True),
          Case("reduce_max", [b, axes(0, 1)]), Case("reduce_mean", [b, axes(1)], approx=True),
          Case("reduce_sum", [c, axes(1)]), Case("reduce_sum", [c, axes(0)]), Case("reduce_max", [c, axes(1)]),
          Case("reduce_l2", [d, axes(1, 3)], approx=True), Case("reduce_prod", [d, axes(0, 2, 4)], approx=True),
          Case("reduce_sum_square", [d, axes(4, 0)], {"keepdims": 0}, approx=True))


def test_large_reductions_split_over_threads():
    x = data("f32", 8, 512, 64, lo=0.5, hi=1.5, specials=False)
    rows = data("f32", 64, 1024, lo=-5, hi=5, specials=False)
    check(Case("reduce_sum", [x, axes(1)], approx=True), Case("reduce_log_sum_exp", [x, axes(2)], approx=True),
          Case("reduce_max", [rows, axes(1)]), Case("reduce_mean", [data("i32", 64, 1024), axes(-1)]),
          Case("softmax", [rows], tol=(4e-6, 1e-7)), Case("log_softmax", [rows], tol=(4e-6, 1e-6)),
          Case("softmax", [x], {"axis": 1}, tol=(4e-6, 1e-7)), threads=4, split=True)


# ---- arg_max / arg_min ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i8", "u8", "i32", "i64", "u64", "bool"])
def test_arg_max_min(dtype):
    x = data(dtype, 4, 5, 6, lo=0, hi=0.3, specials=False)  # few distinct values: many ties
    if DType.from_name(dtype).is_float:
        x[0, 1, 2] = x[1, 0, 0] = x[1, 3, 5] = np.nan  # nan wins; the first (or last) of several
        x[2, 2, 2] = np.inf
    check(*(Case(op, [x], {"axis": ax, "keepdims": keep, "select_last_index": last})
            for op in ("arg_max", "arg_min") for ax in (0, 1, -1) for keep in (0, 1) for last in (0, 1)))


# ---- softmax, log_softmax, hardmax -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
def test_softmax_family(dtype):
    x = data(dtype, 3, 5, 70, lo=-8, hi=8, specials=False)
    x[0, 0, :] = -np.inf  # a row of -inf gives nan, as in the interpreter
    x[0, 1, 3] = np.nan  # in the vector part of a row
    x[0, 2, 66] = np.inf  # in the tail
    x[0, 3, :3] = np.float32(60.0)  # large values: the max shift keeps exp finite
    cases = []
    for op in ("softmax", "log_softmax", "hardmax"):
        tol = None if op == "hardmax" else (TOL[dtype][0] * 2, 1e-6)
        for ax in (-1, 0, 1):
            cases.append(Case(op, [x], {"axis": ax}, tol=tol))
        cases.append(Case(op, [x], {"axis": 1, "coerce_2d": 1}, tol=tol))
        cases.append(Case(op, [data(dtype, 2, 3, 300, specials=False)], {"axis": 1}, tol=tol))  # columns: 2 tiles
        cases.append(Case(op, [data(dtype, 0, 4)], {"axis": -1}, tol=tol))
        cases.append(Case(op, [data(dtype, 6, 1)], {"axis": -1}, tol=tol))
    check(*cases)


# ---- cumulative ops, top_k --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i8", "u8", "i32", "i64"])
def test_cumulative(dtype):
    x = data(dtype, 3, 4, 5, lo=-1.5, hi=1.5)
    cases = [Case(op, [x, Const(np.array(ax, np.int64 if ax != 1 else np.int32))], {"exclusive": e, "reverse": r})
             for op in ("cum_sum", "cum_prod") for ax in (0, 1, -1) for e in (0, 1) for r in (0, 1)]
    cases.append(Case("cum_sum", [data(dtype, 2, 3, 300), Const(np.array([1], np.int64))]))  # 2 tiles of columns
    cases.append(Case("cum_sum", [data(dtype, 0, 3), Const(np.array(0, np.int64))]))
    check(*cases)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i8", "u8", "i32", "i64"])
def test_top_k(dtype):
    x = data(dtype, 3, 4, 9, lo=-0.4, hi=0.4, specials=False)  # few distinct values: ties keep index order
    if DType.from_name(dtype).is_float:
        x[0, 0, 2] = x[0, 0, 6] = x[1, 2, 0] = np.nan  # nan is the largest value
        x[2, 1, 1], x[2, 1, 4] = np.inf, -np.inf
    cases = [Case("top_k", [x, Const(np.array([k], np.int64))], {"axis": ax, "largest": big}, n_out=2)
             for ax, n in ((-1, 9), (1, 4), (0, 3)) for k in (1, 2, n) for big in (0, 1)]
    cases.append(Case("top_k", [x, Const(np.array([0], np.int64))], n_out=2))
    cases.append(Case("top_k", [data(dtype, 2, 100), Const(np.array([17], np.int64))], n_out=2))
    check(*cases)

"""LLVM lowerings of the elementwise ops against the interpreter: every op, every dtype it takes, broadcasting,
size-1 and zero-size dims, special values (nan, +-inf, -0, integer extremes). Integer results and exact float ops
are compared bit for bit (value-exact for floats), transcendental ones to a few ulps of the dtype. Each test
compiles one graph holding all its cases (one node per case, every result a graph output), so the file stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import tritc
from tritc.codegen.llvm.elementwise import collapse_dims
from tritc.ir.casts import int_range
from tritc.ir.interpreter import run
from tritc.ir.types import DType

from ..ir.test_casts import EDGES, assert_values, make
from . import helpers
from .helpers import Const, build, case_of, interpret_and_compile

rng = np.random.default_rng(11)
FLOATS = ["f32", "f16", "bf16", "f64"]
INTS = ["i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64"]
NUMERIC = FLOATS + INTS
ALL = NUMERIC + ["bool"]
SUB_BYTE = ["i4", "u4", "i2", "u2"]  # storage types: only casts (and data movement, quantization) take them
# relative / absolute tolerance of approximate (transcendental) results: a few ulps of each float dtype
TOL = {"f32": (2e-6, 1e-37), "f64": (1e-13, 1e-300), "f16": (2e-3, 1e-7), "bf16": (1.6e-2, 1e-37)}


@dataclass
class Case(helpers.Case):
    """A case whose float results are compared exactly unless `approx` or `tol` says otherwise."""

    approx: bool = False  # compare within TOL of the result dtype instead of exactly
    tol: tuple[float, float] | None = None  # (rtol, atol) instead of TOL


def data(dtype: str, *shape: int, lo: float = -10.0, hi: float = 10.0, specials: bool = True) -> np.ndarray:
    """Random values of an IR dtype in [lo, hi] (ints in [10 lo, 10 hi] within the dtype); with `specials`, floats
    get nan, +-inf and -0 and ints their extremes at fixed places when there is room."""
    dt = DType.from_name(dtype)
    n = math.prod(shape)
    if dt is DType.BOOL:
        a = rng.integers(0, 2, n).astype(bool)
    elif dt.is_float:
        a = rng.uniform(lo, hi, n).astype(dt.np_dtype)
        if specials and n >= 8:
            a[[1, 3, 5, 7]] = np.array([np.nan, np.inf, -np.inf, -0.0]).astype(dt.np_dtype)
    else:
        info = np.iinfo(dt.np_dtype)
        a = rng.integers(max(info.min, int(lo * 10)), min(info.max, int(hi * 10)), n, endpoint=True).astype(dt.np_dtype)
        if specials and n >= 4:
            a[[0, 2]] = [info.min, info.max]
    return a.reshape(shape)


def assert_same(y: np.ndarray, e: np.ndarray, approx: bool, what: str, tol: tuple[float, float] | None = None) -> None:
    """Integers and bools bit for bit; floats: the same nans and infinities, other values equal or within TOL."""
    assert y.dtype == e.dtype and y.shape == e.shape, (what, y.dtype, y.shape, e.dtype, e.shape)
    dt = DType.from_numpy(e.dtype)
    if dt.is_sub_byte:  # the same bytes: the value in the low bits, the rest zero
        np.testing.assert_array_equal(y.view(np.uint8), e.view(np.uint8), err_msg=what)
        return
    if not dt.is_float:
        np.testing.assert_array_equal(y, e, err_msg=what)
        return
    y64, e64 = y.astype(np.float64), e.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(y64), np.isnan(e64), err_msg=f"{what}: nan positions")
    if approx:
        rtol, atol = tol or TOL[dt.ir_name]
        np.testing.assert_allclose(y64, e64, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(y64, e64, err_msg=what)


def check(*cases: Case, threads: int | None = None, split: bool = False) -> dict[str, np.ndarray]:
    """Compile all cases as one graph and compare every result with the interpreter's. With `split`, the
    compiled code must hand work to the thread pool (large nodes split over `threads`)."""
    model, expected, got = interpret_and_compile(list(cases), threads=threads)
    if split:
        assert all(b"tritc_parallel_for" in spec.object for spec in model.specializations)
    for name, e in expected.items():
        case = case_of(cases, name)
        what = f"{name}: {case.op} {case.attrs} on {[getattr(x, 'dtype', x) for x in case.inputs]}"
        assert_same(got[name], e, case.approx or case.tol is not None, what, case.tol)
    return got


# ---- the engine ----------------------------------------------------------------------------------------------


def test_collapse_dims_merges_runs_that_every_operand_walks_alike():
    # [2,3,4] + [4]: the first two dims merge (broadcast for one operand, contiguous for the others)
    dims, strides = collapse_dims([2, 3, 4], [[12, 4, 1], [0, 0, 1], [12, 4, 1]])
    assert dims == [6, 4] and strides == [[4, 1], [0, 1], [4, 1]]
    # [2,3,4] + [3,1]: every neighbouring pair is walked differently by the second operand
    assert collapse_dims([2, 3, 4], [[12, 4, 1], [0, 1, 0], [12, 4, 1]])[0] == [2, 3, 4]
    assert collapse_dims([2, 1, 5], [[5, 5, 1], [5, 5, 1]]) == ([10], [[1], [1]])
    assert collapse_dims([1, 1], [[1, 1]]) == ([], [[]])


def test_broadcast_shapes_and_zero_size():
    a = data("f32", 2, 3, 4)
    check(Case("add", [a, data("f32", 3, 1)]), Case("add", [data("f32", 3, 1), a]),
          Case("mul", [data("f32", 2, 1, 4), data("f32", 1, 3, 1)]), Case("sub", [data("f32", 5), data("f32")]),
          Case("sub", [data("f32"), data("f32")]), Case("add", [data("f32", 0, 3), data("f32", 1, 3)]),
          Case("add", [data("i32", 4, 0), data("i32", 1)]), Case("div", [data("f32", 1, 1, 7), data("f32", 7)]),
          Case("where", [data("bool", 2, 1, 1), data("f32", 1, 3, 1), data("f32", 4)]),
          Case("add", [data("i8", 3, 1, 2, 1, 5), data("i8", 1, 4, 1, 6, 1)]))


# ---- arithmetic ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC)
def test_arithmetic(dtype):
    a, b = data(dtype, 4, 9), data(dtype, 4, 9)
    if DType.from_name(dtype).is_int:
        b[0, :4] = [0, -1 if DType.from_name(dtype).is_signed else 1, 0, 3]  # division by 0, INT_MIN / -1
        a[0, :4] = [7, np.iinfo(a.dtype).min, 0, -7 if DType.from_name(dtype).is_signed else 250]
    cases = [Case(op, [a, b]) for op in ("add", "sub", "mul", "div")]
    cases += [Case("mod", [a, b], {"fmod": f}) for f in (0, 1)]
    cases += [Case(op, [a]) for op in ("neg", "abs", "sign", "relu")]
    cases += [Case(op, [a, b, data(dtype, 9)]) for op in ("max", "min", "sum")]
    cases += [Case(op, [a]) for op in ("max", "min", "sum")]
    lo = -5 if DType.from_name(dtype).is_signed else 5
    cases += [Case("clip", [a, Const(np.array(lo, a.dtype)), Const(np.array(60, a.dtype))]),
              Case("clip", [a, None, Const(np.array(3, a.dtype))]), Case("clip", [a]),
              Case("clip", [a, Const(np.array(4, a.dtype)), Const(np.array(2, a.dtype))]),  # lo > hi: all hi
              Case("prelu", [a, data(dtype, 9)])]
    if DType.from_name(dtype).is_float:
        cases += [Case("mean", [a, b, data(dtype, 1, 9)]), Case("reciprocal", [a]), Case("mean", [a])]
    check(*cases)


def test_float_mod_signs_and_specials():
    a = np.array([5, -5, 5, -5, 1, -1, np.inf, 3, 0, -0.0, 6, -6, np.nan, 2], np.float32)
    b = np.array([3, 3, -3, -3, np.inf, np.inf, 2, 0, -3, 3, -3, 3, 1, np.nan], np.float32)
    check(*(Case("mod", [x.astype(d), y.astype(d)], {"fmod": f}) for f in (0, 1) for d in (np.float32, np.float16, np.float64)
            for x, y in [(a, b)]))


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i32", "i8", "u16", "i64"])
def test_pow(dtype):
    x = data(dtype, 12, lo=-4, hi=4, specials=False)
    if DType.from_name(dtype).is_int:
        x = np.array([2, -3, 0, 5, 1, -1, 7, 3, 0, 2, 4, -2], x.dtype) if DType.from_name(dtype).is_signed else \
            np.array([2, 3, 0, 5, 1, 1, 7, 3, 0, 2, 4, 2], x.dtype)
    y_int = np.array([2, 3, -2, 40, -5, -3, 0, 1, 0, 63, 2, 7], np.int64)
    y_float = np.array([0.5, 3, -2, 2.5, 0, 1, 2, -1, 0.5, 3, 2, 1], np.float32)
    y_double = data("f64", 12, lo=-3, hi=3, specials=False)
    check(*(Case("pow", [x, y], approx=True) for y in (y_int, y_float, y_int.astype(np.int32), y_double)))


@pytest.mark.parametrize("dtype", INTS)
def test_bitwise_and_shifts(dtype):
    a, b = data(dtype, 5, 8), data(dtype, 5, 8)
    bits = a.dtype.itemsize * 8
    amounts = np.array([0, 1, 3, bits - 1, bits, bits + 5, 2, 7], a.dtype)
    if DType.from_name(dtype).is_signed:
        amounts[6] = -1  # a negative amount shifts everything out
    check(Case("bitwise_and", [a, b]), Case("bitwise_or", [a, b]), Case("bitwise_xor", [a, b]), Case("bitwise_not", [a]),
          Case("bit_shift", [a, amounts], {"direction": "LEFT"}), Case("bit_shift", [a, amounts], {"direction": "RIGHT"}))


# ---- comparisons, logic, selection -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL)
def test_comparisons_and_where(dtype):
    a, b = data(dtype, 3, 8), data(dtype, 3, 8)
    b[0] = a[0]  # equal values (and nan vs nan)
    cases = [Case(op, [a, b]) for op in ("equal", "less", "greater", "less_or_equal", "greater_or_equal")]
    cases += [Case("where", [data("bool", 3, 1), a, b]), Case("where", [data("bool", 3, 8), a, data(dtype)])]
    check(*cases)


def test_logic():
    a, b = data("bool", 4, 5), data("bool", 5)
    check(Case("and", [a, b]), Case("or", [a, b]), Case("xor", [a, b]), Case("not", [a]))


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_and_inf_tests(dtype):
    x = data(dtype, 16)
    check(Case("is_nan", [x]), *(Case("is_inf", [x], {"detect_positive": p, "detect_negative": n}) for p in (0, 1) for n in (0, 1)))


# ---- casts -----------------------------------------------------------------------------------------------------


def _cast_source(dtype: str) -> np.ndarray:
    dt = DType.from_name(dtype)
    if dt.is_float:
        vals = [0.0, -0.0, 0.5, 1.5, 2.5, -2.5, -0.7, 1.0, -1.0, 127.9, 200.5, -129.0, 255.5, 300.7, 65504.0, 65519.0,
                70000.0, -40000.5, 3e9, -3e9, 5e18, 1e19, -1e20, 1e-8, 3.0e38, 1 + 2**-11 + 2**-30, np.nan, np.inf, -np.inf]
        with np.errstate(all="ignore"):
            return np.array(vals, np.float64).astype(dt.np_dtype)
    if dt is DType.BOOL:
        return np.array([True, False, True])
    lo, hi = int_range(dt)
    if dt.is_sub_byte:
        return np.arange(lo, hi + 1).astype(dt.np_dtype)
    vals = [0, 1, -1, 127, 128, 255, 256, -129, 32767, 65535, 65536, 2**24 + 2**16 + 1, 2**31, 2**53 + 1, lo, hi]
    return np.array([v for v in vals if lo <= v <= hi], dt.np_dtype)


@pytest.mark.parametrize("src", ALL + SUB_BYTE)
def test_cast_every_pair(src):
    """Every source dtype to every dtype, out-of-range values, NaN and infinities included (saturating casts)."""
    x = _cast_source(src)
    check(*(Case("cast", [x], {"to": DType.from_name(dst)}) for dst in ALL + SUB_BYTE))


def test_cast_edges_compiled_match_the_written_rules():
    """The edge values of tests/ir/test_casts.py (NaN, +-inf, saturation, ties, double-rounding traps) compiled:
    the same hand-written results as the interpreter's, so neither side follows a library's version."""
    cases = [Case("cast", [make(src, values)], {"to": DType.from_name(dst)}) for src, values, dst, _ in EDGES]
    _, expected, got = interpret_and_compile(cases)
    for i, (src, _, dst, want) in enumerate(EDGES):
        assert_values(expected[f"y{i}_0"], dst, want, f"interpreted {src} -> {dst}")
        assert_values(got[f"y{i}_0"], dst, want, f"compiled {src} -> {dst}")


@pytest.mark.parametrize("dtype", SUB_BYTE)
def test_sub_byte_data_movement(dtype):
    """The ops that move 4- and 2-bit values without arithmetic (as ONNX allows them) compile and keep the bytes."""
    lo, hi = int_range(DType.from_name(dtype))
    x = np.resize(np.arange(lo, hi + 1), (3, 4)).astype(DType.from_name(dtype).np_dtype)
    y = x[::-1].copy()
    cond = rng.integers(0, 2, (3, 4)).astype(bool)
    check(Case("where", [cond, x, y]), Case("transpose", [x], {"perm": [1, 0]}), Case("concat", [x, y], {"axis": 0}),
          Case("gather", [x, Const(np.array([2, 0], np.int64))], {"axis": 1}), Case("identity", [x]),
          Case("reshape", [x, Const(np.array([4, 3], np.int64))]), Case("cast_like", [x, data("f16", 1)]),
          Case("cast_like", [data("f32", 3, 4, lo=2 * lo, hi=2 * hi), x]))


def test_cast_like_reads_only_the_dtype_of_its_target():
    x = data("f32", 3, 4)
    check(Case("cast_like", [x, data("i16", 5)]), Case("cast_like", [x, data("bf16", 0)]),
          Case("cast_like", [data("u8", 2, 2), data("f16", 1, 7)]))


# ---- float functions and activations ---------------------------------------------------------------------------

FUNCTIONS = ["sqrt", "exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
             "atanh", "erf", "sigmoid"]
F = float  # float attributes must hold float32 values
ACTIVATIONS = [("leaky_relu", {"alpha": F(np.float32(0.1))}), ("elu", {"alpha": F(np.float32(0.7))}), ("selu", {}),
               ("celu", {"alpha": 1.5}),
               ("hard_sigmoid", {"alpha": F(np.float32(0.3)), "beta": F(np.float32(0.4))}), ("hard_swish", {}),
               ("softplus", {}), ("softsign", {}), ("mish", {}), ("thresholded_relu", {"alpha": 0.5}),
               ("shrink", {"lambd": 1.5, "bias": 0.25}), ("swish", {"alpha": F(np.float32(0.8))}), ("relu", {})]


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_functions(dtype):
    x = data(dtype, 40, lo=-12, hi=12)
    unit = data(dtype, 40, lo=-1.2, hi=1.2)  # asin, acos, atanh: mostly inside the domain
    cases = [Case(f, [unit if f in ("asin", "acos", "atanh") else x], approx=True) for f in FUNCTIONS]
    cases += [Case(f, [x]) for f in ("floor", "ceil", "round")]
    cases += [Case("round", [np.array([0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -0.0, 1e30], np.float32).astype(x.dtype)])]
    cases += [Case(op, [x], attrs, approx=True) for op, attrs in ACTIVATIONS]
    # gelu's 1 + erf / 1 + tanh cancel in the interpreter for x < -5: there both are only close in absolute terms
    cases += [Case("gelu", [x], {"approximate": a}, tol=(TOL[dtype][0], 1e-6)) for a in ("none", "tanh")]
    cases += [Case("prelu", [data(dtype, 2, 40), data(dtype, 40)])]
    check(*cases)


@pytest.mark.parametrize("dtype", ["i8", "i32", "i64"])
def test_shrink_of_integers_goes_through_f64(dtype):
    check(Case("shrink", [data(dtype, 30)], {"lambd": 1.5, "bias": 0.5}), Case("shrink", [data(dtype, 30)], {"lambd": -1.0, "bias": 2.0}))


SPECIALS = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-40, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 0.625, 3.9, -3.9, 9.5, -9.5, 10.06,
                     -10.06, 15.0, -20.0, 87.3, 88.72283, 88.7229, -87.4, -103.9, -104.5, 200.0, -200.0, 1e30, -1e30,
                     3.4e38, -3.4e38, np.inf, -np.inf, np.nan], np.float32)


def test_special_values_of_the_inline_f32_math():
    fns = ["exp", "log", "tanh", "sigmoid", "erf", "softplus", "mish", "swish", "elu", "selu", "celu"]
    # gelu's tanh form: 1 + tanh(u) cancels for x < -3, which magnifies an ulp of tanh; compare absolutely there
    check(*(Case(f, [SPECIALS], approx=True) for f in fns), Case("gelu", [SPECIALS], {"approximate": "tanh"}, tol=(2e-6, 1e-6)))
    # gelu: the interpreter's 1 + erf(x / sqrt2) (in f64) cancels to 0 below x = -8.3; the compiled form
    # 0.5 x erfc(-x / sqrt2) keeps the tiny true value, so compare those within an absolute 1e-7 (as the node tests)
    got = check(Case("gelu", [SPECIALS[np.abs(SPECIALS) < 8]], approx=True))["y0_0"]
    g, feeds = build([Case("gelu", [SPECIALS])])
    far = tritc.compile(g, pipeline="none").run(None, feeds)[0]
    np.testing.assert_allclose(far, run(g, feeds)["y0_0"], rtol=2e-6, atol=1e-7, equal_nan=True)
    assert got.dtype == np.float32 and far[SPECIALS == np.float32(-9.5)][0] < 0  # -1e-20, where the interpreter has -0


@pytest.mark.parametrize("fn, lo, hi, max_ulp", [("exp", -104, 88.7, 1.5), ("log", 0, 1e30, 1.5), ("tanh", -10, 10, 6),
                                                  ("sigmoid", -90, 30, 3), ("erf", -5, 5, 2), ("gelu", -14, 14, 8)])
def test_inline_f32_math_is_accurate(fn, lo, hi, max_ulp):
    """Dense samples against float64 truth (log: log-uniform): the error stays within a few ulps."""
    n = 200_000
    x = (np.exp(rng.uniform(-87, math.log(hi), n)) if fn == "log" else rng.uniform(lo, hi, n)).astype(np.float32)
    g, feeds = build([Case(fn, [x])])
    got = tritc.compile(g, pipeline="none").run(None, feeds)[0].astype(np.float64)
    v = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    truth = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": lambda t: 1 / (1 + np.exp(-t)), "erf": erf,
             "gelu": lambda t: 0.5 * t * np.vectorize(math.erfc)(-t / math.sqrt(2))}[fn](v)
    normal = np.abs(truth) > 1.2e-38
    ulps = np.abs(got[normal] - truth[normal]) / np.spacing(np.abs(truth[normal]).astype(np.float32)).astype(np.float64)
    assert ulps.max() <= max_ulp, (fn, ulps.max(), x[normal][np.argmax(ulps)])


def test_large_nodes_split_over_threads():
    """Tasks cover the outermost dim in ranges: flat loops, broadcast nests, every task's own buffers."""
    check(Case("sigmoid", [data("f32", 300_001)], approx=True), Case("add", [data("f32", 4, 70_000), data("f32", 70_000)]),
          Case("mul", [data("i32", 513, 1, 400), data("i32", 1, 3, 400)]), Case("gelu", [data("f16", 3, 50_000)], approx=True),
          threads=4, split=True)


def test_f32_transcendentals_are_inline_and_vectorised():
    """exp/tanh/sigmoid/erf/log of f32 compile to vector code with no libm call (which would block vectorising)."""
    from tritc.codegen.llvm.compiler import compile_specialization
    from tritc.codegen.llvm.target import host_target
    from tritc.codegen.llvm.weights import layout_weights

    x = data("f32", 1024)
    g, _ = build([Case(f, [x]) for f in ("exp", "tanh", "sigmoid", "erf", "log", "gelu", "softplus", "swish")])
    spec = compile_specialization(g, layout_weights(g)[0], {}, host_target(), keep_ir=True)
    assert not any(f"@{f}f(" in spec.llvm_ir for f in ("exp", "tanh", "erf", "log", "log1p"))
    import llvmlite.binding as llvm

    optimised = str(llvm.parse_bitcode(spec.bitcode))
    assert "x float>" in optimised  # the loops were vectorised

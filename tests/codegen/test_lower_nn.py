"""LLVM lowerings of the nn family against the interpreter: matmul (every dtype, 1-D, batched, broadcast, empty,
weights as constants, each loop shape of the GEMM kernel, threads), gemm, einsum, the normalizations and dropout.

Each test compiles one graph holding all its cases (one node per case, every result a graph output). Integer
results must match bit for bit; float ones within a tolerance that depends on the dtype and the summation length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import tritc
from tritc.codegen.llvm.kernels.matmul import GemmSpec, Plan, StridedB, _k_blocks_outermost, choose_plan
from tritc.codegen.llvm.target import host_target
from tritc.errors import UnsupportedError
from tritc.ir.graph import Graph
from tritc.ir.types import DType

from . import helpers
from .helpers import Const, build, case_of, interpret_and_compile

rng = np.random.default_rng(5)
TOL = {"f32": 2e-5, "f64": 1e-12, "f16": 2e-3, "bf16": 1.6e-2}


@dataclass
class Case(helpers.Case):
    """A case whose float results are compared within `rtol` (default: TOL of the dtype)."""

    rtol: float | None = None


def data(dtype: str, *shape: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    dt = DType.from_name(dtype)
    if dt.is_float:
        return rng.uniform(lo, hi, shape).astype(dt.np_dtype)
    info = np.iinfo(dt.np_dtype)
    return rng.integers(max(info.min, -50), min(info.max, 50), shape, endpoint=True).astype(dt.np_dtype)


def check(*cases: Case, threads: int = 1) -> None:
    """Compile all cases as one graph and compare every result with the interpreter's."""
    _, expected, got = interpret_and_compile(list(cases), threads=threads)
    for name, e in expected.items():
        case = case_of(cases, name)
        y = got[name]
        what = f"{name}: {case.op} {case.attrs} on {[getattr(x, 'shape', x) for x in case.inputs]}"
        assert y.dtype == e.dtype and y.shape == e.shape, (what, y.dtype, y.shape, e.dtype, e.shape)
        dt = DType.from_numpy(e.dtype)
        if not dt.is_float:
            np.testing.assert_array_equal(y, e, err_msg=what)
            continue
        rtol = case.rtol or TOL[dt.ir_name]
        finite = np.abs(e.astype(np.float64))[np.isfinite(e.astype(np.float64))]
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        np.testing.assert_allclose(y.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=rtol * scale,
                                   equal_nan=True, err_msg=what)


# ---- matmul ---------------------------------------------------------------------------------------------------

SHAPES = [((5,), (5,)), ((3, 5), (5,)), ((5,), (5, 4)), ((2, 3, 5), (5, 4)), ((2, 1, 3, 5), (4, 5, 7)),
          ((7,), (2, 7, 3)), ((1, 0, 3), (3, 4)), ((2, 3), (3, 0)), ((2, 0), (0, 3)), ((20, 30), (30, 40)),
          ((9, 1), (1, 17)), ((8, 3), (3, 1)), ((2, 9, 17), (2, 17, 33))]


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i32", "i64", "u32", "u64"])
def test_matmul_shapes_and_dtypes(dtype):
    tol = 2e-2 if dtype == "bf16" else None  # the bf16 result is rounded once, the inputs' products are exact
    check(*(Case("matmul", [data(dtype, *a), data(dtype, *b)], rtol=tol) for a, b in SHAPES))


def test_integer_matmul_wraps_like_numpy():
    a = np.full((2, 300), 2**20, np.int32)
    b = np.full((300, 3), 2**12, np.int32)
    big = np.full((2, 4), 2**40, np.int64)
    check(Case("matmul", [a, b]), Case("matmul", [big, np.full((4, 2), 2**30, np.int64)]),
          Case("matmul", [np.full((1, 5), 4_000_000_000, np.uint32), np.full((5, 1), 7, np.uint32)]))


def test_matmul_loop_shapes():
    """Every loop shape of the kernel, each with ragged row and column blocks: the packed 8x32 tile (constant
    and runtime B, K blocks inside or outside the panels), the streamed GEMV, the dot products of a transposed
    B, the direct tile."""
    isa = host_target().isa
    cases = [((19, 300), (300, 70)), ((64, 600), Const(data("f32", 600, 33))), ((41, 7000), (7000, 20)), ((1, 1000), (1000, 77)),
             ((1, 37), Const(data("f32", 37, 129))), ((3, 40), (40, 50)), ((8, 333), (333, 41)), ((5, 9), (9, 2000)), ((1, 4), (4, 3))]
    check(*(Case("matmul", [data("f32", *a), b if isinstance(b, Const) else data("f32", *b)], rtol=1e-4) for a, b in cases))
    plans = {choose_plan(GemmSpec(m, n, (k,), DType.F32, k, (1,), n), StridedB(n, 1), isa).kind
             for (m, k), (_, n) in [((19, 300), (300, 70)), ((1, 1000), (1000, 77)), ((8, 40), (40, 50))]}
    assert plans == {"packed", "stream"}
    assert choose_plan(GemmSpec(2, 9, (50,), DType.F32, 50, (1,), 9), StridedB(1, 50), isa).kind == "dot"
    assert choose_plan(GemmSpec(3, 9, (50,), DType.F32, 1, (3,), 9), StridedB(9, 1), isa).kind == "direct"  # A transposed
    assert _k_blocks_outermost(GemmSpec(41, 20, (7000,), DType.F32, 7000, (1,), 20), Plan("packed", 8, 2))
    assert not _k_blocks_outermost(GemmSpec(19, 70, (300,), DType.F32, 300, (1,), 70), Plan("packed", 8, 2))
    assert choose_plan(GemmSpec(2, 9, (50,), DType.F32, 50, (1,), 9), StridedB(1, 50), isa).kind == "dot"


def test_matmul_threads_split_the_work():
    a, b = data("f32", 96, 200), data("f32", 200, 300)
    spec = GemmSpec(96, 300, (200,), DType.F32, 200, (1,), 300, threads=4)
    plan = choose_plan(spec, StridedB(300, 1), host_target().isa)
    assert plan.tj * plan.tm > 1
    check(Case("matmul", [a, b], rtol=1e-4), Case("matmul", [data("f32", 1, 2000), data("f32", 2000, 1500)], rtol=1e-4),
          Case("matmul", [data("f32", 6, 700), data("f32", 700, 1000)], rtol=1e-4),
          Case("matmul", [data("f32", 6, 70, 50), data("f32", 6, 50, 40)], rtol=1e-4), threads=4)


# ---- gemm --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64", "i32"])
def test_gemm_transposes_and_bias_shapes(dtype):
    cases = []
    for m, k, n in [(3, 4, 5), (1, 64, 10), (17, 33, 70)]:
        for i, c in enumerate((None, (), (n,), (1, n), (m, 1), (m, n))):
            for ta, tb in ((i % 2, i // 2 % 2), (1 - i % 2, 1 - i // 2 % 2)):  # every transpose pair meets every bias
                a = data(dtype, *((k, m) if ta else (m, k)))
                b = data(dtype, *((n, k) if tb else (k, n)))
                attrs = {"transA": ta, "transB": tb}
                if dtype != "i32" and c is not None and len(c) == 2:
                    attrs.update(alpha=0.5, beta=2.0)
                cases.append(Case("gemm", [a, b] + ([] if c is None else [data(dtype, *c)]), attrs))
    check(*cases)


# ---- einsum ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "i32", "f64"])
def test_einsum(dtype):
    check(Case("einsum", [data(dtype, 3, 4), data(dtype, 4, 5)], {"equation": "ij,jk->ik"}),
          Case("einsum", [data(dtype, 2, 3, 4), data(dtype, 2, 4, 5)], {"equation": "bij,bjk->bik"}),
          Case("einsum", [data(dtype, 3, 4)], {"equation": "ij->ji"}),
          Case("einsum", [data(dtype, 4, 4)], {"equation": "ii->i"}),
          Case("einsum", [data(dtype, 4, 4)], {"equation": "ii"}),
          Case("einsum", [data(dtype, 3, 5)], {"equation": "ij->"}),
          Case("einsum", [data(dtype, 2, 1, 3, 4), data(dtype, 5, 4, 2)], {"equation": "...ij,...jk->...ik"}),
          Case("einsum", [data(dtype, 5), data(dtype, 5)], {"equation": "i,i"}),
          Case("einsum", [data(dtype, 2, 3), data(dtype, 3), data(dtype, 2)], {"equation": "ij,j,i->"}),
          Case("einsum", [data(dtype, 2, 3, 3)], {"equation": "bii->bi"}))


# ---- normalizations --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
def test_layer_and_rms_normalization(dtype):
    x = data(dtype, 2, 3, 37)
    f32 = max(TOL[dtype], 2e-5)  # statistics in the default stash type (f32), whatever X's dtype
    check(Case("layer_normalization", [x, data(dtype, 37), data(dtype, 37)], {"axis": -1}, n_out=3, rtol=f32),
          Case("layer_normalization", [x, data(dtype, 3, 37)], {"axis": 1, "epsilon": 0.0009765625}, n_out=3, rtol=f32),
          Case("layer_normalization", [x, data(dtype, 1, 37), data(dtype, 3, 1)], {"axis": 1}, rtol=f32),
          Case("layer_normalization", [data(dtype, 4, 100), data(dtype, 100)], {"axis": 0, "stash_type": 11}, n_out=2),
          Case("layer_normalization", [data(dtype, 0, 5), data(dtype, 5)], {"axis": 1}, n_out=3),
          Case("rms_normalization", [x, data(dtype, 37)], rtol=f32),
          Case("rms_normalization", [x, data(dtype, 3, 37)], {"axis": 1, "epsilon": 0.5}, rtol=f32),
          Case("rms_normalization", [data(dtype, 5, 16), data(dtype, 1)], {"stash_type": 11}))


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_channel_normalizations(dtype):
    x = data(dtype, 2, 6, 5, 7)
    p = [data(dtype, 6) for _ in range(4)]
    var = np.abs(data(dtype, 6)) + np.asarray(0.5, x.dtype)
    f32 = max(TOL[dtype], 2e-5)  # group statistics in the default stash type (f32), whatever X's dtype
    check(Case("group_normalization", [x, p[0], p[1]], {"num_groups": 3}, rtol=f32),
          Case("group_normalization", [data(dtype, 3, 4, 33), data(dtype, 4), data(dtype, 4)], {"num_groups": 4, "epsilon": 0.125},
               rtol=f32),
          Case("instance_normalization", [x, p[0], p[1]]),
          Case("instance_normalization", [data(dtype, 1, 3, 2, 2, 5), data(dtype, 3), data(dtype, 3)], {"epsilon": 0.0078125}),
          Case("batch_normalization", [x, p[0], p[1], p[2], var]),
          Case("batch_normalization", [x, p[0], p[1], p[2], var], {"training_mode": 1, "momentum": 0.75}, n_out=3),
          Case("batch_normalization", [data(dtype, 3, 6), p[0], p[1], p[2], var], {"epsilon": 0.0078125}, n_out=3),
          Case("batch_normalization", [x, Const(p[0]), Const(p[1]), Const(p[2]), Const(var)]))


def test_batch_normalization_mixed_dtypes_share_one_function():
    x = data("f16", 2, 4, 3, 3)
    f32 = [data("f32", 4) for _ in range(3)] + [np.abs(data("f32", 4)) + np.float32(0.1)]
    cases = [Case("batch_normalization", [x, *f32]), Case("batch_normalization", [data("f16", 1, 4, 9), *f32])]
    check(*cases)
    g, _ = build(cases)
    assert _llvm_ir(g).count('define internal void @"tritc.batch_norm.') == 1


def _llvm_ir(g: Graph) -> str:
    from tritc.codegen.llvm.compiler import specialize
    from tritc.codegen.llvm.lower import lower_graph
    from tritc.codegen.llvm.memory import plan_memory
    from tritc.codegen.llvm.weights import layout_weights

    layout, _ = layout_weights(g)
    s = specialize(g, {})
    return str(lower_graph(s, plan_memory(s, {k: e.offset for k, e in layout.entries.items()}), layout, host_target()))


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_lp_and_mean_variance_normalization(dtype):
    x = data(dtype, 3, 4, 5)
    x0 = x.copy()
    x0[1] = 0  # zero norms give zeros
    check(*(Case("lp_normalization", [x0], {"axis": a, "p": p}) for a in (0, 1, -1) for p in (1, 2)),
          Case("mean_variance_normalization", [data(dtype, 2, 3, 4, 5)]),
          Case("mean_variance_normalization", [x], {"axes": [1]}),
          Case("mean_variance_normalization", [x], {"axes": [0, 2]}))


# ---- dropout ------------------------------------------------------------------------------------------------------


def test_dropout_is_identity_with_a_mask_of_ones():
    x = data("f32", 3, 7)
    check(Case("dropout", [x], n_out=2), Case("dropout", [x, Const(np.array(0.3, np.float32))], n_out=2),
          Case("dropout", [x, Const(np.array(0.3, np.float32)), Const(np.array(False))], n_out=2),
          Case("dropout", [x, Const(np.array(0.0, np.float32)), Const(np.array(True))], n_out=2),
          Case("dropout", [data("f16", 4, 5)], {"mask_dtype": DType.F16}, n_out=2),
          Case("dropout", [data("i32", 0, 5)], n_out=2))


def test_training_dropout_with_a_ratio_is_refused():
    g, _ = build([Case("dropout", [data("f32", 4), Const(np.array(0.5, np.float32)), Const(np.array(True))], n_out=2)])
    with pytest.raises(UnsupportedError, match="training mode"):
        tritc.compile(g, pipeline="none")

"""Ternary matmul kernels against the interpreter's numpy semantics, on every ISA this host can run.

int8 activations must match `ternary_matmul(..., act="int8")` bit for bit (codes, int32 sums,
rescale); float activations to rounding (the kernel adds in another order than BLAS).
"""

from __future__ import annotations

import ctypes
import functools
import threading

import llvmlite.ir as ir
import numpy as np
import pytest

from tritc.codegen.llvm.jit import compile_and_load, emit_assembly, optimize, parse
from tritc.codegen.llvm.kernels import threads
from tritc.codegen.llvm.kernels.ternary import emit_ternary_matmul
from tritc.codegen.llvm.packing import pack_scales, pack_trits
from tritc.codegen.llvm.target import host_target
from tritc.errors import UnsupportedError
from tritc.ir.ops.ternary import ternary_matmul
from tritc.ir.ternary import TernaryWeight

FEATURES = {"avx512vnni": None, "avx2": "-avx512f", "portable": "generic"}


def _isas() -> list:
    out = []
    for isa, feat in FEATURES.items():
        have = host_target(feat).isa == isa
        out.append(pytest.param(isa, marks=pytest.mark.skipif(not have, reason=f"host cannot run {isa} code")))
    return out


ISAS = _isas()


@functools.cache
def kernel(isa: str, **kw):
    """Compile one kernel (cached per configuration) and return a numpy-friendly callable."""
    target = host_target(FEATURES[isa])
    assert target.isa == isa
    module = ir.Module(name="k")
    module.triple = target.triple
    emit_ternary_matmul(module, target, name="k", **kw)
    if kw.get("threads", 1) != 1:
        threads.ensure_pool()
    lib, _ = compile_and_load(module, target)
    nargs = 4 + bool(kw.get("bias")) + bool(kw.get("residual"))
    fn = lib.function("k", ctypes.c_int32, [ctypes.c_void_p] * nargs)

    def run(x, w: TernaryWeight, bias=None, residual=None):
        packed, scales = pack_trits(w.trits), pack_scales(w)
        y = np.full((kw["M"], kw["N"]), np.nan, np.float32)
        ptrs = [x.ctypes.data, packed.ctypes.data, scales.ctypes.data]
        ptrs += [a.ctypes.data for a in (bias, residual) if a is not None]
        assert fn(*ptrs, y.ctypes.data) == 0
        return y

    return run


def make_weight(rng, K, N, granularity, group_size=0, trits=None):
    t = rng.integers(-1, 2, (K, N)).astype(np.int8) if trits is None else trits
    if granularity == "per_tensor":
        s = np.float32(rng.random() + 0.25)
    elif granularity == "per_channel":
        s = (rng.random(N) + 0.25).astype(np.float32)
    else:
        s = (rng.random((K // group_size, N)) + 0.25).astype(np.float32)
    return TernaryWeight(t, np.asarray(s, np.float32), group_size)


def reference(x, w, act, bias=None, residual=None, activation=None, act_max=127.0, act_scale="div"):
    y = ternary_matmul(x, w, bias, act=act, act_max=act_max, act_eps=1e-5, act_scale=act_scale)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    elif activation == "silu":
        y = y / (np.float32(1) + np.exp(-y))
    return y.astype(np.float32)


def assert_close(y, ref, x, w, act):
    if act == "int8":
        np.testing.assert_array_equal(y, ref)
        return
    # float sums in another order: bound the error by the magnitude of what was summed
    mag = np.abs(x).astype(np.float64) @ np.abs(w.trits).astype(np.float64) * np.max(np.abs(w.scale))
    assert np.all(np.abs(y - ref) <= 1e-5 * (mag + 1.0)), np.max(np.abs(y - ref) / (mag + 1.0))


SHAPES = [(1, 64, 48), (1, 100, 37), (3, 50, 70), (8, 96, 130), (17, 256, 20)]
GRANULARITIES = [("per_tensor", 0), ("per_channel", 0), ("per_group", 32), ("per_group", 64)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", ["int8", "float"])
@pytest.mark.parametrize("granularity,group_size", GRANULARITIES)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_matches_interpreter(isa, act, granularity, group_size, M, K, N):
    if group_size:
        K = group_size * max(2, K // group_size)
    rng = np.random.default_rng(M * 1000 + K + N)
    x = (rng.standard_normal((M, K)) * rng.choice([0.01, 1.0, 50.0], size=(M, 1))).astype(np.float32)
    w = make_weight(rng, K, N, granularity, group_size)
    y = kernel(isa, M=M, K=K, N=N, act=act, granularity=granularity, group_size=group_size)(x, w)
    assert_close(y, reference(x, w, act), x, w, act)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("K", [16, 4096, 131072])
@pytest.mark.parametrize("sign", [-1, 1])
def test_extreme_activations(isa, K, sign):
    """q = -128 (act_max 128) or +127 everywhere, all-equal trits: the largest |sums| each path can see."""
    M, N = 2, 32
    x = np.full((M, K), float(sign), np.float32)
    act_max = 128.0 if sign < 0 else 127.0
    for fill in (1, -1):
        trits = np.full((K, N), fill, np.int8)
        trits[:, 1::3] = -fill  # mixed columns too
        w = TernaryWeight(trits, (np.arange(N, dtype=np.float32) + 1) / 8)
        y = kernel(isa, M=M, K=K, N=N, act="int8", act_max=act_max)(x, w)
        np.testing.assert_array_equal(y, reference(x, w, "int8", act_max=act_max))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", ["int8", "float"])
@pytest.mark.parametrize("activation", [None, "relu", "silu"])
def test_fused_epilogue(isa, act, activation):
    M, K, N = 3, 80, 45
    rng = np.random.default_rng(7)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = make_weight(rng, K, N, "per_channel")
    bias = rng.standard_normal(N).astype(np.float32)
    res = rng.standard_normal((M, N)).astype(np.float32)
    y = kernel(isa, M=M, K=K, N=N, act=act, bias=True, residual=True, activation=activation)(x, w, bias, res)
    ref = reference(x, w, act, bias, res, activation)
    if activation == "silu":  # expf of LLVM vs numpy may differ in the last bit
        np.testing.assert_allclose(y, ref, rtol=2e-5, atol=1e-5)
    else:
        assert_close(y, ref, x, w, act)


@pytest.mark.parametrize("isa", ISAS)
def test_reciprocal_scale_form(isa):
    M, K, N = 4, 300, 33
    rng = np.random.default_rng(3)
    x = rng.standard_normal((M, K)).astype(np.float32) * 3
    w = make_weight(rng, K, N, "per_channel")
    y = kernel(isa, M=M, K=K, N=N, act="int8", act_scale="mul_reciprocal")(x, w)
    np.testing.assert_array_equal(y, reference(x, w, "int8", act_scale="mul_reciprocal"))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", ["int8", "float"])
@pytest.mark.parametrize("M,K,N", [(1, 512, 1000), (33, 200, 300), (64, 64, 16)])
def test_threaded_equals_serial(isa, act, M, K, N):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = make_weight(rng, K, N, "per_channel")
    serial = kernel(isa, M=M, K=K, N=N, act=act)(x, w)
    parallel = kernel(isa, M=M, K=K, N=N, act=act, threads=4)(x, w)
    np.testing.assert_array_equal(parallel, serial)
    assert_close(parallel, reference(x, w, act), x, w, act)


def test_concurrent_callers_share_the_pool():
    """Python threads calling threaded kernels at once: the busy pool makes callers run serially."""
    isa = host_target().isa
    M, K, N = 4, 256, 512
    rng = np.random.default_rng(5)
    run = kernel(isa, M=M, K=K, N=N, act="int8", threads=2)
    jobs = []
    for _ in range(4):
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = make_weight(rng, K, N, "per_channel")
        jobs.append((x, w, reference(x, w, "int8")))
    errors: list[str] = []

    def work(x, w, ref):
        for _ in range(25):
            if not np.array_equal(run(x, w), ref):
                errors.append("mismatch")

    ts = [threading.Thread(target=work, args=job) for job in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_per_group_single_output_is_close():
    """N == 1: numpy sums the groups pairwise there, the kernel in order; equal up to rounding."""
    isa = host_target().isa
    M, K, N, g = 2, 32 * 40, 1, 32
    rng = np.random.default_rng(9)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = make_weight(rng, K, N, "per_group", g)
    y = kernel(isa, M=M, K=K, N=N, act="int8", granularity="per_group", group_size=g)(x, w)
    np.testing.assert_allclose(y, reference(x, w, "int8"), rtol=1e-5)


def _asm(features, **kw) -> str:
    target = host_target(features)
    module = ir.Module()
    module.triple = target.triple
    emit_ternary_matmul(module, target, name="k", **kw)
    return emit_assembly(optimize(parse(module), target), target)


def _loops(asm: str) -> list[str]:
    """The assembly of every basic block that branches back to itself (the innermost loops)."""
    out, label, lines = [], None, []
    for ln in asm.splitlines() + [".Lend:"]:
        if ln.startswith(".") and ln.endswith(":") and not ln.startswith("\t"):
            if label and any(x.strip().startswith("j") and x.strip().endswith(label) for x in lines):
                out.append("\n".join(lines))
            label, lines = ln[:-1], []
        else:
            lines.append(ln)
    return out


@pytest.mark.parametrize("M", [1, 16])
def test_vnni_code_uses_vpdpbusd_without_spills(M):
    if host_target().isa != "avx512vnni":
        pytest.skip("host has no AVX-512 VNNI")
    asm = _asm(None, M=M, K=1024, N=256)
    inner = max(_loops(asm), key=lambda blk: blk.count("vpdpbusd"))
    assert inner.count("vpdpbusd") >= 16
    # stack traffic in the inner loop other than the activation broadcasts would be register spills
    spills = [ln for ln in inner.splitlines() if "(%rsp" in ln and "broadcast" not in ln and "{1to16}" not in ln]
    assert not spills, spills[:5]
    assert "vpdpbusd" in asm


def test_avx2_and_portable_code_use_their_instructions():
    avx2 = _asm("-avx512f", M=4, K=256, N=64)
    assert "vpmaddubsw" in avx2 and "vpmaddwd" in avx2 and "zmm" not in avx2
    portable = _asm("generic", M=4, K=256, N=64)
    assert "vpdpbusd" not in portable and "ymm" not in portable and "zmm" not in portable


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("granularity,group_size", [("per_channel", 0), ("per_group", 32)])
@pytest.mark.parametrize("M,K,N", [(1, 100, 300), (1, 109, 260), (1, 16, 9), (6, 109, 100), (5, 96, 300)])
def test_float_path_is_exact_on_integer_activations(isa, granularity, group_size, M, K, N):
    """Small integer x: every partial sum is exact in f32, whatever the order, so the float kernels must equal the
    interpreter bit for bit. Any misread trit, pair table entry or K-tail k would show. The shapes cover full and
    partial output tiles of both the GEMV and the GEMM plans, and K % 16 = 4, 13 and 0 (all pairs of a last block)."""
    if group_size:
        K = group_size * max(2, K // group_size)
    rng = np.random.default_rng(K * 7 + N + M)
    x = rng.integers(-8, 9, (M, K)).astype(np.float32)
    trits = None
    if N == 9:  # column n holds trit n % 3 - 1 at even k and n // 3 - 1 at odd k: all 9 code pairs in every pair
        trits = np.array([[(n % 3 if k % 2 == 0 else n // 3) - 1 for n in range(N)] for k in range(K)], np.int8)
    w = make_weight(rng, K, N, granularity, group_size, trits)
    y = kernel(isa, M=M, K=K, N=N, act="float", granularity=granularity, group_size=group_size)(x, w)
    np.testing.assert_array_equal(y, reference(x, w, "float"))


@pytest.mark.parametrize("M", [1, 16])
def test_avx512_float_code_uses_pair_tables_without_spills(M):
    """The AVX-512 float loop: vprord indexes and vpermps lookups, no vpsrld (it competes with vpermps for the
    permute pipes of Zen 4/5, docs/KERNELS.md), no masked adds, no spills."""
    if host_target().isa != "avx512vnni":
        pytest.skip("host has no AVX-512")
    asm = _asm(None, M=M, K=1024, N=256, act="float")
    inner = max(_loops(asm), key=lambda blk: blk.count("vpermps"))
    assert inner.count("vpermps") >= 64 and inner.count("vprord") >= 28, inner[:2000]
    assert "vpsrld" not in inner and "vptestnmd" not in inner and "{%k" not in inner
    spills = [ln for ln in inner.splitlines() if "(%rsp" in ln and "broadcast" not in ln and "{1to16}" not in ln]
    assert not spills, spills[:5]


def test_avx2_and_portable_float_code_decode_trits():
    """Without AVX-512 the float loop decodes trits (vpermps on AVX2) and multiplies-adds them: one FMA per k."""
    avx2 = _asm("-avx512f", M=4, K=256, N=64, act="float")
    inner = max(_loops(avx2), key=lambda blk: blk.count("vfmadd"))
    assert inner.count("vfmadd") >= 128 and ("vpermps" in inner or "vpermd" in inner)
    assert "zmm" not in avx2
    portable = _asm("generic", M=4, K=256, N=64, act="float")
    assert "ymm" not in portable and "zmm" not in portable and "cvtdq2ps" in portable


@pytest.mark.parametrize("kw,match", [
    (dict(granularity="per_group", group_size=24), "multiple of 16"),
    (dict(granularity="per_group", group_size=0), "group size"),
    (dict(act="int4"), "act must be"),
    (dict(activation="gelu"), "activation"),
    (dict(K=1 << 23), "too large"),
])
def test_rejects_what_it_cannot_compile(kw, match):
    args = dict(M=1, K=96, N=16) | kw
    with pytest.raises(UnsupportedError, match=match):
        emit_ternary_matmul(ir.Module(), host_target(), **args)


@pytest.mark.parametrize("isa", ISAS)
def test_nan_row_gives_nan_outputs(isa):
    """A NaN in a token makes its scale NaN, hence the whole output row NaN (as in the interpreter)."""
    M, K, N = 3, 64, 20
    rng = np.random.default_rng(2)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[1, 5] = np.nan
    w = make_weight(rng, K, N, "per_channel")
    with np.errstate(invalid="ignore"):
        ref = reference(x, w, "int8")
    y = kernel(isa, M=M, K=K, N=N, act="int8")(x, w)
    assert np.isnan(ref[1]).all() and np.isnan(y[1]).all()
    np.testing.assert_array_equal(y[[0, 2]], ref[[0, 2]])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("granularity,group_size,activation", [("per_channel", 0, "relu"), ("per_tensor", 0, "silu"),
                                                               ("per_group", 32, None)])
@pytest.mark.parametrize("M", [1, 3])
def test_float_path_non_finite_inputs_like_numpy(isa, bad, granularity, group_size, activation, M):
    """0 * NaN and 0 * Inf are NaN in numpy's matmul and Inf - Inf is NaN; the float kernels (GEMV and GEMM) must agree."""
    K, N = 64, 37
    rng = np.random.default_rng(4)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[0, 17] = bad
    if M > 2:
        x[2, 3], x[2, 40] = np.inf, -np.inf
    w = make_weight(rng, K, N, granularity, group_size)
    bias = rng.standard_normal(N).astype(np.float32)
    res = rng.standard_normal((M, N)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = reference(x, w, "float", bias, res, activation=activation)
    y = kernel(isa, M=M, K=K, N=N, act="float", granularity=granularity, group_size=group_size, bias=True,
               residual=True, activation=activation)(x, w, bias, res)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(y[finite], ref[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool_in_module", [False, True])
def test_several_kernels_in_one_module(pool_in_module):
    """A model's module holds many kernels (shared declarations), optionally with its own pool."""
    target = host_target()
    module = ir.Module(name="model")
    module.triple = target.triple
    if pool_in_module:
        threads.emit_thread_pool(module)
    shapes = {"a": (3, 96, 40, "int8"), "b": (1, 200, 70, "float"), "c": (5, 64, 33, "int8")}
    for name, (M, K, N, act) in shapes.items():
        emit_ternary_matmul(module, target, M=M, K=K, N=N, act=act, threads=2, name=name)
    if not pool_in_module:
        threads.ensure_pool()
    lib, _ = compile_and_load(module, target)
    if pool_in_module:
        assert lib.function("tritc_pool_start", ctypes.c_int32, [ctypes.c_int32])(2) == 2
    rng = np.random.default_rng(8)
    for name, (M, K, N, act) in shapes.items():
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = make_weight(rng, K, N, "per_channel")
        y = np.zeros((M, N), np.float32)
        fn = lib.function(name, ctypes.c_int32, [ctypes.c_void_p] * 4)
        packed, scales = pack_trits(w.trits), pack_scales(w)
        assert fn(x.ctypes.data, packed.ctypes.data, scales.ctypes.data, y.ctypes.data) == 0
        assert_close(y, reference(x, w, act), x, w, act)
    if pool_in_module:
        lib.function("tritc_pool_stop", None, [])()  # join its workers before the code is unmapped


@pytest.mark.parametrize("K", [32767 * 16, 32769 * 16])
def test_vnni_gemv_masked_bound(K):
    """The masked GEMV holds 4^j-scaled sums: up to 32767 K blocks fit int32, past that the plain loop runs."""
    if host_target().isa != "avx512vnni":
        pytest.skip("host has no AVX-512 VNNI")
    M, N = 1, 16
    x = np.full((M, K), -1.0, np.float32)  # q = -128 everywhere with act_max 128
    trits = np.ones((K, N), np.int8)
    trits[:, 1::2] = -1
    w = TernaryWeight(trits, np.ones(N, np.float32))
    y = kernel("avx512vnni", M=M, K=K, N=N, act="int8", act_max=128.0)(x, w)
    np.testing.assert_array_equal(y, reference(x, w, "int8", act_max=128.0))

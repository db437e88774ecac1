"""ternary_matmul through the compiled path, epilogues included, against the interpreter; 16-bit float operands;
a scratch allocation that fails at run time."""

from __future__ import annotations

import ctypes
from contextlib import contextmanager

import llvmlite.binding as llvm
import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import numpy_helper

import tritc
from tritc.codegen.llvm.compiler import lowered_nodes
from tritc.codegen.llvm.kernels.ternary import MatmulSpec
from tritc.errors import UnsupportedError
from tritc.ir import DType, Graph, TensorType
from tritc.ir.interpreter import run
from tritc.ir.ternary import TernaryWeight
from tritc.runtime.cpu import RunOutOfMemoryError


def graph(K, N, act, activation, bias, residual, granularity, seed=0):
    rng = np.random.default_rng(seed)
    trits = rng.integers(-1, 2, (K, N)).astype(np.int8)
    if granularity == "per_tensor":
        w = TernaryWeight(trits, np.array(0.7, np.float32))
    elif granularity == "per_channel":
        w = TernaryWeight(trits, rng.uniform(0.1, 2, N).astype(np.float32))
    else:
        w = TernaryWeight(trits, rng.uniform(0.1, 2, (K // 32, N)).astype(np.float32), 32)
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("m", K)))
    ins = [x, g.add_weight("w", w, TensorType(DType.T2, (K, N)), attrs={"scale": w.granularity})]
    ins.append(g.add_weight("b", rng.standard_normal(N).astype(np.float32), TensorType(DType.F32, (N,))) if bias else None)
    if residual:
        ins.append(g.add_input("r", TensorType(DType.F32, ("m", N))))
    while ins and ins[-1] is None:
        ins.pop()
    y = g.add("ternary_matmul", ins, [TensorType(DType.F32, ("m", N))], {"act": act, "activation": activation})
    g.outputs = [y.output]
    return g


@pytest.mark.parametrize("act", ["int8", "float"])
@pytest.mark.parametrize("activation", ["none", "relu", "silu"])
@pytest.mark.parametrize("bias,residual", [(False, False), (True, False), (True, True), (False, True)])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
def test_compiled_matches_interpreter(act, activation, bias, residual, granularity):
    K, N = 64, 40
    g = graph(K, N, act, activation, bias, residual, granularity)
    model = tritc.compile(g, pipeline="none", shapes={"m": 3})
    rng = np.random.default_rng(1)
    for m in (1, 3):
        feeds = {"x": rng.standard_normal((m, K)).astype(np.float32)}
        if residual:
            feeds["r"] = rng.standard_normal((m, N)).astype(np.float32)
        got = model.run(None, feeds)[0]
        want = run(g, feeds)[g.outputs[0].name]
        # int8: exact sums, one rescale (silu's exp may differ in the last bit); float: summation order
        tol = 2e-6 if act == "int8" else 1e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ---- 16-bit floats: converted to f32 at the kernel's edge ---------------------------------------------------------


def graph16(dtype: DType, act: str, activation: str, bias_dtype: DType | None, residual: bool, K=64, N=40, seed=0):
    """x, residual and the result in `dtype`; the bias (if any) in `bias_dtype`; per-channel scales."""
    rng = np.random.default_rng(seed)
    w = TernaryWeight(rng.integers(-1, 2, (K, N)).astype(np.int8), rng.uniform(0.1, 2, N).astype(np.float32))
    g = Graph()
    ins = [g.add_input("x", TensorType(dtype, ("m", K))),
           g.add_weight("w", w, TensorType(DType.T2, (K, N)), attrs={"scale": w.granularity})]
    ins.append(None if bias_dtype is None else
               g.add_weight("b", rng.standard_normal(N).astype(bias_dtype.np_dtype), TensorType(bias_dtype, (N,))))
    if residual:
        ins.append(g.add_input("r", TensorType(dtype, ("m", N))))
    while ins[-1] is None:
        ins.pop()
    y = g.add("ternary_matmul", ins, [TensorType(dtype, ("m", N))], {"act": act, "activation": activation})
    g.outputs = [y.output]
    return g


def feeds16(g: Graph, m: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal((m, v.type.shape[1])).astype(v.type.dtype.np_dtype) for v in g.inputs}


@pytest.mark.parametrize("dtype", [DType.F16, DType.BF16])
@pytest.mark.parametrize("act", ["int8", "float"])
@pytest.mark.parametrize("activation,bias,residual", [("none", None, False), ("relu", "same", True), ("silu", "f32", True)])
def test_16_bit_activations_match_the_interpreter(dtype, act, activation, bias, residual):
    """The interpreter computes y in f32 and rounds it to x's dtype once; so does the kernel, on f32 copies of the
    operands: int8 sums are exact, so the results are equal (silu's expf may flip a rounding); float sums run in
    another order, so they may differ by one unit in the last place of the 16-bit result."""
    bias_dtype = None if bias is None else dtype if bias == "same" else DType.F32
    g = graph16(dtype, act, activation, bias_dtype, residual)
    model = tritc.compile(g, pipeline="none", shapes={"m": 3}, threads=1)
    assert [n.op for n in lowered_nodes(model.specializations[0].graph)] == ["ternary_matmul"]
    for m in (1, 3):
        feeds = feeds16(g, m)
        got = model.run(None, feeds)[0]
        want = run(g, feeds)[g.outputs[0].name]
        assert got.dtype == want.dtype == dtype.np_dtype and got.shape == want.shape
        ulp = 2.0 ** -10 if dtype is DType.F16 else 2.0 ** -7
        tol = 0 if act == "int8" and activation != "silu" else ulp
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol, atol=tol)


def test_bias_that_is_not_per_output_is_refused():
    """A per-row bias [M, 1] with M == N has N values but is not per output: the kernel would read it wrongly."""
    g = Graph()
    w = TernaryWeight(np.ones((16, 4), np.int8), np.array(0.5, np.float32))
    ins = [g.add_input("x", TensorType(DType.F32, (4, 16))), g.add_weight("w", w, TensorType(DType.T2, (16, 4))),
           g.add_weight("b", np.arange(4, dtype=np.float32).reshape(4, 1), TensorType(DType.F32, (4, 1)))]
    g.outputs = [g.add("ternary_matmul", ins, [TensorType(DType.F32, (4, 4))], {"act": "float"}).output]
    with pytest.raises(UnsupportedError, match=r"bias of shape \[4, 1\] is not one value per output"):
        tritc.compile(g, pipeline="none")


# ---- a failed allocation: an error status and an exception, never a trap -------------------------------------------

_ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_KEEP: list = []  # the replacement functions stay alive as long as code linked to them may run


@contextmanager
def heap_refusing(sizes: set[int] | None):
    """While active, code loaded by the JIT gets an aligned_alloc that returns NULL for the sizes given (every size
    if None; libc's otherwise) and a free that records what it releases: yields the set of pointers still allocated."""
    libc = ctypes.CDLL(None)
    real_alloc = _ALLOC(("aligned_alloc", libc))
    real_free = _FREE(("free", libc))
    live: set[int] = set()

    def alloc(align, size):
        if sizes is None or size in sizes:
            return None
        p = real_alloc(align, size)
        live.add(p)
        return p

    def free(p):
        live.discard(p)
        real_free(p)

    fake = (_ALLOC(alloc), _FREE(free))
    _KEEP.append(fake)
    llvm.add_symbol("aligned_alloc", ctypes.cast(fake[0], ctypes.c_void_p).value)
    llvm.add_symbol("free", ctypes.cast(fake[1], ctypes.c_void_p).value)
    try:
        yield live
    finally:
        llvm.add_symbol("aligned_alloc", ctypes.cast(libc.aligned_alloc, ctypes.c_void_p).value)
        llvm.add_symbol("free", ctypes.cast(libc.free, ctypes.c_void_p).value)


def _int8_spec_heap(m: int, k: int, n: int) -> int:
    return MatmulSpec(m, k, n, act="int8").heap_bytes


@pytest.mark.parametrize("dtype,refuse", [(DType.F32, "kernel"), (DType.F16, "edge"), (DType.F16, "kernel")])
def test_failed_allocation_raises_and_the_process_goes_on(dtype, refuse):
    """The allocation really fails (the JIT links a refusing aligned_alloc): the kernel returns 1, the node returns its
    failure status, tritc_main returns it, and the runtime raises a MemoryError naming the node and the bytes. What
    was allocated before the failure is freed."""
    M, K, N = 64, 1024, 40
    g = graph16(dtype, "int8", "none", None, False, K=K, N=N)
    kernel = _int8_spec_heap(M, K, N)
    edge = ((4 * M * K + 63) // 64 + (4 * M * N + 63) // 64) * 64
    assert kernel > 0 and (dtype is DType.F32 or edge > 64 * 1024)  # both come from the heap
    size, what = (kernel, "activation quantisation scratch") if refuse == "kernel" else (edge, "f32 scratch for f16 operands")
    model = tritc.compile(g, pipeline="none", shapes={"m": M}, threads=1)
    feeds = feeds16(g, M)
    with heap_refusing({size}) as live:
        with pytest.raises(RunOutOfMemoryError, match=rf"node '%\S+' \(ternary_matmul\): out of memory: could not "
                                                       rf"allocate {size} bytes of {what}") as err:
            model.run(None, feeds)
        assert isinstance(err.value, MemoryError) and isinstance(err.value, RuntimeError)
        assert not live
    # The same shapes compiled again (linked to libc's allocator) still run, in this same process.
    again = tritc.compile(g, pipeline="none", shapes={"m": M}, threads=1)
    got = again.run(None, feeds)[0]
    np.testing.assert_array_equal(got, run(g, feeds)[g.outputs[0].name])


def test_f16_onnx_model_with_ternary_weights_compiles():
    """A whole f16 ONNX model whose weights are exactly ternary: fold-ternary folds them (keeping f16 activations)
    and the default pipeline's output compiles and matches the interpreter on that same graph."""
    rng = np.random.default_rng(3)
    K, H, N = 48, 32, 24
    w1 = (rng.integers(-1, 2, (K, H)) * rng.uniform(0.1, 1, H)).astype(np.float16)
    w2 = (rng.integers(-1, 2, (H, N)) * np.float16(0.25)).astype(np.float16)
    nodes = [oh.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), oh.make_node("Add", ["h", "b1"], ["hb"]),
             oh.make_node("Relu", ["hb"], ["r"]), oh.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = oh.make_graph(nodes, "f16", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, ["batch", K])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, ["batch", N])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                           numpy_helper.from_array(rng.standard_normal(H).astype(np.float16), "b1")])
    model = tritc.compile(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), ternary_include=["fc*"], threads=1)
    ternary = [n for n in model.graph if n.op == "ternary_matmul"]
    assert len(ternary) == 2 and all(n.outputs[0].type.dtype is DType.F16 for n in ternary)
    x = rng.standard_normal((5, K)).astype(np.float16)
    got = model.run(None, {"x": x})[0]
    want = run(model.graph, {"x": x})[model.graph.outputs[0].name]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2 ** -10, atol=2 ** -10)


@pytest.mark.parametrize("bias", [np.float32(0.25), np.array([0.25], np.float32), np.linspace(-1, 1, 3, dtype=np.float32)[:, None]],
                         ids=["scalar", "one", "per_row"])
def test_matmul_plus_constant_compiles_with_the_default_pipeline(bias):
    """matmul(x, W_ternary) + c: a single value becomes the kernel's bias (spread per output); a per-row [M, 1] one
    stays an add after the kernel. Either way the default cpu pipeline compiles it and matches the interpreter."""
    rng = np.random.default_rng(4)
    K, N = 32, 20
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (3, K)))
    w = g.add_weight("w", (rng.integers(-1, 2, (K, N)) * 0.5).astype(np.float32), TensorType(DType.F32, (K, N)))
    h = g.add("matmul", [x, w], [TensorType(DType.F32, (3, N))]).output
    c = g.add_constant(np.asarray(bias), TensorType(DType.F32, np.shape(bias)), "c")
    g.outputs = [g.add("add", [h, c], [TensorType(DType.F32, (3, N))]).output]
    feeds = {"x": rng.standard_normal((3, K)).astype(np.float32)}
    model = tritc.compile(g, ternary_include=["*"], threads=1)
    (t,) = [n for n in model.graph if n.op == "ternary_matmul"]
    per_row = np.ndim(bias) == 2
    assert (len(t.inputs) > 2) is not per_row and any(n.op in ("add", "fused_elementwise") for n in model.graph) is per_row
    np.testing.assert_allclose(model.run(None, feeds)[0], run(g, feeds)[g.outputs[0].name], rtol=1e-5, atol=1e-5)


def test_cli_run_out_of_memory_is_one_line(tmp_path, capsys):
    """`tritc run` when a node cannot allocate: one line naming the node and the bytes, exit 2, no traceback."""
    from tritc import cli

    M, K, N = 64, 1024, 40
    g = graph16(DType.F32, "int8", "none", None, False, K=K, N=N)
    art = tmp_path / "m.tritc"
    tritc.compile(g, pipeline="none", shapes={"m": M}, threads=1).save(art)
    np.save(tmp_path / "x.npy", feeds16(g, M)["x"])
    with heap_refusing({_int8_spec_heap(M, K, N)}):
        code = cli.main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("tritc: error: node ") and "(ternary_matmul): out of memory: could not allocate" in err
    assert not (tmp_path / "out").exists()  # nothing half-written

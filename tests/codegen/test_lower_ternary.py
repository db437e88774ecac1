"""ternary_matmul through the compiled path, epilogues included, against the interpreter; 16-bit float operands;
kernel scratch in the arena (no allocation at run time); an arena that cannot be had."""

from __future__ import annotations

import ctypes
import re
from contextlib import contextmanager

import llvmlite.binding as llvm
import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import numpy_helper

import tritc
from tritc.codegen.llvm.compiler import compile_code, lowered_nodes
from tritc.codegen.llvm.kernels.ternary import MatmulSpec
from tritc.codegen.llvm.kernels.ternary_quant import scratch_bytes
from tritc.codegen.llvm.ops.ternary import ROW_BLOCK
from tritc.codegen.llvm.target import host_target
from tritc.codegen.llvm.weights import layout_weights
from tritc.errors import ResourceLimitError, UnsupportedError
from tritc.ir import DType, Graph, TensorType
from tritc.ir.interpreter import run
from tritc.ir.memory import numbers
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


# ---- scratch in the arena, never allocated; an arena that cannot be had: an exception, never a trap ----------------

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


@pytest.mark.parametrize("dtype", [DType.F32, DType.F16])
@pytest.mark.parametrize("generic", [False, True], ids=["m=64", "generic"])
def test_scratch_is_an_arena_slot_and_nothing_is_allocated(dtype, generic):
    """The int8 kernel's activation quantisation scratch and the f32 copies of 16-bit operands are the node's scratch
    slot in the arena (they came from aligned_alloc above 64 KiB, with a failure status): the LLVM IR calls no
    allocator, the schedule holds a slot as large as they need, live at the node's step only, and the code runs, equal
    to the interpreter, while every aligned_alloc is refused."""
    M, K, N = 64, 1024, 40
    g = graph16(dtype, "int8", "none", None, False, K=K, N=N)
    layout, _ = layout_weights(g)
    spec = compile_code(g, layout, {} if generic else {"m": M}, host_target(), threads=1, keep_ir=True)
    assert "aligned_alloc" not in spec.llvm_ir and "malloc" not in spec.llvm_ir
    assert spec.stats["scratch_slots"] == 1 and '@"tritc_failures" = constant [1 x i8] c"\\00"' in spec.llvm_ir  # none
    (slot,) = spec.schedule.scratch
    quant = scratch_bytes(MatmulSpec(ROW_BLOCK if generic else M, K, N, act="int8"))
    edge = 0 if dtype is DType.F32 else -(-4 * M * K // 64) * 64 + -(-4 * M * N // 64) * 64
    assert spec.schedule.entries[slot].size.evaluate({"m": M}) == -(-quant // 64) * 64 + edge
    assert numbers(spec.graph, spec.schedule, {"m": M}).lower_bound >= quant + edge
    model = tritc.compile(g, pipeline="none", shapes=None if generic else {"m": M}, threads=1)
    feeds = feeds16(g, M)
    with heap_refusing(None) as live:
        got = model.run(None, feeds)[0]
        assert not live
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
    """`tritc run` when the arena cannot be had (a [n, n] intermediate at n = 3 million: 36 TB): one line naming the
    bytes and the sizes, exit 2, no traceback, nothing written. The runtime's arena is the only memory a call asks
    for; the model raises RunOutOfMemoryError (a MemoryError) and keeps working at sizes that fit. Under the default
    budget the call is refused before asking (ResourceLimitError naming max_arena_bytes); the budget raised, the
    allocation itself fails."""
    from tritc import cli
    from tritc.ir import parse_graph

    g = parse_graph("""graph @outer(%x: f32[n,1]) -> (%y: f32[n,1]) {
      %ax = constant [1] : i64[1]
      %t = transpose(%x) {perm = [1, 0]} : f32[1,n]
      %p = mul(%x, %t) : f32[n,n]
      %y = reduce_sum(%p, %ax) {keepdims = 1} : f32[n,1]
      return %y
    }""")
    model = tritc.compile(g, pipeline="none", threads=1)
    n = 3_000_000
    with pytest.raises(ResourceLimitError, match=rf"at n={n} needs an arena .* over the limit max_arena_bytes="):
        model.run(None, {"x": np.ones((n, 1), np.float32)})
    model.max_arena_bytes = 2**62
    with pytest.raises(RunOutOfMemoryError, match=rf"could not allocate (\d+) bytes of arena .* at n={n}$") as err:
        model.run(None, {"x": np.ones((n, 1), np.float32)})
    assert int(re.search(r"allocate (\d+) bytes", str(err.value))[1]) >= 4 * n * n  # %p, and %t beside it
    x = np.arange(5, dtype=np.float32).reshape(5, 1)
    np.testing.assert_array_equal(model.run(None, {"x": x})[0], run(g, {"x": x})["y"])
    art = tmp_path / "m.tritc"
    model.save(art)
    np.save(tmp_path / "x.npy", np.ones((n, 1), np.float32))
    code = cli.main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path / "out"),
                     "--limit", f"max_arena_bytes={2**62}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("tritc: error: out of memory: could not allocate") and f"at n={n}" in err
    assert not (tmp_path / "out").exists()  # nothing half-written

"""Integer safety (HARDENING.md case 22, issue item 4): every integer kernel's int32 accumulator at its proven bound
(docs/INTEGER.md) with all-extreme operands matches an int64 numpy reference exactly, and one step past the bound the
compile is refused with a ResourceLimitError naming the node, K and the bound. Small M and N, large K."""

from __future__ import annotations

import numpy as np
import pytest

import tritc
from tritc.codegen.fpga.config import BYTE_ADDR_BITS, PRESETS
from tritc.codegen.llvm.kernels.ternary import MAX_K
from tritc.errors import ResourceLimitError
from tritc.ir import DType, Graph, TensorType
from tritc.ir.accumulators import TERNARY_INT8_PRODUCTS, Span, int32_k_bound, product_range
from tritc.ir.interpreter import run
from tritc.ir.ternary import TernaryWeight
from tritc.ir.text import parse_graph

from .harness import Sandbox, refuses

# (a dtype, its extreme, b dtype, its extreme) -> the bound of docs/INTEGER.md
COMBOS = {
    "s8xs8": ("i8", -128, "i8", -128, 131071),   # (-128)(-128) = 16384: 2^31 - 1 // 16384
    "u8xs8": ("u8", 255, "i8", -128, 65793),     # 255 * -128 = -32640: 2^31 // 32640
    "u8xu8": ("u8", 255, "u8", 255, 33025),      # 255 * 255 = 65025: 2^31 - 1 // 65025
}
NP = {"i8": np.int8, "u8": np.uint8}


def test_bounds_are_the_documented_ones():
    for a, _, b, _, bound in COMBOS.values():
        ra, rb = (np.iinfo(NP[t]) for t in (a, b))
        assert int32_k_bound(product_range(Span(ra.min, ra.max), Span(rb.min, rb.max))) == bound
    # a zero point moves the span: u8 - 128 is [-128, 127], so u8 x u8 with both zero points 128 is s8 x s8
    assert int32_k_bound(product_range(Span.of((0, 255), (128, 128)), Span.of((0, 255), (128, 128)))) == 131071
    assert int32_k_bound(TERNARY_INT8_PRODUCTS) == 2**24 - 1
    assert int32_k_bound((-16384, 16384), (2**31 - 1, 2**31 - 1)) == 0   # a bias at the limit leaves no room


def _graph(op: str, ta: str, tb: str, k: int) -> str:
    """One integer node with K = k, M = N = 1; a and b are inputs (their dtype's range is the bound's)."""
    if op == "matmul_integer":
        return f"""graph @g(%a: {ta}[1,{k}], %b: {tb}[{k},1]) -> (%y: i32[1,1]) {{
  %y = matmul_integer(%a, %b) : i32[1,1]
  return %y
}}"""
    if op == "qlinear_matmul":
        return f"""graph @g(%a: {ta}[1,{k}], %sa: f32[], %za: {ta}[], %b: {tb}[{k},1], %sb: f32[], %zb: {tb}[], %sy: f32[], \
%zy: i8[]) -> (%y: i8[1,1]) {{
  %y = qlinear_matmul(%a, %sa, %za, %b, %sb, %zb, %sy, %zy) : i8[1,1]
  return %y
}}"""
    if op == "conv_integer":
        return f"""graph @g(%a: {ta}[1,{k},1,1], %b: {tb}[1,{k},1,1]) -> (%y: i32[1,1,1,1]) {{
  %y = conv_integer(%a, %b) : i32[1,1,1,1]
  return %y
}}"""
    return f"""graph @g(%a: {ta}[1,{k},1,1], %sa: f32[], %za: {ta}[], %b: {tb}[1,{k},1,1], %sb: f32[], %zb: {tb}[], \
%sy: f32[], %zy: i8[]) -> (%y: i8[1,1,1,1]) {{
  %y = qlinear_conv(%a, %sa, %za, %b, %sb, %zb, %sy, %zy) : i8[1,1,1,1]
  return %y
}}"""


def _feeds(op: str, ta: str, va: int, tb: str, vb: int, k: int) -> dict[str, np.ndarray]:
    conv = op.endswith("conv") or op == "conv_integer"
    a = np.full((1, k, 1, 1) if conv else (1, k), va, NP[ta])
    b = np.full((1, k, 1, 1) if conv else (k, 1), vb, NP[tb])
    feeds = {"a": a, "b": b}
    if op.startswith("qlinear"):
        # multiplier 2^-24: |acc| < 2^31 lands within [-128, 128]; zero points 0 (the bound assumes the dtype's range
        # for a zero point given as an input, and these are 0)
        feeds.update(sa=np.float32(2.0**-12), sb=np.float32(2.0**-12), sy=np.float32(1.0), za=NP[ta](0), zb=NP[tb](0),
                     zy=np.int8(0))
    return feeds


def _int64_reference(op: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    acc = np.sum(feeds["a"].astype(np.int64).reshape(-1) * feeds["b"].astype(np.int64).reshape(-1))
    if op in ("matmul_integer", "conv_integer"):
        assert -(2**31) <= acc < 2**31, "the case is inside the bound: the exact sum fits int32"
        return np.array(acc, np.int32)
    mult = np.float64(np.float32(np.float32(feeds["sa"] * feeds["sb"]) / feeds["sy"]))
    return np.array(np.clip(np.rint(acc * mult), -128, 127), np.int8)


def _span(ta: str, tb: str, za_is_input: bool) -> int:
    ra, rb = np.iinfo(NP[ta]), np.iinfo(NP[tb])
    # qlinear ops take their zero points as inputs: the bound then allows any zero point of the dtype
    if za_is_input:
        return int32_k_bound(product_range(Span.of((ra.min, ra.max), (ra.min, ra.max)),
                                           Span.of((rb.min, rb.max), (rb.min, rb.max))))
    return int32_k_bound(product_range(Span(ra.min, ra.max), Span(rb.min, rb.max)))


OPS = ["matmul_integer", "conv_integer"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("combo,k", [("s8xs8", 1024), ("s8xs8", 65793), ("s8xs8", 131071), ("s8xs8", 131072),
                                     ("u8xs8", 65793), ("u8xs8", 65794), ("u8xs8", 131071),
                                     ("u8xu8", 33025), ("u8xu8", 33026), ("u8xu8", 65793)])
def test_integer_ops_at_and_past_the_bound(sb: Sandbox, op: str, combo: str, k: int):
    ta, va, tb, vb, bound = COMBOS[combo]
    text = _graph(op, ta, tb, k)
    if k > bound:
        refuses(sb, lambda: tritc.compile(parse_graph(text), pipeline="none"), ResourceLimitError,
                names=["node", op, f"K = {k}", f"K <= {bound}"])
        return
    feeds = _feeds(op, ta, va, tb, vb, k)
    got = tritc.compile(parse_graph(text), pipeline="none").run(None, feeds)[0]
    want = _int64_reference(op, feeds)
    assert got.dtype == want.dtype and got.reshape(()) == want, (got, want)
    np.testing.assert_array_equal(run(parse_graph(text), feeds)["y"].reshape(()), want)  # and the interpreter
    sb.check()


@pytest.mark.parametrize("op", ["qlinear_matmul", "qlinear_conv"])
@pytest.mark.parametrize("combo", ["s8xs8", "u8xs8"])
def test_qlinear_ops_at_and_past_the_bound(sb: Sandbox, op: str, combo: str):
    """Zero points given as inputs may be anything in their dtype: the span of a - za is then twice as wide, and
    the bound a quarter (s8 - s8 in [-255, 255]: 2^31 - 1 // 65025 = 33025). With a constant zero point of 0 the
    bound is the plain dtype product's; both are held exactly."""
    ta, va, tb, vb, _ = COMBOS[combo]
    bound = _span(ta, tb, True)
    for k in (1024, bound):
        feeds = _feeds(op, ta, va, tb, vb, k)
        text = _graph(op, ta, tb, k)
        got = tritc.compile(parse_graph(text), pipeline="none").run(None, feeds)[0]
        assert got.reshape(()) == _int64_reference(op, feeds), (k, got)
    text = _graph(op, ta, tb, bound + 1)
    refuses(sb, lambda: tritc.compile(parse_graph(text), pipeline="none"), ResourceLimitError,
            names=[op, f"K = {bound + 1}", f"K <= {bound}"])
    # constant zero points of 0: the dtype product's bound (131071 for s8 x s8, case 22's K)
    _, _, _, _, plain = COMBOS[combo]
    for k, ok in ((plain, True), (plain + 1, False)):
        text = _with_constant_zero_points(_graph(op, ta, tb, k), ta, tb)
        if ok:
            feeds = {n: v for n, v in _feeds(op, ta, va, tb, vb, k).items() if n not in ("za", "zb")}
            got = tritc.compile(parse_graph(text), pipeline="none").run(None, feeds)[0]
            assert got.reshape(()) == _int64_reference(op, {**feeds, "za": 0, "zb": 0})
        else:
            refuses(sb, lambda t=text: tritc.compile(parse_graph(t), pipeline="none"), ResourceLimitError,
                    names=[op, f"K = {k}", f"K <= {plain}"])


def _with_constant_zero_points(text: str, ta: str, tb: str) -> str:
    """The graph with %za and %zb as constants 0 instead of inputs."""
    head, body = text.replace(f"%za: {ta}[], ", "").replace(f"%zb: {tb}[], ", "").split("{\n", 1)
    return f"{head}{{\n  %za = constant 0 : {ta}[]\n  %zb = constant 0 : {tb}[]\n{body}"


# ---- ternary layers, int8 activations -----------------------------------------------------------------------


def _ternary_graph(k: int, act_max: float = 128.0) -> tuple[Graph, np.ndarray]:
    """y[1, 2] = ternary_matmul(x[1, k]) with column 0 all +1 trits and column 1 all -1 (per-channel scales)."""
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (1, k)))
    trits = np.empty((k, 2), np.int8)
    trits[:, 0], trits[:, 1] = 1, -1
    scale = np.array([0.5, 0.25], np.float32)
    w = g.add_weight("w", TernaryWeight(trits, scale), TensorType(DType.T2, (k, 2)), attrs={"scale": "per_channel"})
    node = g.add("ternary_matmul", [x, w], [TensorType(DType.F32, (1, 2))],
                 {"act": "int8", "act_max": act_max}, output_names=["y"])
    g.outputs = [node.output]
    return g, scale


def _ternary_int64_reference(x: np.ndarray, scale: np.ndarray, act_max: float) -> np.ndarray:
    """The exact int64 sums, then the interpreter's float32 rescale."""
    absmax = np.float32(np.max(np.abs(x)))
    s = np.float32(np.float32(act_max) / max(absmax, np.float32(1e-5)))
    q = np.clip(np.rint(x * s), -128, 127).astype(np.int64)
    acc = np.array([q.sum(), -q.sum()], np.int64)
    assert np.all(np.abs(acc) < 2**31)
    return (acc.astype(np.float32) * scale / s).reshape(1, 2)


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_ternary_cpu_kernel_at_its_bound(sign: float):
    """K = MAX_K (2^22) with q = -128 (act_max 128) or +128 -> 127 everywhere: the largest sums the kernel allows."""
    g, scale = _ternary_graph(MAX_K)
    x = np.full((1, MAX_K), sign, np.float32)
    got = tritc.compile(g, pipeline="none", threads=1).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, _ternary_int64_reference(x, scale, 128.0))


def test_ternary_cpu_kernel_past_its_bound(sb: Sandbox):
    g, _ = _ternary_graph(MAX_K + 1)
    refuses(sb, lambda: tritc.compile(g, pipeline="none", threads=1), ResourceLimitError,
            names=["ternary_matmul", f"K = {MAX_K + 16}", f"K <= {MAX_K}"])


def test_fpga_matrix_unit_cannot_reach_the_bound():
    """The matrix unit sums int8 x trit into int32: |acc| <= 128 K. A row of K int8 activations lives in half of ACT,
    whose byte address has BYTE_ADDR_BITS bits, so K <= 2^21 and |acc| <= 2^28 on every configuration the config
    validation accepts; the lowering's check (lower_gemm / lower_conv) is therefore never the one that refuses."""
    largest_k = (1 << BYTE_ADDR_BITS) // 2
    assert largest_k <= int32_k_bound(TERNARY_INT8_PRODUCTS)
    for cfg in PRESETS.values():
        assert cfg.activation_buffer_bytes <= 1 << BYTE_ADDR_BITS


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_fpga_simulator_extremes_at_the_largest_k(sign: float):
    """The largest K the edge configuration runs on the matrix unit (a row of K int8 in half of ACT, 2K+1 fp32 words
    in a quarter of VEC), all-extreme activations and trits: the simulator equals the int64 reference bit for bit."""
    from tests.codegen.fpga.test_lower import run_device
    from tritc.codegen.fpga.lower import device_support

    k = 16383
    past, _ = _ternary_graph(k + 1)
    assert "does not fit" in str(device_support(next(n for n in past if n.op == "ternary_matmul"), past, PRESETS["edge"]))
    g, scale = _ternary_graph(k)
    x = np.full((1, k), sign, np.float32)
    got, _, _ = run_device(g, {"x": x}, "edge")
    np.testing.assert_array_equal(got["y"], _ternary_int64_reference(x, scale, 128.0))


# ---- through the ONNX frontend, weights as initializers: the bound of the weights' actual values ----------------


def _onnx_case(op: str, k: int, a_fill: int, a_type: int, b_fill: int):
    """Case 22's models: an input a of K extreme values, a constant weight of K x 2 equal int8 values."""
    import onnx.helper as oh
    from onnx import TensorProto

    from .common import onnx_model

    v = oh.make_tensor_value_info
    conv = op == "ConvInteger"
    b = np.full((2, k, 1, 1) if conv else (k, 2), b_fill, np.int8)
    ins = [v("a", a_type, [1, k, 1, 1] if conv else [1, k])]
    if op == "QLinearMatMul":
        za_t = np.uint8 if a_type == TensorProto.UINT8 else np.int8
        weights = {"b": b, "sa": np.array(2.0**-12, np.float32), "za": np.array(0, za_t),
                   "sb": np.array(2.0**-12, np.float32), "zb": np.array(0, np.int8), "sy": np.array(1.0, np.float32),
                   "zy": np.array(0, np.int8)}
        node = oh.make_node(op, ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], name="q")
        return onnx_model("q", [node], ins, [v("y", TensorProto.INT8, [1, 2])], weights), b
    node = oh.make_node(op, ["a", "b"], ["y"], name="q")
    out = v("y", TensorProto.INT32, [1, 2, 1, 1] if conv else [1, 2])
    return onnx_model("q", [node], ins, [out], {"b": b}), b


@pytest.mark.parametrize("op", ["MatMulInteger", "QLinearMatMul", "ConvInteger"])
@pytest.mark.parametrize("k", [1024, 65793, 131071, 131072])
@pytest.mark.parametrize("value", ["s8_max", "s8_min", "u8_255"])
def test_case_22_through_onnx(sb: Sandbox, op: str, k: int, value: str):
    """Case 22 as written: all -128 / 127 / u8 255 activations against constant int8 weights of -128 or 127. The
    bound follows the weights' actual values (a constant of 127s allows more than the int8 range would), so each K
    is either exact against int64 numpy or refused naming the node, K and that bound."""
    from onnx import TensorProto

    a_type, a_fill = (TensorProto.UINT8, 255) if value == "u8_255" else (TensorProto.INT8, -128 if value == "s8_min" else 127)
    b_fill = -128 if value == "s8_min" else 127
    model, b = _onnx_case(op, k, a_fill, a_type, b_fill)
    a_span = Span(0, 255) if a_type == TensorProto.UINT8 else Span(-128, 127)
    # QLinearMatMul's zero points are constants 0 here, so its spans are the plain ones too
    bound = int32_k_bound(product_range(a_span, Span(b_fill, b_fill)))
    if k > bound:
        refuses(sb, lambda: tritc.compile(model, threads=1), ResourceLimitError,
                names=["node 'q'", f"K = {k}", f"K <= {bound}"])
        return
    a = np.full((1, k, 1, 1) if op == "ConvInteger" else (1, k), a_fill, np.uint8 if value == "u8_255" else np.int8)
    got = tritc.compile(model, threads=1).run(None, {"a": a})[0].reshape(-1)
    acc = int(a_fill) * int(b_fill) * k
    if op == "QLinearMatMul":
        want = [int(np.clip(np.rint(acc * 2.0**-24), -128, 127))] * 2
    else:
        assert -(2**31) <= acc < 2**31
        want = [acc, acc]
    assert got.tolist() == want, (got, want)
    sb.check()

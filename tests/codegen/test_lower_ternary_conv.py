"""ternary_conv through the compiled path against the interpreter: int8 mode bit for bit, float mode within 1e-5.

Float mode sums in the kernel's order (the interpreter's numpy matmul sums in another), so results differ by
float32 rounding: |got - want| <= 1e-5 * |want| + 1e-5 * max|want| (a sum of K terms cancels to a small value).
Strides, pads, dilations, auto_pad, groups (aligned on 16 output channels or not, depthwise), 1x1 and 3x3 and
1-D kernels, batch > 1, every scale granularity, with and without bias.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tritc
from tritc.ir import DType, Graph, TensorType
from tritc.ir.interpreter import run
from tritc.ir.ops.cnn import conv
from tritc.ir.ternary import TernaryWeight

FLOAT_TOL = 1e-5


def ternary_weight(kg: int, m: int, granularity: str, rng: np.random.Generator) -> TernaryWeight:
    trits = rng.integers(-1, 2, (kg, m)).astype(np.int8)
    if granularity == "per_tensor":
        return TernaryWeight(trits, np.array(0.7, np.float32))
    if granularity == "per_channel":
        return TernaryWeight(trits, rng.uniform(0.1, 2, m).astype(np.float32))
    return TernaryWeight(trits, rng.uniform(0.1, 2, (kg // 16, m)).astype(np.float32), 16)


def graph(x_shape, m, kernel, attrs, act, granularity="per_channel", bias=True, seed=0) -> tuple[Graph, TernaryWeight]:
    rng = np.random.default_rng(seed)
    c, groups = x_shape[1], attrs.get("group", 1)
    kg = c // groups * math.prod(kernel)
    w = ternary_weight(kg, m, granularity, rng)
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("n", *x_shape[1:])))
    ins = [x, g.add_weight("w", w, TensorType(DType.T2, (kg, m)), attrs={"scale": w.granularity})]
    if bias:
        ins.append(g.add_weight("b", rng.standard_normal(m).astype(np.float32), TensorType(DType.F32, (m,))))
    node = g.add("ternary_conv", ins, [TensorType(DType.F32, None)], {"act": act, "kernel_shape": list(kernel), **attrs})
    g.outputs = [node.output]
    from tritc.passes import PassManager, parse_pass_list

    PassManager(parse_pass_list("infer-shapes")).run(g)
    return g, w


CASES = {
    # name: (input [N, C, spatial...], M, kernel, attrs)
    "3x3_pad1": ((2, 8, 7, 6), 24, (3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3_stride2_asym_pads": ((3, 5, 9, 8), 7, (3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 1]}),
    "3x3_dilation2": ((1, 4, 9, 9), 16, (3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "1x1": ((2, 12, 5, 5), 20, (1, 1), {}),
    "1x1_stride2": ((2, 6, 6, 5), 3, (1, 1), {"strides": [2, 2]}),
    "same_upper": ((2, 3, 5, 7), 4, (3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    "groups_aligned": ((2, 8, 6, 6), 32, (3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),  # 16 outputs a group
    "groups_unaligned": ((2, 6, 5, 5), 9, (3, 3), {"group": 3, "pads": [1, 0, 1, 0]}),
    "depthwise": ((2, 8, 6, 6), 8, (3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "1d": ((2, 4, 11), 6, (5,), {"pads": [2, 2], "strides": [3]}),
    # K = C / group * prod(kernel) a multiple of 16, for scales per group of 16 rows along K
    "3x3_k144": ((2, 16, 6, 5), 20, (3, 3), {"pads": [1, 1, 1, 1]}),
    "groups_k144": ((2, 32, 5, 5), 32, (3, 3), {"group": 2, "strides": [2, 2]}),
    "groups_k16_unaligned": ((1, 48, 4, 4), 9, (1, 1), {"group": 3}),
}
K16 = ["3x3_k144", "groups_k144", "groups_k16_unaligned"]


def check(case: str, act: str, granularity: str = "per_channel", bias: bool = True, threads: int | None = None) -> None:
    x_shape, m, kernel, attrs = CASES[case]
    g, _ = graph(x_shape, m, kernel, attrs, act, granularity, bias)
    model = tritc.compile(g, pipeline="none", shapes={"n": x_shape[0]}, threads=threads)
    rng = np.random.default_rng(1)
    for n in sorted({1, x_shape[0]}):
        feeds = {"x": (rng.standard_normal((n, *x_shape[1:])) * 2).astype(np.float32)}
        got = model.run(None, feeds)[0]
        want = run(g, feeds)[g.outputs[0].name]
        assert got.shape == want.shape
        if act == "int8":
            np.testing.assert_array_equal(got, want)  # exact int32 sums and the same float32 rescale
        else:
            np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL * float(np.abs(want).max()))
    # The compiled graph still computes the conv from the runtime input (nothing folded it to a constant).
    for spec in model.specializations:
        assert spec.graph is not None and [nd.op for nd in spec.graph] == ["weight"] * (2 if bias else 1) + ["ternary_conv"]


@pytest.mark.parametrize("act", ["float", "int8"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_matches_interpreter(case, act):
    check(case, act)


@pytest.mark.parametrize("act", ["float", "int8"])
@pytest.mark.parametrize("case", ["3x3_pad1", "groups_unaligned", "3x3_k144"])
def test_threaded_kernel(case, act):
    check(case, act, "per_group" if case in K16 else "per_channel", threads=2)


@pytest.mark.parametrize("act", ["float", "int8"])
@pytest.mark.parametrize("case", ["3x3_pad1", "groups_aligned", "groups_unaligned", "1x1"])
def test_per_tensor_scale_without_bias(case, act):
    check(case, act, "per_tensor", bias=False)


@pytest.mark.parametrize("act", ["float", "int8"])
@pytest.mark.parametrize("case", K16)
def test_per_group_scales(case, act):
    check(case, act, "per_group")


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_mode_is_the_conv_of_the_dequantised_weight(case):
    """The interpreter's definition against ONNX Conv semantics: W_onnx[m, c, k] = trits[(c, k), m] * scale[m]."""
    x_shape, m, kernel, attrs = CASES[case]
    g, w = graph(x_shape, m, kernel, attrs, "float", bias=False)
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    w_onnx = w.dequantize().T.reshape(m, x_shape[1] // attrs.get("group", 1), *kernel)
    want = conv(x, w_onnx, None, group=attrs.get("group", 1), kernel_shape=list(kernel),
                **{k: v for k, v in attrs.items() if k != "group"})
    np.testing.assert_allclose(run(g, {"x": x})[g.outputs[0].name], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["float", "int8"])
def test_scratch_is_in_the_arena(act):
    """The im2col matrix, the quantised images and the kernel's result rows are the node's scratch slot in the arena
    (they were one aligned_alloc per call, with a failure status): the code runs, equal to the interpreter, while the
    JIT links an aligned_alloc that refuses everything, and the slot is live at the node's step only."""
    from tritc.ir.memory import schedule_buffers

    from .test_lower_ternary import heap_refusing

    x_shape, m, kernel, attrs = CASES["3x3_pad1"]
    g, _ = graph(x_shape, m, kernel, attrs, act)
    feeds = {"x": np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)}
    model = tritc.compile(g, pipeline="none", shapes={"n": x_shape[0]}, threads=1)  # linked at its first run: below
    with heap_refusing(None) as live:
        got = model.run(None, feeds)[0]
        assert not live
    want = run(g, feeds)[g.outputs[0].name]
    np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL * float(np.abs(want).max()))
    spec = model.specializations[-1]
    (slot,) = spec.schedule.scratch
    (buf,) = [b for b in schedule_buffers(spec.graph, spec.schedule) if b.root == slot]
    assert buf.start == buf.end and buf.size.evaluate({}) > 4 * int(np.prod(x_shape))

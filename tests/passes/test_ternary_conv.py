"""fold-ternary on convolutions: exactly ternary Conv weights (float, or through a QONNX Quant) become ternary_conv in
exact mode, any float Conv weight in absmean; the graph computes what it computed (exact folds) and the policy is
the linear layers' (a classifier's last layer is its head in absmean). fuse-bitlinear turns a per-image absmax int8
quantisation in front of a ternary_conv into its int8 mode.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritc.frontend.onnx import import_model
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run

from .ternary_helpers import run_pipeline

RNG = np.random.default_rng(11)


def ternary_conv_weight(m: int, c: int, k: int, per_channel: bool = True) -> np.ndarray:
    trits = RNG.choice(np.array([-1, 0, 1], np.float32), size=(m, c, k, k))
    scale = RNG.uniform(0.1, 0.5, (m, 1, 1, 1)) if per_channel else np.full((1, 1, 1, 1), 0.25)
    return (trits * scale).astype(np.float32)


def cnn(weights: dict[str, np.ndarray], quant: str = "", act_quant: bool = False, groups: int = 1,
        act_axes: tuple[int, ...] = (1, 2, 3)) -> Graph:
    """x[N,1,8,8] -> conv1 3x3 pad 1 -> relu -> conv2 3x3 stride 2 (group `groups`) -> relu -> flatten -> fc -> logits.

    quant: "conv1" puts a QONNX 2-bit narrow Quant in front of conv1's float weight. act_quant: BitNet's absmax int8
    quantisation of every conv input, per image (the max over channels and pixels)."""
    nodes, inits = [], []

    def const(name: str, v) -> str:
        inits.append(numpy_helper.from_array(np.asarray(v), name))
        return name

    def node(op: str, ins: list[str], out: str, domain: str = "", **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, domain=domain, **attrs))
        return out

    def quantise(x: str, name: str) -> str:
        amax = node("ReduceMax", [node("Abs", [x], f"{name}.abs")], f"{name}.amax", axes=list(act_axes), keepdims=1)
        s = node("Div", [const(f"{name}.qmax", np.float32(127)), node("Clip", [amax, const(f"{name}.eps", np.float32(1e-5))],
                                                                          f"{name}.clamp")], f"{name}.s")
        q = node("Clip", [node("Round", [node("Mul", [x, s], f"{name}.xs")], f"{name}.round"),
                          const(f"{name}.lo", np.float32(-128)), const(f"{name}.hi", np.float32(127))], f"{name}.q")
        return node("Div", [q, s], f"{name}.dq")

    w1 = const("conv1.weight", weights["conv1"])
    if quant == "conv1":
        w1 = node("Quant", [w1, const("conv1.scale", np.float32(0.25)), const("conv1.zp", np.float32(0)),
                            const("conv1.bits", np.float32(2))], "conv1.quant", domain="qonnx.custom_op.general",
                  signed=1, narrow=1, rounding_mode="ROUND")
    x = quantise("x", "conv1.act") if act_quant else "x"
    h = node("Relu", [node("Conv", [x, w1, const("conv1.bias", RNG.standard_normal(8).astype(np.float32))], "conv1",
                           pads=[1, 1, 1, 1])], "relu1")
    if act_quant:
        h = quantise(h, "conv2.act")
    h = node("Relu", [node("Conv", [h, const("conv2.weight", weights["conv2"])], "conv2", strides=[2, 2], group=groups)],
             "relu2")
    h = node("Flatten", [h], "flat")
    logits = node("Gemm", [h, const("fc.weight", weights["fc"]), const("fc.bias", np.zeros(10, np.float32))], "logits",
                  transB=1)
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("qonnx.custom_op.general", 1)]
    return import_model(helper.make_model(graph, opset_imports=opsets, ir_version=10))


def weights(exact: bool = True, groups: int = 1) -> dict[str, np.ndarray]:
    fc = (RNG.choice(np.array([-1, 0, 1], np.float32), (10, 16 * 3 * 3)) * np.float32(0.125)).astype(np.float32)
    if exact:
        return {"conv1": ternary_conv_weight(8, 1, 3), "conv2": ternary_conv_weight(16, 8 // groups, 3, False), "fc": fc}
    return {"conv1": RNG.standard_normal((8, 1, 3, 3)).astype(np.float32),
            "conv2": RNG.standard_normal((16, 8 // groups, 3, 3)).astype(np.float32), "fc": fc}


def images(n: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(5).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("groups", [1, 2])
def test_exact_folds_every_conv_and_keeps_the_results(groups):
    g = cnn(weights(groups=groups), groups=groups)
    want = run(g.copy(), images())["logits"]
    report = run_pipeline(g)
    assert [lay.op for lay in report.layers] == ["conv", "conv", "matmul"]
    assert all(lay.folded and lay.exact for lay in report.layers), report.table()
    assert [lay.granularity for lay in report.layers[:2]] == ["per_channel", "per_tensor"]
    assert report.layers[0].shape == (9, 8) and report.layers[1].shape == (8 // groups * 9, 16)  # im2col matrices
    convs = [n for n in g if n.op == "ternary_conv"]
    assert len(convs) == 2 and not [n for n in g if n.op == "conv"]
    assert convs[1].attrs["group"] == groups and convs[1].attrs["strides"] == [2, 2] and convs[0].attrs["act"] == "float"
    np.testing.assert_allclose(run(g, images())["logits"], want, rtol=1e-5, atol=1e-5)


def test_a_conv_weight_through_a_qonnx_quant_folds_exactly():
    w = weights()
    w["conv1"] = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)  # Quant makes it 0.25 * {-1, 0, 1}
    g = cnn(w, quant="conv1")
    want = run(g.copy(), images())["logits"]
    report = run_pipeline(g)
    # (fold-constants evaluates the Quant of a constant first: the weight reaches fold-ternary as 0.25 * trits)
    assert (report.layers[0].exact, report.layers[0].granularity) == (True, "per_tensor")
    assert not [n for n in g if n.op in ("quant", "conv")]
    np.testing.assert_allclose(run(g, images())["logits"], want, rtol=1e-5, atol=1e-5)


def test_absmean_folds_float_convs_and_keeps_the_classifier_head():
    g = cnn(weights(exact=False))
    report = run_pipeline(g, mode="absmean", granularity="per_channel")
    conv1, conv2, fc = report.layers
    assert conv1.mode == conv2.mode == "absmean" and not conv1.exact and 0.1 < conv2.weight_rel_error < 1
    assert fc.note.startswith("output head: kept in float in absmean mode"), report.table()
    g = cnn(weights(exact=False))
    report = run_pipeline(g, mode="exact")
    assert [lay.folded for lay in report.layers] == [False, False, True]
    assert report.layers[0].note.startswith("not exactly ternary: ")


def test_per_image_activation_quantisation_makes_an_int8_ternary_conv():
    g = cnn(weights(), act_quant=True)
    want = run(g.copy(), images())["logits"]
    run_pipeline(g)
    convs = [n for n in g if n.op == "ternary_conv"]
    assert [n.attrs["act"] for n in convs] == ["int8", "int8"]
    assert not [n for n in g if n.op in ("round", "reduce_max")]  # the quantisers are gone
    got = run(g, images())["logits"]
    # The same codes; only the order of the float rescale differs from the graph's (q / s) then conv.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_last_axis_quantisation_is_not_a_conv_one():
    # absmax over the last axis only (a per-row scale) varies inside a window: it cannot be one rescale.
    g = cnn(weights(), act_quant=True, act_axes=(-1,))
    run_pipeline(g)
    assert [n.attrs["act"] for n in g if n.op == "ternary_conv"] == ["float", "float"]


"""ternary_matmul through the compiled path, epilogues included, against the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import tritc
from tritc.ir import DType, Graph, TensorType
from tritc.ir.interpreter import run
from tritc.ir.ternary import TernaryWeight


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

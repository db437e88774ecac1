"""The graph generator of the differential fuzzer: a seed -> a valid ONNX model and its feeds.

NNSmith-style: the graph grows op by op (builder.py) from a pool of values whose dtype and shape are known, and
each op is chosen among those whose operands the pool can supply (broadcast-compatible shapes, the right dtypes),
so that nearly every model is valid ONNX over ops tritc supports. Dim 0 of the inputs may be the symbol N, fed at
several sizes; inputs and weights may hold NaN, +-Inf, -0.0 and denormals (the rules that keep the comparison
meaningful are in builder.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from .builder import EDGE_SIZES, FLOATS, ONNX_TYPE, OPS, SYMBOL, Builder, Dim, Shape, Val

GENERATOR_VERSION = 5
OPSET = 18
SYMBOL_SIZES = (1, 3)

@dataclass
class Case:
    """A generated model, its feeds (one dict per size of the symbol), whether it has ternary weights (then the
    FPGA target is checked too), and the compile options."""

    seed: int
    model: onnx.ModelProto
    feeds: list[dict[str, np.ndarray]]
    ternary: bool
    ops: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # how tritc compiles it: threads, reload (save and load first)


def _input_shape(rng: np.random.Generator, symbolic: bool) -> Shape:
    if rng.random() < 0.25:  # an image, for Conv and the pools
        return (SYMBOL if symbolic else int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(2, 7)),
                int(rng.integers(2, 7)))
    rank = int(rng.integers(1, 4))
    dims: list[Dim] = [int(rng.integers(1, 6)) for _ in range(rank)]
    if rng.random() < 0.35:  # one wide dim, the last most often (the K of a MatMul)
        dims[-1 if rng.random() < 0.7 else int(rng.integers(rank))] = int(rng.choice(EDGE_SIZES))
    if symbolic:
        dims[0] = SYMBOL
    return tuple(dims)


def _value_info(v: Val) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, ONNX_TYPE[v.dtype], list(v.shape))


def generate(seed: int, max_ops: int = 12) -> Case:
    """The case of a seed: the same model and feeds for the same seed and GENERATOR_VERSION."""
    rng = np.random.default_rng(seed)
    b = Builder(rng)
    symbolic = bool(rng.random() < 0.5)
    for i in range(int(rng.integers(1, 3))):
        dtype = "f32" if i == 0 or rng.random() < 0.7 else str(rng.choice(["i64", "bool", "f16"]))
        special = dtype in FLOATS and bool(rng.random() < 0.3)
        v = Val(f"in{i}", dtype, _input_shape(rng, symbolic) if i == 0 or rng.random() < 0.5 else b.pool[0].shape,
                not special)
        b.inputs.append((v, special))
        b.pool.append(v)
        b.vals[v.name] = v
    names = list(OPS)
    weights = np.array([OPS[n][0] for n in names])
    target = int(rng.integers(1, max_ops + 1))
    tries = 0
    while len(b.ops) < target and tries < 6 * max_ops:
        tries += 1
        OPS[names[int(rng.choice(len(names), p=weights / weights.sum()))]][1](b)
    produced = [v for v in b.pool if v not in [x for x, _ in b.inputs]]
    if not produced:
        b.emit("Identity", [b.pool[0].name], b.pool[0].dtype, b.pool[0].shape, b.pool[0].tame)
        produced = [b.pool[-1]]
    outs = [produced[-1]]
    for v in produced[:-1]:
        if rng.random() < 0.15:
            outs.append(v)
    graph = helper.make_graph(b.nodes, f"fuzz{seed}", [_value_info(v) for v, _ in b.inputs],
                              [_value_info(v) for v in outs], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tritc.fuzz")
    model.ir_version = 9
    sizes = SYMBOL_SIZES if symbolic else (None,)
    feeds = []
    for n in sizes:
        feed = {}
        for v, special in b.inputs:
            shape = tuple(n if isinstance(d, str) else d for d in v.shape)
            feed[v.name] = b.data(v.dtype, shape, special)
        feeds.append(feed)
    options = {"threads": 2 if rng.random() < 0.25 else 1, "reload": bool(rng.random() < 0.2)}
    return Case(seed, model, feeds, b.ternary, b.ops, options)

"""Shared by the codegen tests: one graph holding many single-node cases (one node per case, every result a graph
output), built from input arrays and constants, so one compilation checks them all against the interpreter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import tritc
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run
from tritc.ir.ops import OPS, InferContext
from tritc.ir.types import DType, TensorType
from tritc.runtime.model import CompiledModel


@dataclass
class Const:
    """An operand that is a constant of the graph (a weight, shape, pads, axes, ...) rather than a graph input."""

    a: np.ndarray


@dataclass
class Case:
    """One node: its op, operands (arrays become graph inputs, Const constants, None an absent optional input)."""

    op: str
    inputs: list[Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    n_out: int = 1


def tensor_type(a: np.ndarray) -> TensorType:
    return TensorType(DType.from_numpy(a.dtype), tuple(a.shape))


def build(cases: list[Case]) -> tuple[Graph, dict[str, np.ndarray]]:
    """The graph of all cases and its feeds: case i's operand k is input x{i}_{k} or constant c{i}_{k}; its
    outputs are y{i}_{j}."""
    g = Graph("t")
    feeds: dict[str, np.ndarray] = {}
    for ci, case in enumerate(cases):
        vals = []
        for k, x in enumerate(case.inputs):
            if x is None:
                vals.append(None)
            elif isinstance(x, Const):
                vals.append(g.add_constant(x.a, tensor_type(x.a), f"c{ci}_{k}"))
            else:
                feeds[f"x{ci}_{k}"] = x
                vals.append(g.add_input(f"x{ci}_{k}", tensor_type(x)))
        types = [None if v is None else v.type for v in vals]
        consts = [x.a if isinstance(x, Const) else None for x in case.inputs]
        opdef = OPS[case.op]
        out_types = opdef.infer(InferContext(case.op, types, opdef.with_defaults(case.attrs), consts, case.n_out))
        node = g.add(case.op, vals, out_types, case.attrs, output_names=[f"y{ci}_{j}" for j in range(case.n_out)])
        g.outputs.extend(node.outputs)
    return g, feeds


def interpret_and_compile(cases: list[Case], **options: Any) -> tuple[CompiledModel, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the graph of all cases in the interpreter and compiled without passes (`options` go to tritc.compile):
    the compiled model, the interpreter's results and the compiled ones, by output name."""
    g, feeds = build(cases)
    expected = run(g, feeds)
    model = tritc.compile(g, pipeline="none", **options)
    got = dict(zip([o.name for o in model.outputs], model.run(None, feeds)))
    return model, expected, got


def case_of(cases: list[Case], output: str) -> Case:
    """The case whose node computes output y{i}_{j}."""
    return cases[int(output[1:].split("_")[0])]

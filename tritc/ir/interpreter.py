"""The reference interpreter: runs a Graph on numpy arrays, one node at a time.

It is the executable specification of the IR. The meaning of each op is the numpy function
registered beside its OpDef in `tritc.ir.ops` (one file per op family); this module feeds those
functions, checks every result against the node's declared type (dtype exactly, static dims
exactly, each symbolic dim bound once and then held to that size) and frees each value after
its last use. Every pass is checked by running this before and after it, every backend by
comparing with it, and this itself against onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import VerificationError
from . import dims
from .graph import Graph, Node, Value
from .ops import OPS
from .types import DType, TensorType, format_type


class Interpreter:
    """Runs `graph`; `check_types` holds every result to its declared type."""

    def __init__(self, graph: Graph, check_types: bool = True):
        self.graph = graph
        self.check_types = check_types
        self.bindings: dict[str, int] = {}

    # ---- whole graph --------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, given one array per graph input."""
        g = self.graph
        self.bindings = {}
        env: dict[int, Any] = {}
        for v in g.inputs:
            env[id(v)] = self._check_feed(v, feeds)
        extra = set(feeds) - {v.name for v in g.inputs}
        if extra:
            raise ValueError(f"unknown input name(s): {', '.join(sorted(extra))}; "
                             f"the graph takes {', '.join(v.name for v in g.inputs) or 'no inputs'}")
        last_use = self._last_uses()
        keep = {id(v) for v in g.outputs}
        for step, node in enumerate(g):
            args = [None if v is None else env[id(v)] for v in node.inputs]
            results = self.run_node(node, args)
            for v, r in zip(node.outputs, results):
                env[id(v)] = r
            for v in node.inputs:
                if v is not None and last_use.get(id(v)) == step and id(v) not in keep:
                    env.pop(id(v), None)
        return {v.name: env[id(v)] for v in g.outputs}

    def _last_uses(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for step, node in enumerate(self.graph):
            for v in node.inputs:
                if v is not None:
                    last[id(v)] = step
        return last

    def _check_feed(self, v: Value, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        if v.name not in feeds:
            raise ValueError(f"missing input '{v.name}' ({format_type(v.type)})")
        a = np.asarray(feeds[v.name])
        if a.dtype != v.type.dtype.np_dtype:
            raise TypeError(f"input '{v.name}' has dtype {a.dtype}, expected {v.type.dtype.np_dtype} ({format_type(v.type)})")
        problem = self._bind(v.type, a.shape)
        if problem:
            raise ValueError(f"input '{v.name}' has shape {list(a.shape)}, expected {format_type(v.type)}: {problem}")
        return a

    def _bind(self, t: TensorType, shape: Sequence[int]) -> str | None:
        """Match a concrete shape against a type, binding symbols; a message if they clash."""
        if t.shape is None:
            return None
        if len(t.shape) != len(shape):
            return f"rank {len(shape)} instead of {len(t.shape)}"
        for i, (d, n) in enumerate(zip(t.shape, shape)):
            if d is None:
                continue
            if isinstance(d, int):
                if d != n:
                    return f"dim {i} is {n}, not {d}"
                continue
            value = dims.evaluate(d, self.bindings)
            if value is None:
                if d in dims.symbols(d) and dims.symbols(d) == {d}:
                    self.bindings[d] = int(n)
                continue  # an expression over unbound symbols: nothing to check yet
            if value != n:
                return f"dim {i} ('{d}') is {n}, but '{d}' is {value} elsewhere"
        return None

    # ---- one node -----------------------------------------------------------------------------

    def run_node(self, node: Node, args: list[Any]) -> list[Any]:
        """The results of one node given its operand arrays (None for omitted optionals)."""
        if node.op == "weight":
            results: Any = [self.graph.weights[node.attrs["ref"]]]
        else:
            opdef = OPS[node.op]
            kwargs = opdef.with_defaults(node.attrs)
            if "out_types" in opdef.wants:
                kwargs["out_types"] = [v.type for v in node.outputs]
            if "num_outputs" in opdef.wants:
                kwargs["num_outputs"] = len(node.outputs)
            while args and args[-1] is None and len(args) > opdef.min_inputs():
                args = args[:-1]
            try:
                results = opdef.compute(*args, **kwargs)
            except Exception as e:
                e.add_note(f"while running node {node.describe()}")
                raise
            if not isinstance(results, (tuple, list)):
                results = [results]
        if len(results) < len(node.outputs):
            raise VerificationError(f"node {node.describe()} computed {len(results)} results, the node has {len(node.outputs)}")
        results = list(results[: len(node.outputs)])
        if self.check_types:
            for v, r in zip(node.outputs, results):
                self._check_result(node, v, r)
        return results

    def _check_result(self, node: Node, v: Value, r: Any) -> None:
        if not isinstance(r, np.ndarray):
            if v.type.dtype is DType.T2:
                return  # ternary weight objects carry their own checked layout
            raise VerificationError(f"node {node.describe()} produced {type(r).__name__} for %{v.name}, not an array")
        if r.dtype != v.type.dtype.np_dtype:
            raise VerificationError(f"node {node.describe()} produced {r.dtype} for %{v.name}, declared {format_type(v.type)}")
        problem = self._bind(v.type, r.shape)
        if problem:
            raise VerificationError(f"node {node.describe()} produced shape {list(r.shape)} for %{v.name}, "
                                    f"declared {format_type(v.type)}: {problem}")


def run(graph: Graph, feeds: Mapping[str, np.ndarray], check_types: bool = True) -> dict[str, np.ndarray]:
    """Run `graph` on `feeds` in the reference interpreter; outputs by name."""
    return Interpreter(graph, check_types).run(feeds)

"""Adapters that turn an older version of an ONNX op into the form the IR op has today.

The IR op of an ONNX op follows the newest version of it. A node of an older version whose
meaning or signature differs (an attribute that became an input, a changed default, a changed
axis rule) is rewritten here, before it becomes an IR node. Each adapter is registered for
(op type, since_version) pairs; versions listed in the OpDef's `since` need no adapter.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.graph import Graph, Value
from ...ir.types import DType, TensorType


@dataclass
class ImportNode:
    """An ONNX node on its way into the IR: adapters edit `op`, `inputs` and `attrs` in place."""

    op: str  # the IR op it will become (an adapter may change it)
    inputs: list[Value | None]
    attrs: dict[str, Any]
    name: str | None
    onnx_type: str
    version: int  # the resolved since_version
    graph: Graph = field(repr=False)
    extra_nodes: int = 0

    def const(self, array: np.ndarray, hint: str = "const") -> Value:
        """A new inline constant value (placed at the end of the graph built so far)."""
        array = np.asarray(array)
        t = TensorType(DType.from_numpy(array.dtype), tuple(array.shape))
        node = self.graph.make_node("constant", [], [t], {"value": array}, None, [hint])
        self.graph.append(node)
        return node.outputs[0]

    def const_ints(self, values: list[int] | tuple[int, ...], hint: str = "const") -> Value:
        return self.const(np.array(list(values), dtype=np.int64), hint)

    def pad_inputs(self, n: int) -> None:
        """Extend inputs with None up to n operands."""
        while len(self.inputs) < n:
            self.inputs.append(None)

    def attr_to_input(self, attr: str, index: int, dtype: Any = np.int64) -> None:
        """Move an attribute (if set) into operand `index` as a constant."""
        if attr in self.attrs:
            value = self.attrs.pop(attr)
            self.pad_inputs(index + 1)
            self.inputs[index] = self.const(np.array(value, dtype=dtype), f"{attr}")


Adapter = Callable[[ImportNode], None]
ADAPTERS: dict[tuple[str, str, int], Adapter] = {}


def adapter(op_type: str, *versions: int, domain: str = "") -> Callable[[Adapter], Adapter]:
    """Register `fn` as the adapter of the given since_versions of an ONNX op."""
    domain = "" if domain == "ai.onnx" else domain
    if not versions or not all(isinstance(v, int) and v > 0 for v in versions):
        raise ValueError(f"adapter for {op_type}: versions must be positive ints, got {versions}")

    def register(fn: Adapter) -> Adapter:
        for v in versions:
            key = (domain, op_type, v)
            if key in ADAPTERS:
                raise ValueError(f"two adapters for {op_type} version {v} (domain '{domain or 'ai.onnx'}')")
            ADAPTERS[key] = fn
        return fn

    return register


def find_adapter(domain: str, op_type: str, version: int) -> Adapter | None:
    return ADAPTERS.get(("" if domain == "ai.onnx" else domain, op_type, version))


# Every module in this package is a family of adapters; importing it registers them (a new family
# file needs no edit here).
FAMILIES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

"""tritc as an ONNX backend (onnx.backend.base): what ONNX's own conformance suite drives.

`InterpreterBackend.prepare(model)` imports the model and runs it in the reference
interpreter. Later targets add backends whose `prepare` compiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.backend.base

from .frontend.onnx import import_model
from .ir.graph import Graph
from .ir.interpreter import Interpreter


class InterpreterRep(onnx.backend.base.BackendRep):
    """A model imported into the IR, run by the reference interpreter."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.interpreter = Interpreter(graph)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = {v.name: np.asarray(a) for v, a in zip(self.graph.inputs, inputs)}
        out = self.interpreter.run(feeds)
        return tuple(out[v.name] for v in self.graph.outputs)


class InterpreterBackend(onnx.backend.base.Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> InterpreterRep:
        return InterpreterRep(import_model(model, base_dir=kwargs.get("base_dir")))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

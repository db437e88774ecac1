"""tritc as an ONNX backend (onnx.backend.base): what ONNX's own conformance suite drives.

`InterpreterBackend.prepare(model)` imports the model and runs it in the reference interpreter;
`CompiledBackend.prepare(model)` imports it and compiles it for this CPU with the same (empty)
pass list, then runs the native code (shapes and shape-deciding inputs specialised per run).
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


class CompiledRep(onnx.backend.base.BackendRep):
    """A model compiled for the CPU (no passes: the graph exactly as imported)."""

    def __init__(self, model):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        names = [i.name for i in self.model.inputs]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = {n: np.asarray(a) for n, a in zip(names, inputs)}
        return tuple(self.model.run(None, feeds))


class CompiledBackend(onnx.backend.base.Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CompiledRep:
        from .driver import compile_model

        return CompiledRep(compile_model(model, pipeline=kwargs.get("pipeline", "none"), threads=kwargs.get("threads", 1)))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

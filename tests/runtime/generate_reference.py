"""References for the generation tests: onnxruntime's greedy loop written the plain way (each present output fed
back as the next past input, the whole sequence's mask and positions rebuilt each step), and a session that runs
tritc's interpreter on a compiled model's final IR (the executable specification, fast on tiny models)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from tritc.ir.graph import Graph
from tritc.ir.interpreter import Interpreter
from tritc.runtime.model import IOSpec

from .decoders import DecoderSpec, cache_names


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_greedy(model: onnx.ModelProto, spec: DecoderSpec, prompt: Sequence[int], n: int) -> list[int]:
    """n greedy tokens after `prompt`, by onnxruntime, with the cache fed back from the present outputs."""
    s = ort_session(model)
    takes = {i.name for i in s.get_inputs()}
    shape = [1, spec.kv_heads, 0, spec.head_dim]
    if spec.naming == "gpt2":
        shape = [2, *shape]
    pairs = [p for layer in range(spec.layers) for p in cache_names(spec, layer)]
    past = {i: np.zeros(shape, np.float32) for i, _ in pairs}
    ids, feed_ids, out = list(prompt), list(prompt), []
    for _ in range(n):
        start = len(ids) - len(feed_ids)
        feed: dict[str, Any] = {"input_ids": np.array([feed_ids], np.int64), **past}
        if "attention_mask" in takes:
            feed["attention_mask"] = np.ones((1, len(ids)), np.int64)
        if "position_ids" in takes:
            feed["position_ids"] = np.arange(start, len(ids), dtype=np.int64)[None]
        results = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
        past = {i: results[o] for i, o in pairs}
        token = int(np.argmax(results["logits"][0, -1]))
        out.append(token)
        ids.append(token)
        feed_ids = [token]
    return out


class InterpreterSession:
    """onnxruntime's session interface over tritc's interpreter running a graph (a compiled model's final IR, or
    any Graph); counts runs."""

    def __init__(self, model: Any):
        self.graph = model if isinstance(model, Graph) else model.graph
        self.inputs = [IOSpec(v.name, v.type) for v in self.graph.inputs]
        self.outputs = [IOSpec(v.name, v.type) for v in self.graph.outputs]
        self.interpreter = Interpreter(self.graph)
        self.runs = 0

    def get_inputs(self) -> list[Any]:
        return list(self.inputs)

    def get_outputs(self) -> list[Any]:
        return list(self.outputs)

    def run(self, names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs += 1
        out = self.interpreter.run({k: np.ascontiguousarray(v) for k, v in feed.items()})
        return [out[n] for n in (names if names is not None else [o.name for o in self.outputs])]


class CountingSession:
    """Wraps a session and counts its runs (to see that a streamed generation runs nothing before it is iterated)."""

    def __init__(self, session: Any):
        self.session = session
        self.runs = 0
        self.graph = getattr(session, "graph", None)

    def get_inputs(self) -> list[Any]:
        return self.session.get_inputs()

    def get_outputs(self) -> list[Any]:
        return self.session.get_outputs()

    def run(self, names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs += 1
        return self.session.run(names, feed)

"""Helpers shared by the hardening tests: small ONNX models, and running a function from many threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx.helper as oh
from onnx import numpy_helper


def onnx_model(name: str, nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto], weights: dict[str, np.ndarray] | None = None,
               opset: int = 17) -> onnx.ModelProto:
    """A model of `nodes` with `weights` as initializers, at an IR version onnxruntime reads."""
    inits = [numpy_helper.from_array(a, n) for n, a in (weights or {}).items()]
    model = oh.make_model(oh.make_graph(list(nodes), name, list(inputs), list(outputs), inits),
                          opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def hammer(work: Callable[[int, int], None], calls: int, threads: int = 8) -> None:
    """work(thread, i) for i < calls in each of `threads` threads started together; the first exception is raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def body(t: int) -> None:
        try:
            start.wait()
            for i in range(calls):
                work(t, i)
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)

    pool = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=300)
        assert not th.is_alive(), "a thread hangs"
    if errors:
        raise errors[0]

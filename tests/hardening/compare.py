"""Compile a model from the sandbox and hold its outputs to onnxruntime's (for the cases that must compile)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import tritc

from .harness import Sandbox


def matches_onnxruntime(sb: Sandbox, m: onnx.ModelProto, feed: dict[str, np.ndarray], name: str = "model.onnx") -> None:
    """Compile through the path API, run, and compare every output with onnxruntime (dtype, shape and values); the
    contract holds (nothing written)."""
    path = sb.save(m, name)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    got = tritc.compile(str(path), threads=1).run(None, feed)
    sb.check()
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-6)

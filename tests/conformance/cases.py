"""The ONNX backend node tests, loaded once, split into those tritc claims to support and the rest.

A test is in scope when every op in its model maps to an op in tritc's table. Scope is decided
by op type only: a test of a supported op at an unsupported version is in scope and must pass or
be listed in expected_failures.py with its reason.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
from onnx.backend.test.loader import load_model_tests

from tritc.ir.ops import onnx_op


@functools.lru_cache(maxsize=1)
def node_cases() -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return sorted(load_model_tests(kind="node"), key=lambda c: c.name)


def op_types(model: onnx.ModelProto) -> set[tuple[str, str]]:
    return {("" if n.domain == "ai.onnx" else n.domain, n.op_type) for n in model.graph.node}


def in_scope(case) -> bool:
    return all(op == "Constant" and dom == "" or onnx_op(op, dom) is not None for dom, op in op_types(case.model))


def supported_cases() -> list:
    return [c for c in node_cases() if in_scope(c)]

"""The ONNX backend node tests through the compiled path (LLVM), same cases and expected failures.

Compiling every node test takes minutes, so by default (and in CI) a deterministic sample runs:
every SAMPLE_EVERY-th supported case. TRITC_FULL_CONFORMANCE=1 runs all of them.

A case whose graph the specialiser folds whole (Shape of a static input, Range of bounds given as
inputs, which are specialised on their values) would compare the interpreter with itself: such a
case runs again with specialisations that fold nothing, so its lowering is what is checked (unless
its shapes are only known by folding: an expanded function computing a Range's bounds). Each
passing case records the nodes it lowered; the run ends with "N of M passing compiled node tests
ran compiled code" and names the others (tests/conformance/conftest.py).
"""

from __future__ import annotations

import os

import pytest

from tritc.codegen.llvm.compiler import lowered_nodes
from tritc.errors import UnsupportedError
from tritc.onnx_backend import CompiledBackend, CompiledRep
from tritc.runtime.model import CompiledModel

from .test_onnx_node import check_rep, node_params

SAMPLE_EVERY = 5
FULL = os.environ.get("TRITC_FULL_CONFORMANCE") == "1"

pytestmark = pytest.mark.conformance


def nodes_lowered(model: CompiledModel) -> int:
    """Nodes that became compiled code, over every specialisation the model compiled."""
    return sum(len(lowered_nodes(s.graph)) for s in model.specializations if s.graph is not None)


@pytest.mark.parametrize("case", list(node_params(1 if FULL else SAMPLE_EVERY)))
def test_node_compiled(case, record_property):
    rep = CompiledBackend.prepare(case.model)
    check_rep(rep, case)
    lowered, unfolded = nodes_lowered(rep.model), 0
    if not lowered:  # every node was folded: check the lowerings themselves
        m = rep.model
        rep = CompiledRep(CompiledModel(m.graph, m.layout, m.blob, m.target, threads=1, fold=False))
        try:
            check_rep(rep, case)
            unfolded = nodes_lowered(rep.model)
        except UnsupportedError as e:
            if "is not known after binding" not in str(e):
                raise
    record_property("nodes_lowered", lowered)
    record_property("nodes_lowered_unfolded", unfolded)

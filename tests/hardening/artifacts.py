"""A small compiled model shared by the artifact cases (groups G and H) and tests/runtime/test_artifact.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.ir import parse_graph
from tritc.runtime import artifact as art

GRAPH = """graph @g(%x: f32[batch,4]) -> (%y: f32[batch,4]) {
  %b = constant [1.0, -2.0, 3.0, -4.0] : f32[4]
  %a = add(%x, %b) : f32[batch,4]
  %y = relu(%a) : f32[batch,4]
  return %y
}"""


def reference(x: np.ndarray, last: float = -4.0) -> np.ndarray:
    return np.maximum(x + np.array([1, -2, 3, last], np.float32), 0)


def compile_small(last: float = -4.0):  # -> CompiledModel
    """The model of GRAPH (its last constant `last`), with code for batch 2, one thread."""
    return tritc.compile(parse_graph(GRAPH.replace("-4.0", repr(float(last)))), pipeline="none", shapes={"batch": 2},
                         threads=1)


def rewrite(path: Path, dest: Path | None = None, *, manifest=None, sections=None, version: int | None = None,
            key: bytes | None = None) -> Path:
    """A copy of the artifact at `path` with its manifest / sections edited, written with correct hashes (what an
    attacker who edits a file can always do): `manifest(m)` and `sections(s)` edit in place."""
    a = art.read_artifact(path)
    m, s = dict(a.manifest), dict(a.sections)
    if manifest:
        manifest(m)
    if sections:
        sections(s)
    dest = dest or path
    with pytest.MonkeyPatch.context() as mp:
        if version is not None:
            mp.setattr(art, "FORMAT_VERSION", version)  # write_artifact stamps the header and manifest with it
        art.write_artifact(dest, m, s, key=key)
    return dest

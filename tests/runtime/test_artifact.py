"""The artifact: round trip, manifest, padding, packed weights. The hardening cases (faults while writing, corrupt,
tampered, signed, versioned and foreign artifacts, no pickle, lifetime) are in tests/hardening/test_[gh]_*.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import tritc
from tests.hardening.artifacts import GRAPH, reference
from tritc.errors import ArtifactError, ArtifactIntegrityError, OptionError
from tritc.ir import parse_graph
from tritc.runtime import artifact as art


@pytest.fixture(scope="module")
def model():
    return tritc.compile(parse_graph(GRAPH), pipeline="none", shapes={"batch": 2})


@pytest.fixture()
def saved(model, tmp_path) -> Path:
    p = tmp_path / "m.tritc"
    model.save(p)
    return p


def test_round_trip(saved):
    m = tritc.load(saved)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], reference(x))
    y = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)  # a new shape compiles on first use
    np.testing.assert_array_equal(m(x=y), reference(y))


def test_manifest_describes_the_model(saved):
    a = art.read_artifact(saved)
    m = a.manifest
    assert m["format_version"] == art.FORMAT_VERSION
    assert m["inputs"] == [{"name": "x", "type": "f32[batch,4]"}]
    assert m["target"]["triple"] and m["target"]["features"]
    assert {s["name"] for s in m["sections"]} >= {"ir", "weights", "object.0", "bitcode.0"}
    assert all(len(s["sha256"]) == 64 for s in m["sections"])
    assert a.sections["ir"].decode().startswith("graph @g")












def test_output_folder_must_exist(model, tmp_path):
    with pytest.raises(OptionError, match="does not exist"):
        model.save(tmp_path / "nowhere" / "m.tritc")
    assert not (tmp_path / "nowhere").exists()








def test_garbage_and_directories_are_artifact_errors(tmp_path):
    junk = tmp_path / "junk.tritc"
    junk.write_bytes(os.urandom(500))
    with pytest.raises(ArtifactIntegrityError, match="not a tritc artifact"):
        tritc.load(junk)
    with pytest.raises(ArtifactError, match="directory"):
        tritc.load(tmp_path)
    with pytest.raises(ArtifactError, match="no such file"):
        tritc.load(tmp_path / "missing.tritc")




def test_padding_and_trailing_bytes_are_checked(tmp_path):
    """Bytes between sections (alignment padding) must be zeros and nothing may follow the last section."""
    path = tmp_path / "a.tritc"
    art.write_artifact(path, {"kind": "test"}, {"one": b"x" * 3, "two": b"y" * 5})
    data = bytearray(path.read_bytes())
    manifest = art.read_artifact(path).manifest
    end = art.HEADER.size + art.HEADER.unpack_from(data)[3]  # the manifest's end: section offsets count from it
    one, two = manifest["sections"]
    assert two["offset"] > one["offset"] + one["length"]  # a gap of padding between them
    padded = bytearray(data)
    padded[end + one["offset"] + one["length"]] = 7
    (tmp_path / "p.tritc").write_bytes(bytes(padded))
    with pytest.raises(ArtifactIntegrityError, match=rf"byte {end + one['offset'] + one['length']} lies outside every section"):
        art.read_artifact(tmp_path / "p.tritc")
    (tmp_path / "t.tritc").write_bytes(bytes(data) + b"\0\0")
    with pytest.raises(ArtifactIntegrityError, match="2 unexpected bytes after the last section"):
        art.read_artifact(tmp_path / "t.tritc")


def test_loaded_ternary_weights_stay_packed_until_read(tmp_path):
    """Compiled code reads the packed blob: loading keeps the trits packed (PackedTernaryWeight), and the
    interpreter, which reads them, unpacks the same trits that were folded."""
    from tritc.ir.interpreter import run as interpret
    from tritc.ir.ternary import PackedTernaryWeight, TernaryWeight

    rng = np.random.default_rng(0)
    w = (rng.integers(-1, 2, (32, 48)) * 0.25).astype(np.float32)
    g = parse_graph("""graph @t(%x: f32[batch,32]) -> (%y: f32[batch,48]) {
  %w = weight "w" : f32[32,48]
  %y = matmul(%x, %w) : f32[batch,48]
  return %y
}""", {"w": w})
    model = tritc.compile(g, threads=1)
    path = tmp_path / "t.tritc"
    model.save(path)
    loaded = tritc.load(path)
    (key,) = [k for k, v in loaded.graph.weights.items() if isinstance(v, TernaryWeight)]
    packed = loaded.graph.weights[key]
    assert isinstance(packed, PackedTernaryWeight) and packed._trits is None and packed.shape == (32, 48)
    x = rng.standard_normal((3, 32)).astype(np.float32)
    np.testing.assert_allclose(loaded.run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)
    assert packed._trits is None  # compiled code ran without them
    np.testing.assert_allclose(interpret(loaded.graph, {"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(packed.trits, np.sign(w).astype(np.int8))

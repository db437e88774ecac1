"""The artifact: round trip, integrity checks, version checks, atomic writes, no pickle."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.errors import ArtifactCompatibilityError, ArtifactError, ArtifactIntegrityError, ArtifactVersionError, OptionError
from tritc.ir import parse_graph
from tritc.runtime import artifact as art

GRAPH = """graph @g(%x: f32[batch,4]) -> (%y: f32[batch,4]) {
  %b = constant [1.0, -2.0, 3.0, -4.0] : f32[4]
  %a = add(%x, %b) : f32[batch,4]
  %y = relu(%a) : f32[batch,4]
  return %y
}"""


def reference(x):
    return np.maximum(x + np.array([1, -2, 3, -4], np.float32), 0)


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


def test_every_flipped_byte_is_caught(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "bad.tritc"
    step = max(1, len(data) // 97)
    for pos in range(0, len(data), step):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ArtifactError):
            tritc.load(bad)


def test_truncated_artifact(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "short.tritc"
    for n in (0, 10, 63, 64, 200, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:n])
        with pytest.raises(ArtifactIntegrityError, match="truncated|bad magic|hash"):
            tritc.load(bad)


def test_newer_format_version_is_refused(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    struct.pack_into("<I", data, 8, art.FORMAT_VERSION + 1)
    bad = tmp_path / "new.tritc"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactVersionError, match=f"format {art.FORMAT_VERSION + 1} > supported {art.FORMAT_VERSION}"):
        tritc.load(bad)


def test_other_architecture_is_refused(model, tmp_path):
    p = tmp_path / "arm.tritc"
    a_manifest = {"target": {"triple": "aarch64-unknown-linux-gnu", "cpu": "generic", "features": ""},
                  "weights": [], "specializations": []}
    art.write_artifact(p, a_manifest, {"ir": model.ir_text.encode(), "weights": b""})
    with pytest.raises(ArtifactCompatibilityError, match="aarch64"):
        tritc.load(p)


def test_missing_cpu_features_recompile_with_a_warning(tmp_path, monkeypatch):
    from tritc.codegen.llvm import target as target_mod

    m = tritc.compile(parse_graph(GRAPH), pipeline="none", shapes={"batch": 2})
    p = tmp_path / "m.tritc"
    m.save(p)
    real = target_mod.host_features()
    fake = dict(real)
    for k in list(fake):
        if k.startswith("avx512"):
            fake[k] = False
    monkeypatch.setattr(target_mod, "host_features", lambda: fake)
    if not any(real.get(k) for k in real if k.startswith("avx512")):
        pytest.skip("the host has no AVX-512 to pretend away")
    with pytest.warns(RuntimeWarning, match="recompiling"):
        loaded = tritc.load(p)
    assert "avx512f" not in loaded.target.feature_set
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(loaded(x=x), reference(x))


def test_write_is_atomic_under_faults(model, tmp_path):
    dest = tmp_path / "out" / "m.tritc"
    dest.parent.mkdir()
    model.save(dest)
    before = dest.read_bytes()
    manifest = {"target": {}, "weights": [], "specializations": []}
    for stage in ("weights", "object", "manifest"):
        def fault(s, stage=stage):
            if s == stage:
                raise OSError(28, "No space left on device")
        sections = {"ir": b"x", "weights": b"w" * 1000, "object.0": b"o" * 100}
        with pytest.raises(OSError):
            art.write_artifact(dest, manifest, sections, _fault=fault)
        assert dest.read_bytes() == before
        assert sorted(os.listdir(dest.parent)) == ["m.tritc"], "a temporary file was left behind"
    model.save(dest)  # a retry succeeds
    tritc.load(dest)


def test_output_folder_must_exist(model, tmp_path):
    with pytest.raises(OptionError, match="does not exist"):
        model.save(tmp_path / "nowhere" / "m.tritc")
    assert not (tmp_path / "nowhere").exists()


def test_symlink_destination_is_replaced_not_written_through(model, tmp_path):
    target = tmp_path / "victim.bin"
    target.write_bytes(b"keep me")
    link = tmp_path / "m.tritc"
    link.symlink_to(target)
    model.save(link)
    assert target.read_bytes() == b"keep me"
    assert not link.is_symlink()
    tritc.load(link)


def test_no_pickle_marshal_eval_or_exec_in_the_load_path():
    import re

    code = re.compile(r"\bimport (pickle|marshal|dill|joblib)\b|\b(pickle|marshal)\.|\beval\(|\bexec\(")
    root = Path(tritc.__file__).parent
    for f in list((root / "runtime").glob("*.py")) + list((root / "codegen" / "llvm").glob("*.py")):
        for line in f.read_text().splitlines():
            assert not code.search(line), f"{f.name}: {line.strip()}"


def test_a_pickle_beside_the_artifact_is_never_read(saved):
    evil = saved.parent / "weights.pkl"
    evil.write_bytes(b"\x80\x04cos\nsystem\n(S'touch /tmp/tritc-pwned'\ntR.")
    m = tritc.load(saved)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(m(x=x), reference(x))
    assert not Path("/tmp/tritc-pwned").exists()


def test_garbage_and_directories_are_artifact_errors(tmp_path):
    junk = tmp_path / "junk.tritc"
    junk.write_bytes(os.urandom(500))
    with pytest.raises(ArtifactIntegrityError, match="not a tritc artifact"):
        tritc.load(junk)
    with pytest.raises(ArtifactError, match="directory"):
        tritc.load(tmp_path)
    with pytest.raises(ArtifactError, match="no such file"):
        tritc.load(tmp_path / "missing.tritc")


def test_tampered_manifest_with_consistent_hash_but_bad_json(tmp_path):
    import hashlib

    body = b"{not json"
    header = art.HEADER.pack(art.MAGIC, art.FORMAT_VERSION, 0, len(body), hashlib.sha256(body).digest(), b"\0" * 8)
    p = tmp_path / "j.tritc"
    p.write_bytes(header + body)
    with pytest.raises(ArtifactIntegrityError, match="not valid JSON"):
        tritc.load(p)
    ok = json.dumps({"format_version": art.FORMAT_VERSION, "sections": [{"name": "../etc", "offset": 0, "length": 0,
                                                                           "sha256": ""}]}).encode()
    header = art.HEADER.pack(art.MAGIC, art.FORMAT_VERSION, 0, len(ok), hashlib.sha256(ok).digest(), b"\0" * 8)
    p.write_bytes(header + ok)
    with pytest.raises(ArtifactIntegrityError, match="bad or repeated section name"):
        tritc.load(p)


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

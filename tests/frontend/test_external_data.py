"""External data (HARDENING.md section E): the data must stay inside the model's folder, and sizes are checked first.

Harness: a temporary folder with model_dir/ (the model), outside/secret.bin (a marker that must never be read
or shown) and out/ (must stay empty). Every path case runs for each place a tensor can live: an initializer, a
sparse initializer, a Constant's value and sparse_value, and a node attribute.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tritc.errors import CompilerError, ModelFormatError, ModelValidationError, UnsafePathError
from tritc.frontend.onnx import load_model, load_model_bytes
from tritc.ir.ops import BY_ONNX

from .models import external_tensor, model, vi

MARKER = b"TOP-SECRET-MARKER-7f3a"
DATA = np.arange(16, dtype=np.float32)  # what model_dir/w.bin holds in the good case


@dataclass
class Env:
    root: Path
    model_dir: Path
    outside: Path
    out: Path

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every file outside model_dir with its size and mtime (E3, E4: nothing is created or touched)."""
        return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in self.root.rglob("*")
                if self.model_dir not in p.parents and p != self.model_dir}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path, tmp_path / "model_dir", tmp_path / "outside", tmp_path / "out")
    for d in (e.model_dir, e.outside, e.out):
        d.mkdir()
    (e.outside / "secret.bin").write_bytes(MARKER + bytes(64))
    (e.model_dir / "w.bin").write_bytes(DATA.tobytes())
    return e


# ---- the places a tensor lives ----------------------------------------------------------------


def _initializer(t: onnx.TensorProto) -> onnx.ModelProto:
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", (4, 4))], [vi("y", (4, 4))], [t])


def _sparse_initializer(t: onnx.TensorProto) -> onnx.ModelProto:
    idx = helper.make_tensor("idx", TensorProto.INT64, [t.dims[0]], list(range(t.dims[0])))
    sp = helper.make_sparse_tensor(t, idx, [16])
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", (16,))], [vi("y", (16,))], sparse=[sp])


def _constant(t: onnx.TensorProto) -> onnx.ModelProto:
    node = helper.make_node("Constant", [], ["y"], name="k", value=t)
    return model([node], [], [vi("y", None)])


def _constant_sparse(t: onnx.TensorProto) -> onnx.ModelProto:
    idx = helper.make_tensor("idx", TensorProto.INT64, [t.dims[0]], list(range(t.dims[0])))
    node = helper.make_node("Constant", [], ["y"], name="k", sparse_value=helper.make_sparse_tensor(t, idx, [16]))
    return model([node], [], [vi("y", None)])


def _attribute(t: onnx.TensorProto) -> onnx.ModelProto:
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [16])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill", value=t)]
    return model(nodes, [], [vi("y", None)])


CARRIERS = {"initializer": _initializer, "sparse_initializer": _sparse_initializer, "constant": _constant,
            "constant_sparse": _constant_sparse, "attribute": _attribute}


def build(carrier: str, location: str, shape: tuple[int, ...] = (16,), **kw) -> onnx.ModelProto:
    if carrier == "attribute":
        if ("", "ConstantOfShape") not in BY_ONNX:
            pytest.skip("ConstantOfShape is not in the op table yet")
        shape = (1,)
    elif carrier == "initializer":
        shape = (4, 4) if shape == (16,) else shape
    return CARRIERS[carrier](external_tensor("w", shape, location, **kw))


def load(env: Env, m: onnx.ModelProto) -> CompilerError | None:
    """Save the model into model_dir and load it; the error (or None), with E3 and E4 checked."""
    path = env.model_dir / "model.onnx"
    path.write_bytes(m.SerializeToString())
    before = env.snapshot()
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the load blocked")))
    signal.alarm(20)
    try:
        load_model(path)
        error = None
    except CompilerError as e:
        error = e
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert env.snapshot() == before, "a file outside the model's folder was created or changed"
    assert list(env.out.iterdir()) == []
    if error is not None:
        assert MARKER.decode() not in str(error) and "\n" not in str(error)
    return error


# ---- paths out of the folder ------------------------------------------------------------------

BAD_LOCATIONS = {
    "parent": "../outside/secret.bin",
    "climb_after_descent": "a/../../outside/secret.bin",
    "absolute": "<abs>",
    "backslash_parent": "..\\outside\\secret.bin",
    "drive_letter": "C:\\outside\\secret.bin",
    "unc": "\\\\?\\C:\\outside\\secret.bin",
    "url": "file:///etc/passwd",
    "empty": "",
    "dot": ".",
    "dev_zero": "/dev/zero",
}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("case", BAD_LOCATIONS)
def test_location_outside_the_folder(env, carrier, case):
    location = str(env.outside / "secret.bin") if case == "absolute" else BAD_LOCATIONS[case]
    error = load(env, build(carrier, location))
    assert isinstance(error, UnsafePathError), error
    assert "model.onnx" in str(error) and "external data" in str(error)


def _symlink_final(env: Env) -> str:
    (env.model_dir / "link.bin").symlink_to(env.outside / "secret.bin")
    return "link.bin"


def _symlink_parent(env: Env) -> str:
    (env.model_dir / "sub").symlink_to(env.outside)
    return "sub/secret.bin"


def _hardlink(env: Env) -> str:
    os.link(env.outside / "secret.bin", env.model_dir / "hard.bin")
    return "hard.bin"


def _fifo(env: Env) -> str:
    os.mkfifo(env.model_dir / "pipe.bin")
    return "pipe.bin"


def _directory(env: Env) -> str:
    (env.model_dir / "folder.bin").mkdir()
    return "folder.bin"


def _dev_zero_link(env: Env) -> str:
    (env.model_dir / "zero.bin").symlink_to("/dev/zero")
    return "zero.bin"


def _relative_symlink_inside(env: Env) -> str:
    # Even a link that stays inside the folder is refused: links are not followed at all.
    (env.model_dir / "alias.bin").symlink_to("w.bin")
    return "alias.bin"


TRICKS = {"symlink_final": _symlink_final, "symlink_parent": _symlink_parent, "hardlink": _hardlink, "fifo": _fifo,
          "directory": _directory, "dev_zero_symlink": _dev_zero_link, "symlink_inside": _relative_symlink_inside}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("trick", TRICKS)
def test_filesystem_tricks(env, carrier, trick):
    location = TRICKS[trick](env)
    error = load(env, build(carrier, location))
    assert isinstance(error, UnsafePathError), error
    assert location.split("/")[0] in str(error)


# ---- the good case and size checks ------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
def test_external_data_loads(env, carrier):
    (env.model_dir / "sub").mkdir()
    (env.model_dir / "sub" / "data.bin").write_bytes(bytes(8) + DATA.tobytes())
    n = 1 if carrier == "attribute" else 16
    m = build(carrier, "sub/../sub/./data.bin", offset=8, length=4 * n)
    path = env.model_dir / "model.onnx"
    path.write_bytes(m.SerializeToString())
    g = load_model(path)
    y = g.outputs[0]
    if carrier == "initializer":
        np.testing.assert_array_equal(g.weights["w"], DATA.reshape(4, 4))
    elif carrier == "attribute":
        fill = y.producer
        assert fill.name == "fill"
        np.testing.assert_array_equal(fill.attrs["value"], DATA[:1])
    else:
        p = y.producer if carrier.startswith("constant") else g.value("w").producer
        data = g.weights[p.attrs["ref"]] if p.op == "weight" else p.attrs["value"]
        np.testing.assert_array_equal(data, DATA)


def test_missing_file(env):
    error = load(env, build("initializer", "nothere.bin"))
    assert isinstance(error, ModelFormatError) and "'nothere.bin' not found" in str(error)


@pytest.mark.parametrize("key, value", [("offset", "-1"), ("offset", "abc"), ("offset", "+5"), ("offset", " 7"),
                                        ("offset", "1e3"), ("offset", "1_0"), ("offset", "100"), ("offset", str(2**64)),
                                        ("length", "-5"), ("length", "0x40")])
def test_bad_offset(env, key, value):
    t = external_tensor("w", (4, 4), "w.bin", extra=[(key, value)])
    error = load(env, _initializer(t))
    assert isinstance(error, ModelFormatError), error
    assert key in str(error) or "bytes" in str(error)


@pytest.mark.parametrize("length", [60, 68, 0, 2**50])
def test_length_differs_from_the_shape(env, length):
    error = load(env, _initializer(external_tensor("w", (4, 4), "w.bin", length=length)))
    assert isinstance(error, ModelValidationError) and f"length {length}" in str(error) and "64 bytes" in str(error)


def test_huge_declared_shape_allocates_nothing(env):
    """A FLOAT[2^28] (1 GiB) tensor whose file has 64 bytes: refused before the 1 GiB is allocated."""
    t = external_tensor("w", (2**28,), "w.bin")
    m = model([helper.make_node("Relu", ["w"], ["y"])], [], [vi("y", None)], [t])
    tracemalloc.start()
    try:
        error = load(env, m)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(error, ModelFormatError) and "64 bytes" in str(error)
    assert peak < 16 * 2**20, f"peak {peak} bytes"


def test_unknown_keys_warn_and_are_ignored(env):
    t = external_tensor("w", (4, 4), "w.bin", extra=[("__class__", "x"), ("evil", "1")])
    (env.model_dir / "model.onnx").write_bytes(_initializer(t).SerializeToString())
    with pytest.warns(UserWarning) as record:
        g = load_model(env.model_dir / "model.onnx")
    messages = " | ".join(str(w.message) for w in record)
    assert "unknown external_data key '__class__'" in messages and "unknown external_data key 'evil'" in messages
    np.testing.assert_array_equal(g.weights["w"], DATA.reshape(4, 4))


def test_duplicate_key(env):
    t = external_tensor("w", (4, 4), "w.bin", extra=[("location", "../outside/secret.bin")])
    error = load(env, _initializer(t))
    assert isinstance(error, ModelFormatError) and "'location' twice" in str(error)


def test_inline_data_as_well(env):
    t = external_tensor("w", (4, 4), "w.bin")
    t.raw_data = bytes(64)
    error = load(env, _initializer(t))
    assert isinstance(error, ModelValidationError) and "also holds data inline" in str(error)


def test_from_bytes_needs_a_folder(env):
    data = _initializer(external_tensor("w", (4, 4), "w.bin")).SerializeToString()
    with pytest.raises(UnsafePathError, match="base_dir"):
        load_model_bytes(data)
    g = load_model_bytes(data, base_dir=env.model_dir)
    np.testing.assert_array_equal(g.weights["w"], DATA.reshape(4, 4))


def test_model_folder_reached_through_a_symlink(env):
    """The folder the user names is trusted, links and all; only paths inside the model are not."""
    (env.model_dir / "model.onnx").write_bytes(_initializer(external_tensor("w", (4, 4), "w.bin")).SerializeToString())
    (env.root / "alias").symlink_to(env.model_dir)
    g = load_model(env.root / "alias" / "model.onnx")
    np.testing.assert_array_equal(g.weights["w"], DATA.reshape(4, 4))


@pytest.mark.parametrize("swap", ["symlink", "hardlink", "fifo"])
def test_file_swapped_after_the_check(env, monkeypatch, swap):
    """TOCTOU: the file is replaced right after the pre-open check. The read goes through one descriptor
    opened without following links and checked again with fstat, so the swap gives UnsafePathError."""
    import tritc.frontend.external_data as ext

    real_stat = os.stat
    target = env.model_dir / "w.bin"

    def stat_then_swap(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if path == "w.bin" and target.exists() and not target.is_symlink():
            target.unlink()
            if swap == "symlink":
                target.symlink_to(env.outside / "secret.bin")
            elif swap == "hardlink":
                os.link(env.outside / "secret.bin", target)
            else:
                os.mkfifo(target)
        return result

    monkeypatch.setattr(ext.os, "stat", stat_then_swap)
    error = load(env, _initializer(external_tensor("w", (4, 4), "w.bin")))
    assert isinstance(error, UnsafePathError), error

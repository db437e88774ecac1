"""HARDENING.md group E, external data (cases 24-33), under the harness contract (harness.py).

Every case that concerns a tensor runs for each place a tensor can live (the carriers of
tests/frontend/test_external_data.py): an initializer, a sparse initializer, a Constant's value and sparse_value,
and a node's tensor attribute. The marker of outside/secret.bin must never be read: in this process a spy on the
reader's os.preadv fails the test if it reads from a descriptor of that file; the cases that could block or
allocate (a FIFO, /dev/zero, a 2^50-byte length, a real swap race) run `isolated`, under an address-space limit and
a timeout, one child per case loading the model of every carrier (a child costs seconds to start).
"""

from __future__ import annotations

import ast
import os
import re
import signal
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import tritc
from tritc.errors import ModelFormatError, ModelValidationError, UnsafePathError
from tritc.frontend.onnx import load_model, load_model_bytes

from ..frontend.models import external_tensor, model, vi
from ..frontend.test_external_data import CARRIERS, DATA, TRICKS, build
from .harness import Sandbox, isolated, refuses


@pytest.fixture
def spy(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """model_dir/w.bin holds DATA; a read by the external-data reader from a descriptor of outside/secret.bin fails
    the test (E4: the marker is never read, not just never shown. Opening it is not reading it: a hard link swapped
    in after the check is opened, and refused by fstat before any read)."""
    import tritc.frontend.external_data as ext

    (sb.model_dir / "w.bin").write_bytes(DATA.tobytes())
    secret = sb.secret.stat()
    real_preadv = os.preadv

    def checked_preadv(fd, buffers, offset, *args):
        st = os.fstat(fd)
        assert (st.st_dev, st.st_ino) != (secret.st_dev, secret.st_ino), "E4: outside/secret.bin was read"
        return real_preadv(fd, buffers, offset, *args)

    assert "preadv" in Path(ext.__file__).read_text() and not re.search(r"os\.read\b|\.read\(", Path(ext.__file__).read_text())
    monkeypatch.setattr(ext.os, "preadv", checked_preadv)
    sb.mark()
    return sb


def isolated_loads(sb: Sandbox, models: dict[str, onnx.ModelProto], limits: str = "", **kw) -> dict[str, tuple]:
    """Load model_dir/<carrier>.onnx for every carrier in one isolated child; (error class names, message) of
    each ("ok" when it loaded). The harness checks E1 (no signal, hang or MemoryError), E3 and E4 for all of them."""
    for carrier, m in models.items():
        sb.save(m, f"{carrier}.onnx")
    code = ("from tritc.frontend.onnx import Limits, load_model\nRESULT = {}\n"
            f"for c in {list(models)!r}:\n"
            f"    try:\n        load_model(f'model_dir/{{c}}.onnx'{', limits=' + limits if limits else ''})\n"
            "        RESULT[c] = (['ok'], '')\n"
            "    except Exception as e:\n        RESULT[c] = ([k.__name__ for k in type(e).__mro__], str(e))\n")
    out = isolated(sb, code, **kw)
    assert out.ok, out.stderr
    return ast.literal_eval(out.result) | {"peak_rss_mib": out.peak_rss_mib}


def assert_refused(result: tuple, error: type[Exception], names: list[str]) -> None:
    bases, message = result
    assert error.__name__ in bases, f"E1: {bases[0]} is not a {error.__name__}: {message}"
    assert message and "\n" not in message, f"E2: not one line: {message!r}"
    for n in names:
        assert n in message, f"E2: {n!r} not named in: {message}"


def load_case(sb: Sandbox, m: onnx.ModelProto):
    path = sb.save(m)
    return lambda: load_model(path)


# ---- 24: locations outside the folder ----------------------------------------------------------------------------

LOCATIONS = {
    "parent": "../outside/secret.bin",
    "climb_after_descent": "a/../../outside/secret.bin",
    "absolute": "<abs>",
    "windows_drive": "C:\\outside\\secret.bin",
    "windows_backslash_parent": "..\\outside\\secret.bin",
    "windows_long_path": "\\\\?\\C:\\outside\\secret.bin",
    "unc": "\\\\server\\share\\secret.bin",
    "url": "file:///etc/passwd",
    "http_url": "https://example.com/w.bin",
    "empty": "",
    "nul": "w.bin\x00../../outside/secret.bin",
}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("case", LOCATIONS)
def test_24_location_outside_the_model_folder(spy, carrier, case):
    location = str(spy.secret) if case == "absolute" else LOCATIONS[case]
    refuses(spy, load_case(spy, build(carrier, location)), UnsafePathError, names=["model.onnx", "external data"])


# ---- 25: links, FIFOs, folders and devices ---------------------------------------------------------------------


# The tricks of the frontend's tests; each takes anything with model_dir and outside (a Sandbox does).
BLOCKING = {"fifo", "dev_zero_symlink"}  # a read would block or never end: run isolated, with a timeout


@pytest.mark.parametrize("trick", TRICKS)
def test_25_links_fifos_folders_and_devices(spy, trick):
    location = TRICKS[trick](spy)
    names = [location.split("/")[0]]
    if trick in BLOCKING:  # every carrier in one isolated child, which a blocking read would time out
        results = isolated_loads(spy, {c: build(c, location) for c in CARRIERS}, memory=2 * 2**30, timeout=90)
        for carrier in CARRIERS:
            assert_refused(results[carrier], UnsafePathError, [f"{carrier}.onnx", *names])
        return
    for carrier in CARRIERS:
        refuses(spy, load_case(spy, build(carrier, location)), UnsafePathError, names=["model.onnx", *names])


# ---- 26: a missing file ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
def test_26_missing_file(spy, carrier):
    refuses(spy, load_case(spy, build(carrier, "sub/nothere.bin")), ModelFormatError,
            names=["external data file 'sub/nothere.bin' not found"])


# ---- 27: offset and length that lie --------------------------------------------------------------------------------

BAD_NUMBERS = {
    "offset_negative": ([("offset", "-1")], "offset"),
    "offset_not_a_number": ([("offset", "abc")], "offset"),
    "offset_hex": ([("offset", "0x10")], "offset"),
    "offset_plus_sign": ([("offset", "+8")], "offset"),
    "offset_past_eof": ([("offset", "1000")], "offset 1000"),
    "offset_huge": ([("offset", str(2**64))], f"offset {2**64}"),
    "offset_plus_length_overflows_int64": ([("offset", str(2**63 - 1))], f"offset {2**63 - 1}"),
    "length_negative": ([("length", "-5")], "length"),
    "length_not_a_number": ([("length", "1e3")], "length"),
}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("case", BAD_NUMBERS)
def test_27_bad_offset_or_length(spy, carrier, case):
    extra, named = BAD_NUMBERS[case]
    refuses(spy, load_case(spy, build(carrier, "w.bin", extra=extra)), ModelFormatError, names=[named])


def _huge(carrier: str) -> onnx.ModelProto:
    """A tensor whose dims and length agree on 2^50 bytes (2^48 floats), in a 64-byte file."""
    t = external_tensor("w", (2**48,), "w.bin", length=2**50)
    if carrier.endswith("sparse_initializer") or carrier == "constant_sparse":
        idx = helper.make_tensor("idx", TensorProto.INT64, [1], [0])  # the values are read (and refused) first
        sp = helper.make_sparse_tensor(t, idx, [2**48])
        if carrier == "constant_sparse":
            return model([helper.make_node("Constant", [], ["y"], name="k", sparse_value=sp)], [], [vi("y", None)])
        return model([helper.make_node("Relu", ["w"], ["y"])], [], [vi("y", None)], sparse=[sp])
    return CARRIERS[carrier](t)


def test_27_length_of_2_50_allocates_nothing(spy):
    """The budgets raised out of the way, so only the file's size stands between the header and a 1 PiB buffer: the
    error comes from fstat, before anything is allocated (peak RSS of the child well under the 2 GiB limit)."""
    results = isolated_loads(spy, {c: _huge(c) for c in CARRIERS}, "Limits(max_tensor_bytes=2**62, "
                             "max_total_weight_bytes=2**62)", memory=2 * 2**30, timeout=90)
    for carrier in CARRIERS:
        assert_refused(results[carrier], ModelFormatError, ["'w.bin' has 64 bytes", str(2**50)])
    assert results["peak_rss_mib"] < 512, results["peak_rss_mib"]


# ---- 28: length against the tensor's size --------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("delta", [-4, -1, 1, 4], ids=["4_short", "1_short", "1_long", "4_long"])
def test_28_length_differs_from_dims_times_itemsize(spy, carrier, delta):
    need = 4 if carrier == "attribute" else 64
    m = build(carrier, "w.bin", length=need + delta)
    refuses(spy, load_case(spy, m), ModelValidationError, names=[f"length {need + delta}", f"{need} bytes"])


# ---- 29: unknown and duplicate keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
def test_29_unknown_keys_warn_and_are_ignored(spy, carrier):
    m = build(carrier, "w.bin", extra=[("__class__", "os.system"), ("evil", "1"), ("__dict__", "x")])
    path = spy.save(m)
    with pytest.warns(UserWarning) as record:
        g = load_model(path)
    spy.check([str(w.message) for w in record])
    said = " | ".join(str(w.message) for w in record)
    for key in ("__class__", "evil", "__dict__"):
        assert f"unknown external_data key '{key}'" in said
    assert len(g.outputs) == 1  # loaded, with nothing set from the keys


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("key", ["location", "offset", "length"])
def test_29_duplicate_keys(spy, carrier, key):
    value = {"location": "../outside/secret.bin", "offset": "0", "length": "64"}[key]
    m = build(carrier, "w.bin", extra=[(key, value)], **({"offset": 0} if key == "offset" else {}),
              **({"length": 64} if key == "length" else {}))
    refuses(spy, load_case(spy, m), ModelFormatError, names=[f"'{key}' twice"])


# ---- 30: checksums ------------------------------------------------------------------------------------------------


@pytest.mark.skip(reason="not applicable: tritc binds no hash to external data. The `checksum` key is ignored "
                         "(docs/FRONTEND.md: the folder is the model's own, never one the model names) and there is no "
                         "manifest for .onnx weights; artifact hashes are case 38's")
def test_30_checksum_mismatch():
    pass


# ---- 31: a model from bytes has no folder ------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
def test_31_bytes_need_an_explicit_base_dir(spy, carrier):
    data = build(carrier, "w.bin").SerializeToString()
    refuses(spy, lambda: load_model_bytes(data), UnsafePathError, names=["base_dir", "external data"])
    refuses(spy, lambda: tritc.compile(data), UnsafePathError, names=["base_dir"])
    assert len(load_model_bytes(data, base_dir=spy.model_dir).outputs) == 1
    spy.check()


# ---- 32: the file swapped between the check and the read ---------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("swap", ["symlink", "hardlink", "fifo"])
def test_32_file_swapped_after_the_check(spy, monkeypatch, carrier, swap):
    """Deterministic: the file is replaced right after the reader's lstat. The read goes through one descriptor
    opened with O_NOFOLLOW | O_NONBLOCK and checked again with fstat, so the swap is UnsafePathError."""
    import tritc.frontend.external_data as ext

    real_stat, target = os.stat, spy.model_dir / "w.bin"

    def stat_then_swap(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if path == "w.bin" and not target.is_symlink() and target.exists():
            target.unlink()
            {"symlink": lambda: target.symlink_to(spy.secret), "hardlink": lambda: os.link(spy.secret, target),
             "fifo": lambda: os.mkfifo(target)}[swap]()
        return result

    path = spy.save(build(carrier, "w.bin"))
    monkeypatch.setattr(ext.os, "stat", stat_then_swap)

    def hang(*_):
        raise TimeoutError("E5: the load blocked on the swapped-in FIFO")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)  # in this process, so a blocking open or read must not hang the suite
    try:
        with pytest.raises(UnsafePathError) as info:
            load_model(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert "w.bin" in str(info.value) and spy.marker.decode() not in str(info.value)
    assert not (spy.out.exists() and any(spy.out.iterdir()))


_RACE = """
import os, shutil, threading, time
import numpy as np
from tritc.errors import UnsafePathError
from tritc.frontend.onnx import load_model

race = 'model_dir/race'
os.mkdir(race)
open(race + '/model.onnx', 'wb').write(open('model_dir/model.onnx', 'rb').read())
good, evil = race + '/good.bin', race + '/evil.bin'
stop, seen = threading.Event(), {'data': 0, 'unsafe': 0}

def swapper():
    while not stop.is_set():  # w.bin: a regular file, then a symlink to the secret, then again, atomically
        open(good, 'wb').write(np.arange(16, dtype=np.float32).tobytes())
        os.replace(good, race + '/w.bin')
        time.sleep(0)  # give the GIL away in each state, so that loads see both
        os.symlink('../../outside/secret.bin', evil)
        os.replace(evil, race + '/w.bin')
        time.sleep(0)

t = threading.Thread(target=swapper)
t.start()
try:
    loads = 0  # at least 300 loads, and on until both sides of the race were seen (a busy machine skews it)
    while loads < 300 or (min(seen.values()) == 0 and loads < 20000):
        loads += 1
        try:
            w = load_model(race + '/model.onnx').weights['w']
        except UnsafePathError:
            seen['unsafe'] += 1
        except Exception as e:  # a missing file mid-swap is fine too; anything else is reported
            if 'not found' not in str(e):
                raise
        else:
            assert np.array_equal(w.reshape(-1), np.arange(16, dtype=np.float32)), w
            seen['data'] += 1
finally:
    stop.set()
    t.join()
    shutil.rmtree(race)
RESULT = seen
"""


def test_32_real_swap_race(spy):
    """A thread swaps w.bin between a regular file and a symlink to the secret while the model is loaded (300 times,
    more until both sides of the race were hit): every load sees the original data or refuses; the marker never comes
    back (the race folder is removed)."""
    spy.save(build("initializer", "w.bin"))
    out = isolated(spy, _RACE, memory=2 * 2**30, timeout=120)
    assert out.ok, out.stderr
    seen = ast.literal_eval(out.result)
    assert seen["data"] > 0 and seen["unsafe"] > 0, seen  # both sides of the race were hit


# ---- 33: archives --------------------------------------------------------------------------------------------------


def test_33_no_helper_extracts_archives():
    """tritc has no helper that unpacks a tar or zip of external data, so there is nothing to feed '..', absolute,
    symlink or hardlink members to. This test keeps it so: one that appears must come with case 33's tests
    (filter="data", members checked with commonpath)."""
    pattern = re.compile(r"\b(tarfile|zipfile|extractall|unpack_archive|shutil\.unpack)\b")
    package = Path(tritc.__file__).parent
    found = [f"{p.relative_to(package)}:{n}" for p in package.rglob("*.py")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, f"archive handling without case 33's tests: {found}"

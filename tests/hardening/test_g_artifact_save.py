"""HARDENING.md group G, artifact save under faults (cases 35-37): the destination is never half written.

Every case saves into the sandbox's out/ over an artifact that is already there, makes the save fail, and checks
the harness contract: the error names the file and the cause, out/ is byte for byte what it was (no temporary file
left), nothing outside out/ changed; then a retry writes an artifact that loads and runs.
"""

from __future__ import annotations

import errno
import functools
import os
import threading

import numpy as np
import pytest

import tritc
from tritc.errors import ArtifactWriteError, CompilerError
from tritc.runtime import artifact as art
from tritc.runtime import atomic
from tritc.runtime import serialize

from .artifacts import compile_small, reference
from .harness import refuses


@pytest.fixture(scope="module")
def model():
    return compile_small()


@pytest.fixture()
def dest(sb, model):
    """out/m.tritc, an artifact already there: every failed save must leave it byte-identical."""
    p = sb.out / "m.tritc"
    model.save(p)
    sb.mark()
    return p


def retry_works(sb, model, dest) -> None:
    model.save(dest)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(tritc.load(dest)(x=x), reference(x))
    assert sorted(os.listdir(sb.out)) == ["m.tritc"]


class FailingFile:
    """A file that writes `budget` bytes, then fails with `err` (disk full, an I/O error) in the middle of a write."""

    def __init__(self, f, budget: int, err: int):
        self.f, self.budget, self.err = f, budget, err

    def write(self, data) -> int:
        n = len(data)
        if n > self.budget:
            self.f.write(bytes(data[:self.budget]))  # a partial write, as a full disk does
            self.f.flush()
            raise OSError(self.err, os.strerror(self.err))
        self.budget -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fail_after(monkeypatch, nbytes: int, err: int) -> None:
    real = os.fdopen
    monkeypatch.setattr(art.os, "fdopen", lambda fd, mode="r", *a, **k: FailingFile(real(fd, mode, *a, **k), nbytes, err))


def weights_middle(model, dest) -> int:
    """The file offset of the middle of the weights section of what `model.save` writes."""
    a = art.read_artifact(dest)
    (w,) = [s for s in a.manifest["sections"] if s["name"] == "weights"]
    assert w["length"] > 0
    return a.data_start + w["offset"] + w["length"] // 2


# ---- 35: an exception inside the writer ------------------------------------------------------------------------

def test_35_fault_in_the_middle_of_the_weights(sb, model, dest, monkeypatch):
    fail_after(monkeypatch, weights_middle(model, dest), errno.EIO)
    refuses(sb, lambda: model.save(dest), ArtifactWriteError, names=["m.tritc", "Input/output error", "left as it was"])
    monkeypatch.undo()
    retry_works(sb, model, dest)


@pytest.mark.parametrize("stage", ["bitcode", "manifest"])
def test_35_fault_after_the_object_and_before_the_manifest(sb, model, dest, monkeypatch, stage):
    """`bitcode`: the object section is written, its bitcode not yet; `manifest`: every section is written, the
    file is not yet synced and renamed. The fault is not an OSError: it passes through unchanged."""
    def fault(s: str) -> None:
        if s == stage:
            raise RuntimeError(f"injected fault at {s}")

    monkeypatch.setattr(serialize, "write_artifact", functools.partial(art.write_artifact, _fault=fault))
    refuses(sb, lambda: model.save(dest), RuntimeError, names=[f"injected fault at {stage}"])
    monkeypatch.undo()
    retry_works(sb, model, dest)


def test_35_interrupt_is_cleaned_up_too(sb, model, dest, monkeypatch):
    """Ctrl-C in the middle of the write (a BaseException): the temporary file goes all the same."""
    def fault(s: str) -> None:
        if s == "weights":
            raise KeyboardInterrupt

    monkeypatch.setattr(serialize, "write_artifact", functools.partial(art.write_artifact, _fault=fault))
    with pytest.raises(KeyboardInterrupt):
        model.save(dest)
    sb.check()
    monkeypatch.undo()
    retry_works(sb, model, dest)


# ---- 36: disk full, read-only folder, symlink, concurrent saves ------------------------------------------------

def test_36_disk_full(sb, model, dest, monkeypatch):
    fail_after(monkeypatch, weights_middle(model, dest), errno.ENOSPC)
    err = refuses(sb, lambda: model.save(dest), ArtifactWriteError, names=["m.tritc", "no space left"])
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    retry_works(sb, model, dest)


def test_36_read_only_folder(sb, model, dest, monkeypatch):
    """A folder the user cannot write. Root writes through mode bits, so there the refusal of the file system is
    injected where tritc creates the temporary file (EROFS, a read-only mount)."""
    if os.geteuid() == 0:
        def refuse(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
        refuses(sb, lambda: model.save(dest), ArtifactWriteError, names=["m.tritc", "not writable", "out"])
    else:
        sb.out.chmod(0o555)
        try:
            refuses(sb, lambda: model.save(dest), ArtifactWriteError, names=["m.tritc", "not writable"])
        finally:
            sb.out.chmod(0o755)
    monkeypatch.undo()
    retry_works(sb, model, dest)


def test_36_symlink_destination_is_replaced_not_written_through(sb, model):
    """out/m.tritc is a link to the secret outside: the save replaces the link and never writes through it."""
    link = sb.out / "m.tritc"
    link.symlink_to(os.path.relpath(sb.secret, sb.out))
    sb.mark()
    model.save(link)
    assert not link.is_symlink()
    assert sb.secret.read_bytes() == sb.marker * 64
    sb.check(out_may_change=True)
    tritc.load(link)


def test_36_two_concurrent_saves(sb, model):
    """Two threads save two different models to one path, over and over, while a third reads it: every read sees
    one whole artifact (never a mix or a half), the last rename wins, and no temporary file is left."""
    other = compile_small(last=-5.0)
    dest = sb.out / "m.tritc"
    rounds = 8
    start = threading.Barrier(3)
    errors: list[BaseException] = []
    done = threading.Event()

    def saver(m) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                m.save(dest)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    seen = []

    def reader() -> None:
        start.wait()
        while not done.is_set():
            if dest.exists():
                seen.append(art.read_artifact(dest).manifest["sections"][0]["sha256"])

    threads = [threading.Thread(target=saver, args=(m,)) for m in (model, other)]
    watcher = threading.Thread(target=reader)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert seen, "the reader never saw the file"
    assert sorted(os.listdir(sb.out)) == ["m.tritc"], "a temporary file was left behind"
    x = np.ones((2, 4), np.float32)
    out = tritc.load(dest)(x=x)
    assert any(np.array_equal(out, reference(x, last)) for last in (-4.0, -5.0))


# ---- 37: LLVM IR that does not verify --------------------------------------------------------------------------

BAD_FUNCTION = """
define void @tritc_injected_bad() {
entry:
  %a = add i32 %b, 1
  %b = add i32 %a, 1
  ret void
}
"""


class WithBadFunction:
    """An llvmlite module whose text carries a function that parses but does not verify (a use before its def)."""

    def __init__(self, module):
        self.module = module

    def __str__(self) -> str:
        return str(self.module) + BAD_FUNCTION

    def __getattr__(self, name):
        return getattr(self.module, name)


def test_37_bad_ir_in_the_compiled_model(sb, monkeypatch):
    """The model's module fails LLVM's verifier: a CompilerError naming the function, and nothing written."""
    from tritc.codegen.llvm import compiler

    real = compiler.lower_graph
    monkeypatch.setattr(compiler, "lower_graph", lambda *a, **k: WithBadFunction(real(*a, **k)))

    def compile_and_save():
        compile_small().save(sb.out / "m.tritc")

    refuses(sb, compile_and_save, CompilerError, names=["LLVM IR verify failed", "function tritc_injected_bad",
                                                        "does not dominate"])


def test_37_bad_ir_in_the_jit(sb):
    """The JIT path (kernels compiled and loaded in this process) verifies the same way, before any code is mapped."""
    from tritc.codegen.llvm.jit import compile_and_load
    from tritc.codegen.llvm.target import host_target

    refuses(sb, lambda: compile_and_load(BAD_FUNCTION, host_target()), CompilerError,
            names=["LLVM IR verify failed", "function tritc_injected_bad"])

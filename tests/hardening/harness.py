"""The harness contract of ../shared/HARDENING.md, shared by every test under tests/hardening/.

Every case runs inside a `Sandbox`: a temporary directory holding `model_dir/` (where the test puts the model),
`outside/secret.bin` (a unique marker that must never be read) and `out/` (the only place tritc may write).
A test states what it expects and the harness checks the contract:

- E1: the expected exception class; `isolated(...)` runs the dangerous cases in a subprocess with an address-space
  limit and a wall-clock timeout, and fails on any signal, hang or MemoryError;
- E2: the message is one line and names the offending object and the limit (`names=`);
- E3: `out/` holds exactly what it held before (an existing artifact there is byte-identical afterwards);
- E4: the marker never appears in any output or exception text, and nothing outside `out/` was created or
  modified;
- E5: bounded time and memory (the subprocess limits; `peak_rss_mib` of the child is reported).

Use `refuses(sb, fn, ErrorClass, names=...)` for a case run in this process, `sb.cli(...)` for the command line
and `isolated(sb, code, ...)` for the ones that could hang or allocate without bound.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import pytest

from tritc.errors import CompilerError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MEMORY = 4 * 2**30  # RLIMIT_AS of an isolated case: LLVM and onnxruntime reserve address space up front
DEFAULT_TIMEOUT = 120.0
_RESULT = "@@hardening-result@@"


@dataclass
class Sandbox:
    root: Path
    marker: bytes = field(default_factory=lambda: b"TRITC-SECRET-" + uuid.uuid4().hex.encode())

    def __post_init__(self) -> None:
        self.model_dir = self.root / "model_dir"
        self.outside = self.root / "outside"
        self.out = self.root / "out"
        for d in (self.model_dir, self.outside, self.out):
            d.mkdir(parents=True, exist_ok=True)
        self.secret = self.outside / "secret.bin"
        self.secret.write_bytes(self.marker * 64)
        self.before = self.snapshot()

    # ---- writing the case ----

    def save(self, m: onnx.ModelProto | bytes, name: str = "model.onnx") -> Path:
        """Write a model (or raw bytes) into model_dir/ and re-take the snapshot the contract compares against."""
        p = self.model_dir / name
        p.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
        self.before = self.snapshot()
        return p

    def mark(self) -> None:
        """Take the snapshot now: what the test set up counts as the state before the call."""
        self.before = self.snapshot()

    # ---- the contract ----

    def snapshot(self) -> dict[str, tuple[int, int, bytes | None]]:
        """Every entry under the sandbox: size, mtime and (for files in out/) the bytes."""
        snap: dict[str, tuple[int, int, bytes | None]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                rel = str(p.relative_to(self.root))
                data = p.read_bytes() if rel.startswith("out/") and p.is_file() and not p.is_symlink() else None
                # a folder's own mtime changes with its entries, which are compared one by one
                snap[rel] = (0, 0, None) if p.is_dir() and not p.is_symlink() else (st.st_size, st.st_mtime_ns, data)
        return snap

    def check(self, texts: Iterable[str] = (), *, out_may_change: bool = False) -> None:
        """E3 and E4: out/ unchanged (unless the call was meant to write there), nothing else created or modified,
        and the marker in none of `texts`."""
        after = self.snapshot()
        for rel in sorted(set(self.before) | set(after)):
            if rel.startswith("out/") and out_may_change:
                continue
            assert self.before.get(rel) == after.get(rel), f"E3/E4: {rel} was created, modified or removed"
        marker = self.marker.decode()
        for text in texts:
            assert marker not in text, "E4: the marker of outside/secret.bin leaked into an output"

    def cli(self, *args: str | os.PathLike[str], expect_exit: int = 2, names: Sequence[str] = (),
            memory: int = DEFAULT_MEMORY, timeout: float = DEFAULT_TIMEOUT, out_may_change: bool = False) -> str:
        """Run `python -m tritc ARGS` in a subprocess (cwd = the sandbox) under the limits; check the exit code, a
        one-line `tritc: error:` with `names` in it (when it fails), no traceback, and the contract. Returns stderr."""
        proc = _spawn([sys.executable, "-m", "tritc", *map(str, args)], self.root, memory, timeout)
        assert proc.returncode == expect_exit, f"exit {proc.returncode}, wanted {expect_exit}:\n{proc.stderr[-3000:]}"
        if expect_exit != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tritc: error:")]
            assert len(errors) == 1, proc.stderr[-3000:]
            assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
            for n in names:
                assert n in errors[0], f"E2: {n!r} not named in: {errors[0]}"
        self.check([proc.stdout, proc.stderr], out_may_change=out_may_change)
        return proc.stderr


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, f"E2: not one line: {msg!r}"
    return msg


def refuses(sb: Sandbox, fn: Callable[[], Any], error: type[BaseException] = CompilerError, *,
            names: Sequence[str] = ()) -> BaseException:
    """In this process: `fn()` raises `error` with a one-line message naming every one of `names`; the contract
    holds. Returns the exception for further checks."""
    with pytest.raises(error) as info:
        fn()
    msg = one_line(info.value)
    for n in names:
        assert n in msg, f"E2: {n!r} not named in: {msg}"
    sb.check([msg])
    return info.value


@dataclass
class Outcome:
    """What an isolated case did: the exception (class name, its bases, message) or its result, and its cost."""

    ok: bool
    error: str | None
    bases: list[str]
    message: str
    result: Any
    peak_rss_mib: float
    seconds: float
    stderr: str

    def raised(self, error: type[BaseException], names: Sequence[str] = ()) -> None:
        assert not self.ok, f"E1: no error raised (result {self.result!r})"
        assert error.__name__ in self.bases, f"E1: {self.error} is not a {error.__name__}: {self.message}\n{self.stderr}"
        assert self.message and "\n" not in self.message, f"E2: not one line: {self.message!r}"
        for n in names:
            assert n in self.message, f"E2: {n!r} not named in: {self.message}"


# The peak resident set of this process image: VmHWM, not getrusage's ru_maxrss, which Linux carries across exec
# from the forked parent (a pytest worker of 400 MB would make every child look that big).
PEAK_RSS = """
def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_CHILD = PEAK_RSS + f"""
import json, sys, time, traceback
t0 = time.perf_counter()
ns = {{"__name__": "__hardening__", "peak_rss_mib": peak_rss_mib}}  # the case may read its own peak
try:
    exec(compile(sys.argv[1], "<hardening case>", "exec"), ns)
    out = {{"ok": True, "result": repr(ns.get("RESULT"))}}
except BaseException as e:
    out = {{"ok": False, "error": type(e).__name__, "bases": [c.__name__ for c in type(e).__mro__], "message": str(e),
           "traceback": traceback.format_exc()}}
out["peak_rss_mib"] = peak_rss_mib()
out["seconds"] = time.perf_counter() - t0
sys.stdout.flush()
print({_RESULT!r} + json.dumps(out))
"""


def isolated(sb: Sandbox, code: str, *, memory: int = DEFAULT_MEMORY, timeout: float = DEFAULT_TIMEOUT,
             out_may_change: bool = False) -> Outcome:
    """Run `code` (Python, cwd = the sandbox; it may set RESULT) in a subprocess limited to `memory` bytes of address
    space and `timeout` seconds. Fails the test on a signal, a timeout or a MemoryError (E1, E5); checks E3/E4."""
    proc = _spawn([sys.executable, "-c", _CHILD, code], sb.root, memory, timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT)]
    if not lines:
        pytest.fail(f"E1: the case died (exit {proc.returncode}) without a result:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len(_RESULT):])
    if out.get("error") == "MemoryError":
        pytest.fail(f"E1: MemoryError:\n{out.get('traceback')}")
    sb.check([proc.stdout, proc.stderr], out_may_change=out_may_change)
    return Outcome(ok=out["ok"], error=out.get("error"), bases=out.get("bases", []), message=out.get("message", ""),
                   result=out.get("result"), peak_rss_mib=out["peak_rss_mib"], seconds=out["seconds"],
                   stderr=out.get("traceback", "") + proc.stderr)


def _spawn(argv: list[str], cwd: Path, memory: int, timeout: float) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"E5: no answer within {timeout:.0f} s (a hang): {argv[-1][:200]!r}")
    if proc.returncode < 0:
        pytest.fail(f"E1: killed by signal {signal.Signals(-proc.returncode).name} after "
                    f"{time.monotonic() - t0:.1f} s:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def sb(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)

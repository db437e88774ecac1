"""A fuzzing campaign: seeds checked one after another in a worker process that a watchdog can kill.

The worker (`python -m tritc.fuzz --worker`) reads seeds on stdin and answers on its own pipe, saying which stage
it is in (reference, compile, run, ...) before each. A case that takes longer than the timeout, at compile time as
much as at run time, is a "timeout" finding in that stage; a worker that dies (a signal, an abort) is a "crash"
finding. Either way the worker is started again and the campaign goes on. Every finding is written out as
OUT/<seed>.onnx, OUT/<seed>.npz (the feeds) and OUT/<seed>.json (seed, outcome, stage, message, versions).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .generate import GENERATOR_VERSION, Case, generate
from .oracle import Outcome

# RLIMIT_AS of the worker: the 4 GiB of tests/hardening (LLVM and onnxruntime reserve address space up front) plus
# the FPGA simulator's DRAM, 4 GiB of zeros for the edge preset that the OS commits only where written.
WORKER_MEMORY = 16 * 2**30


def versions() -> dict[str, str]:
    import llvmlite
    import onnx
    import onnxruntime

    from .. import __version__

    return {"tritc": __version__, "generator": str(GENERATOR_VERSION), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "llvmlite": llvmlite.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def save_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{k}/{name}": a for k, feed in enumerate(feeds) for name, a in feed.items()})


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as z:
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for key in z.files:
            k, name = key.split("/", 1)
            feeds.setdefault(int(k), {})[name] = z[key]
    return [feeds[k] for k in sorted(feeds)]


def write_finding(out: Path, case: Case, outcome: Outcome) -> Path:
    """OUT/<seed>.onnx, .npz and .json; returns the .json."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{case.seed}.onnx").write_bytes(case.model.SerializeToString())
    save_feeds(out / f"{case.seed}.npz", case.feeds)
    record = {"seed": case.seed, "kind": outcome.kind, "phase": outcome.phase, "message": outcome.message,
              "fpga": case.ternary, "options": case.options, "ops": case.ops, "versions": versions(),
              "replay": f"python -m tritc.fuzz --replay {out / f'{case.seed}.onnx'}"}
    path = out / f"{case.seed}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def signature(outcome: Outcome) -> str:
    """A finding without its numbers and names: findings with the same signature are likely one bug."""
    text = re.sub(r"[-+]?\d[\d.e+-]*|'[^']*'|\[[^\]]*\]|%\S+|\bv\d+\b", "#", outcome.message)
    return f"{outcome.kind}/{outcome.phase}: {text[:160]}"


class Worker:
    """The worker process; `check(seed, timeout)` returns the outcome, a timeout or a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    def start(self) -> None:
        def limit() -> None:
            os.setsid()
            resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        self.log.seek(0)
        self.log.truncate()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tritc.fuzz", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, preexec_fn=limit)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def check(self, seed: int, timeout: float) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{seed}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:  # the worker died after its last answer: start another
            self.stop()
            return self.check(seed, timeout)
        phase, deadline, buf = "start", time.monotonic() + timeout, b""
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                return Outcome("timeout", f"no answer within {timeout:.0f} s (stage {phase})", phase)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                self.proc = None
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace").strip().splitlines()[-6:]
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
                return Outcome("crash", f"the worker died ({how}) in stage {phase}: {' | '.join(tail)}"[:2000], phase)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "stage" in msg:
                    phase = msg["stage"]
                else:
                    return Outcome(msg["kind"], msg["message"], msg["phase"])


def worker_main() -> None:
    """The worker loop: a seed per line on stdin; JSON lines on the protocol pipe (fd 1 is moved to stderr so that
    nothing the compiler prints can break the protocol)."""
    from .oracle import check

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def say(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    for line in sys.stdin:
        seed = int(line)
        try:
            case = generate(seed)
        except Exception as e:  # noqa: BLE001 - the generator's bug, not tritc's: said, not a finding
            say({"kind": "generator", "message": f"{type(e).__name__}: {e}", "phase": "generate"})
            continue
        o = check(case.model, case.feeds, fpga=case.ternary, phase=lambda p: say({"stage": p}), **case.options)
        say({"kind": o.kind, "message": o.message, "phase": o.phase})
        gc.collect()  # compiled models hold reference cycles: free each case's simulator DRAM and code now


def _stop_on_signals() -> list[int]:
    """SIGINT and SIGTERM end a campaign after the case at hand (its summary is printed): the returned list is
    non-empty once one came."""
    came: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda num, _frame: came.append(num))
    return came


def run_campaign(seed: int, out: Path, minutes: float | None = None, cases: int | None = None, timeout: float = 60.0,
                 say: Callable[[str], None] = print) -> Counter:
    """Seeds seed, seed+1, ... until `minutes` have passed or `cases` are done; returns the outcome counts."""
    counts: Counter = Counter()
    sigs: Counter = Counter()
    worker = Worker()
    t0 = time.monotonic()
    last = t0
    s = seed
    stop = _stop_on_signals()
    try:
        while (minutes is None or time.monotonic() - t0 < minutes * 60) and (cases is None or s - seed < cases) \
                and not stop:
            o = worker.check(s, timeout)
            counts[o.kind] += 1
            if o.finding:
                sig = signature(o)
                sigs[sig] += 1
                path = write_finding(out, generate(s), o)
                if sigs[sig] == 1:
                    say(f"seed {s}: {o.kind} in {o.phase}: {o.message[:300]}  -> {path}")
            s += 1
            if time.monotonic() - last > 30:
                last = time.monotonic()
                say(f"[{(last - t0) / 60:5.1f} min] {s - seed} cases: {dict(counts)}")
    finally:
        worker.stop()
    elapsed = time.monotonic() - t0
    say(f"done: {s - seed} cases (seeds {seed}..{s - 1}) in {elapsed / 60:.1f} min, {(s - seed) / max(elapsed, 1e-9):.2f}"
        f"/s: {dict(counts)}")
    if sigs:
        say(f"{sum(sigs.values())} findings, {len(sigs)} distinct:")
        for sig, n in sigs.most_common():
            say(f"  {n:4d}x {sig}")
    return counts


# ---- the readers of untrusted bytes (inputs.py) -------------------------------------------------------------------

class _WatchdogError(BaseException):  # not an Exception: run_target must not catch it
    pass


def _alarm(_sig: int, _frame: object) -> None:
    raise _WatchdogError


def run_input_campaign(target: str, seed: int, out: Path, minutes: float | None = None, execs: int | None = None,
                       timeout: float = 10.0, say: Callable[[str], None] = print) -> Counter:
    """Mutations of the target's seeds (inputs.py), in this process: each execution under a SIGALRM watchdog of
    `timeout` seconds (the readers are Python: a loop that does not end is interrupted and is a "timeout" finding).
    Findings are written as OUT/<target>-<seed>-<n>.bin and .json."""
    from .inputs import mutate, run_target, seeds

    rng = np.random.default_rng(seed)
    corpus = seeds(target)
    counts: Counter = Counter()
    sigs: Counter = Counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    t0 = last = time.monotonic()
    n = 0
    try:
        while (minutes is None or time.monotonic() - t0 < minutes * 60) and (execs is None or n < execs):
            base = corpus[int(rng.integers(len(corpus)))]
            data = mutate(base, rng)
            if rng.random() < 0.05:  # now and then a splice of two seeds
                other = corpus[int(rng.integers(len(corpus)))]
                data = data[:int(rng.integers(0, len(data) + 1))] + other[int(rng.integers(0, len(other) + 1)):]
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                problem = run_target(target, data)
            except _WatchdogError:
                problem = f"timeout: no answer within {timeout:.0f} s"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            n += 1
            counts["finding" if problem else "ok"] += 1
            if problem:
                sig = re.sub(r"\d+", "#", problem)[:160]
                sigs[sig] += 1
                if sigs[sig] <= 3:
                    out.mkdir(parents=True, exist_ok=True)
                    stem = out / f"{target}-{seed}-{n}"
                    stem.with_suffix(".bin").write_bytes(data)
                    stem.with_suffix(".json").write_text(json.dumps(
                        {"target": target, "seed": seed, "execution": n, "problem": problem, "versions": versions(),
                         "replay": f"python -m tritc.fuzz --target {target} --replay {stem.with_suffix('.bin')}"},
                        indent=1) + "\n")
                if sigs[sig] == 1:
                    say(f"{target} execution {n}: {problem[:300]}  -> {stem.with_suffix('.bin')}")
            if time.monotonic() - last > 30:
                last = time.monotonic()
                say(f"[{(last - t0) / 60:5.1f} min] {target}: {n} executions: {dict(counts)}")
    finally:
        signal.signal(signal.SIGALRM, old)
    elapsed = time.monotonic() - t0
    say(f"done: {target}: {n} executions in {elapsed / 60:.1f} min ({n / max(elapsed, 1e-9):.0f}/s): {dict(counts)}")
    for sig, k in sigs.most_common():
        say(f"  {k:5d}x {sig}")
    return counts

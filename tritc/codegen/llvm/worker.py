"""LLVM optimisation and code generation in a separate, persistent worker process.

LLVM (as llvmlite ships it) is built with assertions on: a rare bug in one of its passes aborts the
whole process. A compiler of untrusted models must not take its caller down with it, so the
expensive, crash-prone part (optimise + emit) runs in a child process that stays alive between
compiles. If the child dies, the compile that killed it raises CompilerError naming the signal,
and the next compile starts a fresh child. TRITC_LLVM_IN_PROCESS=1 runs everything in-process
(for debugging with a native debugger).

Protocol on the child's stdin/stdout: length-prefixed JSON header + payload frames.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from typing import Any

from ...errors import CompilerError
from .target import Target

_FRAME = struct.Struct("<Q")


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: Any) -> bytes | None:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (n,) = _FRAME.unpack(head)
    data = stream.read(n)
    return data if len(data) == n else None


def compile_text(text: str, target: Target, name: str = "module") -> tuple[bytes, bytes]:
    """(object code, optimised bitcode) of LLVM IR text for `target`, in the worker process."""
    if os.environ.get("TRITC_LLVM_IN_PROCESS") == "1":
        return _compile_here(text, target, name)
    return _WORKER.compile(text, target, name)


def _compile_here(text: str, target: Target, name: str) -> tuple[bytes, bytes]:
    from .jit import emit_object, optimize, parse

    ref = optimize(parse(text, name), target)
    return emit_object(ref, target), ref.as_bitcode()


class _Worker:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def close(self) -> None:
        """Let the child finish (its stdin closes) and reap it."""
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            p.kill()
            p.wait()
        finally:
            if p.stdout is not None:
                p.stdout.close()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONHASHSEED="0")
        return subprocess.Popen([sys.executable, "-m", "tritc.codegen.llvm.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)

    def compile(self, text: str, target: Target, name: str) -> tuple[bytes, bytes]:
        header = json.dumps({"triple": target.triple, "cpu": target.cpu, "features": target.features,
                             "opt_level": target.opt_level, "name": name}).encode()
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            p = self.proc
            try:
                assert p.stdin is not None and p.stdout is not None
                _write_frame(p.stdin, header)
                _write_frame(p.stdin, text.encode())
                status = _read_frame(p.stdout)
                first = _read_frame(p.stdout)
                second = _read_frame(p.stdout)
            except (BrokenPipeError, OSError):
                status = None
            if status is None or first is None or second is None:
                code = p.wait()
                self.proc = None
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                raise CompilerError(f"LLVM crashed ({how}) while compiling {name}; this is a bug in tritc or LLVM, "
                                    f"please report it with the model")
            if status == b"error":
                raise CompilerError(first.decode())
            return first, second


_WORKER = _Worker()
atexit.register(_WORKER.close)


def _serve() -> None:
    """The child: read jobs until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read_frame(stdin)
        if header is None:
            return
        text = _read_frame(stdin)
        if text is None:
            return
        job = json.loads(header)
        target = Target(job["triple"], job["cpu"], job["features"], int(job["opt_level"]))
        try:
            obj, bc = _compile_here(text.decode(), target, job["name"])
        except CompilerError as e:
            for frame in (b"error", str(e).encode(), b""):
                _write_frame(stdout, frame)
            continue
        for frame in (b"ok", obj, bc):
            _write_frame(stdout, frame)


if __name__ == "__main__":
    _serve()

"""Atomic file replacement, shared by the artifact writer and every command that writes a file.

A reader of the destination sees the old file or the complete new one, never half of it: the data goes to a
temporary file in the destination's folder, is flushed to disk, and is renamed over the destination (a symlink
there is replaced, never written through); the folder is then fsynced so that the rename itself is durable.
On any failure the temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TERMINATING = ("SIGTERM", "SIGHUP")  # signals whose default action ends the process with no Python cleanup


class Terminated(SystemExit):
    """A terminating signal arrived while a temporary file existed: raised so that it is removed; the process then
    exits with 128 + the signal's number, as the signal would have."""


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(128 + signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """While a temporary file exists, SIGTERM and SIGHUP (if left at their default action, in the main thread,
    where Python runs handlers) raise Terminated instead of killing the process before it can remove the file.
    SIGINT already raises KeyboardInterrupt. SIGKILL cannot be caught: the file may then remain, under its
    temporary name (`.NAME.*.tmp`), never as the destination."""
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in TERMINATING:
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
                saved[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def atomic_file(path: str | os.PathLike[str], error: Callable[[Path, OSError], Exception]) -> Iterator[IO[bytes]]:
    """A binary file to write that replaces `path` when the block ends without an exception, and vanishes when it
    does not. An OSError of the file system (at creation, write, fsync or rename) becomes `error(dest, e)`; any
    other exception passes through after the cleanup. The new file gets the usual 0666 & ~umask permissions."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    with signals_raise():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise error(dest, e) from e
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dest)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError):
                raise error(dest, e) from e
            raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)  # make the rename itself durable
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is atomic
    finally:
        os.close(dfd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

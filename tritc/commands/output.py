"""What the commands write: atomic files, text to stdout or a file, progress lines with elapsed time, sizes.

Everything a command prints for a person goes through here, so that every command reads alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import OptionError
from ..runtime.atomic import atomic_file


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the complete new one, never half
    (runtime/atomic.py); a failure is an OptionError naming the file, and nothing is left behind."""
    dest = Path(path)
    if dest.is_dir():
        raise OptionError(f"{dest}: is a directory")
    with atomic_file(dest, _cannot_write) as f:
        f.write(data)


def _cannot_write(dest: Path, e: OSError) -> OptionError:
    return OptionError(f"{dest}: cannot write: {e.strerror or e}")


def ending_in_newline(text: str) -> str:
    """`text` with its last line ended: every line tritc prints or writes ends with a newline."""
    return text if not text or text.endswith("\n") else text + "\n"


def emit(text: str, output: str | None) -> None:
    """Text to stdout, or atomically to the file `output` ('-' is stdout too), its last line ended."""
    text = ending_in_newline(text)
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text.encode("utf-8"))


def check_output_file(path: str) -> Path:
    """Fail before any work when `path` cannot be a file we write: its folder is missing, or it is a folder."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if dest.is_dir():
        raise OptionError(f"{dest}: is a directory (give a file name, e.g. {dest / 'model.tritc'})")
    if not folder.is_dir():
        raise OptionError(f"{dest}: the folder {folder} does not exist")
    return dest


def prepare_folder(path: str | os.PathLike[str], what: str) -> Path:
    """A folder to write into, created (with its parents) if missing; a file in the way is an error."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"{folder}: {what} must be a folder, and this is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError(f"{folder}: cannot create the folder: {e.strerror}") from None
    return folder


class Progress:
    """Progress lines on stderr, each with the time since the command started: `[   1.23s] compiling ...`.

    As git does: on when stderr is a terminal, `--progress` turns them on anyway (logs), `-q` off; so a
    failing command run by a script prints its one error line and nothing else."""

    def __init__(self, enabled: bool = True):
        self.t0 = time.perf_counter()
        self.enabled = enabled

    @classmethod
    def from_args(cls, args: object) -> Progress:
        forced = getattr(args, "progress", None)
        return cls(forced if forced is not None else sys.stderr.isatty())

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{self.elapsed:7.2f}s] {message}", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as `ls -h --si`)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


def human_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns listed in `right` are right-aligned."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def format_bindings(bindings: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in bindings.items()) or "static shapes"

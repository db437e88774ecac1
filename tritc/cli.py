"""The `tritc` command line: one subcommand per function (`tritc dump` today; compile, run, verify, ... later).

User errors (a bad model, a bad option: any CompilerError) print one line, `tritc: error: ...`, and
exit with status 2; anything else is a bug in tritc and keeps its traceback (status 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import CompilerError, OptionError

EXIT_OK = 0
EXIT_USER_ERROR = 2  # the same status argparse uses for a bad command line
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]


# ---- output -----------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the complete new one, never half.

    A temporary file in the same folder is written, flushed to disk and renamed over `path`; a
    symlink at `path` is replaced, not written through. Nothing is left behind on failure."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if dest.is_dir():
        raise OptionError(f"{dest}: is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OptionError(f"{dest}: cannot write here: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
            raise OptionError(f"{dest}: cannot write: {e.strerror}") from None
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)  # make the rename itself durable
    except OSError:
        pass
    finally:
        os.close(dfd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def emit(text: str, output: str | None) -> None:
    """Text to stdout, or atomically to the file `output` ('-' is stdout too)."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text.encode("utf-8"))


# ---- subcommands ------------------------------------------------------------------------------


def cmd_dump(args: argparse.Namespace) -> int:
    """tritc dump MODEL.onnx [-o FILE] [--format text|dot]: the imported IR, as text or Graphviz dot."""
    from .frontend.onnx import load_model

    graph = load_model(args.model)
    if args.format == "dot":
        from .ir.dot import to_dot

        text = to_dot(graph)
    else:
        from .ir.text import print_graph

        text = print_graph(graph)
    emit(text, args.output)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritc", description="A compiler for ternary neural networks: ONNX in, "
                                     "native CPU code or FPGA instruction streams out.")
    parser.add_argument("--version", action="version", version=f"tritc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dump = sub.add_parser("dump", help="import a model and print its IR", description="Import an ONNX model and "
                          "print the tritc IR (text), or a Graphviz dot picture of it.")
    dump.add_argument("model", metavar="MODEL.onnx", help="the ONNX model (external data is read from its folder)")
    dump.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    dump.add_argument("--format", choices=("text", "dot"), default="text", help="IR text (default) or Graphviz dot")
    dump.set_defaults(func=cmd_dump)
    return parser


# ---- entry point ------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            status = func(args)
        except CompilerError as e:
            _print_warnings(caught)
            print(f"tritc: error: {_one_line(str(e))}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("tritc: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`tritc dump m.onnx | head`): not an error; silence the final flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
    _print_warnings(caught)
    return status


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        if issubclass(w.category, DeprecationWarning):
            continue
        print(f"tritc: warning: {_one_line(str(w.message))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

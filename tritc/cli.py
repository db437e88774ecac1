"""The `tritc` command line: dump, compile, run, inspect, verify, bench (one module each in tritc/commands/).

Exit status: 0 ok; 1 verify found a mismatch, or a bug in tritc (which keeps its traceback); 2 a user error.
User errors (a bad model, option, input file or artifact: any CompilerError) print one line,
`tritc: error: ...`, with no traceback; any other exception is a bug: its traceback, then one line saying so.
docs/CLI.md describes every command and flag.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import __version__
from .commands import modules
from .commands.output import emit, write_atomic
from .errors import CompilerError, OptionError, RunError

EXIT_OK = 0
EXIT_MISMATCH = 1  # verify: outputs differ beyond tolerance
EXIT_BUG = 1  # an exception that is not a CompilerError: a bug in tritc (Python's own status for an uncaught one)
EXIT_USER_ERROR = 2  # the same status argparse uses for a bad command line
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other tritc error (usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("tritc").strip()
        print(f"tritc: error: {where + ': ' if where else ''}{message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tritc", description="A compiler for ternary neural networks: ONNX in, native CPU code or "
                                              "FPGA instruction streams out. Exit status: 0 ok, 1 verify mismatch "
                                              "(or an internal bug), 2 user error.")
    parser.add_argument("--version", action="version", version=f"tritc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in modules():
        module.add_parser(sub)
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
        except (CompilerError, RunError) as e:  # the input's fault, or compiled code out of memory: one line
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
        except Exception:
            _print_warnings(caught)
            _report_bug()
            return EXIT_BUG
    _print_warnings(caught)
    return status


def _report_bug() -> None:
    """The traceback of the exception being handled, and a line that says what it is and what to do with it."""
    try:
        sys.stdout.flush()  # what was printed before the failure comes before the traceback
    except OSError:
        pass
    traceback.print_exc()
    print(f"tritc: internal error: this is a bug in tritc {__version__} (Python {platform.python_version()}), not a "
          f"problem with the input; please report it with the command line and the traceback above", file=sys.stderr)


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        if issubclass(w.category, DeprecationWarning):
            continue
        print(f"tritc: warning: {_one_line(str(w.message))}", file=sys.stderr)


__all__ = ["EXIT_BUG", "EXIT_MISMATCH", "EXIT_OK", "EXIT_USER_ERROR", "OptionError", "build_parser", "emit", "main", "write_atomic"]

if __name__ == "__main__":
    sys.exit(main())

"""tritc hw: the accelerator's RTL (docs/HW.md). One subcommand per module `hw_<name>.py` (its `add_parser(sub)` and
`run(args)`, as the top-level commands), listed in SUBCOMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("verilog", "cosim")   # in the order `tritc hw --help` lists them


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="the accelerator's RTL: Verilog for synthesis, co-simulation against the Simulator",
                       description="The accelerator's RTL (Amaranth, tritc/hw/): " + ", ".join(SUBCOMMANDS) + ".")
    inner = p.add_subparsers(dest="hw_command", metavar="SUBCOMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.hw_{name}").add_parser(inner)

    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=usage)

"""tritc hw verilog: one component of the accelerator, built for an FPGA config, as synthesisable Verilog."""

from __future__ import annotations

import argparse

from .output import check_output_file, ending_in_newline, write_atomic

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..hw.top import DEFAULT_TOP, NAMES, NOT_BUILT

    v = sub.add_parser("verilog", help="write a component as synthesisable Verilog",
                       description="Build a component of the accelerator for an FPGA config and write it as one "
                                   "synthesisable Verilog module named after it (Amaranth's back end). The "
                                   "resource figures of a Yosys synth_xilinx run are in docs/HW.md, 'Synthesis' "
                                   "(make hw).")
    v.add_argument("--fpga-config", metavar="edge|datacenter|FILE.json", default="edge",
                   help="the accelerator build (default edge)")
    v.add_argument("-o", "--output", metavar="FILE.v", required=True, help="the Verilog file to write (atomically)")
    v.add_argument("--top", metavar="NAME", default=DEFAULT_TOP,
                   help=f"the component (default {DEFAULT_TOP}): {', '.join(NAMES)}"
                        + (f"; {', '.join(NOT_BUILT)} once it is built" if NOT_BUILT else ""))
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hw.params import hw_params
    from ..hw.top import verilog_of

    check_output_file(args.output)   # before the minutes a preset's matrix unit can take
    params = hw_params(args.fpga_config)
    write_atomic(args.output, ending_in_newline(verilog_of(args.top, params)).encode("utf-8"))
    return EXIT_OK

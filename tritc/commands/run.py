"""tritc run: load an artifact, check the inputs (.npy files), run, and save each output as a .npy file
(or print a summary of each)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import OptionError
from .inputs import check_names, npy_bytes, output_file_names, parse_input_files, summarize
from .options import add_key_option, add_limit_option, add_threads_option, limits_of, read_key_option
from .output import prepare_folder, table, write_atomic

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a compiled model on .npy inputs",
                       description="Load a .tritc artifact (every section verified), check the inputs by name, dtype "
                                   "and shape, run, and write each output to DIR/<output name>.npy, or print a "
                                   "summary of each (shape, dtype, min/max/mean) without --output-dir.")
    p.add_argument("artifact", metavar="MODEL.tritc", help="an artifact written by tritc compile")
    p.add_argument("--input", metavar="NAME=FILE.npy", action="append", default=[],
                   help="one per model input (numpy.save format; pickles are refused)")
    p.add_argument("--output-dir", metavar="DIR", help="write each output as DIR/<name>.npy (DIR created if missing)")
    p.add_argument("--device", choices=("sim", "rtl"), default=None,
                   help="FPGA artifacts: run the streams on the Simulator (sim, the default) or on the RTL core in "
                        "simulation (rtl: LOAD, STORE, NOP and FINISH so far; a stream with GEMM or VOP is refused)")
    add_threads_option(p, "as compiled")
    add_limit_option(p)
    add_key_option(p)
    p.set_defaults(func=run)


def check_feed(model: Any, feeds: Mapping[str, np.ndarray]) -> None:
    """The model's own input checks (names, dtypes, ranks, sizes, consistent dims), as one-line user errors."""
    check_names(feeds, [(i.name, i.type) for i in model.inputs], all_required=True)
    try:
        model._check_inputs(feeds)  # the very checks run() makes before native code runs
    except (TypeError, ValueError) as e:
        raise OptionError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    import tritc

    limits = limits_of(args)
    model = tritc.load(args.artifact, threads=args.threads, key=read_key_option(args.key),
                       **({"device": args.device} if args.device else {}))
    model.max_arena_bytes = limits.max_arena_bytes
    model.progress = lambda msg: print(f"tritc: note: {msg} (the artifact has no code for this shape yet)", file=sys.stderr)
    feeds = parse_input_files(args.input, limits)
    check_feed(model, feeds)
    results = model.run(None, feeds)
    if getattr(model, "target_kind", "cpu") == "fpga":
        from .fpga_report import format_fpga_report

        sys.stderr.write(format_fpga_report(model.stats))
    names = [o.name for o in model.outputs]
    if args.output_dir is None:
        rows = [(name, summarize(r)) for name, r in zip(names, results)]
        sys.stdout.write(table(rows))
        return EXIT_OK
    folder = prepare_folder(args.output_dir, "--output-dir")
    for name, fname, r in zip(names, output_file_names(names), results):
        path = folder / fname
        write_atomic(path, npy_bytes(np.ascontiguousarray(r)))
        print(f"{name}: {summarize(r)} -> {path}")
    return EXIT_OK

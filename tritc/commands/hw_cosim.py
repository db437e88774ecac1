"""tritc hw cosim: compile a model for the FPGA target and run its streams on the RTL core (in Amaranth's simulator)
and on the Simulator from the same DRAM image; compare DRAM at every FINISH, print both side by side."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .inputs import SIZES_HELP, check_names, choose_bindings, make_inputs
from .options import add_limit_option, add_shape_option, limits_of

EXIT_OK = 0
EXIT_MISMATCH = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cosim", help="run a model's streams on the RTL core and on the Simulator, compare DRAM",
                       description="Compile MODEL.onnx for the FPGA target, run it on random inputs with every device "
                                   "stream executed by both the RTL core (simulated) and the Simulator from the same "
                                   "DRAM image, compare the DRAM bit for bit at each FINISH (the first differing byte "
                                   "and its tensor on a mismatch: exit 1) and print both devices' cycles side by side. "
                                   "A stream the RTL core stops at (a VOP no unit of it computes) runs on the "
                                   "Simulator alone and is reported so. The core simulates a few hundred cycles a "
                                   "second: a small --fpga-config keeps a run short.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--fpga-config", metavar="edge|datacenter|FILE.json", default=None,
                   help="the accelerator build, a preset or a JSON file (default edge)")
    add_shape_option(p, SIZES_HELP)
    p.add_argument("--stream-only", action="store_true",
                   help="co-simulate each device stream once from the weight image and random bytes in its other "
                        "tensors, without running the model's host regions between them")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--max-cycles", metavar="N", type=int, default=None,
                   help="the RTL core's cycle budget per stream (default 2,000,000)")
    add_limit_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tritc

    from ..codegen.fpga.config import load_config
    from ..driver import parse_shapes
    from ..frontend import onnx as frontend
    from ..frontend.metadata import metadata_of, recorded_sizes
    from ..runtime.cosim import CosimDevice, CosimMismatchError, format_reports

    limits = limits_of(args)
    config = load_config(args.fpga_config or "edge")
    graph = frontend.load_model(args.model, limits=limits)
    inputs = [(v.name, v.type) for v in graph.inputs]
    check_names({}, inputs, all_required=False)
    bindings = choose_bindings(inputs, parse_shapes(args.shape), {}, graph=graph,
                               recorded=recorded_sizes(metadata_of(args.model), inputs),
                               max_input_bytes=limits.max_input_bytes)
    feeds, _ = make_inputs(inputs, bindings.sizes, {}, args.seed)
    device = CosimDevice(config, max_cycles=args.max_cycles)
    fm = tritc.compile(graph, target="fpga", fpga_config=config, shapes=bindings.sizes, device=device, limits=limits)
    code = fm.code_for(bindings.sizes)
    weights = fm.program.weights
    device.regions = [(e.addr, e.addr + e.nbytes, f"weight '{name}'") for name, e in weights.entries.items()]
    device.regions += [(p.addr, p.addr + p.nbytes, f"tensor '{name}'") for name, p in code.dram.items()]
    print(f"co-simulation of {args.model} on the FPGA config '{config.name}', shapes {bindings.describe()}: the RTL "
          f"core (Amaranth simulation) against the Simulator, DRAM compared at each FINISH")
    status = EXIT_OK
    try:
        if args.stream_only:
            rng = np.random.default_rng(args.seed)
            device.write(weights.base, weights.data)
            for name, p in code.dram.items():
                if name not in weights.entries and p.nbytes:
                    device.write(p.addr, rng.integers(0, 256, p.nbytes, dtype=np.uint8))
            for name, data in code.dram.preloads.items():
                device.write(code.dram[name].addr, np.frombuffer(data, np.uint8))
            for region, stream in sorted(code.streams.items()):
                device.next_label = f"region {region}"
                device.load_stream(stream)
                device.run()
        else:
            fm.run(None, feeds)
    except CosimMismatchError as e:
        sys.stdout.write(format_reports(device.reports))
        print(f"tritc: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    sys.stdout.write(format_reports(device.reports))
    compared = sum(r.rtl is not None for r in device.reports)
    skipped = len(device.reports) - compared
    print((f"{compared} stream run(s) compared: DRAM identical at each FINISH" if compared else "no stream compared")
          + (f"; {skipped} not supported by the RTL core (run on the Simulator alone)" if skipped else ""))
    return status

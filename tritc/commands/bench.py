"""tritc bench: median latency of the compiled model and of onnxruntime (same threads, same inputs), timed in
interleaved rounds so that a burst of load on the machine hits both alike."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from ..errors import OptionError
from .compile import add_target_options, compile_with_options
from .inputs import SIZES_HELP, check_names, choose_bindings, make_inputs
from .machine import cores, cpu_model
from .options import add_limit_option, add_pass_options, add_progress_options, add_shape_option, build_pass_list, limits_of
from .output import Progress, human_seconds
from .run import check_feed
from .verify import ort_reason

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the compiled model against onnxruntime",
                       description="Compile MODEL.onnx and time it against onnxruntime on the same random inputs, with "
                                   "the same number of threads, in interleaved runs; print the median latencies, their "
                                   "ratio and the machine.")
    p.add_argument("model", metavar="MODEL.onnx")
    add_target_options(p)
    add_shape_option(p, SIZES_HELP)
    p.add_argument("--warmup", metavar="W", type=int, default=3, help="untimed runs of each first (default 3)")
    p.add_argument("--runs", metavar="R", type=int, default=20, help="timed runs of each (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    add_pass_options(p, default_pipeline="cpu")
    add_limit_option(p)
    add_progress_options(p)
    p.set_defaults(func=run)


def interleaved(contestants: dict[str, Callable[[], object]], warmup: int, runs: int) -> dict[str, list[float]]:
    """Seconds per call of each contestant: warm-up calls first, then `runs` rounds of one call each, in turn."""
    for fn in contestants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(runs):
        for name, fn in contestants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ort_session(path: str, threads: int):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception classes
        raise OptionError(f"onnxruntime refuses {path}, so there is nothing to compare with ({ort_reason(e)})") from None


def run(args: argparse.Namespace) -> int:
    from ..driver import parse_shapes
    from ..frontend import onnx as frontend
    from ..frontend.metadata import metadata_of, recorded_sizes
    from .compile import check_cpu_features

    if args.warmup < 0 or args.runs < 1:
        raise OptionError(f"--warmup must be >= 0 and --runs >= 1 (got {args.warmup} and {args.runs})")
    check_cpu_features(args.cpu_features)
    build_pass_list(args)
    limits = limits_of(args)
    threads = args.threads if args.threads is not None else cores()
    if threads < 1:
        raise OptionError(f"threads must be at least 1, not {threads}")
    args.threads = threads
    say = Progress.from_args(args)
    say(f"importing {args.model}")
    graph = frontend.load_model(args.model, limits=limits)
    inputs = [(v.name, v.type) for v in graph.inputs]
    check_names({}, inputs, all_required=False)
    bindings = choose_bindings(inputs, parse_shapes(args.shape), {}, graph=graph,
                               recorded=recorded_sizes(metadata_of(args.model), inputs),
                               max_input_bytes=limits.max_input_bytes)
    feeds, _ = make_inputs(inputs, bindings.sizes, {}, args.seed)
    cm = compile_with_options(args, graph, say, shapes=bindings.sizes)
    check_feed(cm, feeds)
    if getattr(cm, "target_kind", "cpu") == "fpga":
        return bench_fpga(cm, feeds, args, bindings, say)
    session = ort_session(args.model, threads)
    say(f"timing: {args.warmup} warm-up and {args.runs} timed runs of each, interleaved")
    times = interleaved({"tritc": lambda: cm.run(None, feeds), "onnxruntime": lambda: session.run(None, feeds)},
                        args.warmup, args.runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratio = med["onnxruntime"] / med["tritc"] if med["tritc"] > 0 else float("inf")
    verdict = f"tritc {ratio:.2f}x faster" if ratio >= 1 else f"tritc {1 / ratio:.2f}x slower"
    sys.stdout.write(f"machine: {cpu_model()} ({cm.target.cpu}, {cm.target.isa} kernels), {threads} thread"
                     f"{'s' if threads != 1 else ''} each; shapes {bindings.describe()}\n")
    sys.stdout.write(f"tritc {human_seconds(med['tritc'])}  onnxruntime {human_seconds(med['onnxruntime'])}  (median of "
                     f"{args.runs} interleaved runs; best {human_seconds(best['tritc'])} / "
                     f"{human_seconds(best['onnxruntime'])})  ->  {verdict} than onnxruntime\n")
    return EXIT_OK


def bench_fpga(fm, feeds: dict, args: argparse.Namespace, bindings, say: Progress) -> int:  # fm: FpgaModel
    """The simulator's report for one run (it is a model: one run is the measurement), and onnxruntime's measured time
    on this CPU beside it."""
    from .fpga_report import format_fpga_report

    say(f"running on the FPGA simulator ({args.warmup} warm-up runs, then the one that is reported)")
    for _ in range(args.warmup):  # the first run compiles the host regions' code and writes the weights
        fm.run(None, feeds)
    fm.run(None, feeds)
    stats = fm.stats
    session = ort_session(args.model, args.threads)
    times = interleaved({"onnxruntime": lambda: session.run(None, feeds)}, args.warmup, args.runs)
    ort = statistics.median(times["onnxruntime"])
    modelled = stats["total_seconds"]
    sys.stdout.write(f"machine (for onnxruntime): {cpu_model()}, {args.threads} thread{'s' if args.threads != 1 else ''}; "
                     f"shapes {bindings.describe()}\n")
    sys.stdout.write(format_fpga_report(stats))
    sys.stdout.write(f"modelled fpga {human_seconds(modelled)}  onnxruntime (this CPU) {human_seconds(ort)}  ->  "
                     f"{ort / modelled:.2f}x (modelled, not measured)\n" if modelled > 0 else "")
    return EXIT_OK

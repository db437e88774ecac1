"""tritc dump: the IR of a model as imported, or after a pipeline / pass list, or after one pass or every pass;
per-pass timings; the ternary report (table or JSON) or the memory report instead of the IR. Flags about passes run
the target's pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import InternalError, OptionError
from ..ir.graph import Graph
from ..passes import load_all
from ..passes.pass_manager import PASSES, Pass, PassManager
from ..passes.pipelines import pass_source
from ..passes.ternary_report import TernaryReport
from .memory_report import render_memory_report
from .options import add_limit_option, add_pass_options, add_shape_option, limits_of, pass_kwargs, ternary_flags_given
from .output import emit, ending_in_newline, prepare_folder, write_atomic

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dump", help="import a model and print its IR (optionally after passes)",
                       description="Import an ONNX model and print the tritc IR (round-trippable text) or a Graphviz "
                                   "dot picture of it: as imported, after a pipeline or pass list, after one pass "
                                   "(--after PASS) or after every pass (--after all -o DIR); or fold-ternary's report. "
                                   "Anything about passes (--after, --ternary-report, --timings, --ternary*, --target) "
                                   "runs the target's pipeline unless --pipeline or -p says otherwise.")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model (external data is read from its folder)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout; "
                                                          "with --after all, the folder for the per-pass files")
    p.add_argument("--format", choices=("text", "dot"), default="text", help="IR text (default) or Graphviz dot")
    p.add_argument("--target", choices=("cpu", "fpga"), default=None,
                   help="whose pipeline runs when passes are asked for (default cpu)")
    p.add_argument("--fpga-config", metavar="edge|datacenter|FILE.json", default=None,
                   help="with --pipeline fpga: the accelerator build the partition is for (default edge)")
    add_pass_options(p, default_pipeline="none",
                     default_note="none, the graph as imported; the target's pipeline with --after, --ternary-report, "
                                  "--timings, --target or a --ternary* flag")
    p.add_argument("--after", metavar="PASS", help="print the IR after this pass (its name, or its step number when a "
                                                   "pass runs twice); 'all': one numbered file per pass into -o DIR")
    p.add_argument("--timings", action="store_true", help="print a table of time per pass to stderr")
    p.add_argument("--ternary-report", action="store_true", help="print fold-ternary's per-layer report, not the IR")
    p.add_argument("--json", action="store_true", help="with --ternary-report: the report as JSON")
    p.add_argument("--memory-report", action="store_true",
                   help="print schedule-memory's numbers, not the IR: peak arena, lower bound, naive total, the ten "
                        "largest values, at the --shape sizes, and the arena as a formula of the symbols")
    add_shape_option(p, "with --memory-report: the sizes the numbers are for (dims not given: 1); with --pipeline "
                        "specialise: the sizes it binds")
    add_limit_option(p)
    p.set_defaults(func=run)


def default_pipeline(args: argparse.Namespace) -> str:
    """Plain `tritc dump` shows the graph as imported; a flag about passes runs the target's pipeline (cpu by default)."""
    about_passes = (args.after or args.ternary_report or args.memory_report or args.timings or args.target
                    or ternary_flags_given(args))
    return (args.target or "cpu") if about_passes else "none"


def run(args: argparse.Namespace) -> int:
    from ..driver import build_passes, within_limits
    from ..frontend import onnx as frontend  # looked up at call time, so tests can stand in a broken frontend

    if args.json and not args.ternary_report:
        raise OptionError("--json goes with --ternary-report (the IR itself is text or dot)")
    reports = [flag for flag, on in (("--ternary-report", args.ternary_report), ("--memory-report", args.memory_report),
                                     ("--after", args.after)) if on]
    if len(reports) > 1:
        raise OptionError(f"{' and '.join(reports)} all choose what to print; give one" if len(reports) > 2 else
                          f"{reports[0]} and {reports[1]} both choose what to print; give one")
    binds = args.shape and args.pipeline == "specialise" and args.passes is None
    fpga_partition = kwargs_pipeline_is_fpga(args)
    if args.shape and not args.memory_report and not binds and not fpga_partition:
        raise OptionError("--shape goes with --memory-report (the sizes its numbers are for) or --pipeline specialise "
                          "(the sizes it binds)")
    if args.after == "all" and not args.output:
        raise OptionError("--after all writes one file per pass: give the folder with -o DIR")
    kwargs = pass_kwargs(args, default_pipeline(args))
    limits = limits_of(args)
    passes = build_passes(**kwargs)
    if binds:  # the specialise step of a compile, for the sizes given (the others stay symbolic)
        from ..driver import parse_shapes
        from ..passes.pipelines import specialise_passes

        passes = specialise_passes(tuple(f"{k}={v}" for k, v in parse_shapes(args.shape).items()))
    source = pass_source(kwargs["pipeline"], kwargs["passes"])
    if args.ternary_report and not any(p.name == "fold-ternary" for p in passes):
        raise OptionError(f"--ternary-report shows what fold-ternary did, and the {source} does not run it "
                          f"(use --pipeline cpu, or add fold-ternary to -p)")
    if args.memory_report and not any(p.name == "schedule-memory" for p in passes):
        raise OptionError(f"--memory-report shows what schedule-memory did, and the {source} does not run it "
                          f"(use --pipeline cpu, or add schedule-memory to -p)")
    if args.after == "all" and not passes:
        raise OptionError(f"--after all writes one file per pass, and the {source} has none")
    step = _after_step(args.after, passes) if args.after not in (None, "all") else None
    render = _renderer(args.format)
    ext = "dot" if args.format == "dot" else "ir"

    passes = within_limits(passes, limits)
    graph = frontend.load_model(args.model, limits=limits)
    per_pass: list[tuple[str, str]] = []  # (file name, text): written only once every pass succeeded
    chosen: list[str] = []

    def after(n: int, p: Pass, g: Graph) -> None:
        if args.after == "all":
            per_pass.append((f"{n:0{max(2, len(str(len(passes))))}d}-{p.name}.{ext}", render(g)))
        elif n == step:
            chosen.append(render(g))

    pm = PassManager(passes, after=after)
    pm.run(graph)
    if args.format == "text":  # a pass's report that reads as IR comments goes above its IR (fuse-attention's)
        per_pass = [(name, _with_comments(pm.steps[i].data, text)) for i, (name, text) in enumerate(per_pass)]
        chosen = [_with_comments(pm.steps[step - 1].data, text) for text in chosen] if step is not None else chosen
    if args.timings:
        sys.stderr.write(pm.timing_table())
    if args.ternary_report:
        report = pm.result_of("fold-ternary")
        if not isinstance(report, TernaryReport):
            raise InternalError(f"fold-ternary ran but left no TernaryReport (got {type(report).__name__})")
        emit(report.to_json() if args.json else report.table(), args.output)
    elif args.memory_report:
        emit(render_memory_report(graph, pm.result_of("schedule-memory"), args.shape), args.output)
    elif args.after == "all":
        folder = prepare_folder(args.output, "-o with --after all")
        for name, text in per_pass:
            write_atomic(folder / name, ending_in_newline(text).encode("utf-8"))
        print(f"wrote {len(per_pass)} file{'s' if len(per_pass) != 1 else ''} into {folder}", file=sys.stderr)
    else:
        text = chosen[0] if step is not None else render(graph)
        if step is None and args.format == "text" and kwargs["pipeline"] == "fpga" and kwargs["passes"] is None:
            text = _with_partition(graph, args.fpga_config, args.shape, args.model) + text
        emit(text, args.output)
    return EXIT_OK


def _with_partition(graph: Graph, config: str | None, shape: list[str], model: str) -> str:
    """`tritc dump --pipeline fpga`: which nodes run on the accelerator and which on the host (and why), as IR comments
    above the final IR. The lowering works on the graph specialised for the sizes of a run (shape arithmetic folded,
    every type concrete), so the partition shown is that of the --shape sizes (dims not given: their defaults)."""
    from ..codegen.fpga.config import load_config
    from ..codegen.fpga.lower import device_support
    from ..codegen.fpga.partition import partition, partition_comments
    from ..driver import default_sizes, parse_shapes
    from ..ir.sizes import format_symbols
    from ..passes.pipelines import specialise_passes

    cfg = load_config(config)
    sizes = default_sizes(graph, parse_shapes(shape), model, lambda _m: None)
    special = graph.copy()
    PassManager(specialise_passes(tuple(f"{k}={v}" for k, v in sizes.items()))).run(special)
    regions = partition(special, lambda node, g: device_support(node, g, cfg))
    at = f" at {format_symbols(sizes)}" if sizes else ""
    lines = partition_comments(regions)
    lines[0] += f" (config {cfg.name}{at}; --shape chooses the sizes)"
    return "".join(line + "\n" for line in lines)


def kwargs_pipeline_is_fpga(args: argparse.Namespace) -> bool:
    """Whether this dump prints the final IR of the fpga pipeline (and so the partition above it)."""
    pipeline = args.pipeline if args.pipeline is not None else default_pipeline(args)
    return pipeline == "fpga" and args.passes is None and not args.after and not args.ternary_report \
        and not args.memory_report


def _with_comments(data: object, text: str) -> str:
    """`text` under the `//` lines of a step's report that has them (`comment_lines()`); the IR still parses."""
    lines = data.comment_lines() if hasattr(data, "comment_lines") else []
    return "".join(line + "\n" for line in lines) + text


def _renderer(fmt: str) -> Callable[[Graph], str]:
    if fmt == "dot":
        from ..ir.dot import to_dot

        return to_dot
    from ..ir.text import print_graph

    return print_graph


def _after_step(which: str, passes: list[Pass]) -> int:
    """The step (1-based) whose IR --after asks for: a step number, a pass name or a pass as written with options."""
    load_all()
    names = [p.name for p in passes]
    listing = ", ".join(f"{i}:{p.describe()}" for i, p in enumerate(passes, 1)) or "none: no pass runs"
    if which.isdigit():
        n = int(which)
        if not 1 <= n <= len(passes):
            raise OptionError(f"--after {which}: there are {len(passes)} steps ({listing})")
        return n
    hits = [i for i, p in enumerate(passes, 1) if which in (p.name, p.describe())]
    if not hits:
        base = which.split("{", 1)[0].strip()
        if base not in PASSES:
            raise OptionError(f"--after: unknown pass '{which}' (known: {', '.join(sorted(PASSES))})")
        how = "no pass runs: choose --pipeline or -p" if not passes else listing
        raise OptionError(f"--after: pass '{which}' does not run in this pipeline ({how})")
    if len(hits) > 1:
        others = ", ".join(str(h) for h in hits[1:])
        print(f"tritc: note: {names[hits[0] - 1]} runs at steps {', '.join(map(str, hits))}; printing the IR after "
              f"step {hits[0]} (--after {others} for {'another' if len(hits) == 2 else 'the others'})", file=sys.stderr)
    return hits[0]

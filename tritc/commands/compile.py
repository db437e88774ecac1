"""tritc compile: ONNX -> a .tritc artifact (passes, weights, native code for the given shapes), with progress
lines on stderr and a summary at the end."""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from ..errors import OptionError
from .options import (
    add_limit_option,
    add_pass_options,
    add_progress_options,
    add_shape_option,
    add_threads_option,
    build_pass_list,
    limits_of,
    pass_kwargs,
    read_key_option,
)
from .output import Progress, check_output_file, format_bindings, human_bytes, human_seconds

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a model to a .tritc artifact",
                       description="Compile an ONNX model for this CPU: import, the pass pipeline, the weight blob, and "
                                   "native code for one binding of the symbolic dims (other sizes compile on first "
                                   "use). Writes one .tritc file (docs/ARTIFACT.md).")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model")
    p.add_argument("-o", "--output", metavar="OUT.tritc", required=True, help="the artifact to write (atomically)")
    add_target_options(p)
    add_shape_option(p, "dims not given are compiled at sizes the model records, else at 1 if the model admits it, "
                        "else at the smallest sizes it admits")
    add_pass_options(p, default_pipeline="cpu")
    add_limit_option(p)
    p.add_argument("--timings", action="store_true", help="print a table of time per pass to stderr")
    p.add_argument("--sign-key", metavar="FILE", default=None,
                   help="sign the artifact with the key in FILE (HMAC-SHA256; at least 16 bytes, e.g. head -c 32 "
                        "/dev/urandom > FILE): loaders given the key refuse any artifact it did not sign")
    add_progress_options(p)
    p.set_defaults(func=run)


def add_target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument("--target", default="cpu", choices=("cpu", "fpga"),
                   help="cpu (native code for this machine, default) or fpga (instruction streams for the ternary "
                        "accelerator of docs/ISA.md, run on its simulator)")
    g.add_argument("--fpga-config", metavar="edge|datacenter|FILE.json", default=None,
                   help="with --target fpga: the accelerator build, a preset or a JSON file (default edge)")
    g.add_argument("--fpga-float-act", choices=("int8", "host"), default="int8",
                   help="with --target fpga: float-activation ternary layers take int8 activations on the matrix unit "
                        "(int8, default) or stay float on the host (host)")
    g.add_argument("--fpga-float-layers", choices=("radix3", "host"), default="radix3",
                   help="with --target fpga: float linear layers (an LM head) run on the matrix unit as five "
                        "balanced-ternary planes (radix3, default: ~8-bit weights) or stay float on the host (host)")
    g.add_argument("--no-double-buffer", dest="double_buffer", action="store_false",
                   help="with --target fpga: one buffer half per tile stream (for comparison)")
    add_threads_option(g)
    g.add_argument("--cpu-features", metavar="FEATS", default=None,
                   help="LLVM features on top of this CPU's, e.g. -avx512f (AVX2 kernels) or 'generic' (portable x86-64)")
    g.add_argument("-O", dest="opt_level", type=int, choices=range(4), default=3, metavar="0-3",
                   help="LLVM optimisation level (default 3)")


def check_cpu_features(text: str | None) -> None:
    """Refuse feature names LLVM does not know (it would only warn, and build something else than asked)."""
    if text is None or text.strip() == "generic":
        return
    from ..codegen.llvm.target import host_features, parse_features

    known = host_features()
    for item in text.split(","):
        name = item.strip().lstrip("+-")
        if not item.strip():
            continue
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise OptionError(f"--cpu-features: unknown CPU feature '{name}'{hint} (features are +name or -name, "
                              f"comma separated, or 'generic')")
    parse_features(text)


def compile_with_options(args: argparse.Namespace, model: object, say: Progress, shapes: object = None,
                         lazy: bool = False):  # -> CompiledModel
    """compile_model with the command's target and pass options; progress on `say` (lazy: see compile_model)."""
    from ..driver import compile_model, parse_shapes

    check_cpu_features(args.cpu_features)
    fpga = getattr(args, "target", "cpu") == "fpga"
    if not fpga and getattr(args, "fpga_config", None) is not None:
        raise OptionError("--fpga-config goes with --target fpga")
    build_pass_list(args)  # the pass options, --shape and --limit are checked before the model is even read
    parse_shapes(args.shape)
    limits = limits_of(args)

    def relay(msg: str) -> None:
        if msg == "importing" and not isinstance(model, (str, os.PathLike)):
            return  # the command imported the model itself (and said so)
        say({"importing": f"importing {model}", "done": "compiled"}.get(msg, msg))

    extra = {"fpga_config": args.fpga_config, "fpga_float_act": args.fpga_float_act,
             "fpga_float_layers": args.fpga_float_layers, "double_buffer": args.double_buffer} if fpga else {}
    cm = compile_model(model, target=args.target, threads=args.threads, shapes=shapes if shapes is not None else args.shape,
                       cpu_features=args.cpu_features, opt_level=args.opt_level, progress=relay, lazy=lazy,
                       limits=limits, **pass_kwargs(args), **extra)
    cm.progress = None  # later compilations (a new shape at run time) are not part of this command's progress
    return cm


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.output)
    key = read_key_option(args.sign_key)
    say = Progress.from_args(args)
    cm = compile_with_options(args, args.model, say)
    say(f"writing {out}")
    cm.save(out, sign_key=key)
    if args.timings:
        sys.stderr.write(cm.pass_timings)
    print(summary(cm, out, say.elapsed), end="")
    return EXIT_OK


def summary(cm, out: os.PathLike[str] | str, seconds: float) -> str:  # cm: CompiledModel or FpgaModel
    if getattr(cm, "target_kind", "cpu") == "fpga":
        return fpga_summary(cm, out, seconds)
    t = cm.target
    shapes = [f"every size ({', '.join(cm.symbols)} at run time)" if cm.symbols and not s.bindings else
              format_bindings(s.bindings) for s in cm.specializations]
    if not shapes:
        shapes = ["none yet: compiled on first run (small integer inputs decide shapes: specialised on their values)"]
    elif cm.symbols and cm.program.generic_error is not None:
        shapes[-1] += " (other sizes compile on first use)"
    report = getattr(cm, "ternary_report", None)
    if report is None:
        ternary = "no fold-ternary pass ran"
    else:
        s = report.summary()
        ternary = (f"{s['folded']} of {s['layers']} linear layers ({s['exact']} exact); weights "
                   f"{human_bytes(s['bytes_before'])} -> {human_bytes(s['bytes_after'])}")
    ins = ", ".join(map(str, cm.inputs))
    outs = ", ".join(map(str, cm.outputs))
    rows = [("model", f"{ins} -> {outs}"),
            ("target", f"{t.triple}, cpu {t.cpu}, {t.isa} kernels, -O{t.opt_level}, {cm.threads} thread"
                       f"{'s' if cm.threads != 1 else ''}"),
            ("shapes", "; ".join(shapes)),
            ("ternary", ternary),
            ("time", human_seconds(seconds))]
    size = os.path.getsize(out)
    return f"wrote {out} ({human_bytes(size)})\n" + "".join(f"  {k:<8}  {v}\n" for k, v in rows)


def fpga_summary(fm, out: os.PathLike[str] | str, seconds: float) -> str:  # fm: FpgaModel
    cfg = fm.config
    rows = [("model", f"{', '.join(map(str, fm.inputs))} -> {', '.join(map(str, fm.outputs))}"),
            ("target", f"fpga, config {cfg.name}: {cfg.matrix_rows}x{cfg.matrix_lanes} matrix unit, "
                       f"{cfg.vector_lanes} vector lanes, {cfg.clock_hz / 1e6:g} MHz, "
                       f"{cfg.dram_bandwidth / 1e9:g} GB/s {cfg.dram_kind}, weights {cfg.weight_packing}")]
    for code in fm.program.codes.values():
        n = sum(len(s) for s in code.streams.values())
        where = format_bindings(code.bindings) if code.bindings else "static sizes"
        rows.append(("stream", f"{where}: {n} instructions in {len(code.streams)} device region(s), "
                               f"{len(code.host_graphs)} host region(s)"))
        for r in code.regions:
            for what, why in r.reasons.items():
                rows.append(("host", f"{what}: {why}"))
    radix3 = fm.meta.get("fpga_radix3_layers") or []
    if radix3:
        rows.append(("radix3", f"{len(radix3)} float linear layer(s) on the matrix unit as five balanced-ternary "
                               f"planes (~8-bit weights; --fpga-float-layers host keeps them float): "
                               f"{', '.join(radix3)}"))
    rows.append(("time", human_seconds(seconds)))
    size = os.path.getsize(out)
    return f"wrote {out} ({human_bytes(size)})\n" + "".join(f"  {k:<8}  {v}\n" for k, v in rows)

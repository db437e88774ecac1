"""tritc verify: compile a model, run it on given or random inputs, and compare every output with onnxruntime on
the original model (onnx's ReferenceEvaluator if onnxruntime refuses it) and with tritc's interpreter on the
final IR. Exit 0 within tolerance, 1 beyond it."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError, UnsupportedError
from .compile import add_target_options, compile_with_options
from .inputs import SIZES_HELP, check_names, choose_bindings, describe_array, make_inputs, parse_input_files
from .options import add_limit_option, add_pass_options, add_progress_options, add_shape_option, build_pass_list, limits_of
from .output import Progress, table
from .run import check_feed

EXIT_OK = 0
EXIT_MISMATCH = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="compile a model and compare it with onnxruntime and the interpreter",
                       description="Compile MODEL.onnx, run it on the given inputs (or random ones that respect each "
                                   "input's dtype and shape), and compare every output with onnxruntime on the original "
                                   "model, and with tritc's interpreter on the final IR. A value passes if "
                                   "|tritc - reference| <= atol + rtol * |reference|. Exit status 0: all pass; 1: not.")
    p.add_argument("model", metavar="MODEL.onnx")
    add_target_options(p)
    p.add_argument("--input", metavar="NAME=FILE.npy", action="append", default=[],
                   help="an input from a file (the others are random)")
    add_shape_option(p, SIZES_HELP)
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    add_pass_options(p, default_pipeline="cpu")
    add_limit_option(p)
    add_progress_options(p)
    p.set_defaults(func=run)


@dataclass
class Comparison:
    ok: bool
    max_abs: float
    max_rel: float
    bad: int  # elements beyond tolerance
    detail: str = ""  # why it failed, when not by value (shape, dtype, missing)

    @property
    def result(self) -> str:
        if self.ok:
            return "PASS"
        return f"FAIL ({self.detail})" if self.detail else f"FAIL ({self.bad} beyond tolerance)"


def compare(actual: np.ndarray, expected: np.ndarray | None, rtol: float, atol: float, *, exact: bool = False) -> Comparison:
    """Element-wise: |a - b| <= atol + rtol * |b| (or equality when `exact`); equal NaNs and infinities agree."""
    nan = float("nan")
    if expected is None:
        return Comparison(False, nan, nan, 0, "no such output in the reference")
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return Comparison(False, nan, nan, 0, f"shape {list(actual.shape)} vs {list(expected.shape)}")
    if actual.dtype != expected.dtype:
        return Comparison(False, nan, nan, 0, f"dtype {actual.dtype} vs {expected.dtype}")
    if actual.size == 0:
        return Comparison(True, 0.0, 0.0, 0)
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.nan_to_num(diff, nan=np.inf)  # NaN on one side only: as far off as it gets
    mag = np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.where(mag > 0, mag, 0.0))
    rel = np.nan_to_num(rel, nan=np.inf, posinf=np.inf)
    good = same if exact else same | (diff <= atol + rtol * np.nan_to_num(mag, posinf=0.0))
    bad = int(good.size - np.count_nonzero(good))
    return Comparison(bad == 0, float(diff.max()), float(rel.max()), bad)


def reference_outputs(path: str, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str, str | None]:
    """(outputs by name, which reference, why onnxruntime was not it). onnxruntime first, with its own session;
    if it refuses the model, onnx.reference.ReferenceEvaluator."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not ours to print
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        results = session.run(None, dict(feeds))
        return {o.name: r for o, r in zip(session.get_outputs(), results)}, f"onnxruntime {ort.__version__}", None
    except Exception as e:  # onnxruntime's own exception classes (Fail, InvalidGraph, NotImplemented, ...)
        why = ort_reason(e)
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        results = evaluator.run(None, dict(feeds))
    except Exception as e:
        raise UnsupportedError(f"no reference to compare with: onnxruntime refused the model ({why}), and onnx's "
                               f"ReferenceEvaluator failed too ({' '.join(str(e).split())[:300]})") from None
    return {n: np.asarray(r) for n, r in zip(evaluator.output_names, results)}, "onnx.reference.ReferenceEvaluator", why


def ort_reason(e: BaseException) -> str:
    """onnxruntime's message without its status prefix and C++ source location:
    "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/src/model.cc:256 Model::Model(a, b) Unsupported
    model IR version: 14" -> "Load model from m.onnx failed: Unsupported model IR version: 14"."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(str(e).split()))
    m = re.search(r"[\w./-]*\.(?:cc|cpp|h):\d+ ", text)
    if m:
        depth, end = 0, m.end()
        for i in range(m.end(), len(text)):  # skip the function signature: up to its balancing parenthesis
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
                if depth == 0:
                    end = i + 1
                    break
        text = (text[:m.start()].rstrip(": ") + ": " + text[end:].strip()).strip(": ")
    return text[:300]


def run(args: argparse.Namespace) -> int:
    from ..driver import parse_shapes
    from ..frontend import onnx as frontend
    from ..frontend.metadata import metadata_of, recorded_sizes
    from ..ir.interpreter import Interpreter
    from .compile import check_cpu_features

    if not (args.rtol >= 0 and args.atol >= 0):
        raise OptionError(f"tolerances must be non-negative numbers (got --rtol {args.rtol}, --atol {args.atol})")
    check_cpu_features(args.cpu_features)
    build_pass_list(args)
    limits = limits_of(args)
    files = parse_input_files(args.input, limits)
    say = Progress.from_args(args)
    say(f"importing {args.model}")
    graph = frontend.load_model(args.model, limits=limits)
    inputs = [(v.name, v.type) for v in graph.inputs]
    check_names(files, inputs, all_required=False)
    bindings = choose_bindings(inputs, parse_shapes(args.shape), files, graph=graph,
                               recorded=recorded_sizes(metadata_of(args.model), inputs),
                               max_input_bytes=limits.max_input_bytes)
    feeds, how = make_inputs(inputs, bindings.sizes, files, args.seed)
    cm = compile_with_options(args, graph, say, shapes=bindings.sizes)
    check_feed(cm, feeds)
    say("running the compiled model")
    got = dict(zip([o.name for o in cm.outputs], cm.run(None, feeds)))
    say("running the reference")
    ref, ref_name, why = reference_outputs(args.model, feeds)
    say("running the interpreter on the final IR")
    interp = Interpreter(cm.graph).run(feeds)

    out = sys.stdout
    out.write(f"shapes     {bindings.describe()}\n")
    for name, _ in inputs:
        out.write(f"input      {name}: {describe_array(feeds[name])} {how[name]}\n")
    if why is not None:
        out.write(f"reference  {ref_name} (onnxruntime refused the model: {why})\n")
    else:
        out.write(f"reference  {ref_name} (CPUExecutionProvider) on {args.model}\n")
    out.write(f"tolerance  |tritc - reference| <= {args.atol:g} + {args.rtol:g} * |reference|; integer outputs "
              f"bit-exact against the interpreter\n\n")
    rows = [("output", "shape", "dtype", "max abs", "max rel", f"vs {ref_name.split()[0]}", "max abs", "vs interpreter")]
    ok = True
    for name, a in got.items():
        c_ref = compare(a, ref.get(name), args.rtol, args.atol)
        exact = a.dtype.kind in "biu"
        c_int = compare(a, interp.get(name), args.rtol, args.atol, exact=exact)
        ok &= c_ref.ok and c_int.ok
        rows.append((name, "[" + ",".join(map(str, a.shape)) + "]", describe_array(a).split("[")[0], _e(c_ref.max_abs),
                     _e(c_ref.max_rel), c_ref.result, _e(c_int.max_abs), c_int.result + (" (exact)" if exact and c_int.ok else "")))
    out.write(table(rows, right=(3, 4, 6)))
    if ok:
        out.write(f"\nPASS: {len(got)} output{'s' if len(got) != 1 else ''} within tolerance of {ref_name}, "
                  f"and the interpreter agrees\n")
        return EXIT_OK
    out.write(f"\nFAIL: the compiled model differs from {'the reference' if why else ref_name} or from the interpreter "
              f"beyond tolerance\n")
    report = getattr(cm, "ternary_report", None)
    lossy = [lay.name for lay in report.folded() if not lay.exact] if report is not None else []
    if lossy:
        many = len(lossy) != 1
        out.write(f"note: fold-ternary quantised {len(lossy)} layer{'s' if many else ''} that {'are' if many else 'is'} "
                  f"not exactly ternary ({', '.join(lossy[:3])}{', ...' if len(lossy) > 3 else ''}): the compiled model computes a "
                  f"different function from the ONNX model by design; 'tritc dump --pipeline cpu --ternary-report' "
                  f"shows the error per layer\n")
    elif any(n.op == "round" for n in graph):
        out.write("note: the model rounds activations (quantisation): float noise that lands a value on the other side "
                  "of a .5 tie moves it by a whole step, so two correct implementations can differ there\n")
    return EXIT_MISMATCH


def _e(x: float) -> str:
    return "-" if x != x else f"{x:.2e}"

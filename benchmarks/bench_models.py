"""Whole models: the compiled model (tritc) against onnxruntime, same inputs and threads, at a prefill shape and a
one-token shape: the bundled BitNet example and the transformer fixtures in tests/fixtures/transformers/.

    .venv/bin/python benchmarks/bench_models.py                      # every model, batch 1, seq 32 and seq 1
    .venv/bin/python benchmarks/bench_models.py --models bitnet_tiny llama_dynamo23 --prefill 64 --threads 1

Both run in one process, interleaved round by round (benchmarks/common.py); each row also says how far tritc's
logits are from onnxruntime's on those inputs, so a fast wrong number cannot pass for a result. Writes
benchmarks/results/models.{json,md} with the machine's description.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from benchmarks.common import Timer, cores, finish_info, interleave, machine_info, machine_markdown, write_results  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "transformers"
SEED = 0


def models(build_dir: Path) -> dict[str, Path]:
    """The bundled example (built here) and every transformer fixture, by short name."""
    import build_bitnet_example

    example = build_dir / "bitnet_tiny.onnx"
    with redirect_stdout(StringIO()):
        if build_bitnet_example.main(["-o", str(example)]) != 0:
            raise SystemExit("could not build the example model")
    found = {"bitnet_tiny": example}
    found.update({p.stem: p for p in sorted(FIXTURES.glob("*.onnx"))})
    return found


def feeds_for(path: Path, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Token ids in [0, 32) and all-ones masks, as `tritc bench` makes them."""
    from tritc.commands.inputs import choose_bindings, make_inputs
    from tritc.frontend.onnx import load_model

    graph = load_model(path)
    inputs = [(v.name, v.type) for v in graph.inputs]
    bindings = choose_bindings(inputs, sizes_for(path, batch, seq), {})
    return make_inputs(inputs, bindings.sizes, {}, SEED)[0]


def sizes_for(path: Path, batch: int, seq: int) -> dict[str, int]:
    """{"batch": ..., "seq": ...} restricted to the dims the model has."""
    from tritc.codegen.llvm.compiler import symbols_of
    from tritc.frontend.onnx import load_model

    symbols = symbols_of(load_model(path))
    return {k: v for k, v in {"batch": batch, "seq": seq}.items() if k in symbols}


def bench_model(name: str, path: Path, shapes: list[tuple[int, int]], threads: int, rounds: int) -> list[dict]:
    import onnxruntime as ort

    import tritc

    t0 = time.perf_counter()
    cm = tritc.compile(path, threads=threads, shapes=sizes_for(path, *shapes[0]))
    first_compile = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    rows = []
    for i, (batch, seq) in enumerate(shapes):
        feeds = feeds_for(path, batch, seq)
        t0 = time.perf_counter()
        got = cm.run(None, feeds)  # compiles this binding on first use (the first one was compiled above)
        compile_s = first_compile if i == 0 else time.perf_counter() - t0
        expected = session.run(None, feeds)
        max_abs = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(got, expected))
        timers = [Timer("tritc", lambda f=feeds: cm.run(None, f)), Timer("onnxruntime", lambda f=feeds: session.run(None, f))]
        interleave(timers, rounds)
        tr, ox = timers
        rows.append({"model": name, "batch": batch, "seq": seq, "threads": threads, "tritc_ms": tr.median * 1e3,
                     "onnxruntime_ms": ox.median * 1e3, "speedup": ox.median / tr.median,
                     "tritc_best_ms": tr.best * 1e3, "onnxruntime_best_ms": ox.best * 1e3, "max_abs_diff": max_abs,
                     "compile_s": compile_s})
        r = rows[-1]
        print(f"{name:<28} {batch}x{seq:<4} {r['tritc_ms']:9.3f} {r['onnxruntime_ms']:9.3f} {r['speedup']:7.2f}x "
              f"{max_abs:10.2e} {compile_s:8.2f}", flush=True)
    return rows


def markdown(info: dict, rows: list[dict], rounds: int) -> str:
    lines = ["# Whole models: tritc vs onnxruntime", "",
             f"Median latency of {rounds} interleaved rounds (each the mean of back-to-back calls), same inputs "
             f"(token ids in [0, 32), masks all ones) and threads. `max |diff|`: tritc's outputs against onnxruntime's "
             f"on those inputs. `compile`: seconds to compile that shape (the first includes the passes).", "",
             machine_markdown(info),
             "| model | batch x seq | threads | tritc ms | onnxruntime ms | speedup | max abs diff | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} x {r['seq']} | {r['threads']} | {r['tritc_ms']:.3f} | "
                     f"{r['onnxruntime_ms']:.3f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.1e} | {r['compile_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="short names (default: all): bitnet_tiny, llama_dynamo23, ...")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prefill", type=int, default=32, help="sequence length of the prefill shape (default 32)")
    ap.add_argument("--threads", type=int, default=cores(), help="threads for both (default: all cores)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/models.*")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        available = models(Path(tmp))
        chosen = args.models or list(available)
        unknown = [m for m in chosen if m not in available]
        if unknown:
            print(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(available)}", file=sys.stderr)
            return 2
        info = machine_info()
        print(f"{info['cpu']} ({info['isa']} kernels), {args.threads} threads")
        print(f"{'model':<28} {'shape':<6} {'tritc ms':>9} {'ort ms':>9} {'speedup':>8} {'max|diff|':>10} {'compile':>8}")
        rows: list[dict] = []
        shapes = [(args.batch, args.prefill), (args.batch, 1)]
        for name in chosen:
            rows += bench_model(name, available[name], shapes, args.threads, args.rounds)
    info = finish_info(info)
    if not args.no_write:
        jpath, mpath = write_results("models", info, rows, markdown(info, rows, args.rounds))
        print(f"wrote {jpath.relative_to(ROOT)} and {mpath.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What `make demo` runs: build the bundled BitNet example, dump its IR, check the reference interpreter
against onnxruntime, then the command line end to end: `tritc compile`, `tritc run`, `tritc verify` and one
`tritc bench` line. Each step has a header; the first step that fails stops the demo with exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
TOLERANCE = 1e-4
SHAPES = ((2, 7), (1, 19))  # (batch, seq): two sequence lengths, so the symbolic dims really vary
SEED = 0

sys.path.insert(0, str(EXAMPLES))
import build_bitnet_example  # noqa: E402 - a sibling script, not an installed module

sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .` too
from tritc.errors import CompilerError  # noqa: E402
from tritc.ir.graph import Graph  # noqa: E402
from tritc.ir.interpreter import Interpreter  # noqa: E402


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


# ---- steps ----------------------------------------------------------------------------------


def build(out_dir: Path) -> Path:
    """Write the example model (default config: act-quant on) into `out_dir`."""
    path = out_dir / "bitnet_tiny.onnx"
    if build_bitnet_example.main(["-o", str(path)]) != 0:
        raise SystemExit(1)
    return path


def tritc(*argv: str) -> None:
    """Run one `tritc` command in this process (as the console script would), loudly: a failure stops the demo."""
    from tritc.cli import main as cli_main

    print("$ tritc " + " ".join(_quote(a) for a in argv), flush=True)
    try:
        rc = cli_main(list(argv))
    except SystemExit as e:  # argparse exits instead of returning
        rc = e.code if isinstance(e.code, int) else 1
    sys.stdout.flush()
    if rc:
        raise DemoStepError(f"`tritc {argv[0]}` exited with status {rc}")


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}*;") else arg


class DemoStepError(Exception):
    """A demo step failed (its own message was printed above)."""


def dump(path: Path) -> None:
    """The IR as imported (docs/IR.md explains the text)."""
    tritc("dump", _shown(path))


def load(path: Path) -> Graph:
    from tritc.frontend.onnx import load_model

    return load_model(path)


def random_feeds(batch: int, seq: int, vocab: int, seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, batch, seq])
    return {"input_ids": rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)}


def run_onnxruntime(path: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value onnxruntime computes (graph outputs and all intermediates), by ONNX name."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in outputs:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                outputs.add(name)
    options = ort.SessionOptions()
    # Node by node as written: fusions would hide the intermediates compared below.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    results = session.run(None, dict(feeds))
    return {o.name: r for o, r in zip(session.get_outputs(), results)}


@dataclass
class Comparison:
    """How far the interpreter is from onnxruntime."""

    end_to_end: float  # max |interpreter - onnxruntime| over the graph outputs
    per_node: float  # worst node when every node is given onnxruntime's inputs
    worst_node: str
    rounding_flips: int  # elements of `round` results that differ end to end (int8 ties decided differently)


def run_values(graph: Graph, feeds: Mapping[str, np.ndarray], forced: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every value of `graph` by name. With `forced`, each node reads its inputs from `forced`
    where it has them (teacher forcing), so each node is checked on its own."""
    interp = Interpreter(graph)
    env: dict[str, np.ndarray] = {v.name: np.asarray(feeds[v.name]) for v in graph.inputs}
    for node in graph:
        args = [None if v is None else (forced[v.name] if forced is not None and v.name in forced else env[v.name])
                for v in node.inputs]
        for v, r in zip(node.outputs, interp.run_node(node, args)):
            env[v.name] = r
    return env


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    a, b = a.astype(np.float64), b.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities (the causal mask) and NaNs agree
    with np.errstate(invalid="ignore"):  # inf - inf where both are infinite: masked by `same`
        diff = np.where(same, 0.0, np.abs(a - b))
    return float(np.max(np.nan_to_num(diff, nan=np.inf)))


def compare(graph: Graph, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> Comparison:
    """End to end and node by node. With activation quantization the end-to-end result can differ by
    a quantization step when float rounding noise lands an activation on the other side of a .5
    tie; the node-by-node check is the one that says whether every op computes what ONNX means."""
    own = run_values(graph, feeds)
    forced = run_values(graph, feeds, forced=expected)
    end_to_end = max(max_diff(own[v.name], expected[v.name]) for v in graph.outputs)
    per_node, worst = 0.0, "-"
    flips = 0
    for node in graph:
        for v in node.outputs:
            if v.name not in expected:
                continue  # values tritc made up (adapters, constants) have no onnxruntime twin
            d = max_diff(forced[v.name], expected[v.name])
            if d > per_node:
                per_node, worst = d, f"{node.name or '%' + v.name} ({node.op})"
            if node.op == "round" and own[v.name].shape == expected[v.name].shape:
                flips += int(np.count_nonzero(own[v.name] != expected[v.name]))
    return Comparison(end_to_end, per_node, worst, flips)


def check(path: Path, graph: Graph, shapes: Sequence[tuple[int, int]]) -> bool:
    """Interpreter vs onnxruntime on random token ids at each (batch, seq); True if within TOLERANCE."""
    vocab = graph.outputs[0].type.shape[-1]  # type: ignore[index]
    ok = True
    for batch, seq in shapes:
        feeds = random_feeds(batch, seq, vocab)
        t0 = time.perf_counter()
        expected = run_onnxruntime(path, feeds)
        c = compare(graph, feeds, expected)
        good = c.per_node <= TOLERANCE and (c.end_to_end <= TOLERANCE or c.rounding_flips > 0)
        ok &= good
        print(f"  batch={batch} seq={seq:<3} node by node: max |diff| {c.per_node:.2e} (worst: {c.worst_node})  "
              f"end to end: {c.end_to_end:.2e}  [{'ok' if good else 'FAIL'}, {time.perf_counter() - t0:.1f}s]")
        if c.end_to_end > TOLERANCE and c.rounding_flips:
            print(f"    end to end, {c.rounding_flips} int8 activation(s) differ: float noise put one on the other side "
                  f"of a .5 rounding tie and the step propagated (expected with activation quantization); "
                  f"each node matches on its own")
    return ok


def compiled_steps(path: Path, out_dir: Path) -> None:
    """The command line on the example: compile, inspect, run, verify, bench."""
    model, artifact, ids = _shown(path), _shown(out_dir / "bitnet_tiny.tritc"), _shown(out_dir / "input_ids.npy")
    step("tritc compile: passes, ternary weights, native code for batch=1, seq=16")
    tritc("compile", model, "-o", artifact, "--shape", "batch=1,seq=16", "--progress")
    step("tritc inspect: what the artifact holds")
    tritc("inspect", artifact)
    step("tritc run: the compiled model on token ids from a .npy file")
    np.save(ids, random_feeds(1, 16, 32)["input_ids"])
    tritc("run", artifact, "--input", f"input_ids={ids}", "--output-dir", _shown(out_dir / "outputs"))
    step("tritc verify: the compiled model against onnxruntime and the interpreter")
    tritc("verify", model, "-q")
    step("tritc bench: the compiled model against onnxruntime")
    tritc("bench", model, "--shape", "batch=1,seq=16", "--runs", "30", "-q")


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it: the command lines read as one would type them."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tritc demo: build the bundled BitNet example, dump it, check the "
                                             "interpreter, then compile, run, verify and benchmark it with the CLI")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "build" / "demo")
    ap.add_argument("--no-dump", action="store_true", help="skip printing the IR")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    step("Building the example model (onnx.helper, ternary weights, int8 activation quantization)")
    path = build(args.out_dir)
    try:
        step(f"tritc dump: the IR of {_shown(path)}")
        if not args.no_dump:
            dump(path)
        step("tritc dump --ternary-report: what fold-ternary does to each linear layer")
        tritc("dump", _shown(path), "--pipeline", "cpu", "--ternary-report")
        graph = load(path)
        step(f"Reference interpreter vs onnxruntime (tolerance {TOLERANCE:g})")
        if not check(path, graph, SHAPES):
            raise DemoStepError("the interpreter disagrees with onnxruntime")
        print("OK: the interpreter matches onnxruntime")
        compiled_steps(path, args.out_dir)
    except CompilerError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    except DemoStepError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    print(f"\nOK: every step passed ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

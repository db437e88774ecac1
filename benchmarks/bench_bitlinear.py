"""BitNet-shaped models whose every linear layer is exactly ternary: tritc vs onnxruntime fp32 and 2-bit MatMulNBits.

    .venv/bin/python benchmarks/bench_bitlinear.py                  # both models, 1 thread, one token
    .venv/bin/python benchmarks/bench_bitlinear.py --models body --threads 2 --seq 1 32

Two models, built here with onnx.helper (random trits, fixed seed):
- `bitlinear`: one BitLinear layer, 2560 -> 6912: BitNet b1.58's per-token absmax int8 quantisation of x, then
  x @ (trits * per-channel scale). Nothing but the layer: it is also the model's output.
- `body`: a 2-layer BitNet-shaped decoder body without LM head (hidden 2560, FFN 6912 with ReLU^2 gating, 20 query
  heads sharing 5 KV heads, RMSNorm, residual adds) returning its hidden states: 14 linear layers, 4 of which (o_proj
  and down_proj) write into the residual stream that is the output.
tritc compiles the plain-MatMul file with its default pipeline (fold-ternary exact); onnxruntime runs the same file
in fp32, and a twin file whose linear layers are MatMulNBits (bits=2, the same trits and scales, accuracy_level 4).
All three run in one process, interleaved round by round; every row says how many layers tritc folded and how far
each output is from onnxruntime fp32's. Writes benchmarks/results/bench_bitlinear.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bitnet_models import Builder  # noqa: E402
from benchmarks.common import Timer, finish_info, interleave, machine_info, machine_markdown, write_results  # noqa: E402

HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 2560, 6912, 20, 5, 2
HEAD_DIM = HIDDEN // HEADS
SEED = 0


class BodyBuilder(Builder):
    """The decoder body of `build("body", ...)`: no cache, no mask, no LM head."""

    def layer(self, x: str, i: int) -> str:
        h = self.rms_norm(x, HIDDEN)
        q = self.heads(self.linear(h, HIDDEN, HIDDEN, False, f"layers.{i}.q_proj"), HEADS, HEAD_DIM)
        kv = []
        for which in ("k", "v"):
            t = self.heads(self.linear(h, HIDDEN, KV_HEADS * HEAD_DIM, False, f"layers.{i}.{which}_proj"), KV_HEADS,
                           HEAD_DIM)
            t = self.op("Unsqueeze", [t, self.const("axis", np.array([2], np.int64))])  # grouped query: repeat KV heads
            t = self.op("Expand", [t, self.const("rep", np.array([1, 1, HEADS // KV_HEADS, 1, 1], np.int64))])
            kv.append(self.op("Reshape", [t, self.const("shape", np.array([0, HEADS, -1, HEAD_DIM], np.int64))]))
        k, v = kv
        scores = self.op("Mul", [self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                                 self.const("scale", np.array(HEAD_DIM ** -0.5, np.float32))])
        ctx = self.op("Transpose", [self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])], perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, self.const("shape", np.array([0, 0, HIDDEN], np.int64))])
        x = self.op("Add", [x, self.linear(ctx, HIDDEN, HIDDEN, False, f"layers.{i}.o_proj")])
        h = self.rms_norm(x, HIDDEN)
        gate = self.linear(h, HIDDEN, FFN, True, f"layers.{i}.gate_proj")
        up = self.linear(h, HIDDEN, FFN, True, f"layers.{i}.up_proj")
        relu = self.op("Relu", [gate])
        act = self.op("Mul", [self.op("Mul", [relu, relu]), up])
        return self.op("Add", [x, self.linear(act, FFN, HIDDEN, True, f"layers.{i}.down_proj")])


def build(kind: str, nbits: bool) -> onnx.ModelProto:
    b = BodyBuilder(nbits, np.random.default_rng(SEED))  # the same seed: the twin files hold the same trits and scales
    if kind == "bitlinear":
        shape_in, shape_out = ["batch", HIDDEN], ["batch", FFN]
        y = b.linear(b.act_quant("x"), HIDDEN, FFN, True, "fc.weight")
    else:
        shape_in = shape_out = ["batch", "seq", HIDDEN]
        x = "x"
        for i in range(LAYERS):
            x = b.layer(x, i)
        y = b.rms_norm(x, HIDDEN)
    b.nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(b.nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], initializer=b.inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if nbits else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def bench(kind: str, folder: Path, seqs: list[int], threads: int, rounds: int) -> list[dict]:
    import tritc

    paths = {}
    for nbits in (False, True):
        paths[nbits] = folder / f"{kind}{'_nbits' if nbits else ''}.onnx"
        onnx.save(build(kind, nbits), str(paths[nbits]))
    t0 = time.perf_counter()
    shapes = {"batch": 1} if kind == "bitlinear" else {"batch": 1, "seq": seqs[0]}
    cm = tritc.compile(paths[False], threads=threads, shapes=shapes)
    compile_s = time.perf_counter() - t0
    report = cm.ternary_report.summary()
    fp32, nbits = session(paths[False], threads), session(paths[True], threads)
    rows = []
    for seq in (seqs if kind == "body" else [1]):
        shape = (1, HIDDEN) if kind == "bitlinear" else (1, seq, HIDDEN)
        feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        ref = fp32.run(None, feeds)[0].astype(np.float64)
        norm = float(np.max(np.abs(ref))) or 1.0
        errs = {name: float(np.max(np.abs(out.astype(np.float64) - ref)) / norm)
                for name, out in (("tritc", cm.run(None, feeds)[0]), ("ort_nbits", nbits.run(None, feeds)[0]))}
        timers = [Timer("tritc", lambda f=feeds: cm.run(None, f)), Timer("ort_fp32", lambda f=feeds: fp32.run(None, f)),
                  Timer("ort_nbits", lambda f=feeds: nbits.run(None, f))]
        interleave(timers, rounds)
        tr, f32, nb = timers
        row = {"model": kind, "seq": seq, "threads": threads, "layers": report["layers"], "folded": report["folded"],
               "tritc_ms": tr.median * 1e3, "ort_fp32_ms": f32.median * 1e3, "ort_nbits_ms": nb.median * 1e3,
               "speedup_vs_fp32": f32.median / tr.median, "speedup_vs_nbits": nb.median / tr.median,
               "max_rel_err_vs_fp32": errs, "compile_s": compile_s}
        rows.append(row)
        print(f"{kind:<10} {seq:>4} {report['folded']:>3}/{report['layers']:<3} {row['tritc_ms']:9.3f} {row['ort_fp32_ms']:9.3f} "
              f"{row['ort_nbits_ms']:9.3f} {row['speedup_vs_fp32']:7.2f}x {row['speedup_vs_nbits']:7.2f}x "
              f"{errs['tritc']:9.1e} {errs['ort_nbits']:9.1e}", flush=True)
    return rows


def markdown(info: dict, rows: list[dict], rounds: int) -> str:
    lines = ["# BitNet-shaped models, every linear layer exactly ternary: tritc vs onnxruntime", "",
             f"Median latency of {rounds} interleaved rounds, batch 1. tritc: the plain-MatMul file, default pipeline "
             f"(`folded`: layers fold-ternary made ternary). ORT fp32: the same file. ORT 2-bit: the twin file with "
             f"MatMulNBits (bits=2, block 128, accuracy_level 4). `rel err`: max |out - ORT fp32| / max |ORT fp32|.",
             "", machine_markdown(info),
             "| model | seq | threads | folded | tritc ms | ORT fp32 ms | ORT 2-bit ms | vs fp32 | vs 2-bit | rel err tritc "
             "| rel err 2-bit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["max_rel_err_vs_fp32"]
        lines.append(f"| {r['model']} | {r['seq']} | {r['threads']} | {r['folded']} of {r['layers']} | {r['tritc_ms']:.3f} | "
                     f"{r['ort_fp32_ms']:.3f} | {r['ort_nbits_ms']:.3f} | {r['speedup_vs_fp32']:.2f}x | "
                     f"{r['speedup_vs_nbits']:.2f}x | {e['tritc']:.1e} | {e['ort_nbits']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", choices=("bitlinear", "body"), default=["bitlinear", "body"])
    ap.add_argument("--seq", type=int, nargs="*", default=[1], help="sequence lengths of the body (default: 1)")
    ap.add_argument("--threads", type=int, default=1, help="threads for all three (default 1)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/bench_bitlinear.*")
    args = ap.parse_args(argv)
    info = machine_info()
    print(f"{info['cpu']} ({info['isa']} kernels), {args.threads} threads")
    print(f"{'model':<10} {'seq':>4} {'folded':>7} {'tritc ms':>9} {'fp32 ms':>9} {'2-bit ms':>9} {'vs fp32':>8} "
          f"{'vs 2-bit':>8} {'err':>9} {'err 2b':>9}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            rows += bench(kind, Path(tmp), args.seq, args.threads, args.rounds)
    info = finish_info(info)
    if not args.no_write:
        jpath, mpath = write_results("bench_bitlinear", info, rows, markdown(info, rows, args.rounds))
        print(f"wrote {jpath.relative_to(ROOT)} and {mpath.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

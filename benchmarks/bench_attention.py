"""The ONNX Attention op (opset 23) alone: tritc's fused_attention kernel (fuse-attention + tile-attention, the cpu
pipeline's), tritc's Attention-op kernel (pipeline none) and onnxruntime's, same inputs and threads.

    .venv/bin/python benchmarks/bench_attention.py                      # every case, 1 thread and all cores
    .venv/bin/python benchmarks/bench_attention.py --heads 32x8x128 --seqs 512 --threads 1 --rounds 5
    .venv/bin/python benchmarks/bench_attention.py --memory             # peak RSS of prefill at 1024 and 4096

Two workloads per shape (batch 1, 4-D Q / K / V): prefill (seq queries over seq keys, is_causal) and decode (one
query over a past cache of seq - 1 keys plus its own, is_causal, present_key / present_value returned). All run in
one process, interleaved round by round (benchmarks/common.py), each called with a feed dict as a user would; each
row says how far tritc's outputs are from onnxruntime's. --memory runs each contestant's prefill in a child process
and reports its peak RSS. Writes benchmarks/results/bench_attention.{json,md} (--memory: bench_attention_memory.*).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import Timer, cores, finish_info, interleave, machine_info, machine_markdown, write_results  # noqa: E402

HEADS = [(4, 2, 64), (32, 8, 128)]  # (query heads, kv heads, head dim)
SEQS = [32, 128, 512]
MODES = ("prefill", "decode")


def attention_model(heads: int, kv_heads: int, dim: int, q_len: int, kv_len: int, past: int):
    """One Attention node (opset 23): Q, K, V (and past_key / past_value when past > 0), is_causal."""
    import onnx
    from onnx import TensorProto, helper

    def io(name: str, shape: tuple[int, ...]):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    inputs = [io("Q", (1, heads, q_len, dim)), io("K", (1, kv_heads, kv_len, dim)), io("V", (1, kv_heads, kv_len, dim))]
    outputs = [io("Y", (1, heads, q_len, dim))]
    names = ["Q", "K", "V"]
    out_names = ["Y"]
    if past:
        inputs += [io("past_key", (1, kv_heads, past, dim)), io("past_value", (1, kv_heads, past, dim))]
        names += ["", "past_key", "past_value"]
        total = past + kv_len
        outputs += [io("present_key", (1, kv_heads, total, dim)), io("present_value", (1, kv_heads, total, dim))]
        out_names += ["present_key", "present_value"]
    node = helper.make_node("Attention", names, out_names, is_causal=1)
    graph = helper.make_graph([node], "attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def case(heads: int, kv_heads: int, dim: int, seq: int, mode: str, seed: int = 0):
    """(model, feeds, q_len, keys) of one row: prefill = seq queries over seq keys; decode = 1 query, seq keys in all."""
    rng = np.random.default_rng(seed)
    q_len, kv_len, past = (seq, seq, 0) if mode == "prefill" else (1, 1, seq - 1)
    feeds = {"Q": rng.standard_normal((1, heads, q_len, dim), np.float32),
             "K": rng.standard_normal((1, kv_heads, kv_len, dim), np.float32),
             "V": rng.standard_normal((1, kv_heads, kv_len, dim), np.float32)}
    if past:
        feeds["past_key"] = rng.standard_normal((1, kv_heads, past, dim), np.float32)
        feeds["past_value"] = rng.standard_normal((1, kv_heads, past, dim), np.float32)
    return attention_model(heads, kv_heads, dim, q_len, kv_len, past), feeds, q_len, past + kv_len


def bench_case(heads: int, kv_heads: int, dim: int, seq: int, mode: str, threads: int, rounds: int) -> dict:
    import onnxruntime as ort

    import tritc

    model, feeds, q_len, keys = case(heads, kv_heads, dim, seq, mode)
    cm = tritc.compile(model, threads=threads)  # the cpu pipeline: fuse-attention, tile-attention
    assert any(n.op == "fused_attention" for n in cm.graph)
    old = tritc.compile(model, threads=threads, pipeline="none")  # the Attention op's own kernel
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    got, expected = cm.run(None, feeds), session.run(None, feeds)
    max_abs = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(got, expected))
    timers = [Timer("tritc", lambda: cm.run(None, feeds)), Timer("onnxruntime", lambda: session.run(None, feeds)),
              Timer("tritc_attention_op", lambda: old.run(None, feeds))]
    interleave(timers, rounds)
    tr, ox, op = timers
    # multiply-adds of Q K^T and P V over every (query, key) pair (a causal mask allows about half of them)
    macs = 2 * heads * q_len * keys * dim
    return {"heads": heads, "kv_heads": kv_heads, "head_dim": dim, "seq": seq, "mode": mode, "q_len": q_len, "keys": keys,
            "threads": threads, "tritc_ms": tr.median * 1e3, "onnxruntime_ms": ox.median * 1e3, "speedup": ox.median / tr.median,
            "attention_op_ms": op.median * 1e3,
            "tritc_best_ms": tr.best * 1e3, "onnxruntime_best_ms": ox.best * 1e3, "tritc_gmacs": macs / tr.median / 1e9,
            "max_abs_diff": max_abs}


def markdown(info: dict, rows: list[dict], rounds: int) -> str:
    lines = ["# Attention op (opset 23): tritc vs onnxruntime", "",
             f"Median latency of {rounds} interleaved rounds (each the mean of back-to-back calls through the Python API "
             "with a feed dict), batch 1, 4-D inputs, is_causal. `tritc`: fused_attention (the cpu pipeline); "
             "`Attention op`: tritc's kernel for the ONNX op as imported (the one before fused_attention). "
             "prefill: seq queries over seq keys; decode: one query "
             "over a past cache of seq - 1 keys plus its own, present_key / present_value returned. `G MAC/s`: "
             "2 * heads * queries * keys * head_dim multiply-adds (Q K^T and P V) per second, over every pair. "
             "`max abs diff`: tritc's outputs against onnxruntime's.", "",
             machine_markdown(info),
             "| heads | kv heads | head dim | seq | mode | threads | tritc ms | Attention op ms | onnxruntime ms | speedup vs ort "
             "| tritc G MAC/s | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['heads']} | {r['kv_heads']} | {r['head_dim']} | {r['seq']} | {r['mode']} | {r['threads']} | "
                     f"{r['tritc_ms']:.3f} | {r['attention_op_ms']:.3f} | {r['onnxruntime_ms']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['tritc_gmacs']:.1f} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def parse_heads(text: str) -> tuple[int, int, int]:
    h, kv, d = (int(x) for x in text.split("x"))
    return h, kv, d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", nargs="*", type=parse_heads, default=HEADS, help="HEADSxKV_HEADSxHEAD_DIM (default 4x2x64 32x8x128)")
    ap.add_argument("--seqs", nargs="*", type=int, default=SEQS, help="sequence lengths (default 32 128 512)")
    ap.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    ap.add_argument("--threads", nargs="*", type=int, default=sorted({1, cores()}), help="thread counts (default 1 and all cores)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (default 9)")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/bench_attention.*")
    ap.add_argument("--memory", action="store_true", help="peak RSS of each contestant's prefill at --seqs (default 1024 4096)")
    args = ap.parse_args(argv)

    info = machine_info()
    print(f"{info['cpu']} ({info['isa']} kernels)")
    if args.memory:
        return memory_main(args)
    print(f"{'heads':<10} {'seq':>5} {'mode':<8} {'thr':>3} {'tritc ms':>9} {'op ms':>9} {'ort ms':>9} {'speedup':>8} {'GMAC/s':>7} "
          f"{'max|diff|':>10}")
    rows = []
    for threads in args.threads:
        for heads, kv_heads, dim in args.heads:
            for seq in args.seqs:
                for mode in args.modes:
                    r = bench_case(heads, kv_heads, dim, seq, mode, threads, args.rounds)
                    rows.append(r)
                    print(f"{heads}x{kv_heads}x{dim:<5} {seq:>5} {mode:<8} {threads:>3} {r['tritc_ms']:9.3f} {r['attention_op_ms']:9.3f} "
                          f"{r['onnxruntime_ms']:9.3f} "
                          f"{r['speedup']:7.2f}x {r['tritc_gmacs']:7.1f} {r['max_abs_diff']:10.2e}", flush=True)
    info = finish_info(info)
    if not args.no_write:
        jpath, mpath = write_results("bench_attention", info, rows, markdown(info, rows, args.rounds))
        print(f"wrote {jpath.relative_to(ROOT)} and {mpath.relative_to(ROOT)}")
    return 0


MEMORY_CHILD = r"""
import resource, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_attention import case
who, heads, kv, dim, seq, threads = sys.argv[2], *map(int, sys.argv[3:8])
model, feeds, _, _ = case(heads, kv, dim, seq, "prefill")
if who == "onnxruntime":
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = threads
    s = ort.InferenceSession(model.SerializeToString(), sess_options=o, providers=["CPUExecutionProvider"])
    call = lambda: s.run(None, feeds)
else:
    import tritc
    m = tritc.compile(model, threads=threads, **({"pipeline": "none"} if who == "attention_op" else {}))
    call = lambda: m.run(None, feeds)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
call()
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory_main(args) -> int:
    """Peak RSS (MiB) of one prefill per contestant and size, each in a fresh child process."""
    import subprocess

    seqs = args.seqs if args.seqs != SEQS else [1024, 4096]
    heads, kv_heads, dim = args.heads[-1]
    rows = []
    for who in ("tritc", "attention_op", "onnxruntime"):
        for seq in seqs:
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(ROOT), who, str(heads), str(kv_heads), str(dim),
                                  str(seq), str(args.threads[-1])], capture_output=True, text=True, check=True).stdout
            before, peak = (int(x) / 1024 for x in out.split())
            rows.append({"contestant": who, "seq": seq, "heads": heads, "kv_heads": kv_heads, "head_dim": dim,
                         "peak_mib": peak, "run_mib": peak - before})
            print(f"{who:<14} seq {seq:>6}: peak {peak:8.1f} MiB, the call itself {peak - before:8.1f} MiB", flush=True)
    if not args.no_write:
        lines = ["# Attention prefill: peak memory", "", f"{heads} heads, {kv_heads} kv heads, head dim {dim}, batch 1, "
                 "is_causal; peak RSS of a child process that compiles (or loads) and runs one prefill; `call` is what the "
                 "run added over the peak before it.", "", "| contestant | seq | peak MiB | call MiB |", "|---|---|---|---|"]
        lines += [f"| {r['contestant']} | {r['seq']} | {r['peak_mib']:.1f} | {r['run_mib']:.1f} |" for r in rows]
        info = finish_info(machine_info())
        write_results("bench_attention_memory", info, rows, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

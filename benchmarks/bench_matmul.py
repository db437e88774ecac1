"""Float MatMul: tritc's compiled GEMM vs onnxruntime's fp32 MatMul, same ONNX model (B a weight), one process.

    .venv/bin/python benchmarks/bench_matmul.py                       # the four shapes, 1 thread and all cores
    .venv/bin/python benchmarks/bench_matmul.py --shapes 512x512x512 --threads 1 --rounds 9

Shapes are MxKxN. Both sides are called without per-call Python conversions (onnxruntime through IO
binding, tritc's compiled entry point with bound buffers), interleaved round by round, and checked
against numpy's float64 product. Results go to benchmarks/results/bench_matmul.{json,md}.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Timer, cores, finish_info, interleave, machine_info, machine_markdown, ort_bound_call, write_results  # noqa: E402

SHAPES = [(1, 4096, 4096), (128, 2560, 6912), (64, 64, 64), (512, 512, 512)]


def model(M: int, K: int, N: int, b: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "g",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])],
                              initializer=[numpy_helper.from_array(b, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def tritc_runner(onnx_model, a: np.ndarray, threads: int):
    """The compiled model's entry point with its buffers bound once; returns (call, output, compile seconds)."""
    import time

    import tritc
    from tritc.runtime.cpu import aligned_empty

    t0 = time.perf_counter()
    m = tritc.compile(onnx_model, pipeline="cpu", threads=threads)
    m.run(None, {"A": a})  # compiles and loads the code for these shapes
    seconds = time.perf_counter() - t0
    spec, exe = m._executable({}, {})
    y = np.zeros(spec.output_types[0].shape, np.float32)
    arena = aligned_empty(max(exe.arena_bytes, 1))
    ins = (ctypes.c_void_p * 1)(a.ctypes.data)
    outs = (ctypes.c_void_p * 1)(y.ctypes.data)
    args = (ctypes.addressof(ins), ctypes.addressof(outs), exe.weights.ctypes.data, arena.ctypes.data)

    def call() -> None:
        exe.entry(*args)

    call.keep = (m, exe, ins, outs, arena, a, y)  # type: ignore[attr-defined]  # raw pointers above need these alive
    return call, y, seconds


def bench_one(M: int, K: int, N: int, threads: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    onnx_model = model(M, K, N, b)
    t_call, t_y, compile_s = tritc_runner(onnx_model, a, threads)
    o_call, o_y = ort_bound_call(onnx_model, a, N, threads)
    t_call(), o_call()
    exact = a.astype(np.float64) @ b.astype(np.float64)
    norm = float(np.max(np.abs(exact))) or 1.0
    errs = {"tritc": float(np.max(np.abs(t_y - exact)) / norm), "ort": float(np.max(np.abs(o_y - exact)) / norm)}
    timers = [Timer("tritc", t_call), Timer("ort", o_call)]
    interleave(timers, rounds)
    flops = 2 * M * K * N
    row = {"M": M, "K": K, "N": N, "threads": threads, "compile_s": compile_s, "max_rel_err_vs_fp64": errs,
           "ok": max(errs.values()) < 1e-4}
    for tm in timers:
        row[f"{tm.name}_ms"] = tm.median * 1e3
        row[f"{tm.name}_best_ms"] = tm.best * 1e3
        row[f"{tm.name}_gflops"] = flops / tm.median / 1e9
        if threads == 1:
            row[f"{tm.name}_thread_cpu_ms"] = tm.cpu_median * 1e3  # robust to a shared machine's preemption
    row["ratio"] = timers[0].median / timers[1].median  # below 1: tritc is faster
    if threads == 1:
        row["ratio_thread_cpu"] = timers[0].cpu_median / timers[1].cpu_median
    return row


def markdown(info: dict, rows: list[dict]) -> str:
    out = ["# Float MatMul: tritc vs onnxruntime fp32\n", machine_markdown(info),
           "\nMedian wall time per call (B a weight of the model), interleaved rounds; ratio = tritc / onnxruntime "
           "(below 1: tritc faster). With one thread, the ratio of the calling thread's CPU time is given too: it is "
           "not inflated by other processes taking the core.\n",
           "| M x K x N | threads | tritc ms | GFLOP/s | onnxruntime ms | GFLOP/s | ratio | ratio (thread CPU) | "
           "max rel err tritc / ort | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu_ratio = f"{r['ratio_thread_cpu']:.2f}" if "ratio_thread_cpu" in r else "-"
        e = r["max_rel_err_vs_fp64"]
        out.append(f"| {r['M']}x{r['K']}x{r['N']} | {r['threads']} | {r['tritc_ms']:.3f} | {r['tritc_gflops']:.1f} | "
                   f"{r['ort_ms']:.3f} | {r['ort_gflops']:.1f} | {r['ratio']:.2f} | {cpu_ratio} | "
                   f"{e['tritc']:.1e} / {e['ort']:.1e} | {r['compile_s']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", default=[f"{m}x{k}x{n}" for m, k, n in SHAPES], help="MxKxN")
    p.add_argument("--threads", nargs="*", type=int, default=sorted({1, cores()}))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--no-write", action="store_true", help="print only, keep benchmarks/results as they are")
    args = p.parse_args(argv)
    info = machine_info()
    rows = []
    for shape in args.shapes:
        M, K, N = (int(v) for v in shape.lower().split("x"))
        for threads in args.threads:
            row = bench_one(M, K, N, threads, args.rounds)
            rows.append(row)
            print(f"{M}x{K}x{N} threads={threads}: tritc {row['tritc_ms']:.3f} ms ({row['tritc_gflops']:.1f} GFLOP/s), "
                  f"onnxruntime {row['ort_ms']:.3f} ms ({row['ort_gflops']:.1f} GFLOP/s), ratio {row['ratio']:.2f}"
                  + (f", thread-CPU ratio {row['ratio_thread_cpu']:.2f}" if "ratio_thread_cpu" in row else "")
                  + ("" if row["ok"] else "  RESULTS DIFFER"), flush=True)
    info = finish_info(info)
    text = markdown(info, rows)
    if not args.no_write:
        paths = write_results("bench_matmul", info, rows, text)
        print(f"wrote {paths[0]} and {paths[1]}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

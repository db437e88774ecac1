"""Ternary matmul: tritc's kernel vs onnxruntime's fp32 MatMul and 2-bit MatMulNBits, same weights.

    .venv/bin/python benchmarks/bench_kernels.py                # int8 activations, five shapes, 1 thread and all cores
    .venv/bin/python benchmarks/bench_kernels.py --shapes 1x4096x4096 --threads 1 --rounds 5
    .venv/bin/python benchmarks/bench_kernels.py --act float    # float activations (exported BitNet MatMuls)

All run in one process, interleaved round by round; each is checked against numpy in the same run
(tritc's int8 kernel bit for bit against the interpreter's int8 semantics, its float kernel to the
rounding bound the kernel tests use). Results go to benchmarks/results/bench_kernels.{json,md}
(--act float: bench_kernels_float.*) with the machine's description.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    Timer,
    cores,
    finish_info,
    interleave,
    llc_bytes,
    machine_info,
    machine_markdown,
    ort_bound_call,
    write_results,
)

SHAPES = [(1, 4096, 4096), (1, 2560, 6912), (1, 6912, 2560), (8, 4096, 4096), (128, 2560, 6912)]


def problem(M: int, K: int, N: int, seed: int = 0):
    from tritc.ir.ternary import TernaryWeight

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    trits = rng.choice(np.array([-1, 0, 1], np.int8), size=(K, N), p=[0.3, 0.4, 0.3])
    scale = (rng.random(N) * 0.02 + 0.01).astype(np.float32)
    return x, TernaryWeight(trits, scale)


def tritc_runner(x: np.ndarray, w, threads: int, copies: int = 1, act: str = "int8"):
    """Compile the kernel for this shape; returns (call, output array).

    copies > 1 cycles through that many copies of the packed weights, so that they do not stay in
    the caches between calls (what a layer of a model larger than the L3 sees)."""
    import llvmlite.ir as ir

    from tritc.codegen.llvm.jit import compile_and_load
    from tritc.codegen.llvm.kernels.ternary import emit_ternary_matmul
    from tritc.codegen.llvm.kernels.threads import ensure_pool
    from tritc.codegen.llvm.packing import pack_scales, pack_trits
    from tritc.codegen.llvm.target import host_target

    (M, K), N = x.shape, w.shape[1]
    target = host_target()
    module = ir.Module(name="bench")
    module.triple = target.triple
    emit_ternary_matmul(module, target, M=M, K=K, N=N, act=act, granularity="per_channel", threads=threads, name="k")
    if threads != 1:
        ensure_pool(threads)
    lib, _ = compile_and_load(module, target)
    fn = lib.function("k", ctypes.c_int32, [ctypes.c_void_p] * 4)
    first = pack_trits(w.trits)
    packed = [first] + [first.copy() for _ in range(copies - 1)]
    scales = pack_scales(w)
    y = np.zeros((M, N), np.float32)
    args = [(x.ctypes.data, p.ctypes.data, scales.ctypes.data, y.ctypes.data) for p in packed]
    state = {"i": 0}

    def call() -> None:
        state["i"] = (state["i"] + 1) % copies
        fn(*args[state["i"]])

    call.keep = (lib, packed, scales, x, y)  # type: ignore[attr-defined]  # the raw pointers in args need these alive
    return call, y


def cold_copies(K: int, N: int) -> int:
    """How many weight copies exceed twice the last-level cache."""
    from tritc.codegen.llvm.packing import packed_size

    return max(2, -(-2 * llc_bytes() // packed_size(K, N)) + 1)


def _model(nodes, inits, M: int, K: int, N: int, opsets):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=10)


def ort_matmul_runner(x: np.ndarray, w, threads: int):
    from onnx import helper, numpy_helper

    (M, K), N = x.shape, w.shape[1]
    dense = w.dequantize()
    model = _model([helper.make_node("MatMul", ["A", "B"], ["Y"])], [numpy_helper.from_array(dense, "B")], M, K, N, [("", 17)])
    return ort_bound_call(model, x, N, threads)


def nbits_weights(w, block: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits operands whose dequantised weight is exactly w's trits * per-channel scales (bitnet_models.py)."""
    from benchmarks.bitnet_models import nbits_weights as from_trits

    return from_trits(w.trits, w.scale, block)


def ort_nbits_runner(x: np.ndarray, w, threads: int, block: int):
    from onnx import helper, numpy_helper

    (M, K), N = x.shape, w.shape[1]
    B, S = nbits_weights(w, block)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=K, N=N, bits=2,
                            block_size=block, accuracy_level=4)
    model = _model([node], [numpy_helper.from_array(B, "B"), numpy_helper.from_array(S, "S")], M, K, N,
                   [("", 17), ("com.microsoft", 1)])
    return ort_bound_call(model, x, N, threads)


def check(x, w, outs: dict[str, np.ndarray], act: str = "int8") -> dict:
    """Errors of each output against numpy, run after one call of each contestant.

    int8: tritc must equal the interpreter bit for bit. float: tritc must be within the kernel tests' rounding
    bound, 1e-5 * (|x| @ |trits|) * max scale, of the interpreter (float sums in another order)."""
    from tritc.ir.ops.ternary import ternary_matmul

    exact = ternary_matmul(x, w, act=act, act_max=127.0, act_eps=1e-5, act_scale="div")
    dense = x.astype(np.float64) @ w.dequantize().astype(np.float64)
    norm = float(np.max(np.abs(dense))) or 1.0
    rel = {k: float(np.max(np.abs(v - dense)) / norm) for k, v in outs.items()}
    res: dict = {"act": act, "max_rel_err_vs_fp64": rel}
    if act == "int8":
        res["tritc_bit_exact"] = tritc_ok = all(np.array_equal(v, exact) for k, v in outs.items() if k.startswith("tritc"))
    else:
        mag = np.abs(x).astype(np.float64) @ np.abs(w.trits).astype(np.float64) * float(np.max(np.abs(w.scale)))
        res["tritc_max_err_over_bound"] = max(float(np.max(np.abs(v - exact) / (1e-5 * (mag + 1.0))))
                                              for k, v in outs.items() if k.startswith("tritc"))
        tritc_ok = res["tritc_max_err_over_bound"] <= 1.0
    # fp32 MatMul differs from fp64 by rounding; int8 activations (tritc, MatMulNBits level 4) by ~1%
    res["ok"] = (tritc_ok and rel["ort_fp32"] < 1e-4
                 and all(v < 5e-2 for k, v in rel.items() if k.startswith("ort_nbits")))
    return res


def bench_one(M: int, K: int, N: int, threads: int, rounds: int, blocks: list[int], cold: bool = True,
              act: str = "int8") -> dict:
    x, w = problem(M, K, N)
    runners = {"tritc": tritc_runner(x, w, threads, act=act), "ort_fp32": ort_matmul_runner(x, w, threads)}
    for block in blocks:
        runners[f"ort_nbits{block}"] = ort_nbits_runner(x, w, threads, block)
    if cold and M <= 8:  # large M is compute-bound: cold weights change nothing there
        runners["tritc_cold"] = tritc_runner(x, w, threads, cold_copies(K, N), act)
    for call, _ in runners.values():
        call()
    correctness = check(x, w, {k: y for k, (_, y) in runners.items()}, act)
    timers = [Timer(k, call) for k, (call, _) in runners.items()]
    interleave(timers, rounds)
    row = {"M": M, "K": K, "N": N, "threads": threads, "nbits_blocks": blocks, **correctness}
    base = timers[0]
    # tritc's own process CPU time, measured apart: ORT's pool threads spin for a while after each
    # of its runs, and that would be counted against whoever runs next
    time.sleep(0.3)
    alone = Timer("tritc_alone", base.fn, base.inner)
    for _ in range(3):
        alone.sample()
    row["tritc_alone_process_cpu_ms"] = alone.proc_median * 1e3
    for tm in timers:
        row[f"{tm.name}_ms"] = tm.median * 1e3
        row[f"{tm.name}_best_ms"] = tm.best * 1e3
        row[f"{tm.name}_gmac_s"] = M * K * N / tm.median / 1e9
        row[f"{tm.name}_process_cpu_ms"] = tm.proc_median * 1e3
        if threads == 1:
            row[f"{tm.name}_cpu_ms"] = tm.cpu_median * 1e3
        if tm is not base and not tm.name.startswith("tritc"):
            row[f"speedup_vs_{tm.name}"] = tm.median / base.median
    row["tritc_gweights_s"] = K * N / base.median / 1e9
    runners.clear()  # release the sessions (and their thread pools) before the next shape
    gc.collect()
    return row


def _others(rows: list[dict]) -> list[str]:
    return ["ort_fp32"] + [f"ort_nbits{b}" for b in rows[0]["nbits_blocks"]]


def _label(name: str) -> str:
    return "ORT fp32" if name == "ort_fp32" else f"ORT NBits b{name[9:]}"


def markdown(info: dict, rows: list[dict], act: str = "int8") -> str:
    others = _others(rows)
    cols = (["M", "K", "N", "threads", "tritc ms"] + [f"{_label(o)} ms" for o in others]
            + ["tritc G weights/s", "tritc G MAC/s", "ORT fp32 G MAC/s"] + [f"vs {_label(o)}" for o in others]
            + ["tritc cold ms", "checks"])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [str(r["M"]), str(r["K"]), str(r["N"]), str(r["threads"]), f"{r['tritc_ms']:.3f}"]
        cells += [f"{r[o + '_ms']:.3f}" for o in others]
        cells += [f"{r['tritc_gweights_s']:.1f}", f"{r['tritc_gmac_s']:.1f}", f"{r['ort_fp32_gmac_s']:.1f}"]
        cells += [f"{r['speedup_vs_' + o]:.2f}x" for o in others]
        cells += [f"{r['tritc_cold_ms']:.3f}" if "tritc_cold_ms" in r else "-", "ok" if r["ok"] else "FAIL"]
        lines.append("| " + " | ".join(cells) + " |")
    cpu_rows = [r for r in rows if r["threads"] == 1]
    cpu = ""
    if cpu_rows:
        ccols = ["M", "K", "N", "tritc ms"] + [f"{_label(o)} ms" for o in others] + [f"vs {_label(o)}" for o in others]
        clines = ["| " + " | ".join(ccols) + " |", "|" + "---|" * len(ccols)]
        for r in cpu_rows:
            cells = [str(r["M"]), str(r["K"]), str(r["N"]), f"{r['tritc_cpu_ms']:.3f}"]
            cells += [f"{r[o + '_cpu_ms']:.3f}" for o in others]
            cells += [f"{r[o + '_cpu_ms'] / r['tritc_cpu_ms']:.2f}x" for o in others]
            clines.append("| " + " | ".join(cells) + " |")
        cpu = ("\nSingle thread, CPU time of the calling thread per call (time lost to other processes on a shared "
               "machine is excluded):\n\n" + "\n".join(clines) + "\n")
    multi = [r for r in rows if r["threads"] > 1]
    if multi:
        base = {(r["M"], r["K"], r["N"]): r for r in cpu_rows}
        mcols = ["M", "K", "N", "threads", "tritc wall ms", "tritc process CPU ms", "tritc 1-thread CPU ms"]
        mlines = ["| " + " | ".join(mcols) + " |", "|" + "---|" * len(mcols)]
        for r in multi:
            one = base.get((r["M"], r["K"], r["N"]))
            one_cpu = f"{one['tritc_cpu_ms']:.3f}" if one else "-"
            mlines.append(f"| {r['M']} | {r['K']} | {r['N']} | {r['threads']} | {r['tritc_ms']:.3f} "
                          f"| {r['tritc_alone_process_cpu_ms']:.3f} | {one_cpu} |")
        cpu += ("\nMulti-threaded tritc, CPU time of the whole process per call (all threads, measured after the "
                "interleaved rounds with onnxruntime idle; equal to the single-thread CPU time when splitting the "
                "work wastes nothing, and then the wall time on idle cores is this divided by the threads):\n\n"
                + "\n".join(mlines) + "\n")
    blocks = ", ".join(str(b) for b in rows[0]["nbits_blocks"])
    title = "Ternary matmul kernels" + (" (float activations)" if act == "float" else "") + " vs onnxruntime"
    return (f"# {title}\n\n" + machine_markdown(info)
            + f"- tritc: {_ACT_TEXT[act]}, per-channel scale. ORT MatMulNBits: bits=2, block_size {blocks} (bN), "
              "accuracy_level=4, zero point 2, scales = the per-channel scale per block. ORT fp32: MatMul on "
              "trits * scale. Times are medians of interleaved rounds (wall clock); *vs X* = X's time / tritc's. "
              "The weights of one shape stay in the caches between calls for all of them (ORT fp32's do not fit: "
              "they stream from DRAM); *tritc cold* cycles through copies of its weights larger than twice the "
              "L3, as a layer of a large model would see them.\n\n"
            + "\n".join(lines) + "\n" + cpu)


_ACT_TEXT = {"int8": "int8 activations (checked bit for bit against the interpreter)",
             "float": "float activations, no quantisation (`act=\"float\"`, checked against the interpreter to "
                      "1e-5 * (|x| @ |trits|) * max scale); ORT fp32 computes the same function"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="*", help="MxKxN (default: the five issue shapes)")
    ap.add_argument("--threads", nargs="*", type=int, help="thread counts (default: 1 and all cores)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--block-size", nargs="*", type=int, default=[64, 128],
                    help="MatMulNBits block sizes (128 is ORT's fastest here, 256 falls off its fast path)")
    ap.add_argument("--act", choices=("int8", "float"), default="int8",
                    help="tritc's activation mode: int8 (BitNet's quantised activations) or float (plain MatMuls)")
    ap.add_argument("--out", help="file stem under benchmarks/results (default bench_kernels, bench_kernels_float)")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes] if args.shapes else SHAPES
    thread_counts = args.threads or sorted({1, cores()})
    info = machine_info()
    rows = []
    for threads in thread_counts:
        for M, K, N in shapes:
            r = bench_one(M, K, N, threads, args.rounds, args.block_size, act=args.act)
            rows.append(r)
            others = " | ".join(f"{_label(o)} {r[o + '_ms']:.3f} ms (x{r['speedup_vs_' + o]:.2f})" for o in _others(rows))
            print(f"M={M:4d} K={K:5d} N={N:5d} threads={threads}: tritc {r['tritc_ms']:.3f} ms "
                  f"({r['tritc_gweights_s']:.0f} G weights/s, {r['tritc_gmac_s']:.0f} G MAC/s) | {others} | "
                  f"{'ok' if r['ok'] else 'CHECK FAILED ' + str(r)}", flush=True)
    info = finish_info(info)
    stem = args.out or ("bench_kernels" if args.act == "int8" else "bench_kernels_float")
    jpath, mpath = write_results(stem, info, rows, markdown(info, rows, args.act))
    print(f"wrote {jpath} and {mpath}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shared benchmark helpers: what machine this is, interleaved timing, and result files.

Every benchmark records the CPU, its SIMD flags, the thread count, library versions, the date and
the load average (the machine may be shared), so a number never travels without its context.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tritc.commands.machine import cores, cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    return []


def llc_bytes() -> int:
    """Size of the last-level cache (32 MiB if the system does not say)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = 0
    for idx in sorted(base.glob("index*")):
        try:
            text = (idx / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        best = max(best, int(text.rstrip("KMG")) * mult)
    return best or 32 << 20


def machine_info() -> dict:
    import llvmlite
    import llvmlite.binding as llvm
    import numpy
    import onnxruntime

    from tritc.codegen.llvm.target import host_target

    target = host_target()
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "llvm_cpu": target.cpu,
        "isa": target.isa,
        "flags": cpu_flags(),
        "cores": cores(),
        "llc_bytes": llc_bytes(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "llvmlite": llvmlite.__version__,
        "llvm": ".".join(str(v) for v in llvm.llvm_version_info),
        "onnxruntime": onnxruntime.__version__,
        "loadavg_start": list(os.getloadavg()),
    }


@dataclass
class Timer:
    """Samples of one contestant: each sample is the mean of `inner` back-to-back calls."""

    name: str
    fn: Callable[[], object]
    inner: int = 1
    wall: list[float] = field(default_factory=list)  # seconds per call
    cpu: list[float] = field(default_factory=list)  # this thread's CPU seconds per call
    proc: list[float] = field(default_factory=list)  # the whole process's CPU seconds per call (all threads)

    def calibrate(self, target_s: float) -> None:
        self.fn()
        t0 = time.perf_counter()
        self.fn()
        one = max(time.perf_counter() - t0, 1e-6)
        self.inner = max(1, min(10_000, int(target_s / one)))

    def sample(self) -> None:
        p0, c0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        for _ in range(self.inner):
            self.fn()
        t1, c1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
        self.wall.append((t1 - t0) / self.inner)
        self.cpu.append((c1 - c0) / self.inner)
        self.proc.append((p1 - p0) / self.inner)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def proc_median(self) -> float:
        return statistics.median(self.proc)


def interleave(timers: list[Timer], rounds: int, target_s: float = 0.05, warmup: int = 2, gap_s: float = 0.05) -> None:
    """Time the contestants in turn, round after round, so a burst of load hits them all alike.

    Each sample starts after a pause of gap_s: thread pools (onnxruntime's, tritc's) keep spinning
    for a while after a run, and would otherwise take cores from whoever is timed next."""
    for t in timers:
        for _ in range(warmup):
            t.fn()
        t.calibrate(target_s)
    for _ in range(rounds):
        for t in timers:
            time.sleep(gap_s)
            t.sample()


def ort_bound_call(model, a: np.ndarray, n: int, threads: int) -> tuple[Callable[[], None], np.ndarray]:
    """onnxruntime running `model` (input A, output Y: a.shape[0] x n f32) on `threads` threads, called through IO
    binding (no per-call numpy conversions): the call and the output array it fills."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = np.zeros((a.shape[0], n), np.float32)
    binding = sess.io_binding()
    av, yv = ort.OrtValue.ortvalue_from_numpy(a), ort.OrtValue.ortvalue_from_numpy(y)
    binding.bind_ortvalue_input("A", av)
    binding.bind_ortvalue_output("Y", yv)

    def call() -> None:
        sess.run_with_iobinding(binding)

    call.keep = (sess, binding, av, yv, a, y)  # type: ignore[attr-defined]  # ORT reads and writes these buffers in place
    return call, y


def finish_info(info: dict) -> dict:
    """info with the load average at the end of the run."""
    return dict(info, loadavg_end=list(os.getloadavg()))


def write_results(stem: str, info: dict, rows: list[dict], markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath, mpath = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    jpath.write_text(json.dumps({"machine": info, "results": rows}, indent=2) + "\n")
    mpath.write_text(markdown)
    return jpath, mpath


def machine_markdown(info: dict) -> str:
    return (f"- CPU: {info['cpu']} (LLVM cpu `{info['llvm_cpu']}`, kernels `{info['isa']}`), {info['cores']} cores; "
            f"flags: {', '.join(info['flags'])}\n"
            f"- python {info['python']}, numpy {info['numpy']}, llvmlite {info['llvmlite']} (LLVM {info['llvm']}), "
            f"onnxruntime {info['onnxruntime']}\n"
            f"- date {info['date']}; load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_start'])}"
            + (f", at end {', '.join(f'{x:.2f}' for x in info['loadavg_end'])}" if "loadavg_end" in info else "") + "\n")

"""Compile time and peak memory of a real-size model: the 24-layer BitNet-shaped 0.7B-class decoder.

    .venv/bin/python benchmarks/compile_real_size.py                 # 24 layers, hidden 1536, FFN 4096 (0.7b)
    .venv/bin/python benchmarks/compile_real_size.py --layers 4      # the reduced form the test suite runs

The model (benchmarks/bitnet_models.py, the `0.7b` spec of bench_generate.py: 12 heads, 4 KV heads, vocabulary
32000, every linear layer exactly ternary, ~2.8 GB of float32 weights as external data) is built once into
--folder (by a child process), then `tritc compile` runs in another child: wall time from start to the artifact
written, and that child's peak resident set (os.wait4's rusage: the compiler process or its LLVM worker, the larger).
Targets (issue 8): under 30 s and under 4 GB. Writes benchmarks/results/compile_real_size.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIME_LIMIT_S = 30.0
MEMORY_LIMIT_BYTES = 4 * 10**9


def model_path(folder: Path, layers: int) -> Path:
    """The model with `layers` layers of the 0.7b spec, built unless already in `folder`."""
    from benchmarks.bench_generate import MODELS

    spec = dataclasses.replace(MODELS["0.7b"], layers=layers)
    path = folder / f"bitnet_{layers}l_{spec.hidden}.onnx"
    if not path.exists():
        # built in a child process: building takes several GB, which a later fork would otherwise count as the
        # compiler's peak (a forked child starts with its parent's resident pages)
        folder.mkdir(parents=True, exist_ok=True)
        code = ("import sys, dataclasses; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
                "from benchmarks.bench_generate import MODELS; from benchmarks.bitnet_models import decoder, save; "
                "save(decoder(dataclasses.replace(MODELS['0.7b'], layers=int(sys.argv[2]))), Path(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(ROOT), str(layers), str(path)], check=True)
    return path


def measure(model: Path, out: Path, threads: int | None = None) -> dict:
    """Compile `model` with the CLI in a child process: seconds, the peak resident bytes of that child (wait4's
    rusage: the compiler and its LLVM worker, the larger of the two), the summary fields it printed."""
    cmd = [sys.executable, "-m", "tritc.cli", "compile", str(model), "-o", str(out)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        text, err = stdout.read(), stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"tritc compile failed ({proc.returncode}): {err.strip()[-2000:]}")
    fields = {line.split()[0]: line.split(None, 1)[1] for line in text.splitlines()[1:] if line.strip()}
    return {"model": model.name, "model_bytes": sum(p.stat().st_size for p in model.parent.glob(model.name + "*")),
            "seconds": round(seconds, 2), "peak_bytes": usage.ru_maxrss * 1024,
            "artifact_bytes": out.stat().st_size, "shapes": fields.get("shapes", ""), "ternary": fields.get("ternary", "")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--folder", type=Path, default=Path("/tmp/tritc-real-size"))
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    args = ap.parse_args(argv)
    from benchmarks.common import finish_info, machine_info, machine_markdown, write_results

    info = machine_info()
    t0 = time.perf_counter()
    model = model_path(args.folder, args.layers)
    print(f"model {model} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    row = measure(model, args.folder / model.with_suffix(".tritc").name)
    ok = row["seconds"] < TIME_LIMIT_S and row["peak_bytes"] < MEMORY_LIMIT_BYTES
    print(json.dumps(row, indent=1))
    print(f"compile {row['seconds']:.1f} s (limit {TIME_LIMIT_S:.0f} s), peak {row['peak_bytes'] / 1e9:.2f} GB "
          f"(limit {MEMORY_LIMIT_BYTES / 1e9:.0f} GB): {'within' if ok else 'OVER'} the targets")
    if not args.no_write:
        md = "\n".join([f"# Compile time and peak memory at real size ({args.layers} layers)", "", machine_markdown(info), "",
                        "| model | weights on disk | compile s | peak GB | artifact MB | shapes |", "|---|---|---|---|---|---|",
                        f"| {row['model']} | {row['model_bytes'] / 1e9:.2f} GB | {row['seconds']:.1f} | "
                        f"{row['peak_bytes'] / 1e9:.2f} | {row['artifact_bytes'] / 1e6:.0f} | {row['shapes']} |", ""])
        write_results("compile_real_size", finish_info(info), [row], md)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

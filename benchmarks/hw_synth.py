"""Resource figures of the accelerator's components from Yosys synth_xilinx for UltraScale+ (docs/HW.md,
"Synthesis"; `make hw` runs it for both presets), set against a Kria K26 and an Alveo U280.

    python benchmarks/hw_synth.py --fpga-config edge                     # every component
    python benchmarks/hw_synth.py --fpga-config datacenter --top matrix_unit --timeout 3600

Each component: `tritc hw verilog`'s Verilog, then tritc.hw.synth (synth_xilinx -family xcup, flattened, no I/O or
clock buffers; stat; ltp over the combinational cells). Results: benchmarks/results/hw_synth_<config>.json and .md,
updated after each component, keeping the components of earlier runs not run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritc.commands.output import write_atomic  # noqa: E402
from tritc.hw.params import hw_params  # noqa: E402
from tritc.hw.synth import COMMAND, DEVICES, FAMILY, SynthError, synthesise_verilog, yosys_version  # noqa: E402
from tritc.hw.top import NAMES, verilog_of  # noqa: E402


def synthesise(top: str, config: str, timeout: float | None) -> dict:
    t0 = time.perf_counter()
    text = verilog_of(top, hw_params(config))
    seconds = round(time.perf_counter() - t0, 1)
    try:
        return {**synthesise_verilog(top, text, timeout), "verilog_seconds": seconds}
    except SynthError as e:
        if "did not finish" not in str(e):
            raise
        return {"top": top, "error": str(e), "verilog_bytes": len(text), "verilog_seconds": seconds}


def markdown(config: str, version: str, rows: list[dict]) -> str:
    k26 = DEVICES["K26"]
    lines = [f"# Yosys synth_xilinx -family {FAMILY}, FPGA config {config}", "",
             f"{version}; `{COMMAND}`; `python benchmarks/hw_synth.py --fpga-config {config}`. CARRY8 = CARRY4 / 2.",
             "", "| component | LUTs | FFs | CARRY4 (CARRY8) | BRAM36 / 18 | URAM | DSP | longest path: LUTs + carry "
                 "cells | K26 LUTs | synth CPU s |", "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['top']} | {r['error']} |" + " |" * 8)
            continue
        lines.append(f"| {r['top']} | {r['luts']:,} | {r['ffs']:,} | {r['carry4']:,} ({r['carry8']:,}) | "
                     f"{r['bram36']} / {r['bram18']} | {r['uram']} | {r['dsp']} | {r['path_luts']} + "
                     f"{r['path_carry_cells']} | {100 * r['luts'] / k26['luts']:.2f}% | {r.get('synth_cpu_seconds', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpga-config", default="edge", help="edge, datacenter or a FILE.json (default edge)")
    ap.add_argument("--top", action="append", choices=NAMES, help="a component (repeatable; default: every one)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per synthesis run (default: none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="the folder of the results")
    args = ap.parse_args(argv)
    version = yosys_version()
    if version is None:
        print("hw_synth: yosys is not on the PATH (make hw installs it: apt-get install yosys)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"hw_synth_{Path(args.fpga_config).stem}"
    path = out / f"{stem}.json"
    previous = {r["top"]: r for r in json.loads(path.read_text())["components"]} if path.exists() else {}
    for top in args.top or NAMES:
        print(f"hw_synth: {top} ({args.fpga_config}) ...", file=sys.stderr, flush=True)
        row = previous[top] = synthesise(top, args.fpga_config, args.timeout)
        print(f"hw_synth: {top}: " + ", ".join(f"{k} {row[k]}" for k in (
            "luts", "ffs", "carry4", "bram36", "bram18", "uram", "dsp", "path_luts", "path_carry_cells",
            "verilog_seconds", "synth_seconds", "synth_cpu_seconds", "error") if k in row), file=sys.stderr, flush=True)
        rows = [previous[n] for n in NAMES if n in previous]
        doc = {"config": args.fpga_config, "yosys": version, "command": COMMAND, "devices": DEVICES, "components": rows}
        write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode())
        write_atomic(out / f"{stem}.md", markdown(args.fpga_config, version, rows).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

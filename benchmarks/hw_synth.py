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
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritc.codegen.fpga.config import load_config  # noqa: E402
from tritc.commands.output import write_atomic  # noqa: E402
from tritc.hw.params import hw_params  # noqa: E402
from tritc.hw.synth import COMMAND, DEVICES, FAMILY, SynthError, summarise, synthesise_verilog, yosys_version  # noqa: E402
from tritc.hw.top import NAMES, verilog_of  # noqa: E402

SCALED = ("luts", "ffs", "carry4", "carry8", "bram36", "bram18", "uram", "dsp", "muxf")


def synthesise(top: str, config: str, timeout: float | None, rows: int | None = None, memory_gb: float | None = None) -> dict:
    """One component's figures. With `rows`, the matrix unit is built with that many of the config's trees and its
    figures are also given scaled to all of them (`scaled`): the trees are copies, sharing the control registers
    and the negated activations `-a`. At edge (make hw runs both) 16 x one tree is the whole unit's LUTs to 0.2%
    and its FFs to 1.2%, but counts the `lanes` negation carry chains 16 times (+44% CARRY4): docs/HW.md gives the
    corrected count."""
    cfg = load_config(config)
    name = top
    if rows is not None:
        if top != "matrix_unit":
            raise SystemExit("hw_synth: --rows is for the matrix unit")
        name = f"matrix_unit ({rows} of {cfg.matrix_rows} trees)"
        full, cfg = cfg.matrix_rows, dataclasses.replace(cfg, matrix_rows=rows).validate()
    t0 = time.perf_counter()
    text = verilog_of(top, hw_params(cfg))
    seconds = round(time.perf_counter() - t0, 1)
    try:
        row = {**synthesise_verilog(top, text, timeout, memory_gb), "top": name, "verilog_seconds": seconds}
    except SynthError as e:  # a row that says why: the other components' figures still count
        return {"top": name, "error": str(e), "verilog_bytes": len(text), "verilog_seconds": seconds}
    if rows is not None:
        row["scale"] = full // rows
    return with_summary(row)


def with_summary(row: dict) -> dict:
    """The row's summary recomputed from its raw cell counts (so that rows of earlier runs count alike)."""
    if "cells" in row:
        row.update(summarise(row["cells"]))
        if "scale" in row:
            row["scaled"] = {k: row[k] * row["scale"] for k in SCALED}
    return row


def markdown(config: str, version: str, rows: list[dict]) -> str:
    device = "U280" if Path(config).stem == "datacenter" else "K26"   # the board each preset is for
    lines = [f"# Yosys synth_xilinx -family {FAMILY}, FPGA config {config}", "",
             f"{version}; `{COMMAND}`; `python benchmarks/hw_synth.py --fpga-config {config}`. CARRY8 = CARRY4 / 2.",
             "", "| component | LUTs | FFs | CARRY4 (CARRY8) | BRAM36 / 18 | URAM | DSP | longest path: LUTs + carry "
                 f"cells | {device} LUTs | synth CPU s |", "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['top']} | {r['error']} |" + " |" * 8)
            continue
        lines.append(f"| {r['top']} | {r['luts']:,} | {r['ffs']:,} | {r['carry4']:,} ({r['carry8']:,}) | "
                     f"{r['bram36']} / {r['bram18']} | {r['uram']} | {r['dsp']} | {r['path_luts']} + "
                     f"{r['path_carry_cells']} | {100 * r['luts'] / DEVICES[device]['luts']:.2f}% | {r.get('synth_cpu_seconds', '')} |")
        if "scaled" in r:
            x = r["scaled"]
            lines.append(f"| ... scaled to every tree | {x['luts']:,} | {x['ffs']:,} | {x['carry4']:,} ({x['carry8']:,}) | "
                         f"{x['bram36']} / {x['bram18']} | {x['uram']} | {x['dsp']} | | "
                         f"{100 * x['luts'] / DEVICES[device]['luts']:.2f}% | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpga-config", default="edge", help="edge, datacenter or a FILE.json (default edge)")
    ap.add_argument("--top", action="append", choices=NAMES, help="a component (repeatable; default: every one)")
    ap.add_argument("--rows", type=int, default=None,
                    help="the matrix unit with this many trees, its figures scaled to the config's (a long run made short)")
    ap.add_argument("--skip", action="append", default=[], choices=NAMES, help="leave a component out (repeatable)")
    ap.add_argument("--memory-gb", type=float, default=6.0, help="Yosys's memory limit per run (default 6)")
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
    previous = {r["top"]: with_summary(r) for r in json.loads(path.read_text())["components"]} if path.exists() else {}
    for top in [t for t in args.top or NAMES if t not in args.skip]:
        print(f"hw_synth: {top} ({args.fpga_config}) ...", file=sys.stderr, flush=True)
        row = synthesise(top, args.fpga_config, args.timeout, args.rows, args.memory_gb)
        previous[row["top"]] = row
        print(f"hw_synth: {row['top']}: " + ", ".join(f"{k} {row[k]}" for k in (
            "luts", "ffs", "carry4", "bram36", "bram18", "uram", "dsp", "path_luts", "path_carry_cells",
            "verilog_seconds", "synth_seconds", "synth_cpu_seconds", "error") if k in row), file=sys.stderr, flush=True)
        rows = sorted(previous.values(), key=lambda r: (NAMES.index(r["top"].split()[0]), r["top"]))
        doc = {"config": args.fpga_config, "yosys": version, "command": COMMAND, "devices": DEVICES, "components": rows}
        write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode())
        write_atomic(out / f"{stem}.md", markdown(args.fpga_config, version, rows).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

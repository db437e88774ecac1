"""Resource figures of the accelerator's components from an open synthesis flow (docs/HW.md, "Synthesis"; `make hw`).

For each component: `tritc hw verilog`'s Verilog, then Yosys `synth_xilinx -family xcup` (UltraScale+), flattened,
without I/O or clock buffers (a unit is not a chip's top), then `stat` for the cells and `ltp` for the longest
combinational path between registers, in LUTs and carry cells. The figures go to
benchmarks/results/hw_synth_<config>.json and .md, set against the budgets of a Kria K26 and an Alveo U280.

    python tools/hw_synth.py --fpga-config edge                       # every component
    python tools/hw_synth.py --fpga-config datacenter --top matrix_unit --timeout 3600

Needs Yosys on the PATH (`make hw` installs the system's). Yosys 0.23 (Debian 12) maps carries to CARRY4 for every
family; an UltraScale+ slice has one CARRY8, which Vivado packs two CARRY4 into, so the table counts CARRY8 as
ceil(CARRY4 / 2) per chain, approximated here by the total / 2.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tritc.commands.output import write_atomic  # noqa: E402
from tritc.hw.params import hw_params  # noqa: E402
from tritc.hw.top import NAMES, verilog_of  # noqa: E402

FAMILY = "xcup"
# Device budgets (AMD data sheets: DS987 Kria K26 SOM, DS963 Alveo U280): LUTs, flip-flops, BRAM36, URAM288, DSP48E2.
DEVICES = {
    "K26": {"luts": 117_120, "ffs": 234_240, "bram36": 144, "uram": 64, "dsp": 1_248},
    "U280": {"luts": 1_303_680, "ffs": 2_607_360, "bram36": 2_016, "uram": 960, "dsp": 9_024},
}
LUT_CELLS = re.compile(r"^(LUT[1-6](_2)?|SRL16E|SRLC32E|RAM\d+[XM]\w*)$")   # what occupies a LUT6 site


def yosys_version() -> str:
    exe = shutil.which("yosys")
    if exe is None:
        raise SystemExit("hw_synth: yosys is not on the PATH (make hw installs it: apt-get install yosys)")
    return subprocess.run([exe, "-V"], capture_output=True, text=True, check=True).stdout.strip()


def script(top: str, verilog: Path, out: Path) -> str:
    # ltp needs the cells' port directions (the library as blackboxes) and follows the combinational cells only:
    # a path ends at every flip-flop and block / ultra RAM (their outputs are registered).
    comb = "* t:FD* %d t:RAMB* %d t:URAM* %d"
    return "; ".join([
        f"read_verilog {verilog}",
        f"synth_xilinx -family {FAMILY} -top {top} -flatten -noiopad -noclkbuf",
        f"tee -q -o {out / 'stat.txt'} stat",
        "read_verilog -lib +/xilinx/cells_sim.v",
        f"tee -q -o {out / 'carry.txt'} select -list t:CARRY*",
        f"tee -q -o {out / 'ltp.txt'} ltp {comb}",
    ])


def parse_stat(text: str) -> dict[str, int]:
    """The cell counts of `stat`'s report: `     CARRY4        1032` lines after 'Number of cells'."""
    cells: dict[str, int] = {}
    started = False
    for line in text.splitlines():
        if "Number of cells" in line:
            started = True
            continue
        m = re.match(r"^\s+(\S+)\s+(\d+)\s*$", line)
        if started and m:
            cells[m.group(1)] = int(m.group(2))
        elif started and line.strip():
            break
    return cells


def parse_ltp(text: str, carry_cells: set[str]) -> dict[str, int]:
    """The longest path's cells: how many are carry cells, the rest are LUTs (and wide muxes)."""
    via = re.findall(r"\(via (\S+)\)", text)
    carries = sum(1 for c in via if c in carry_cells)
    return {"path_cells": len(via), "path_carry_cells": carries, "path_luts": len(via) - carries}


def summarise(cells: dict[str, int]) -> dict[str, int]:
    carry4 = cells.get("CARRY4", 0)
    return {
        "luts": sum(n for c, n in cells.items() if LUT_CELLS.match(c)),
        "ffs": sum(n for c, n in cells.items() if c.startswith("FD")),
        "carry4": carry4,
        "carry8": cells.get("CARRY8", 0) + math.ceil(carry4 / 2),
        "bram36": cells.get("RAMB36E2", 0),
        "bram18": cells.get("RAMB18E2", 0),
        "uram": cells.get("URAM288", 0),
        "dsp": cells.get("DSP48E2", 0),
        "muxf": sum(n for c, n in cells.items() if c.startswith("MUXF")),
    }


def synthesise(top: str, config: str, timeout: float | None) -> dict:
    """One component through Verilog and synth_xilinx; its figures, or why there are none (a timeout)."""
    t0 = time.perf_counter()
    text = verilog_of(top, hw_params(config))
    t_verilog = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix=f"hw_synth_{top}_") as tmp:
        folder = Path(tmp)
        (folder / "top.v").write_text(text)
        t1 = time.perf_counter()
        try:
            run = subprocess.run(["yosys", "-q", "-l", str(folder / "log.txt"), "-p",
                                  script(top, folder / "top.v", folder)],
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"top": top, "error": f"synth_xilinx did not finish in {timeout:.0f} s",
                    "verilog_seconds": round(t_verilog, 1)}
        if run.returncode:
            tail = (folder / "log.txt").read_text().splitlines()[-5:] if (folder / "log.txt").exists() else []
            raise SystemExit(f"hw_synth: yosys failed on {top}: {run.stderr.strip() or ' / '.join(tail)}")
        cells = parse_stat((folder / "stat.txt").read_text())
        carry = set(re.findall(r"\S+", (folder / "carry.txt").read_text()))
        carry = {c.split("/", 1)[-1] for c in carry}
        ltp = parse_ltp((folder / "ltp.txt").read_text(), carry)
    return {"top": top, **summarise(cells), **ltp, "cells": cells, "verilog_bytes": len(text),
            "verilog_seconds": round(t_verilog, 1), "synth_seconds": round(time.perf_counter() - t1, 1)}


def markdown(config: str, version: str, rows: list[dict]) -> str:
    head = ("| component | LUTs | FFs | CARRY4 (CARRY8) | BRAM36 / 18 | URAM | DSP | longest path: LUTs + carry cells "
            "| % of K26 LUTs | synth s |")
    lines = [f"# synth_xilinx -family {FAMILY}, FPGA config {config}", "", f"{version}; `tools/hw_synth.py`.", "",
             head, "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['top']} | {r['error']} |" + " |" * 8)
            continue
        lines.append(f"| {r['top']} | {r['luts']:,} | {r['ffs']:,} | {r['carry4']:,} ({r['carry8']:,}) | "
                     f"{r['bram36']} / {r['bram18']} | {r['uram']} | {r['dsp']} | {r['path_luts']} + "
                     f"{r['path_carry_cells']} | {100 * r['luts'] / DEVICES['K26']['luts']:.2f} | {r['synth_seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fpga-config", default="edge", help="edge, datacenter or a FILE.json (default edge)")
    ap.add_argument("--top", action="append", choices=NAMES, help="a component (repeatable; default: every one)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per synthesis run (default: none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="the folder of the results")
    ap.add_argument("--name", default=None, help="results file stem (default hw_synth_<config>)")
    args = ap.parse_args(argv)
    version = yosys_version()
    stem = args.name or f"hw_synth_{Path(args.fpga_config).stem}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    # Runs of other components kept: a datacenter matrix unit takes long and is run on its own.
    previous = {r["top"]: r for r in json.loads(path.read_text())["components"]} if path.exists() else {}
    for top in args.top or NAMES:
        print(f"hw_synth: {top} ({args.fpga_config}) ...", file=sys.stderr, flush=True)
        row = synthesise(top, args.fpga_config, args.timeout)
        print(f"hw_synth: {top}: " + ", ".join(f"{k} {row[k]}" for k in ("luts", "ffs", "carry4", "bram36", "bram18",
              "uram", "dsp", "path_luts", "path_carry_cells", "synth_seconds", "error") if k in row),
              file=sys.stderr, flush=True)
        previous[top] = row
        rows = [previous[n] for n in NAMES if n in previous]
        doc = {"config": args.fpga_config, "yosys": version, "family": FAMILY,
               "command": f"synth_xilinx -family {FAMILY} -top TOP -flatten -noiopad -noclkbuf",
               "devices": DEVICES, "components": rows}
        write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode())
        write_atomic(out / f"{stem}.md", markdown(args.fpga_config, version, rows).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Resource figures of a component from an open synthesis flow: Yosys `synth_xilinx` for UltraScale+ (docs/HW.md,
"Synthesis"). Yosys is optional (`make hw` installs the system's); nothing else in tritc needs it.

A component's Verilog (top.verilog_of) goes through `synth_xilinx -family xcup`, flattened and without I/O or
clock buffers (a unit is not a chip's top); `stat` counts the cells and `ltp`, over the combinational cells only,
gives the longest path between registers in cells. Yosys 0.23 (Debian 12) maps adders to CARRY4 for every family;
an UltraScale+ slice has one CARRY8, which Vivado fills with two CARRY4, so `carry8` is CARRY4 / 2 rounded up.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import CompilerError

FAMILY = "xcup"
COMMAND = f"synth_xilinx -family {FAMILY} -top TOP -flatten -noiopad -noclkbuf"
# Device budgets (AMD's product tables: Kria K26 SOM, DS987; Alveo U280, DS963): LUTs, flip-flops, BRAM36,
# URAM288, DSP48E2.
DEVICES = {
    "K26": {"luts": 117_120, "ffs": 234_240, "bram36": 144, "uram": 64, "dsp": 1_248},
    "U280": {"luts": 1_303_680, "ffs": 2_607_360, "bram36": 2_016, "uram": 960, "dsp": 9_024},
}
LUT_CELLS = re.compile(r"^(LUT[1-6](_2)?|SRL16E|SRLC32E)$")   # one LUT6 site each
# Distributed RAM cells and the LUT6 sites each takes (UG574: a RAM64M is four LUTs of a SLICEM, and so on).
LUTRAM_SITES = {"RAM32X1S": 1, "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
                "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8}


class SynthError(CompilerError):
    """No Yosys, or a Yosys run that failed."""


def yosys_version() -> str | None:
    """`Yosys 0.23 (git sha1 ...)`, or None when there is no yosys on the PATH."""
    exe = shutil.which("yosys")
    if exe is None:
        return None
    return subprocess.run([exe, "-V"], capture_output=True, text=True, check=True).stdout.strip()


def script(top: str, verilog: Path, out: Path) -> str:
    # ltp needs the cells' port directions (the library, as blackboxes) and follows the combinational cells only:
    # a path ends at every flip-flop and block / ultra RAM (whose outputs are registered).
    return "; ".join([
        f"read_verilog {verilog}",
        COMMAND.replace("TOP", top),
        f"tee -q -o {out / 'stat.txt'} stat",
        "read_verilog -lib +/xilinx/cells_sim.v",
        f"tee -q -o {out / 'carry.txt'} select -list t:CARRY*",
        f"tee -q -o {out / 'ltp.txt'} ltp * t:FD* %d t:RAMB* %d t:URAM* %d",
    ])


def parse_stat(text: str) -> dict[str, int]:
    """The cell counts of `stat`'s report: the `     CARRY4        1032` lines after 'Number of cells'."""
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
    """The longest path's cells: how many are carry cells; the others are LUTs (and the odd MUXF7 / 8)."""
    via = re.findall(r"\(via (\S+)\)", text)
    carries = sum(1 for c in via if c in carry_cells)
    return {"path_cells": len(via), "path_carry_cells": carries, "path_luts": len(via) - carries}


def summarise(cells: dict[str, int]) -> dict[str, int]:
    carry4 = cells.get("CARRY4", 0)
    return {
        "luts": sum(n for c, n in cells.items() if LUT_CELLS.match(c)) + sum(n * LUTRAM_SITES.get(c, 0) for c, n in cells.items()),
        "lutram_luts": sum(n * LUTRAM_SITES.get(c, 0) for c, n in cells.items()),
        "ffs": sum(n for c, n in cells.items() if c.startswith("FD")),
        "carry4": carry4,
        "carry8": cells.get("CARRY8", 0) + math.ceil(carry4 / 2),
        "bram36": cells.get("RAMB36E2", 0),
        "bram18": cells.get("RAMB18E2", 0),
        "uram": cells.get("URAM288", 0),
        "dsp": cells.get("DSP48E2", 0),
        "muxf": sum(n for c, n in cells.items() if c.startswith("MUXF")),
        "unknown_cells": sum(n for c, n in cells.items() if not _known(c)),
    }


def _limit_memory(gb: float) -> None:
    limit = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _known(cell: str) -> bool:
    return bool(LUT_CELLS.match(cell) or cell in LUTRAM_SITES or cell.startswith(("FD", "MUXF", "CARRY", "RAMB"))
                or cell in ("INV", "URAM288", "DSP48E2", "BUFG", "IBUF", "OBUF", "GND", "VCC"))


def synthesise_verilog(top: str, verilog: str, timeout: float | None = None, memory_gb: float | None = None) -> dict:
    """`verilog` (a module `top` and its submodules) through synth_xilinx: the summary, the longest path, every
    cell count, the seconds; SynthError when there is no yosys, it fails, or it runs past `timeout` seconds or
    `memory_gb` of address space (Yosys's SAT-based `share` pass can take more memory than a machine has)."""
    if yosys_version() is None:
        raise SynthError("yosys is not on the PATH (make hw installs it: apt-get install yosys)")
    with tempfile.TemporaryDirectory(prefix=f"tritc_synth_{top}_") as tmp:
        folder = Path(tmp)
        (folder / "top.v").write_text(verilog)
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        try:
            run = subprocess.run(["yosys", "-q", "-l", str(folder / "log.txt"), "-p",
                                  script(top, folder / "top.v", folder)], capture_output=True, text=True, timeout=timeout,
                                 preexec_fn=None if memory_gb is None else lambda: _limit_memory(memory_gb))
        except subprocess.TimeoutExpired:
            raise SynthError(f"synth_xilinx of {top} did not finish in {timeout:.0f} s") from None
        if run.returncode:
            log = (folder / "log.txt").read_text().splitlines()[-5:] if (folder / "log.txt").exists() else []
            if memory_gb is not None and ("bad_alloc" in run.stderr or "memory" in run.stderr.lower() or run.returncode < 0):
                raise SynthError(f"synth_xilinx of {top} ran out of its {memory_gb:g} GB memory limit")
            raise SynthError(f"yosys failed on {top}: {' / '.join([run.stderr.strip(), *log]).strip(' /')}")
        cells = parse_stat((folder / "stat.txt").read_text())
        carry = {c.split("/", 1)[-1] for c in (folder / "carry.txt").read_text().split()}
        ltp = parse_ltp((folder / "ltp.txt").read_text(), carry)
    return {"top": top, **summarise(cells), **ltp, "cells": cells, "verilog_bytes": len(verilog),
            "synth_seconds": round(time.perf_counter() - t0, 1),
            "synth_cpu_seconds": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu0, 1)}

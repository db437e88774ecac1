"""The Verilog-level run (docs/HW.md, "The core in Verilog"; issue 11): the core's Verilog (`tritc hw verilog --top
core`) simulated by Icarus Verilog through cocotb (tritc/hw/cocotb_bench.py serves its memory port as DramModel
does), a stream run on it from a DRAM image, and the DRAM it ends with compared with the Simulator's, bit for bit.

    python -m tritc.hw.cocotb_run [--simulator icarus] [--fpga-config small|PRESET|FILE.json] [--amaranth]
                                  [copy | gemv | STREAM.bin [--dram IMAGE.bin]]

`copy` (the default) is a built-in stream: a LOAD into every buffer and a STORE out of each the STORE mover reads,
on a random image; `gemv` the lowering's ternary GEMV, once the core has its GEMM and vector engines. A binary
stream (encode_stream) runs on its DRAM image (`--dram`, else zeros). `--amaranth` also runs the stream on RtlDevice
(the same core in Amaranth's simulator), for a third cycle count. Exit 0 when the DRAMs are identical, 1 when they
differ or the core did not finish, 2 on a usage error (tritc's one line).

Needs cocotb (`pip install -e .[hw]`, make hw-sim) and iverilog (apt-get install iverilog). Verilator: cocotb 2
needs Verilator >= 5.036 and Debian 12 ships 5.006, so `--simulator verilator` is refused there with its version.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..codegen.fpga.config import FpgaConfig, load_config
from ..codegen.fpga.isa import INSTR_BYTES, Buf, Instr, Op, encode
from ..errors import CompilerError, OptionError
from .params import hw_params

SMALL = FpgaConfig(name="rtl-small", matrix_rows=4, matrix_lanes=16, weight_buffer_bytes=2048,
                   activation_buffer_bytes=512, accumulator_buffer_bytes=256, vector_buffer_bytes=1024,
                   cache_buffer_bytes=512, vector_lanes=4, clock_hz=250e6, dram_bandwidth=16e9,
                   dram_latency_ns=40.0, dram_bytes=64 * 1024, queue_depth=4)   # tests/hw/conftest.py's SMALL
DRAM_BYTES = 4096
DEFAULT_MAX_CYCLES = 200_000
MIN_VERILATOR = (5, 36)


def copy_stream() -> list[Instr]:
    """A LOAD into each of the five buffers (WGT too: only GEMM reads it back), a NOP relaying the token, and a
    STORE out of ACT, ACC, VEC and KV, each to its own DRAM region: every mover path and every buffer's write port."""
    def t(buf, sram_addr, rows, cols, dram_rs, dram_cs, sram_rs):
        return dict(buf=buf, sram_addr=sram_addr, rows=rows, cols=cols, dram_rs=dram_rs, dram_cs=dram_cs,
                    sram_rs=sram_rs)

    vec, act = t(Buf.VEC, 8, 3, 8, 32, 4, 8), t(Buf.ACT, 3, 5, 8, 8, 1, 9)
    acc, kv = t(Buf.ACC, 2, 2, 8, 32, 4, 10), t(Buf.KV, 16, 4, 4, 16, 4, 4)
    wgt = t(Buf.WGT, 64, 2, 32, 32, 1, 32)
    return [Instr(Op.LOAD, dram_addr=0x100, **vec), Instr(Op.LOAD, dram_addr=0x200, **act),
            Instr(Op.LOAD, dram_addr=0x300, **acc), Instr(Op.LOAD, dram_addr=0x380, **kv),
            Instr(Op.LOAD, dram_addr=0x400, **wgt, push_next=1),
            Instr(Op.NOP, pop_prev=1, push_next=1),
            Instr(Op.STORE, dram_addr=0x800, **vec, pop_prev=1), Instr(Op.STORE, dram_addr=0x900, **act),
            Instr(Op.STORE, dram_addr=0xA00, **acc), Instr(Op.STORE, dram_addr=0xB00, **kv),
            Instr(Op.FINISH)]


def gemv_stream(config: FpgaConfig, k: int = 31, n: int = 16) -> tuple[list[Instr], np.ndarray, dict]:
    """The lowering's stream of a (1, k) x (k, n) ternary GEMV (int8 activations: VOPs quantise x, GEMMs, VOPs
    scale y; benchmarks/bench_fpga_gemv.py's graph): the stream, its DRAM image (weights and a random x) and the
    DRAM map's regions by name. k = 31: the longest row the small build's VEC (256 words) quantises."""
    from ..codegen.fpga.lower import DramMap, build_weight_image, lower_nodes
    from ..ir.graph import Graph
    from ..ir.ternary import TernaryWeight
    from ..ir.types import DType, TensorType

    rng = np.random.default_rng(0)
    g = Graph("gemv")
    x = g.add_input("x", TensorType(DType.F32, (1, k)))
    w = TernaryWeight(rng.integers(-1, 2, (k, n)).astype(np.int8), rng.uniform(0.5, 1, n).astype(np.float32))
    wv = g.add_weight("w", w, TensorType(DType.T2, (k, n)))
    g.outputs = g.add("ternary_matmul", [x, wv], [TensorType(DType.F32, (1, n))], {"act": "int8"},
                      output_names=["y"]).outputs
    image = build_weight_image(g, config)
    base = -(-len(image.data) // 4096) * 4096
    dram = DramMap(base, config.dram_bytes)
    dram.place("x", (1, k), DType.F32)
    instrs = lower_nodes([next(nd for nd in g if nd.op == "ternary_matmul")], g, config, dram, image)
    mem = np.zeros(dram.end + 4096, np.uint8)
    mem[image.base:image.base + len(image.data)] = np.frombuffer(bytes(image.data), np.uint8)
    xb = rng.standard_normal((1, k)).astype(np.float32).view(np.uint8).reshape(-1)
    mem[dram["x"].addr:dram["x"].addr + xb.size] = xb
    return instrs, mem, {"x": dram["x"].addr, "y": dram["y"].addr}


def simulator_version(simulator: str) -> str:
    """The simulator's version line; OptionError (one line) if it is missing or too old for cocotb."""
    exe = {"icarus": "iverilog", "verilator": "verilator"}.get(simulator)
    if exe is None:
        raise OptionError(f"--simulator {simulator}: not one of icarus, verilator")
    if shutil.which(exe) is None:
        raise OptionError(f"--simulator {simulator}: {exe} is not installed (apt-get install {exe}; make hw-sim)")
    out = subprocess.run([exe, "-V" if exe == "iverilog" else "--version"], capture_output=True, text=True)
    line = (out.stdout or out.stderr).splitlines()[0].strip()
    if simulator == "verilator":
        found = re.search(r"(\d+)\.(\d+)", line)
        if found and tuple(map(int, found.groups())) < MIN_VERILATOR:
            raise OptionError(f"--simulator verilator: cocotb 2 needs Verilator >= 5.036, this is '{line}' "
                              f"(use --simulator icarus)")
    return line


@functools.lru_cache(maxsize=4)
def _core_verilog(config: FpgaConfig) -> str:
    """`tritc hw verilog --top core`'s text, once per config in a process (seconds of Amaranth and Yosys each)."""
    from .top import verilog_of

    return verilog_of("core", hw_params(config))


def run_verilog(config: FpgaConfig, stream: list[Instr] | bytes, image: np.ndarray, *, simulator: str = "icarus",
                max_cycles: int | None = DEFAULT_MAX_CYCLES, workdir: Path | None = None) -> dict[str, Any]:
    """Run `stream` (checked as every Device checks it) on the core's Verilog from DRAM `image`: the bench's
    result (outcome, the core's counters), `dram` (the image it ends with), `wall_seconds` (build and run) and
    `simulator` (its version line)."""
    from cocotb_tools.runner import get_runner

    from ..runtime.fpga import checked_stream
    from .memory import request_layout, response_layout
    version = simulator_version(simulator)
    instrs, _ = checked_stream(stream, config, image.size)
    words = b"".join(encode(i) for i in instrs)
    p = hw_params(config)
    beat = p.mem_beat_bytes
    stream_base = -(-image.size // beat) * beat
    folder = Path(workdir or tempfile.mkdtemp(prefix="tritc-cocotb-"))
    folder.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    verilog, source = _core_verilog(config), folder / "core.v"
    rebuild = not source.exists() or source.read_text() != verilog   # the same core in the same folder: built once
    if rebuild:
        source.write_text(verilog)
    dram = np.zeros(stream_base, np.uint8)
    dram[:image.size] = image
    dram.tofile(folder / "dram.bin")
    (folder / "words.bin").write_bytes(words + bytes(-len(words) % beat))
    fields = lambda layout: {n: (f.offset, f.width) for n, f in layout}   # noqa: E731
    job = {"beat": beat, "latency": p.mem_latency, "bytes_per_cycle": config.bytes_per_cycle,
           "stream_base": stream_base, "base": stream_base // beat, "count": len(words) // INSTR_BYTES,
           "max_cycles": max_cycles, "request": fields(request_layout(beat)), "response": fields(response_layout(beat))}
    (folder / "job.json").write_text(json.dumps(job))
    (folder / "result.json").unlink(missing_ok=True)
    runner = get_runner(simulator)
    log = folder / "sim.log"
    # Icarus as Verilog-2005, after the runner's -g2012: Yosys starts each `always @*` block at time 0 with a
    # `reg ... = 0` it declares, and only Verilog-2005 gives such an initialiser an event (SystemVerilog does not,
    # and the combinational outputs then stay X until an input changes).
    args = ["-g2005"] if simulator == "icarus" else []
    runner.build(sources=[source], hdl_toplevel="core", build_dir=folder / "build", always=rebuild,
                 timescale=("1ns", "1ps"), build_args=args, log_file=log)
    runner.test(test_module="tritc.hw.cocotb_bench", hdl_toplevel="core", build_dir=folder / "build",
                test_dir=folder, extra_env={"TRITC_COCOTB_JOB": str(folder)}, log_file=log)
    result_file = folder / "result.json"
    if not result_file.exists():
        raise RuntimeError(f"the cocotb bench wrote no result (its log: {log})")
    result = json.loads(result_file.read_text())
    result["dram"] = np.fromfile(folder / "dram.out.bin", np.uint8)[:image.size]
    result["wall_seconds"] = time.perf_counter() - wall
    result["simulator"] = version
    result["folder"] = str(folder)
    return result


def compare(config: FpgaConfig, stream: list[Instr] | bytes, image: np.ndarray, *, simulator: str = "icarus",
            amaranth: bool = False, max_cycles: int | None = DEFAULT_MAX_CYCLES,
            workdir: Path | None = None) -> dict[str, Any]:
    """The stream on the core's Verilog and on the Simulator (and with `amaranth`, RtlDevice) from the same image:
    each one's cycles and wall time, and `mismatch` (None when the DRAMs are identical, else the first differing
    byte, as cosim reports it)."""
    from ..runtime.cosim import first_difference
    from ..runtime.fpga import Simulator

    out: dict[str, Any] = {"instructions": None}
    sim = Simulator(config, dram_bytes=image.size)
    sim.write(0, image)
    sim.load_stream(stream)
    wall = time.perf_counter()
    out["model"] = {"cycles": sim.run()["cycles"], "wall_seconds": time.perf_counter() - wall}
    out["instructions"] = len(sim._instrs) if hasattr(sim, "_instrs") else None
    v = run_verilog(config, stream, image, simulator=simulator, max_cycles=max_cycles, workdir=workdir)
    out["verilog"] = v
    if amaranth:
        from ..runtime.rtl import RtlDevice
        rtl = RtlDevice(config, dram_bytes=image.size, max_cycles=max_cycles)
        rtl.write(0, image)
        rtl.load_stream(stream)
        wall = time.perf_counter()
        stats = rtl.run()
        out["amaranth"] = {"cycles": stats["cycles"], "wall_seconds": time.perf_counter() - wall,
                           "same_dram": bool(np.array_equal(rtl.dram, sim.dram))}
    if v["outcome"] != "stopped" or not v.get("finished"):
        out["mismatch"] = (f"the core did not finish: outcome {v['outcome']}, finished {v.get('finished')}, "
                           f"deadlock {v.get('deadlock')}, refused {v.get('refused', 0)}, error {v.get('error')} at instruction "
                           f"{v.get('error_index')}{'; ' + v['refusal'] if v.get('refusal') else ''}")
    else:
        out["mismatch"] = first_difference(sim.dram, v["dram"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tritc.hw.cocotb_run", description=__doc__.split("\n\n")[0])
    ap.add_argument("stream", nargs="?", default="copy",
                    help="'copy' or 'gemv' (built in; gemv needs the core's GEMM and vector engines) or a binary stream")
    ap.add_argument("--dram", help="the DRAM image a stream file runs on (raw bytes; default zeros)")
    ap.add_argument("--dram-bytes", type=int, default=DRAM_BYTES, help="DRAM size (default %(default)s)")
    ap.add_argument("--fpga-config", default="small", help="'small' (tests/hw's SMALL), a preset or a JSON file")
    ap.add_argument("--simulator", default="icarus", help="icarus (default) or verilator (>= 5.036)")
    ap.add_argument("--amaranth", action="store_true", help="also run it on RtlDevice (Amaranth's simulator)")
    ap.add_argument("--max-cycles", type=int, default=DEFAULT_MAX_CYCLES)
    ap.add_argument("--workdir", help="where core.v, the image and the simulator's build go (default: a temp dir)")
    args = ap.parse_args(argv)
    try:
        config = SMALL.validate() if args.fpga_config == "small" else load_config(args.fpga_config)
        if args.stream == "copy":
            stream: list[Instr] | bytes = copy_stream()
            image = np.random.default_rng(0).integers(0, 256, args.dram_bytes, dtype=np.uint8)
        elif args.stream == "gemv":
            from .top import core_units

            if core_units(hw_params(config)) != {"gemm", "vop"}:
                raise OptionError("gemv: this core has no GEMM and vector engines built in (tritc.hw.top.core_units "
                                  "is empty until they are merged into the core); run 'copy'")
            stream, image, _ = gemv_stream(config)
        else:
            stream = Path(args.stream).read_bytes()
            image = (np.fromfile(args.dram, np.uint8) if args.dram else np.zeros(args.dram_bytes, np.uint8))
        r = compare(config, stream, image, simulator=args.simulator, amaranth=args.amaranth,
                    max_cycles=args.max_cycles, workdir=Path(args.workdir) if args.workdir else None)
    except ModuleNotFoundError as e:
        print(f"tritc: error: {e.name} is not installed: pip install -e '.[hw]' (or make hw-sim)", file=sys.stderr)
        return 2
    except (CompilerError, OSError) as e:     # a bad option, stream or image: tritc's one line
        print(f"tritc: error: {e}", file=sys.stderr)
        return 2
    v = r["verilog"]
    print(f"stream {args.stream} on '{config.name}': {v.get('instructions')} instructions; {v['simulator']}")
    print(f"  Verilog (cocotb): {v.get('cycles'):,} cycles (outcome {v['outcome']}), {v['wall_seconds']:.1f} s "
          f"wall (Verilog, build and run)")
    if "amaranth" in r:
        a = r["amaranth"]
        print(f"  Amaranth sim    : {a['cycles']:,} cycles, {a['wall_seconds']:.1f} s wall")
    print(f"  Simulator model : {r['model']['cycles']:,} cycles")
    print(f"  DRAM: {'identical to the Simulator' if r['mismatch'] is None else r['mismatch']}")
    return 0 if r["mismatch"] is None else 1


if __name__ == "__main__":
    sys.exit(main())

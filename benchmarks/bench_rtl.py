"""The accelerator's RTL (tritc/hw, Amaranth) in simulation: its speed, its cycles against the cycle model's, and
the synthesis figures.

    python benchmarks/bench_rtl.py [--quick] [--full] [--no-write]

- simulation speed: simulated cycles per second of the RTL core (Amaranth's Python simulator) on a GEMV stream, for
  the small test build (4 x 16 lanes, docs/HW.md) and the edge preset; the Simulator's wall time beside it;
- cycles: the same streams co-simulated (runtime/cosim.py: the same DRAM image into the RTL core and the cycle-
  modelled Simulator, DRAM compared byte for byte at FINISH), the RTL's cycles counted by the hardware against the
  model's, for a (1, K) x (K, N) ternary GEMV and one decode step of a one-layer ternary decoder (the FPGA
  benchmark's layer, benchmarks/bench_fpga.py, scaled down to hidden 256, with --layer: the RTL simulates 50-500
  cycles a second, a few minutes for it; --full runs the full shapes, days);
- synthesis: the figures `make hw` recorded (benchmarks/results/hw_synth_*.json), if any.

The RTL runs every instruction (GEMM and VOP included: the engines are in the core), and the cycle model is
calibrated against it (docs/HW.md, "Calibration"): the ratio column is how close they are. Results:
benchmarks/results/bench_rtl.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import tritc  # noqa: E402
from benchmarks.bench_fpga_gemv import gemv_stream  # noqa: E402
from benchmarks.bitnet_models import DecoderSpec, decoder, save  # noqa: E402
from benchmarks.common import RESULTS, machine_info  # noqa: E402
from tritc.codegen.fpga.config import PRESETS, FpgaConfig  # noqa: E402
from tritc.ir.interpreter import run as interpret  # noqa: E402
from tritc.runtime.cosim import CosimDevice  # noqa: E402

# The RTL tests' build (tests/hw/conftest.py SMALL: 4 trees of 16 lanes, 4 vector lanes) with buffers large enough
# for a 256-long row (its VEC holds 256 words, a row of 31 at most to be quantised).
SMALL = FpgaConfig(name="rtl-small", matrix_rows=4, matrix_lanes=16, weight_buffer_bytes=8192,
                   activation_buffer_bytes=2048, accumulator_buffer_bytes=1024, vector_buffer_bytes=16384,
                   cache_buffer_bytes=2048, vector_lanes=4, clock_hz=250e6, dram_bandwidth=16e9,
                   dram_latency_ns=40.0, dram_bytes=1 << 20, queue_depth=4).validate()
LAYER = DecoderSpec(layers=1, hidden=2560, ffn=6912, heads=20, kv_heads=5, vocab=256)
SMALL_LAYER = DecoderSpec(layers=1, hidden=256, ffn=512, heads=4, kv_heads=2, vocab=64)


def config_of(name: str) -> FpgaConfig:
    return SMALL if name == "small" else PRESETS[name]


def run_gemv(k: int, n: int, name: str) -> dict:
    """The lowering's GEMV stream, co-simulated: the result checked against the interpreter too."""
    cfg = config_of(name)
    g, feeds, image, dram, instrs = gemv_stream(k, n, cfg)
    dev = CosimDevice(cfg, dram_bytes=dram.end + 4096, regions=[(image.base, image.base + len(image.data), "weights")])
    dev.write(image.base, image.data)
    dev.write(dram["x"].addr, feeds["x"])
    dev.load_stream(instrs)
    t0 = time.perf_counter()
    dev.run()
    wall = time.perf_counter() - t0
    (report,) = dev.reports
    y = dev.read(dram["y"].addr, 4 * n).view(np.float32).reshape(1, n)
    np.testing.assert_array_equal(y, interpret(g, feeds)["y"])
    return row(f"gemv {k}x{n}", name, report, wall)


def row(case: str, name: str, report, wall: float) -> dict:
    out = {"case": case, "config": name, "instructions": report.instructions, "model_cycles": report.sim["cycles"],
           "rtl_cycles": None, "ratio": None, "skipped": report.skipped, "wall_seconds": wall}
    if report.rtl is not None:
        out.update(rtl_cycles=report.rtl["cycles"], ratio=report.rtl["cycles"] / report.sim["cycles"],
                   rtl_cycles_per_second=report.rtl["cycles"] / max(wall, 1e-9))
    return out


def run_layer(spec: DecoderSpec, name: str, context: int) -> list[dict]:
    """One decode step of a one-layer ternary decoder on a CosimDevice: every stream of the step co-simulated."""
    cfg = config_of(name)
    from benchmarks.bench_generate import feeds as decoder_feeds

    dev = CosimDevice(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.onnx"
        save(decoder(spec), path)
        model = tritc.compile(str(path), target="fpga", fpga_config=cfg, threads=1, device=dev,
                              shapes={"batch": 1, "seq": 1, "past": context - 1, "total": context})
    model.device_timeout = None   # the RTL simulation of a layer takes minutes to hours: no watchdog on the host side

    t0 = time.perf_counter()
    model.run(["logits"], decoder_feeds(spec, context - 1, 1))
    wall = time.perf_counter() - t0
    return [row(f"layer h{spec.hidden} ctx {context}: {r.label}", name, r, wall / max(1, len(dev.reports)))
            for r in dev.reports]


def synthesis() -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("hw_synth_*.json")):
        try:
            out.append({"file": path.name, **json.loads(path.read_text())})
        except (OSError, ValueError):
            continue
    return out


def amaranth_version() -> str:
    from importlib.metadata import version

    return version("amaranth")


def fmt(v, spec: str = ",") -> str:
    return "-" if v is None else format(v, spec)


def markdown(info: dict, rows: list[dict], synth: list[dict]) -> str:
    out = ["# The accelerator's RTL in simulation: speed, cycles against the cycle model, synthesis", "",
           __doc__.split("\n\n", 1)[1].strip(), "",
           f"- machine: {info['cpu']} ({info['cores']} cores, load average {info['loadavg_start'][0]:.1f} at the start; the "
           f"simulation runs on one); amaranth {amaranth_version()}; date {info['date']}", "",
           "| case | config | instructions | model cycles | RTL cycles | RTL / model | RTL cycles per second | note |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['case']} | {r['config']} | {r['instructions']:,} | {r['model_cycles']:,} | "
                   f"{fmt(r['rtl_cycles'])} | {fmt(r['ratio'], '.2f')} | {fmt(r.get('rtl_cycles_per_second'), ',.0f')} | "
                   f"{r['skipped'] or 'DRAM identical at FINISH'} |")
    if synth:
        out += ["", "Synthesis figures recorded by `make hw` (Yosys `synth_xilinx -family xcup`; docs/HW.md, \"Synthesis\"):",
                "", "| config | unit | LUTs | flip-flops | CARRY8 | BRAM36 | URAM | DSP |", "|---|---|---|---|---|---|---|---|"]
        for sy in synth:
            for c in sy.get("components", []):
                if "luts" not in c:
                    out.append(f"| {sy.get('config', sy['file'])} | {c.get('top', '?')} | {c.get('error', 'not run')} "
                               "| | | | | |")
                    continue
                out.append(f"| {sy.get('config', sy['file'])} | {c['top']} | {c['luts']:,} | {c['ffs']:,} | "
                           f"{c.get('carry8', 0):,} | {c.get('bram36', 0)} | {c.get('uram', 0)} | {c.get('dsp', 0)} |")
    else:
        out += ["", "No synthesis figures recorded on this machine (`make hw` installs Yosys and records them)."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small build's GEMV only (a smoke run)")
    ap.add_argument("--layer", action="store_true", help="also a decode step of a one-layer decoder (hidden 256 on "
                    "edge: a few minutes)")
    ap.add_argument("--full", action="store_true", help="the FPGA benchmark's full shapes (days of simulation)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    info = machine_info()
    rows: list[dict] = []
    gemvs = [("small", 256, 64)] + ([] if args.quick else [("edge", 1024, 256)])
    if args.full:
        gemvs.append(("edge", 4096, 4096))
    for name, k, n in gemvs:
        r = run_gemv(k, n, name)
        rows.append(r)
        print(f"{r['case']:<28} {name:<6} model {r['model_cycles']:>9,}  RTL {fmt(r['rtl_cycles']):>9}  "
              f"ratio {fmt(r['ratio'], '.2f'):>5}  {fmt(r.get('rtl_cycles_per_second'), ',.0f')} RTL cycles/s", flush=True)
    if args.layer or args.full:
        spec = LAYER if args.full else SMALL_LAYER
        for r in run_layer(spec, "edge", 16 if not args.full else 128):
            rows.append(r)
            print(f"{r['case']:<40} model {r['model_cycles']:>9,}  RTL {fmt(r['rtl_cycles']):>9}  "
                  f"ratio {fmt(r['ratio'], '.2f'):>5}  {r['skipped'] or ''}", flush=True)
    synth = synthesis()
    text = markdown(info, rows, synth)
    if args.no_write:
        print(text)
    else:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_rtl.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1, default=str))
        (RESULTS / "bench_rtl.md").write_text(text)
        print(f"wrote {RESULTS / 'bench_rtl.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The decode GEMV of the FPGA lowering in the cycle model: (1, K) x (K, N) ternary, int8 activations, both presets,
with and without double buffering, against the DRAM roofline (packed weight bytes over the DRAM bandwidth) and the
matrix unit's bound (K * N trit products over rows x lanes per cycle).

    python benchmarks/bench_fpga_gemv.py [--k 4096 --n 4096] [--functional]

The stream comes straight from tritc.codegen.fpga.lower (no model compile): it is what the GEMV of a decoder
layer runs. The Simulator runs timing-only unless --functional (then it also multiplies, and the result is checked
against the interpreter bit for bit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritc.codegen.fpga.config import PRESETS  # noqa: E402
from tritc.codegen.fpga.isa import Op  # noqa: E402
from tritc.codegen.fpga.lower import DramMap, build_weight_image, lower_nodes  # noqa: E402
from tritc.ir.graph import Graph  # noqa: E402
from tritc.ir.interpreter import run as interpret  # noqa: E402
from tritc.ir.ternary import TernaryWeight  # noqa: E402
from tritc.ir.types import DType, TensorType  # noqa: E402
from tritc.runtime.fpga import Simulator  # noqa: E402


def gemv_graph(k: int, n: int) -> tuple[Graph, dict]:
    rng = np.random.default_rng(0)
    g = Graph("gemv")
    x = g.add_input("x", TensorType(DType.F32, (1, k)))
    w = TernaryWeight(rng.integers(-1, 2, (k, n)).astype(np.int8), rng.uniform(0.5, 1, n).astype(np.float32))
    wv = g.add_weight("w", w, TensorType(DType.T2, (k, n)))
    g.outputs = g.add("ternary_matmul", [x, wv], [TensorType(DType.F32, (1, n))], {"act": "int8"},
                      output_names=["y"]).outputs
    return g, {"x": rng.standard_normal((1, k)).astype(np.float32)}


def gemv_stream(k: int, n: int, cfg, double_buffer: bool = True):  # noqa: ANN001, ANN201 - an FpgaConfig
    """The GEMV's graph and feeds, its weight image, its DRAM map (x, then y, after the image) and its stream."""
    g, feeds = gemv_graph(k, n)
    image = build_weight_image(g, cfg)
    dram = DramMap(-(-len(image.data) // 4096) * 4096, cfg.dram_bytes)
    dram.place("x", (1, k), DType.F32)
    node = next(nd for nd in g if nd.op == "ternary_matmul")
    return g, feeds, image, dram, lower_nodes([node], g, cfg, dram, image, double_buffer=double_buffer)


def run(k: int, n: int, preset: str, double_buffer: bool, functional: bool) -> dict:
    cfg = PRESETS[preset]
    g, feeds, image, dram, instrs = gemv_stream(k, n, cfg, double_buffer)
    sim = Simulator(cfg, dram_bytes=dram.end + 4096, functional=functional)
    sim.write(image.base, image.data)
    sim.write(dram["x"].addr, feeds["x"])
    sim.load_stream(instrs)
    st = sim.run()
    if functional:
        y = sim.read(dram["y"].addr, 4 * n).view(np.float32).reshape(1, n)
        np.testing.assert_array_equal(y, interpret(g, feeds)["y"])
    weight_bytes = n * -(-k // 64) * cfg.word_bytes
    roofline = weight_bytes / cfg.bytes_per_cycle
    matrix = k * n / (cfg.matrix_rows * cfg.matrix_lanes)
    tiles = sum(1 for i in instrs if i.op == Op.GEMM)
    return {"preset": preset, "double_buffer": double_buffer, "cycles": st["cycles"], "roofline": roofline,
            "matrix_bound": matrix, "of_roofline": roofline / st["cycles"], "tiles": tiles,
            "load_busy": st["engines"]["load"]["busy"], "compute_busy": st["engines"]["compute"]["busy"],
            "matrix_busy": st["engines"]["matrix"]["busy"],
            "energy_joules": st["energy_joules"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--functional", action="store_true", help="also compute (and check) the result")
    args = ap.parse_args(argv)
    print(f"(1, {args.k}) x ({args.k}, {args.n}) ternary GEMV, int8 activations")
    print(f"{'preset':<11} {'double buffer':<14} {'cycles':>8} {'DRAM roofline':>14} {'of roofline':>12} "
          f"{'matrix bound':>13} {'tiles':>6} {'load busy':>10} {'matrix busy':>12} {'vector busy':>12}")
    for preset in ("edge", "datacenter"):
        for db in (True, False):
            r = run(args.k, args.n, preset, db, args.functional)
            print(f"{preset:<11} {'yes' if db else 'no':<14} {r['cycles']:>8} {r['roofline']:>14.0f} "
                  f"{100 * r['of_roofline']:>11.1f}% {r['matrix_bound']:>13.0f} {r['tiles']:>6} {r['load_busy']:>10} "
                  f"{r['matrix_busy']:>12} {r['compute_busy']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

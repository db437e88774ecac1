"""FPGA target, modelled: GEMV, a BitNet decoder layer and a BitNet-2B-shaped decoder on the cycle-modelled Simulator.

For each preset (edge: KV260 class, datacenter: U280 class), with and without double buffering:
- a (1, 4096) x (4096, 4096) ternary GEMV, and one GEMV at each linear shape of a BitNet layer (hidden 2560,
  FFN 6912, 20 / 5 heads): modelled cycles, matrix unit utilisation and the fraction of the DRAM roofline
  (weight bytes over the DRAM bandwidth) they reach;
- a one-layer BitNet decoder (that layer, the final norm and a small ternary head) decoding one token at
  context 128 and 1024 with its KV cache: cycles, modelled tokens/s, mJ per token, the host's share of the
  modelled time (host regions measured on this CPU plus the host <-> device transfers at the link bandwidth);
- a BitNet-2B-shaped decoder (30 layers, vocabulary 128256) per decode token, composed from the simulated
  layer (30 identical layers) plus the simulated LM head GEMV (ternary, as in benchmarks/bitnet_models.py)
  and the host work measured in the layer's run (its per-layer transfers, the new cache rows' bytes, counted 30
  times; the embedding lookup, the mask, the logits and the one DMA that brings every layer's new cache rows back,
  once): the composition is stated, nothing else is extrapolated.

The layer runs as tritc.generate runs it: the capacity form, its KV cache resident in the device's DRAM, executed
functionally (bit-exact) while the cycles are counted, after one warm-up run (five steady-state runs, the one with
the median host time reported: the cycles are the same in each); the GEMVs run timing-only (their
results are checked in the tests and by `bench_fpga_gemv.py --functional`). The numbers model the accelerator of
docs/ISA.md; they are not a measurement of hardware. Host time is wall time on this CPU (a shared machine).
Results: benchmarks/results/bench_fpga.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tritc  # noqa: E402
from benchmarks.bench_fpga_gemv import run as gemv_run  # noqa: E402
from benchmarks.bench_generate import feeds as decoder_feeds  # noqa: E402
from benchmarks.bitnet_models import DecoderSpec, decoder, save  # noqa: E402
from benchmarks.common import RESULTS, machine_info  # noqa: E402
from tritc.codegen.fpga.config import PRESETS  # noqa: E402

STEADY_RUNS = 5  # decode steps timed per layer case (host time is wall time on a shared machine: the median is kept)
LAYER = DecoderSpec(layers=1, hidden=2560, ffn=6912, heads=20, kv_heads=5, vocab=256)
B2 = DecoderSpec(layers=30, hidden=2560, ffn=6912, heads=20, kv_heads=5, vocab=128256)
PUBLISHED = [
    ("TeLLMe v2 (KV260, 0.7B BitNet-class, 5 W)", "25 tokens/s decode"),
    ("TerEffic (HBM card, 2.7B ternary, 46 W)", "727 tokens/s decode"),
]


def run_gemv(k: int, n: int, preset: str, double_buffer: bool) -> dict:
    """The lowering's GEMV (bench_fpga_gemv.py) in the cycle model, timing-only (its functional check is in the
    tests and in `bench_fpga_gemv.py --functional`)."""
    cfg = PRESETS[preset]
    t0 = time.perf_counter()
    r = gemv_run(k, n, preset, double_buffer, False)
    sim = time.perf_counter() - t0
    seconds = r["cycles"] / cfg.clock_hz
    return {"case": f"gemv {k}x{n}", "preset": preset, "double_buffer": double_buffer, "cycles": r["cycles"],
            "seconds": seconds, "roofline_seconds": r["roofline"] / cfg.clock_hz, "of_roofline": r["of_roofline"],
            "utilisation": r["matrix_bound"] / r["cycles"], "energy_mj": r.get("energy_joules", 0.0) * 1e3,
            "sim_seconds": sim}


def run_layer(path: Path, preset: str, double_buffer: bool, context: int) -> dict:
    model = tritc.compile(str(path), target="fpga", fpga_config=preset, double_buffer=double_buffer, threads=1,
                          shapes={"batch": 1, "seq": 1, "past": context - 1, "total": context})
    # the capacity form, as tritc.generate runs it: the cache buffers stay in the device's DRAM, the device appends
    model, why = model.with_cache_in_place()
    if model is None:
        raise SystemExit(f"the layer has no in-place cache form: {why}")
    feed, outputs = capacity_feeds(model, context)
    model.run(["logits"], feed, outputs=outputs)  # the first run compiles the host regions and writes weights and cache
    runs = []
    for _ in range(STEADY_RUNS):  # the steady state: the cache is resident; the run with the median host time is kept
        t0 = time.perf_counter()
        model.run(["logits"], feed, outputs=outputs)
        runs.append((model.stats["host_seconds"], time.perf_counter() - t0, model.stats))
    _host, sim, st = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    cfg = PRESETS[preset]
    s = LAYER
    per_layer = s.hidden * (2 * s.hidden + 2 * s.kv_heads * s.head_dim) + 3 * s.hidden * s.ffn + s.hidden * s.vocab
    cache = 2 * s.kv_heads * s.head_dim * 4 * context
    roof = (per_layer * cfg.word_bytes / 64 + cache) / cfg.dram_bandwidth
    return {"case": f"layer ctx {context}", "preset": preset, "double_buffer": double_buffer, "context": context,
            "cycles": st["cycles"], "seconds": st["seconds"], "total_seconds": st["total_seconds"],
            "host_seconds": st["host_seconds"], "transfer_seconds": st["transfer_seconds"],
            "cache_row_bytes": st["cache_row_bytes"], "cache_row_transfers": st["cache_row_transfers"],
            "host_share": st["host_share"], "tokens_per_second": 1 / st["total_seconds"],
            "roofline_seconds": roof, "of_roofline": roof / st["seconds"], "utilisation": st["matrix_utilisation"],
            "energy_mj": st["energy_joules"] * 1e3, "sim_seconds": sim, "regions": st["regions"]}


def capacity_feeds(model, context: int) -> tuple[dict, dict]:
    """One decode step at `context` for the capacity form: buffers of `context` rows holding context - 1, the length
    input, and the presents bound to their buffers."""
    from tritc.runtime.model import in_place_pairs

    base = decoder_feeds(LAYER, context - 1, 1)
    (length,) = model.graph.value_symbols
    feed = {k: v for k, v in base.items() if not k.startswith("past_key_values.")}
    outputs = {}
    for present, past in in_place_pairs(model.graph).items():
        old = base[past]
        buf = np.zeros(old.shape[:2] + (context,) + old.shape[3:], np.float32)
        buf[:, :, :context - 1] = old
        feed[past] = outputs[present] = buf
    feed[length] = np.array([context - 1], np.int64)
    return feed, outputs


def compose_2b(layer: dict, head: dict, preset: str) -> dict:
    """30 x the simulated layer's device time + the simulated LM head GEMV + the layer run's host work (the embedding
    lookup and mask on the host, the token, the mask and the new cache rows across the link: the cache rows' bytes
    are per layer, counted 30 times; they come back in one scatter-gather DMA per call, whatever the number of
    layers, so its latency counts once) + the LM head's logits back to the host."""
    cfg = PRESETS[preset]
    device = B2.layers * layer["seconds"] + head["seconds"]
    latency = layer["cache_row_transfers"] * cfg.host_link_latency_ns * 1e-9
    rows = layer["cache_row_bytes"] / cfg.host_link_bandwidth
    host = layer["host_seconds"] + (layer["transfer_seconds"] - rows - latency) + B2.layers * rows + latency \
        + 4 * B2.vocab / cfg.host_link_bandwidth
    total = device + host
    energy = B2.layers * layer["energy_mj"] + head["energy_mj"]
    s = B2
    weights = B2.layers * (s.hidden * (2 * s.hidden + 2 * s.kv_heads * s.head_dim) + 3 * s.hidden * s.ffn) \
        + s.hidden * s.vocab
    cache = B2.layers * 2 * s.kv_heads * s.head_dim * 4 * layer["context"]
    roof = (weights * cfg.word_bytes / 64 + cache) / cfg.dram_bandwidth
    return {"case": f"2B-shaped ctx {layer['context']}", "preset": preset, "double_buffer": layer["double_buffer"],
            "seconds": device, "total_seconds": total, "host_share": host / total, "tokens_per_second": 1 / total,
            "roofline_seconds": roof, "of_roofline": roof / device, "energy_mj": energy,
            "composition": f"{B2.layers} x layer ({layer['seconds'] * 1e3:.3f} ms) + LM head GEMV "
                           f"({head['seconds'] * 1e3:.3f} ms) + host ({host * 1e3:.3f} ms)"}


def _cell(r: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    return format(r[key] * scale, fmt) if key in r else "-"


def markdown(info: dict, rows: list[dict]) -> str:
    out = ["# FPGA target, modelled: ternary GEMV, a BitNet layer and a 2B-shaped decoder on the Simulator", "",
           __doc__.split("\n\n", 1)[1].strip(), "",
           f"- host CPU (for the host regions): {info['cpu']}; date {info['date']}", "",
           "| case | preset | double buffer | cycles | modelled device time (ms) | of DRAM roofline | matrix util "
           "| tokens/s | mJ/token | host share |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['case']} | {r['preset']} | {'yes' if r['double_buffer'] else 'no'} | "
                   f"{_cell(r, 'cycles', ',')} | {_cell(r, 'seconds', '.3f', 1e3)} | {_cell(r, 'of_roofline', '.0%')} | "
                   f"{_cell(r, 'utilisation', '.0%')} | {_cell(r, 'tokens_per_second', '.1f')} | "
                   f"{_cell(r, 'energy_mj', '.2f')} | {_cell(r, 'host_share', '.1%')} |")
    comps = [r for r in rows if "composition" in r]
    if comps:
        out += ["", "The 2B-shaped rows are composed (30 identical layers):", ""]
        out += [f"- {r['preset']}, {r['case']}{'' if r['double_buffer'] else ', no double buffering'}: "
                f"{r['composition']}" for r in comps]
    out += ["", "Published FPGA results for comparison (docs/FPGA.md says what differs):", ""]
    out += [f"- {who}: {what}" for who, what in PUBLISHED]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=["edge", "datacenter"], choices=sorted(PRESETS))
    ap.add_argument("--contexts", type=int, nargs="*", default=[128, 1024])
    ap.add_argument("--quick", action="store_true", help="only the 4096 GEMV (a smoke run)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    info = machine_info()
    rows: list[dict] = []
    s = LAYER
    shapes = [(4096, 4096)] + ([] if args.quick else
                               [(s.hidden, s.hidden), (s.hidden, s.kv_heads * s.head_dim), (s.hidden, s.ffn),
                                (s.ffn, s.hidden)])
    for preset in args.presets:
        for db in (True, False):
            for k, n in shapes:
                r = run_gemv(k, n, preset, db)
                rows.append(r)
                print(f"{r['case']:<22} {preset:<10} db={db!s:<5} {r['cycles']:>10,} cycles  "
                      f"{100 * r['of_roofline']:5.1f}% of roofline  util {100 * r['utilisation']:5.1f}%  "
                      f"(simulated in {r['sim_seconds']:.1f} s)", flush=True)
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.onnx"
            save(decoder(LAYER), path)
            for preset in args.presets:
                head = run_gemv(B2.hidden, B2.vocab, preset, True)
                for db in (True, False):
                    for ctx in args.contexts:
                        layer = run_layer(path, preset, db, ctx)
                        rows.append(layer)
                        print(f"{layer['case']:<22} {preset:<10} db={db!s:<5} {layer['cycles']:>10,} cycles  "
                              f"{layer['tokens_per_second']:8.1f} tok/s  host {100 * layer['host_share']:4.1f}%  "
                              f"(simulated in {layer['sim_seconds']:.1f} s)", flush=True)
                        if db or ctx == args.contexts[0]:
                            rows.append(compose_2b(layer, head if db else run_gemv(B2.hidden, B2.vocab, preset, db),
                                                   preset))
                            print(f"{rows[-1]['case']:<22} {preset:<10} db={db!s:<5} "
                                  f"{rows[-1]['tokens_per_second']:8.1f} tok/s  {rows[-1]['energy_mj']:.1f} mJ/token  "
                                  f"host {100 * rows[-1]['host_share']:4.1f}%", flush=True)
    text = markdown(info, rows)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_fpga.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1, default=str))
        (RESULTS / "bench_fpga.md").write_text(text)
        print(f"wrote {RESULTS / 'bench_fpga.md'}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

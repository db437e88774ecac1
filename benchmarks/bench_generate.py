"""Text generation at real size: BitNet-shaped decoders with a KV cache, tritc against onnxruntime side by side.

    .venv/bin/python benchmarks/bench_generate.py                          # 2 layers, 1 thread and all cores
    .venv/bin/python benchmarks/bench_generate.py --model 0.7b --contexts 128 1024 --threads 1

Models (benchmarks/bitnet_models.py, random trits, fixed seed): `2l` = 2 layers at hidden 2560, FFN 6912, 20 heads,
5 KV heads (BitNet b1.58 2B's layer), `0.7b` = 24 layers at hidden 1536, FFN 4096, 12 heads, 4 KV heads. Vocabulary
32000, every linear layer exactly ternary behind BitNet's activation quantisation. Contestants, in one process:
- tritc: the plain-MatMul file compiled with the default pipeline (every layer folds to int8 ternary_matmul), run as
  tritc.generate runs it: its capacity form, the KV cache appended in place (kv-cache-in-place),
- tritc_concat: the same compiled model through its ONNX interface (present = the whole cache, written each step),
- ort_fp32: onnxruntime on the same file,
- ort_nbits: onnxruntime on the twin file whose linear layers are MatMulNBits bits=2 accuracy_level=4, same trits,
- genai (with --genai PYTHON, or when .venv-genai exists): onnxruntime-genai on a Llama of the same shape built by
  its model builder at int4, run by benchmarks/genai_runner.py in that venv (its docstring: how to make the venv).
Decode at context C: one new token over a cache of C positions (random keys/values), the step a generation loop
runs; tokens/s = 1 / median step time. Prefill: P prompt tokens over an empty cache; tokens/s = P / time.
Roofline: a decode step must read every weight once (tritc: 2 bits per trit; ORT fp32: 4 bytes; MatMulNBits:
2 bits + scales) and the cache (4 bytes per value); the fraction is that many bytes / step time / the streaming
read bandwidth measured here with the same thread count. Peak memory: growth of the process's resident set while
the contestant is created and run (VmHWM is per process, so each contestant runs in a child process for it).
Writes benchmarks/results/bench_generate.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bitnet_models import DecoderSpec, decoder, save  # noqa: E402
from benchmarks.common import Timer, cores, finish_info, interleave, machine_info, machine_markdown, write_results  # noqa: E402

MODELS = {"2l": DecoderSpec(layers=2, hidden=2560, ffn=6912, heads=20, kv_heads=5, vocab=32000),
          "0.7b": DecoderSpec(layers=24, hidden=1536, ffn=4096, heads=12, kv_heads=4, vocab=32000)}
CONTESTANTS = ("tritc", "tritc_concat", "ort_fp32", "ort_nbits")
GENAI_VENV = ROOT / ".venv-genai" / "bin" / "python"


def weight_bytes(spec: DecoderSpec, contestant: str) -> int:
    """Bytes of the linear layers a decode step reads (the embedding row it gathers is negligible)."""
    per_layer = spec.hidden * (2 * spec.hidden + 2 * spec.kv_heads * spec.head_dim) + 3 * spec.hidden * spec.ffn
    n = spec.layers * per_layer + spec.hidden * spec.vocab
    return 4 * n if contestant == "ort_fp32" else n // 4 + n // 128 * 4 * (contestant == "ort_nbits")


def feeds(spec: DecoderSpec, past: int, seq: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = {"input_ids": rng.integers(0, spec.vocab, (1, seq)).astype(np.int64),
         "attention_mask": np.ones((1, past + seq), np.int64),
         "position_ids": np.arange(past, past + seq, dtype=np.int64)[None]}
    for i in range(spec.layers):
        for which in ("key", "value"):
            f[f"past_key_values.{i}.{which}"] = rng.standard_normal((1, spec.kv_heads, past, spec.head_dim)).astype(np.float32)
    return f


def contestant(name: str, paths: dict[str, Path], threads: int):
    """A callable feeds -> logits for one contestant."""
    if name in ("tritc", "tritc_concat"):
        import tritc

        model = tritc.compile(paths["fp32"], threads=threads)
        if name == "tritc_concat":  # the ONNX interface: presents that repeat the whole cache
            return lambda f: model.run(["logits"], f)[0]
        return in_place_runner(model)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(paths["nbits" if name == "ort_nbits" else "fp32"]), so,
                                providers=["CPUExecutionProvider"])
    return lambda f: sess.run(["logits"], f)[0]


def in_place_runner(model):
    """feeds -> logits through the model's capacity form, as tritc.generate runs it: the cache in buffers of one more
    row than the context, fed whole with past_len, the present outputs bound to the same buffers (each step writes
    only its new rows). The buffers are made from a feed on its first call (not timed: the benchmark's first call
    checks the error); later calls with the same feed write the same rows again."""
    capacity, reason = model.with_cache_in_place()
    if capacity is None:
        raise RuntimeError(f"no in-place KV cache: {reason}")
    (length_input,) = list(capacity.graph.value_symbols)
    prepared: dict[int, tuple] = {}

    def run(f):
        if id(f) not in prepared:
            seq = f["input_ids"].shape[1]
            feed, outputs = {}, {}
            for name, a in f.items():
                if name.startswith("past_key_values."):
                    buf = np.zeros(a.shape[:2] + (a.shape[2] + seq,) + a.shape[3:], np.float32)
                    buf[:, :, :a.shape[2]] = a
                    feed[name] = buf
                    outputs[name.replace("past_key_values.", "present.")] = buf
                    past = a.shape[2]
                else:
                    feed[name] = a
            feed[length_input] = np.array([past], np.int64)
            prepared[id(f)] = (f, feed, outputs)  # f kept: its id stays its own
        _, feed, outputs = prepared[id(f)]
        return capacity.run(["logits"], feed, outputs=outputs)[0]

    return run


def read_bandwidth(threads: int, mib: int = 1024) -> float:
    """Streaming read bandwidth in bytes/s: `threads` threads each taking the max of its share of a large int32 array
    (a vectorised reduction that only reads: the fastest read loop numpy has here; median of 5)."""
    a = np.ones(mib << 18, np.int32)
    parts = np.array_split(a, threads)
    times = []
    for _ in range(5):
        workers = [threading.Thread(target=np.max, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        times.append(time.perf_counter() - t0)
    return a.nbytes / float(np.median(times))


def rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _peak_child(name: str, paths: dict[str, Path], threads: int, spec: DecoderSpec, past: int, out) -> None:
    base = rss_kb()
    run = contestant(name, paths, threads)
    run(feeds(spec, past, 1))
    out.put((rss_kb("VmHWM") - base) * 1024)


def peak_memory(name: str, paths: dict[str, Path], threads: int, spec: DecoderSpec, past: int) -> int:
    """Bytes the contestant adds to a fresh process's peak resident set (create it, run one decode step)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_child, args=(name, paths, threads, spec, past, q))
    p.start()
    p.join()
    return q.get() if p.exitcode == 0 else -1


def bench(spec_name: str, folder: Path, contexts: list[int], prefill: int, threads: int, rounds: int,
          peak: bool, contestants: tuple[str, ...] = CONTESTANTS, genai: str | None = None) -> list[dict]:
    spec = MODELS[spec_name]
    paths = {"fp32": folder / f"{spec_name}.onnx", "nbits": folder / f"{spec_name}_nbits.onnx"}
    for kind, path in paths.items():
        if not path.exists():
            save(decoder(spec, nbits=kind == "nbits"), path)
    runners, compile_s = {}, {}
    for name in contestants:
        t0 = time.perf_counter()
        runners[name] = contestant(name, paths, threads)
        compile_s[name] = time.perf_counter() - t0
    bandwidth = read_bandwidth(threads)
    rows = []
    for past in contexts:
        f = feeds(spec, past, 1)
        ref = runners["ort_fp32"](f)
        errs = {n: float(np.max(np.abs(runners[n](f) - ref)) / (float(np.max(np.abs(ref))) or 1.0)) for n in runners}
        timers = [Timer(n, lambda r=runners[n], f=f: r(f)) for n in runners]
        interleave(timers, rounds)
        row = {"model": spec_name, "phase": "decode", "context": past, "threads": threads, "bandwidth_gb_s": bandwidth / 1e9,
               "max_rel_err_vs_ort_fp32": errs}
        cache = spec.cache_bytes_per_token() * (past + 1)
        for t in timers:
            step = t.median
            row[f"{t.name}_ms"] = step * 1e3
            row[f"{t.name}_tok_s"] = 1.0 / step
            row[f"{t.name}_roofline"] = (weight_bytes(spec, t.name) + cache) / step / bandwidth
        _ratios(row)
        rows.append(row)
        print(f"{spec_name:<5} decode  ctx {past:>5} {threads}T {bandwidth / 1e9:.0f} GB/s  " + "  ".join(
            f"{t.name} {row[t.name + '_tok_s']:8.1f} tok/s ({row[t.name + '_roofline']:.0%})" for t in timers), flush=True)
    f = feeds(spec, 0, prefill)
    timers = [Timer(n, lambda r=runners[n], f=f: r(f)) for n in runners]
    interleave(timers, max(3, rounds // 3))
    row = {"model": spec_name, "phase": "prefill", "context": prefill, "threads": threads, "compile_s": compile_s}
    for t in timers:
        row[f"{t.name}_ms"] = t.median * 1e3
        row[f"{t.name}_tok_s"] = prefill / t.median
    _ratios(row)
    if peak:
        row["peak_bytes"] = {n: peak_memory(n, paths, threads, spec, max(contexts)) for n in runners}
    rows.append(row)
    print(f"{spec_name:<5} prefill {prefill:>9} {threads}T  " + "  ".join(
        f"{t.name} {row[t.name + '_tok_s']:8.1f} tok/s" for t in timers), flush=True)
    if genai:
        add_genai(rows, spec, genai, folder, contexts, prefill, threads)
    return rows


def add_genai(rows: list[dict], spec: DecoderSpec, python: str, folder: Path, contexts: list[int], prefill: int,
              threads: int) -> None:
    """onnxruntime-genai's tokens/s (genai_runner.py in its own venv) added to this model's and thread count's rows."""
    import subprocess

    cmd = [python, str(ROOT / "benchmarks" / "genai_runner.py"), "--hidden", str(spec.hidden), "--ffn", str(spec.ffn),
           "--heads", str(spec.heads), "--kv-heads", str(spec.kv_heads), "--layers", str(spec.layers),
           "--vocab", str(spec.vocab), "--prefill", str(prefill), "--threads", str(threads),
           "--contexts", *map(str, contexts), "--work", str(folder / "genai")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"onnxruntime-genai: failed ({res.stderr.strip().splitlines()[-1:] or ['no output']}); left out", flush=True)
        return
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for row in rows[-len(contexts) - 1:]:
        tok_s = got["prefill"] if row["phase"] == "prefill" else got["decode"][str(row["context"])]
        row["genai_tok_s"], row["genai_version"] = tok_s, got["version"]
        if "tritc_tok_s" in row:
            row["tritc_vs_genai"] = row["tritc_tok_s"] / tok_s
    print(f"onnxruntime-genai {got['version']} int4, {threads}T: decode " +
          ", ".join(f"ctx {c} {v:.1f} tok/s" for c, v in got["decode"].items()) + f"; prefill {got['prefill']:.1f} tok/s",
          flush=True)


def _ratios(row: dict) -> None:
    if "tritc_ms" in row:
        for other in ("ort_fp32", "ort_nbits"):
            if f"{other}_ms" in row:
                row[f"tritc_vs_{other}"] = row[f"{other}_ms"] / row["tritc_ms"]


def markdown(info: dict, rows: list[dict], rounds: int) -> str:
    lines = ["# Generation: BitNet-shaped decoders with a KV cache, tritc vs onnxruntime", "",
             f"Decode: one token over a cache of `context` positions, median of {rounds} interleaved rounds; roofline: "
             f"(weight bytes + cache bytes) / step time / measured read bandwidth. Prefill: the prompt over an empty "
             f"cache. See benchmarks/bench_generate.py for the models and contestants.", "", machine_markdown(info),
             "| model | phase | context | threads | tritc tok/s | ORT fp32 tok/s | ORT 2-bit tok/s | genai int4 tok/s "
             "| vs fp32 | vs 2-bit | vs genai | tritc roofline |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"

    for r in rows:
        lines.append(f"| {r['model']} | {r['phase']} | {r['context']} | {r['threads']} | {cell(r, 'tritc_tok_s', '.1f')} | "
                     f"{cell(r, 'ort_fp32_tok_s', '.1f')} | {cell(r, 'ort_nbits_tok_s', '.1f')} | "
                     f"{cell(r, 'genai_tok_s', '.1f')} | {cell(r, 'tritc_vs_ort_fp32', '.2f')}x | "
                     f"{cell(r, 'tritc_vs_ort_nbits', '.2f')}x | {cell(r, 'tritc_vs_genai', '.2f')}x | "
                     f"{cell(r, 'tritc_roofline', '.0%')} |")
    peaks = [r for r in rows if "peak_bytes" in r]
    if peaks:
        lines += ["", "Peak memory (bytes a fresh process's peak resident set grows by, one decode step at the largest "
                  "context):", ""]
        lines += [f"- {r['model']}, {r['threads']} threads: " + ", ".join(f"{n} {v / 2**20:.0f} MiB"
                                                                           for n, v in r["peak_bytes"].items())
                  for r in peaks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="*", choices=sorted(MODELS), default=["2l"])
    ap.add_argument("--contexts", type=int, nargs="*", default=[128, 1024, 4096])
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="*", default=sorted({1, cores()}))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--contestants", nargs="*", choices=CONTESTANTS, default=list(CONTESTANTS),
                    help="which to run (ort_fp32 is the reference for the errors and always runs)")
    ap.add_argument("--genai", metavar="PYTHON", default=str(GENAI_VENV) if GENAI_VENV.exists() else None,
                    help="a python with onnxruntime-genai and its builder (default: .venv-genai if it exists)")
    ap.add_argument("--no-peak", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default="bench_generate", help="file stem under benchmarks/results (default bench_generate)")
    ap.add_argument("--keep", metavar="DIR", help="build the models into DIR and keep them (default: a temp folder)")
    args = ap.parse_args(argv)
    info = machine_info()
    print(f"{info['cpu']} ({info['isa']} kernels)")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.model:
            for threads in args.threads:
                rows += bench(name, folder, args.contexts, args.prefill, threads, args.rounds, not args.no_peak,
                              tuple(dict.fromkeys(["ort_fp32", *args.contestants])), args.genai)
    info = finish_info(info)
    if not args.no_write:
        jpath, mpath = write_results(args.out, info, rows, markdown(info, rows, args.rounds))
        print(f"wrote {jpath.relative_to(ROOT)} and {mpath.relative_to(ROOT)}")
    else:
        print(json.dumps(rows, indent=1, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())

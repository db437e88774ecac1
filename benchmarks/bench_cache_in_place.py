"""Decode speed with the KV cache appended in place against the concatenated form, through tritc.generate.

    .venv/bin/python benchmarks/bench_cache_in_place.py                       # 2l model, context ~1024, 1 thread
    .venv/bin/python benchmarks/bench_cache_in_place.py --prompt 2048 --tokens 33 --rounds 2

One BitNet-shaped decoder (benchmarks/bitnet_models.py, `2l`: 2 layers at hidden 2560, 20 heads over 5 KV heads,
vocabulary 32000, int8 ternary layers), compiled once. Two ways to generate with it, alternated `rounds` times:
- in place: tritc.generate on the compiled model, which runs its capacity form (kv-cache-in-place): the cache
  buffers are fed whole and bound as the present outputs, and each step writes only its new rows;
- concatenated: the same compiled model behind a session wrapper that hides `with_cache_in_place`, so generation
  feeds the filled part of each buffer and copies the new rows out of presents that repeat the whole cache.
Both preallocate the cache for the whole generation (`max_context`), so neither grows it while decoding. Decode
tokens/s is tritc.generate's own stat (tokens after the first over their time); best and median of the rounds.
Writes benchmarks/results/bench_cache_in_place.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bitnet_models import DecoderSpec, decoder, save  # noqa: E402
from benchmarks.common import finish_info, machine_info, machine_markdown, write_results  # noqa: E402

SPEC = DecoderSpec(layers=2, hidden=2560, ffn=6912, heads=20, kv_heads=5, vocab=32000)


class Concatenated:
    """The compiled model as a plain session (no capacity form): generation takes the concatenated path."""

    def __init__(self, model):
        self.model, self.graph = model, model.graph

    def get_inputs(self):
        return self.model.get_inputs()

    def get_outputs(self):
        return self.model.get_outputs()

    def run(self, names, feed, run_options=None):
        return self.model.run(names, feed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", type=int, default=1000, help="prompt tokens (decode runs at this context and after)")
    ap.add_argument("--tokens", type=int, default=33, help="new tokens per generation (the first comes from prefill)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import tritc

    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "2l.onnx"
        save(decoder(SPEC, nbits=False), path)
        model = tritc.compile(str(path), threads=args.threads, lazy=True)
    prompt = np.random.default_rng(0).integers(0, SPEC.vocab, args.prompt).tolist()
    context = args.prompt + args.tokens - 1
    sessions = {"in place": model, "concatenated": Concatenated(model)}
    best: dict[str, dict] = {}
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    tokens: dict[str, tuple[int, ...]] = {}
    for r in range(args.rounds):
        for name, session in sessions.items():
            result = tritc.generate(session, prompt, args.tokens, max_context=context)
            s = result.stats
            print(f"round {r + 1} {name}: decode {s.decode_tokens_per_second:.2f} tokens/s "
                  f"({1e3 / s.decode_tokens_per_second:.2f} ms/token), prefill {s.prefill_seconds:.2f} s, "
                  f"cache_in_place={s.cache_in_place}", flush=True)
            tokens[name] = result.tokens
            rates[name].append(s.decode_tokens_per_second)
            row = {"path": name, "cache_in_place": s.cache_in_place, "context": [args.prompt, context],
                   "decode_tokens_per_second": s.decode_tokens_per_second,
                   "decode_ms_per_token": 1e3 / s.decode_tokens_per_second, "prefill_seconds": s.prefill_seconds,
                   "load_seconds": s.load_seconds}
            if name not in best or row["decode_tokens_per_second"] > best[name]["decode_tokens_per_second"]:
                best[name] = row
    assert tokens["in place"] == tokens["concatenated"], "the two paths generated different tokens"
    rows = [dict(row, rounds=rates[row["path"]], median_decode_tokens_per_second=float(np.median(rates[row["path"]])))
            for row in best.values()]
    cache_mb = SPEC.cache_bytes_per_token() * args.prompt / 1e6
    speedup = best["in place"]["decode_tokens_per_second"] / best["concatenated"]["decode_tokens_per_second"]
    md = (f"# KV cache in place vs concatenated (tritc.generate, model 2l, {args.threads} thread(s))\n\n"
          + machine_markdown(finish_info(info))
          + f"\nPrompt {args.prompt} tokens, {args.tokens} new (decode at context {args.prompt}..{context}); cache "
          f"{cache_mb:.1f} MB at the prompt's end; best of {args.rounds} rounds; the same tokens on both paths.\n\n"
          "| path | decode tokens/s (best) | ms/token (best) | tokens/s (median) |\n|---|---|---|---|\n"
          + "".join(f"| {r['path']} | {r['decode_tokens_per_second']:.2f} | {r['decode_ms_per_token']:.2f} | "
                    f"{r['median_decode_tokens_per_second']:.2f} |\n" for r in rows)
          + f"\nIn place is {speedup:.2f}x the concatenated form's decode speed.\n")
    write_results("bench_cache_in_place", finish_info(info), rows, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

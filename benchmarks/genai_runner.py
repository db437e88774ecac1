"""onnxruntime-genai on a Llama of the benchmark's shape, built by its own model builder (int4): decode and prefill
tokens/s as JSON on stdout. Runs in its own venv (onnxruntime-genai's builder needs torch, transformers and onnx_ir,
which tritc does not depend on); bench_generate.py calls it with --genai PYTHON:

    python3 -m venv .venv-genai
    .venv-genai/bin/pip install onnxruntime-genai torch==2.13.0 transformers==5.23.0 onnx onnx_ir
    .venv-genai/bin/python benchmarks/genai_runner.py --hidden 2560 --ffn 6912 --heads 20 --kv-heads 5 --layers 2 \\
        --vocab 32000 --contexts 128 1024 --prefill 512 --threads 1 --work /tmp/genai

The architecture is transformers' LlamaForCausalLM at the same hidden size, FFN width, heads, KV heads, layers and
vocabulary (SiLU gating and no activation quantisation: the builder knows Llama, not BitNet), random weights with a
fixed seed, a word-level tokenizer (the builder wants one; generation feeds token ids). Decode at context C: a prompt
of C tokens, then the median time of the next tokens (greedy). Prefill: the prompt's time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build(args: argparse.Namespace, folder: Path) -> Path:
    """The HF checkpoint (random weights) and the builder's int4 CPU model; cached in `folder` by shape."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tag = f"llama_{args.layers}l_{args.hidden}_{args.ffn}_{args.heads}_{args.kv_heads}_{args.vocab}"
    hf, out = folder / f"{tag}_hf", folder / f"{tag}_int4"
    if (out / "genai_config.json").exists():
        return out
    cfg = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.ffn, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, num_hidden_layers=args.layers, vocab_size=args.vocab,
                      max_position_embeddings=8192, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).eval().save_pretrained(hf)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(args.vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2",
                            pad_token="t0").save_pretrained(hf)
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out), "-p", "int4",
                    "-e", "cpu"], check=True, capture_output=True)
    return out


def set_threads(model_dir: Path, threads: int) -> None:
    cfg_path = model_dir / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    cfg_path.write_text(json.dumps(cfg, indent=2))


def run(model_dir: Path, prompt: int, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds for `prompt` tokens, median seconds per decoded token after it)."""
    import onnxruntime_genai as og

    model = og.Model(og.Config(str(model_dir)))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt + new_tokens + 1, do_sample=False)
    gen = og.Generator(model, params)
    ids = np.random.default_rng(1).integers(3, model_vocab(model_dir) - 1, prompt).astype(np.int32)
    t0 = time.perf_counter()
    gen.append_tokens(ids)
    prefill = time.perf_counter() - t0
    steps = []
    for _ in range(new_tokens):
        t = time.perf_counter()
        gen.generate_next_token()
        steps.append(time.perf_counter() - t)
    return prefill, float(np.median(steps))


def model_vocab(model_dir: Path) -> int:
    return int(json.loads((model_dir / "genai_config.json").read_text())["model"]["vocab_size"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--hidden", "--ffn", "--heads", "--kv-heads", "--layers", "--vocab", "--prefill", "--threads"):
        ap.add_argument(flag, type=int, required=True)
    ap.add_argument("--contexts", type=int, nargs="+", required=True)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--work", type=Path, required=True, help="folder for the checkpoint and the built model (reused)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = build(args, args.work)
    set_threads(model_dir, args.threads)
    import onnxruntime_genai as og

    result = {"version": og.__version__, "decode": {}}
    for ctx in args.contexts:
        result["decode"][str(ctx)] = 1.0 / run(model_dir, ctx, args.new_tokens)[1]
    result["prefill"] = args.prefill / run(model_dir, args.prefill, 1)[0]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

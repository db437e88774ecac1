"""tritc generate: token ids from a decoder with a KV cache (an .onnx model compiled first, or a .tritc artifact),
printed as they come, then a line with prefill and decode tokens per second (docs/GENERATE.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import OptionError
from .compile import add_target_options, compile_with_options
from .options import add_key_option, add_limit_option, add_pass_options, add_progress_options, read_key_option, ternary_flags_given
from .output import Progress, human_seconds

EXIT_OK = 0
# How messages about generate()'s parameters name them here.
FLAGS = {"input_ids": "--prompt-ids", "max_new_tokens": "--max-new-tokens", "temperature": "--temperature",
         "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed", "stop_ids": "--stop-ids", "max_context": "--max-context"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate token ids with a decoder that has a KV cache",
                       description="Generate token ids after a prompt with a decoder exported with a KV cache (the "
                                   "optimum / transformers layout or the native Attention op): greedy, or sampled with "
                                   "--temperature, --top-k, --top-p and --seed. Prints each token as it comes, then "
                                   "prefill and decode tokens per second. An .onnx model is compiled first.")
    p.add_argument("model", metavar="MODEL", help="an .onnx model (compiled first) or a .tritc artifact")
    p.add_argument("--prompt-ids", metavar="IDS", required=True, help="the prompt's token ids, comma separated: 1,2,3")
    p.add_argument("--max-new-tokens", metavar="N", type=int, default=32, help="tokens to generate at most (default 32)")
    g = p.add_argument_group("sampling", "Greedy by default; a temperature > 0 samples (docs/GENERATE.md).")
    g.add_argument("--temperature", metavar="T", type=float, default=0.0, help="0 greedy (default), > 0 sample")
    g.add_argument("--top-k", metavar="K", type=int, default=None, help="sample among the K most likely tokens")
    g.add_argument("--top-p", metavar="P", type=float, default=1.0, help="sample within the nucleus of probability P")
    g.add_argument("--seed", metavar="S", type=int, default=None, help="seed of the sampler (default: a fresh one)")
    g.add_argument("--stop-ids", metavar="IDS", default=None, help="stop after any of these token ids (e.g. eos): 2,3")
    p.add_argument("--max-context", metavar="N", type=int, default=None,
                   help="the most tokens the KV cache holds, allocated at the start (default: the model's position "
                        "table if it has one; the cache grows by doubling)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end instead of streaming")
    add_key_option(p)
    add_target_options(p)
    add_pass_options(p, default_pipeline="cpu")
    add_limit_option(p)
    add_progress_options(p)
    p.set_defaults(func=run, shape=[])


def parse_ids(text: str | None, flag: str) -> list[int]:
    if text is None:
        return []
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ids.append(int(part))
        except ValueError:
            raise OptionError(f"{flag}: '{part}' is not a token id (give integers, comma separated: 1,2,3)") from None
    return ids


def load(args: argparse.Namespace) -> Any:
    """The model to generate with: an .onnx file compiled with the command's options, else a .tritc loaded."""
    say = Progress.from_args(args)
    if Path(args.model).suffix.lower() == ".onnx":
        if args.key is not None:
            raise OptionError(f"--key: {args.model} is an ONNX model; the key checks the signature of a .tritc artifact")
        return compile_with_options(args, args.model, say, lazy=True)  # generation compiles what it runs
    given = [flag for flag, on in (("--pipeline", args.pipeline is not None), ("-p", args.passes is not None),
                                   ("--ternary*", ternary_flags_given(args)), ("--cpu-features", args.cpu_features is not None),
                                   ("-O", args.opt_level != 3), ("--target", args.target != "cpu")) if on]
    if given:
        raise OptionError(f"{', '.join(given)}: compile options apply to an .onnx model; {args.model} is compiled already")
    import tritc

    say(f"loading {args.model}")
    return tritc.load(args.model, threads=args.threads, key=read_key_option(args.key))


def stats_line(result: Any) -> str:
    s = result.stats
    decode = s.decode_tokens_per_second
    parts = [f"prefill {s.prompt_tokens} tokens in {human_seconds(s.prefill_seconds)}, "
             f"{s.prefill_tokens_per_second:.1f} tokens/s",
             f"decode {max(s.new_tokens - 1, 0)} tokens in {human_seconds(s.decode_seconds)}, "
             + (f"{decode:.1f} tokens/s" if decode is not None else "- tokens/s"),
             f"first token after {human_seconds(s.time_to_first_token)} (model ready in {human_seconds(s.load_seconds)})",
             f"stopped: {result.stop_reason.replace('_', '-')}",
             f"KV cache {'in place' if s.cache_in_place else 'copied each step'}"]
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    import tritc

    from ..runtime.generate import check_arguments

    prompt = parse_ids(args.prompt_ids, "--prompt-ids")
    stops = parse_ids(args.stop_ids, "--stop-ids")
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop_ids=stops,
                   max_context=args.max_context)
    # Everything that needs no model is checked before compiling or loading it.
    check_arguments(prompt, args.max_new_tokens, names=FLAGS, **options)
    t0 = time.perf_counter()
    model = load(args)
    compile_for_generation(model)
    model.progress = None  # shapes compiled during generation are not announced one per token
    load_seconds = time.perf_counter() - t0
    if args.json:
        result = with_load_time(tritc.generate(model, prompt, args.max_new_tokens, **options), load_seconds)
        print(json.dumps({"prompt": list(result.prompt), "tokens": list(result.tokens), "stop_reason": result.stop_reason,
                          "stats": result.stats.as_dict()}))
        return EXIT_OK
    generation = tritc.generate(model, prompt, args.max_new_tokens, stream=True, **options)
    try:
        for i, token in enumerate(generation):
            sys.stdout.write(f"{' ' if i else ''}{token}")
            sys.stdout.flush()
    finally:
        sys.stdout.write("\n")  # the token line ends even when a step fails or Ctrl-C stops it
        sys.stdout.flush()
    print(stats_line(with_load_time(generation.result, load_seconds)))
    return EXIT_OK


def compile_for_generation(model: Any) -> None:
    """Compile what the generation will run, with the command's progress and within its load time: the model's
    capacity form (the KV cache appended in place), else the model's own generic code (compiled lazily)."""
    in_place, _ = model.with_cache_in_place()
    if getattr(model, "target_kind", "cpu") == "fpga":
        return  # an FPGA model lowers each size at its first run (FpgaProgram.code_for)
    if in_place is None and not model.program.value_inputs and model.program.generic_error is None:
        model.compile_generic()


def with_load_time(result: Any, seconds: float) -> Any:
    """The result with the command's compile or load time in its stats (the model reached generate() ready)."""
    seconds += result.stats.load_seconds  # what generate() compiled itself, if anything
    stats = replace(result.stats, load_seconds=seconds, time_to_first_token=seconds + result.stats.prefill_seconds)
    return replace(result, stats=stats)

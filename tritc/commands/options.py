"""Command-line options shared by several commands: the pass options, shapes, threads, target.

    --pipeline NAME | -p LIST, --ternary MODE, --ternary-include/-exclude PAT, --ternary-act float|int8
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import OptionError
from ..limits import NAMES, Limits, parse_limits
from ..passes.pass_manager import Pass


def add_pass_options(parser: argparse.ArgumentParser, *, default_pipeline: str, default_note: str | None = None) -> None:
    """--pipeline, -p and the --ternary* flags, which set options of the fold-ternary step(s)."""
    g = parser.add_argument_group("passes", "The --ternary* flags set options of every fold-ternary step: --ternary MODE "
                                            "is fold-ternary{mode=MODE}, and so on.")
    g.add_argument("--pipeline", metavar="NAME", default=None,
                   help=f"a named pipeline: cpu, fpga or none (default: {default_note or default_pipeline})")
    g.add_argument("-p", "--passes", metavar="LIST", default=None,
                   help='a custom pass list instead, e.g. "infer-shapes,fold-ternary{mode=absmean}"')
    g.add_argument("--ternary", metavar="MODE", default=None,
                   help="fold-ternary's mode: exact (only weights that are trits x scale), absmean (quantise any "
                        "float weight, BitNet b1.58), off")
    g.add_argument("--ternary-include", metavar="PAT", action="append", default=[],
                   help="fold-ternary's include: also fold layers matching this glob (e.g. lm_head.weight); repeatable")
    g.add_argument("--ternary-exclude", metavar="PAT", action="append", default=[],
                   help="fold-ternary's exclude: never fold layers matching this glob; repeatable")
    g.add_argument("--ternary-act", metavar="float|int8", default=None,
                   help="fold-ternary's act: activations of the ternary layers, float or int8 (per-token quantisation)")
    parser.set_defaults(default_pipeline=default_pipeline)


def add_shape_option(parser: argparse.ArgumentParser, default_note: str) -> None:
    parser.add_argument("--shape", metavar="NAME=SIZE", action="append", default=[],
                        help=f"size of a symbolic dim, e.g. --shape batch=1 --shape seq=128 (or batch=1,seq=128); "
                             f"{default_note}")


def add_threads_option(parser: argparse._ActionsContainer, default_note: str = "all cores") -> None:
    parser.add_argument("--threads", metavar="N", type=int, default=None, help=f"threads (default: {default_note})")


def add_limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", metavar="NAME=VALUE", action="append", default=[],
                        help=f"a resource budget (docs/LIMITS.md), e.g. --limit max_tensor_bytes=2GiB "
                             f"--limit max_compile_seconds=600; repeatable. Budgets: {', '.join(NAMES)}")


def limits_of(args: argparse.Namespace) -> Limits:
    """The budgets the --limit options set (the defaults for the others)."""
    return parse_limits(getattr(args, "limit", None) or [])


def add_key_option(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--key", metavar="FILE", default=None,
                        help="the key a signed artifact was signed with (tritc compile --sign-key): the artifact is "
                             "refused unless its signature matches (docs/ARTIFACT.md, Security)")


def read_key_option(path: str | None) -> bytes | None:
    """The key in the file --key or --sign-key names (checked before any model is read), or None."""
    if path is None:
        return None
    from ..runtime.artifact import read_key

    return read_key(path)


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress lines on stderr even when it is not a terminal (default: only on a terminal)")
    g.add_argument("-q", "--quiet", dest="progress", action="store_false", help="no progress lines")


def pass_kwargs(args: argparse.Namespace, default_pipeline: str | None = None) -> dict[str, Any]:
    """The compile_model / build_passes keyword arguments the pass options ask for; `default_pipeline` (else the
    command's) when neither --pipeline nor -p is given."""
    if args.pipeline is not None and args.passes is not None:
        raise OptionError("give --pipeline NAME or -p LIST, not both")
    return {"pipeline": args.pipeline if args.pipeline is not None else default_pipeline or args.default_pipeline,
            "passes": args.passes, "ternary": args.ternary, "ternary_include": tuple(args.ternary_include),
            "ternary_exclude": tuple(args.ternary_exclude), "ternary_act": args.ternary_act}


def ternary_flags_given(args: argparse.Namespace) -> bool:
    return bool(args.ternary is not None or args.ternary_include or args.ternary_exclude or args.ternary_act is not None)


def build_pass_list(args: argparse.Namespace) -> list[Pass]:
    """The passes to run, the --ternary* flags applied (and refused if no fold-ternary step runs)."""
    from ..driver import build_passes

    return build_passes(**pass_kwargs(args))

"""The named pipelines: which passes run, in which order, for each target. Read this first.

Each entry is one pass in the command-line syntax of parse_pass_list. The `--ternary*` flags (the
keywords ternary=, ternary_include=, ... of tritc.compile) are sugar for options of the fold-ternary
step: `--ternary absmean` is `fold-ternary{mode=absmean}`, converted and checked by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

from .pass_manager import OptionError, Pass, configure, parse_pass_list

PIPELINES: dict[str, list[str]] = {
    "cpu": [
        "infer-shapes",                     # types as precise as the rules allow (static and symbolic)
        "canonicalize",                     # gemm -> matmul+add, no-op casts/identities/dropouts out, chains merged
        "fold-constants",                   # constant subgraphs (weight transposes, shape arithmetic) evaluated once
        "eliminate-common-subexpressions",  # one node per repeated computation (shape subgraphs repeat a lot)
        "eliminate-dead-code",              # whatever no output needs
        "fold-ternary",                     # linear layers' weights -> t2 weights (mode exact by default)
        "fuse-bitlinear",                   # BitNet activation quantisation + ternary_matmul -> int8 ternary_matmul
        "fuse-epilogue",                    # rescale, bias, residual add, relu/silu into the ternary kernel's epilogue
        "fuse-attention",                   # softmax(Q K^T * scale + mask) V and ONNX Attention -> fused_attention
        "tile-attention",                   # its query / key blocks from the cache sizes, its scratch in the memory plan
        "fuse-elementwise",                 # elementwise chains -> one fused loop each
        "eliminate-dead-code",              # the float weights the ternary ones replaced
        "schedule-memory",                  # node order lowering the peak; one arena offset per intermediate (last)
    ],
    "fpga": [
        "infer-shapes",
        "canonicalize",
        "fold-constants",
        "eliminate-common-subexpressions",
        "eliminate-dead-code",
        "fold-ternary",
        "fold-radix3",                      # float linear layers (an LM head) -> 5 balanced-ternary planes
        "fuse-bitlinear",
        "fuse-epilogue",
        "quantize-activations",             # float-activation ternary layers -> int8 (the matrix unit takes int8)
        "fuse-attention",
        "eliminate-dead-code",
        "schedule-memory",
    ],
    # No rewriting at all: the imported graph as the interpreter defines it.
    "none": [],
    # What codegen runs on the final IR before making code for some sizes (`--shape`, or every symbol bound
    # when a model cannot have generic code): the sizes substituted (the first step's `bind`), shape arithmetic
    # folded, types re-derived. `tritc dump --pipeline specialise --shape seq=1` shows the result.
    "specialise": [
        "infer-shapes",                     # {bind=[name=size,...]}: symbolic dims -> sizes
        "fold-constants{max-bytes=1048576}",  # shapes, ranges, masks now known; big results stay run-time work
        "eliminate-dead-code",              # the shape arithmetic folding replaced
        "infer-shapes",                     # types from the folded values
    ],
}

# Constants folded while specialising become globals of that code's object file (the weight blob is shared by
# all codes and laid out before); large ones stay run-time computations instead (a ConstantOfShape fill costs
# nothing next to embedding hundreds of megabytes in an object file).
SPECIALISED_FOLD_MAX_BYTES = 1 << 20


def specialise_passes(bind: Sequence[str] = (), *, fold: bool = True) -> list[Pass]:
    """The "specialise" pipeline with `bind` (["batch=1", ...]) given to its first infer-shapes; fold=False
    leaves out fold-constants (for tests of the lowerings folding would replace)."""
    steps = list(PIPELINES["specialise"])
    if bind:
        steps[0] = f"infer-shapes{{bind=[{','.join(bind)}]}}"
    if not fold:
        steps = [s for s in steps if not s.startswith("fold-constants")]
    return parse_pass_list(",".join(steps))


# compile()'s keyword -> (the command-line flag, the option of fold-ternary it sets)
TERNARY_FLAGS: dict[str, tuple[str, str]] = {
    "ternary": ("--ternary", "mode"),
    "ternary_include": ("--ternary-include", "include"),
    "ternary_exclude": ("--ternary-exclude", "exclude"),
    "ternary_act": ("--ternary-act", "act"),
}

TernaryFlag = str | Sequence[str] | None  # a flag's value as given; None or an empty list: not given


def pipeline(name: str, **ternary: TernaryFlag) -> list[Pass]:
    """The passes of a named pipeline, with the --ternary* flags (`ternary`, by compile()'s keywords) applied."""
    if name not in PIPELINES:
        raise OptionError(f"unknown pipeline '{name}' (known: {', '.join(PIPELINES)})")
    passes = parse_pass_list(",".join(PIPELINES[name])) if PIPELINES[name] else []
    return with_ternary_flags(passes, pass_source(name, None), **ternary)


def pass_source(pipeline: str, passes: str | None) -> str:
    """Where the passes come from, for messages: "-p 'LIST'" or "pipeline 'NAME'"."""
    return f"-p '{passes}'" if passes else f"pipeline '{pipeline}'"


def with_ternary_flags(passes: list[Pass], source: str, **ternary: TernaryFlag) -> list[Pass]:
    """`passes` (from `source`, for messages) with each given --ternary* flag set as its option of every fold-ternary
    step. A flag with no fold-ternary step to apply to is an OptionError."""
    unknown = set(ternary) - set(TERNARY_FLAGS)
    if unknown:
        raise TypeError(f"unknown ternary option(s) {', '.join(sorted(unknown))} (known: {', '.join(TERNARY_FLAGS)})")
    given = {key: value for key, value in ternary.items() if value is not None and (isinstance(value, str) or len(value))}
    if not given:
        return list(passes)
    options = {TERNARY_FLAGS[key][1]: value for key, value in given.items()}
    flags = {TERNARY_FLAGS[key][1]: TERNARY_FLAGS[key][0] for key in given}
    if not any(p.name == "fold-ternary" for p in passes):
        verb = "configures" if len(flags) == 1 else "configure"
        raise OptionError(f"{', '.join(flags.values())} {verb} the fold-ternary pass, which the {source} does not run "
                          f"(use --pipeline cpu, or add fold-ternary to -p)")
    return [configure(p, options, flags=flags) if p.name == "fold-ternary" else p for p in passes]

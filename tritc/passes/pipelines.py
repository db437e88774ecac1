"""The named pipelines: which passes run, in which order, for each target. Read this first.

Each entry is one pass in the command-line syntax of parse_pass_list; `ternary` options of
`tritc compile` / `tritc dump` (--ternary, --ternary-include, --ternary-exclude) are applied to the
fold-ternary step.
"""

from __future__ import annotations

from .pass_manager import OptionError, Pass, parse_pass_list

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
        "fuse-elementwise",                 # elementwise chains -> one fused loop each
        "eliminate-dead-code",              # the float weights the ternary ones replaced
    ],
    "fpga": [
        "infer-shapes",
        "canonicalize",
        "fold-constants",
        "eliminate-common-subexpressions",
        "eliminate-dead-code",
        "fold-ternary",
        "fuse-bitlinear",
        "fuse-epilogue",
        "eliminate-dead-code",
    ],
    # No rewriting at all: the imported graph as the interpreter defines it.
    "none": [],
}


def pipeline(name: str, *, ternary: str | None = None, include: tuple[str, ...] = (),
             exclude: tuple[str, ...] = (), act: str | None = None) -> list[Pass]:
    """The passes of a named pipeline, with the ternary options applied to fold-ternary."""
    if name not in PIPELINES:
        raise OptionError(f"unknown pipeline '{name}' (known: {', '.join(PIPELINES)})")
    return with_ternary_options(parse_pass_list(",".join(PIPELINES[name])) if PIPELINES[name] else [],
                                ternary=ternary, include=include, exclude=exclude, act=act)


def with_ternary_options(passes: list[Pass], *, ternary: str | None = None, include: tuple[str, ...] = (),
                         exclude: tuple[str, ...] = (), act: str | None = None) -> list[Pass]:
    """`passes` with fold-ternary's mode and layer patterns overridden where given."""
    import dataclasses

    out = []
    for p in passes:
        if p.name == "fold-ternary":
            changes = {}
            if ternary is not None:
                if ternary not in ("exact", "absmean", "off"):
                    raise OptionError(f"--ternary must be exact, absmean or off, not '{ternary}'")
                changes["mode"] = ternary
            if include:
                changes["include"] = tuple(include)
            if exclude:
                changes["exclude"] = tuple(exclude)
            if act is not None:
                if act not in ("float", "int8"):
                    raise OptionError(f"--ternary-act must be float or int8, not '{act}'")
                changes["act"] = act
            p = dataclasses.replace(p, **changes)
        out.append(p)
    return out

"""Sizes for a graph's symbolic dims that its shape rules admit, found by trying: each try binds the sizes and
specialises the graph (shape inference and folding, no LLVM), which takes milliseconds for small models.

    choose_sizes(graph, fixed={"batch": 1}, preferred={"height": 4, "width": 4})
      -> SizeChoice(sizes={"batch": 1, "height": 8, "width": 8}, searched=("height", "width"), ...)

Used by `tritc verify` / `bench` (the sizes of their random inputs) and by the compile driver (the shapes compiled
ahead of time). docs/CLI.md describes the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ...errors import CompilerError, OptionError
from ...ir import dims as dimlib
from ...ir.graph import Graph
from ...ir.types import TensorType
from ...limits import DEFAULT_LIMITS
from .compiler import specialize, symbols_of

MAX_SIZE = 4096  # the largest size the search tries for a dim
MAX_TRIES = 48  # specialisations one search may run
MAX_INPUT_BYTES = DEFAULT_LIMITS.max_input_bytes  # the inputs a choice of sizes may need (verify and bench make them)
_PASS_PREFIX = re.compile(r"^pass '[^']*' \([^)]*\): ")


@dataclass(frozen=True)
class SizeChoice:
    """Sizes for every symbol: `fixed`, then `preferred` if they fit, else the smallest that fit (`searched`)."""

    sizes: dict[str, int]
    searched: tuple[str, ...] = ()  # symbols whose preferred size the search replaced
    misfit: str | None = None  # why the preferred sizes did not fit, when they did not


def misfit(graph: Graph, sizes: Mapping[str, int], max_input_bytes: int = MAX_INPUT_BYTES) -> str | None:
    """None when `graph` specialises at `sizes` with inputs within the budget, else why not (one line)."""
    need = input_bytes((v.type for v in graph.inputs), sizes)
    if need > max_input_bytes:
        return (f"its inputs would take {need / (1 << 30):.1f} GiB ({need} bytes), over the limit "
                f"max_input_bytes={max_input_bytes}")
    try:
        specialize(graph, sizes)  # a pass that crashes raises InternalError (a bug, not a size the model refuses)
    except CompilerError as e:
        # "pass 'infer-shapes{bind=[...]}' (the first pass): node ...": the sizes are the caller's, the node is news
        return _PASS_PREFIX.sub("", " ".join(str(e).split()), count=1)
    return None


def input_bytes(types: Iterable[TensorType], sizes: Mapping[str, int]) -> int:
    """Bytes of tensors of these types at `sizes`; a dim of unknown size counts as 1, an unknown rank as nothing."""
    total = 0
    for t in types:
        if t.shape is None:
            continue
        n = t.dtype.itemsize
        for d in t.shape:
            value = dimlib.evaluate(d, dict(sizes)) if d is not None else None
            n *= max(value, 0) if value is not None else 1
        total += n
    return total


def candidate_sizes(graph: Graph, limit: int = MAX_SIZE) -> tuple[list[int], list[int]]:
    """(powers of two up to `limit`, the other static dims that meet a symbolic dim at some node): a symbol that must
    equal a size the model fixes (an Add with a position table of 77 rows, a Reshape to [5,3]) finds it among the
    latter."""
    powers = [1 << k for k in range(limit.bit_length()) if 1 << k <= limit]
    met: set[int] = set()
    for node in graph:
        values = [v for v in (*node.inputs, *node.outputs) if v is not None]
        shapes = [v.type.shape for v in values if v.type.shape is not None]
        if any(isinstance(d, str) for s in shapes for d in s):
            met.update(d for s in shapes for d in s if isinstance(d, int) and 1 < d <= limit)
    return powers, sorted(met - set(powers))


def choose_sizes(graph: Graph, fixed: Mapping[str, int], preferred: Mapping[str, int], *,
                 max_input_bytes: int = MAX_INPUT_BYTES) -> SizeChoice:
    """`fixed` plus `preferred` for the other symbols if the graph's shape rules admit them; else `fixed` plus the
    smallest sizes that fit for the others. OptionError naming the dims and `--shape` when no tried size fits."""
    symbols = symbols_of(graph)
    free = [s for s in symbols if s not in fixed]
    first = {s: fixed[s] if s in fixed else preferred[s] for s in symbols}
    if not free:
        return SizeChoice(first)
    why = misfit(graph, first, max_input_bytes)
    if why is None:
        return SizeChoice(first)
    found = smallest_fit(lambda sizes: misfit(graph, sizes, max_input_bytes) is None, dict(fixed), free,
                         candidate_sizes(graph))
    if found is None:
        at = ", ".join(f"{s}={first[s]}" for s in free)
        raise OptionError(f"no size tried for dim{'s' if len(free) > 1 else ''} {', '.join(free)} fits the model "
                          f"(1 to {MAX_SIZE}; at {at}: {why}); give {'them' if len(free) > 1 else 'it'} with --shape "
                          f"{','.join(f'{s}=SIZE' for s in free)}")
    return SizeChoice({s: found[s] for s in symbols}, tuple(s for s in free if found[s] != first[s]), why)


def smallest_fit(fits: Callable[[dict[str, int]], bool], fixed: dict[str, int], free: Sequence[str],
                 candidates: tuple[list[int], list[int]], max_tries: int = MAX_TRIES) -> dict[str, int] | None:
    """Sizes for `free` that fit, as small as the tries allow: the first candidate that fits every free symbol at
    once (powers of two first, then the model's own sizes), then each symbol lowered to its smallest candidate that
    still fits with the others held. None when no candidate fits them all."""
    tries = 0
    for sizes in candidates:
        for c in sizes:
            if tries >= max_tries:
                return None
            trial = {**fixed, **{s: c for s in free}}
            tries += 1
            if fits(trial):
                return _lower_each(fits, trial, free, sorted(set(candidates[0]) | set(sizes)), max_tries - tries)
    return None


def _lower_each(fits: Callable[[dict[str, int]], bool], sizes: dict[str, int], free: Sequence[str],
                candidates: list[int], budget: int) -> dict[str, int]:
    """`sizes` with each free symbol in turn lowered to the smallest candidate that fits (within `budget` tries)."""
    for s in free:
        for c in candidates:
            if c >= sizes[s] or budget <= 0:
                break
            budget -= 1
            trial = {**sizes, s: c}
            if fits(trial):
                sizes = trial
                break
    return sizes

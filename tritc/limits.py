"""Resource budgets: what an untrusted model (or the inputs made for it) may cost before tritc refuses it.

One frozen `Limits` travels from the API (`limits=`) or the command line (`--limit NAME=VALUE`) to the frontend,
the pass pipeline, the compile driver and the runtime. A leaf module: it imports nothing from tritc but the errors.
Every breach is a ResourceLimitError whose message ends with the limit's name and value (docs/LIMITS.md).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import OptionError, ResourceLimitError

GiB = 2**30


@dataclass(frozen=True)
class Limits:
    """Budgets in bytes, counts and seconds. The defaults admit a 2B-parameter model in float32 (8 GiB of weights,
    a 2 GiB embedding) with room to spare; lower them to compile untrusted models on a small machine."""

    max_model_bytes: int = 2**31 - 1  # protobuf's own limit for one serialized message
    max_nodes: int = 1_000_000
    max_nesting_depth: int = 32  # subgraphs (If, Loop, Scan bodies) inside subgraphs
    max_rank: int = 32  # of any declared, inferred or stored tensor shape
    max_tensor_bytes: int = 16 * GiB  # one initializer, Constant or attribute tensor
    max_total_weight_bytes: int = 64 * GiB  # all of them together
    max_fold_bytes: int = 16 * GiB  # one node's constant-folding result (a ConstantOfShape bomb)
    max_compile_seconds: float = 4 * 3600.0  # wall time of import + passes + code generation, checked between steps
    max_input_bytes: int = GiB  # the inputs verify and bench generate, and each .npy input a command reads
    max_arena_bytes: int = 64 * GiB  # a run's intermediate values and kernel scratch at its sizes

    def exceeded(self, name: str, value: float, what: str, unit: str = "bytes", hint: str = "") -> ResourceLimitError:
        """The error for `what` needing `value` of budget `name`, one line: "<what> <value> <unit>, over the limit
        <name>=<limit>[; <hint>] (--limit <name>=N raises it)"."""
        return ResourceLimitError(f"{what} {_fmt(value)}{' ' + unit if unit else ''}, over the limit {name}={_fmt(getattr(self, name))}"
                                  f"{'; ' + hint if hint else ''} (--limit {name}=N raises it)")


DEFAULT_LIMITS = Limits()


@dataclass
class CompileClock:
    """The compile's wall time against max_compile_seconds, checked between steps (a pass, code generation): the
    step that is running when the budget runs out finishes, the next one does not start."""

    limits: Limits
    what: str  # the model, for the message
    start: float = field(default_factory=time.monotonic)

    def check(self, before: str) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed > self.limits.max_compile_seconds:
            raise self.limits.exceeded("max_compile_seconds", round(elapsed, 3), f"{self.what}: compiling had taken",
                                       f"seconds before {before}")
NAMES = tuple(f.name for f in dataclasses.fields(Limits))
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
           "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_VALUE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-z]*)\s*")


def parse_limits(items: Iterable[str], base: Limits = DEFAULT_LIMITS) -> Limits:
    """`base` with `NAME=VALUE` items applied (VALUE: a number, bytes with an optional k/M/G/T or KiB/MiB/GiB/TiB
    suffix, seconds for max_compile_seconds); OptionError naming the item and the known limits."""
    changes: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in NAMES:
            raise OptionError(f"bad --limit '{item}' (expected NAME=VALUE; limits: {', '.join(NAMES)})")
        m = _VALUE.fullmatch(text.lower())
        scale = _SUFFIX.get(m.group(2)) if m else None
        if m is None or scale is None:
            raise OptionError(f"bad --limit '{item}': '{text}' is not a number (with an optional suffix such as GiB)")
        value = float(m.group(1)) * scale
        if name != "max_compile_seconds" and value != int(value):
            raise OptionError(f"bad --limit '{item}': {name} is a whole number")
        changes[name] = value if name == "max_compile_seconds" else int(value)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)

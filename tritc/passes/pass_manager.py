"""Passes and the PassManager that runs them: verify after each, dump after any, time each.

A pass is a frozen dataclass with a kebab-case `name` and its options as fields; `run(graph)`
edits the graph in place and returns whether it changed anything. `parse_pass_list` reads the
command-line form ``"fold-constants,fold-ternary{mode=absmean,exclude=lm_head}"``.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import CompilerError, OptionError, PassError, VerificationError
from ..ir.graph import Graph
from ..ir.verify import verify


@dataclass(frozen=True)
class Pass:
    """Base of every pass. Subclasses set `name` and declare options as dataclass fields."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def run(self, graph: Graph) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """The pass as it is written on the command line, options included when not default."""
        opts = []
        for f in option_fields(type(self)):
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
            if value != default:
                opts.append(f"{_kebab(f.name)}={_format_option(value)}")
        return self.name + (f"{{{','.join(opts)}}}" if opts else "")


PASSES: dict[str, type[Pass]] = {}


def option_fields(cls: type[Pass]) -> list[dataclasses.Field]:
    """The dataclass fields that are options (results such as a report are not)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("option", True)]


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its name."""
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"pass name {cls.name!r} is empty or taken")
    PASSES[cls.name] = cls
    return cls


# ---- the pass list syntax -------------------------------------------------------------------

_ITEM = re.compile(r"\s*([a-z][a-z0-9-]*)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def parse_pass_list(text: str) -> list[Pass]:
    """Passes from ``name{opt=value,...},name,...``; OptionError names what is wrong."""
    from . import load_all

    load_all()
    passes: list[Pass] = []
    pos = 0
    text = text.strip()
    if not text:
        raise OptionError("empty pass list")
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if m is None or m.end() == pos:
            raise OptionError(f"malformed pass list at {text[pos:]!r} (expected name or name{{option=value,...}})")
        name, opts = m.group(1), m.group(2)
        passes.append(make_pass(name, _parse_options(name, opts or "")))
        pos = m.end()
    return passes


def make_pass(name: str, options: dict[str, str]) -> Pass:
    from . import load_all

    load_all()
    cls = PASSES.get(name)
    if cls is None:
        close = [p for p in PASSES if p.split("-")[-1] in name or name in p]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OptionError(f"unknown pass '{name}'{hint} (known: {', '.join(sorted(PASSES))})")
    fields = {f.name: f for f in option_fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in options.items():
        fname = key.replace("-", "_")
        if fname not in fields:
            known = ", ".join(_kebab(f) for f in fields) or "none"
            raise OptionError(f"pass '{name}' has no option '{key}' (options: {known})")
        kwargs[fname] = _convert(name, key, raw, hints[fname])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise OptionError(f"pass '{name}': {e}") from None


def _parse_options(name: str, text: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    if not text.strip():
        return opts
    for part in _split_options(text):
        if "=" not in part:
            raise OptionError(f"pass '{name}': malformed option '{part.strip()}' (expected option=value)")
        k, v = part.split("=", 1)
        k = k.strip()
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", k):
            raise OptionError(f"pass '{name}': malformed option name '{k}'")
        if k in opts:
            raise OptionError(f"pass '{name}': option '{k}' is given twice")
        opts[k] = v.strip()
    return opts


def _split_options(text: str) -> list[str]:
    """Split on commas that are not inside [...] lists."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _convert(pass_name: str, key: str, raw: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return raw
        if origin is typing.Literal:
            if raw not in args:
                raise OptionError(f"pass '{pass_name}': option '{key}' must be one of {', '.join(args)}, not '{raw}'")
            return raw
        if origin is tuple:
            body = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
            items = [s.strip() for s in re.split(r"[;|]" if "[" not in raw else r",", body) if s.strip()]
            return tuple(items)
    except ValueError:
        pass
    raise OptionError(f"pass '{pass_name}': option '{key}' = '{raw}' is not a valid {getattr(hint, '__name__', hint)}")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _format_option(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- running --------------------------------------------------------------------------------


@dataclass
class PassTiming:
    name: str
    seconds: float
    changed: bool


@dataclass
class PassManager:
    """Runs passes in order. After each: verify (unless disabled), time it, and call `after`
    (e.g. to dump the IR) with the step number, the pass and the graph."""

    passes: Sequence[Pass]
    verify_each: bool = True
    after: Callable[[int, Pass, Graph], None] | None = None
    progress: Callable[[str], None] | None = None
    timings: list[PassTiming] = field(default_factory=list)

    def run(self, graph: Graph) -> bool:
        changed_any = False
        done: list[str] = []
        for step, p in enumerate(self.passes, 1):
            if self.progress:
                self.progress(f"[{step}/{len(self.passes)}] {p.describe()}")
            t0 = time.perf_counter()
            try:
                changed = bool(p.run(graph))
                if self.verify_each:
                    verify(graph)
            except VerificationError as e:
                raise PassError(f"pass '{p.describe()}' left an invalid graph{_after(done)}: {e}") from e
            except CompilerError as e:
                # A user-facing problem found by a pass (e.g. a pattern that matches nothing): keep its class.
                e.args = (f"pass '{p.describe()}'{_after(done)}: {e}",)
                raise
            except Exception as e:
                raise PassError(f"pass '{p.describe()}' failed{_after(done)}: {type(e).__name__}: {e}") from e
            self.timings.append(PassTiming(p.describe(), time.perf_counter() - t0, changed))
            changed_any |= changed
            done.append(p.describe())
            if self.after is not None:
                self.after(step, p, graph)
        return changed_any

    def timing_table(self) -> str:
        """A table of time per pass (and whether it changed the graph)."""
        width = max([len(t.name) for t in self.timings] + [4])
        lines = [f"{'pass':<{width}}  {'ms':>9}  changed"]
        for t in self.timings:
            lines.append(f"{t.name:<{width}}  {t.seconds * 1e3:9.2f}  {'yes' if t.changed else 'no'}")
        total = sum(t.seconds for t in self.timings)
        lines.append(f"{'total':<{width}}  {total * 1e3:9.2f}")
        return "\n".join(lines)


def _after(done: list[str]) -> str:
    if not done:
        return " (the first pass)"
    return f" (after {', '.join(done)})"

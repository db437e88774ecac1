"""Passes and the PassManager that runs them: verify after each, dump after any, a StepResult for each.

A pass is a frozen dataclass with a kebab-case `name` and its options as fields; `run(graph)` edits the graph
in place and returns whether it changed anything, or a PassResult (changed, data) when it has a report.
`parse_pass_list` reads the command-line form ``"fold-constants,fold-ternary{mode=absmean,exclude=lm_head}"``;
`configure` applies options written the same way to a pass of a pipeline (the `--ternary*` flags).
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import CompilerError, InternalError, OptionError, VerificationError
from ..ir.graph import Graph
from ..ir.verify import verify


@dataclass(frozen=True)
class PassResult:
    """What a pass's run returns when it has more to say than changed-or-not: `data` (e.g. fold-ternary's report) is
    kept in the PassManager's record of the step. Truthy when the graph changed, like the bool a pass may return."""

    changed: bool
    data: object = None

    def __bool__(self) -> bool:
        return self.changed


@dataclass(frozen=True)
class Pass:
    """Base of every pass. Subclasses set `name` and declare options as dataclass fields."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def run(self, graph: Graph) -> bool | PassResult:  # pragma: no cover - abstract
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

# An option's value as written: its text, or the items of a list option one by one (a repeatable flag).
OptionText = str | Sequence[str]


def option_fields(cls: type[Pass]) -> list[dataclasses.Field]:
    """The options of a pass: all its dataclass fields (what a run finds goes into its PassResult, not a field)."""
    return list(dataclasses.fields(cls))


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


def make_pass(name: str, options: Mapping[str, OptionText] | None = None) -> Pass:
    """The pass called `name` with `options` as written (``{"mode": "absmean"}``); OptionError names what is wrong."""
    cls = pass_class(name)
    try:
        return cls(**_convert_options(cls, options or {}, {}))
    except (TypeError, ValueError) as e:
        raise OptionError(f"{_subject(name, None)}: {e}") from None


def configure(p: Pass, options: Mapping[str, OptionText], *, flags: Mapping[str, str] | None = None) -> Pass:
    """`p` with `options` as written replacing its own: how `--ternary absmean` becomes fold-ternary{mode=absmean}
    for a step of a pipeline. The same conversion and messages as make_pass; `flags` maps an option to the
    command-line flag that gave it, which the messages name."""
    try:
        return dataclasses.replace(p, **_convert_options(type(p), options, flags or {}))
    except (TypeError, ValueError) as e:
        raise OptionError(f"{_subject(p.name, flags)}: {e}") from None


def pass_class(name: str) -> type[Pass]:
    from . import load_all

    load_all()
    cls = PASSES.get(name)
    if cls is None:
        close = [p for p in PASSES if p.split("-")[-1] in name or name in p]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OptionError(f"unknown pass '{name}'{hint} (known: {', '.join(sorted(PASSES))})")
    return cls


def _convert_options(cls: type[Pass], options: Mapping[str, OptionText], flags: Mapping[str, str]) -> dict[str, Any]:
    """Dataclass keyword arguments from options as written, each checked against its field's type hint."""
    fields = [f.name for f in option_fields(cls)]  # in declaration order, for the message
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in options.items():
        fname = key.replace("-", "_")
        if fname not in fields:
            known = ", ".join(_kebab(f) for f in fields) or "none"
            raise OptionError(f"pass '{cls.name}' has no option '{key}' (options: {known})")
        label = f"{flags[key]} (option '{key}' of pass '{cls.name}')" if key in flags else f"pass '{cls.name}': option '{key}'"
        kwargs[fname] = _convert(label, raw, hints[fname])
    return kwargs


def _subject(name: str, flags: Mapping[str, str] | None) -> str:
    return f"{', '.join(flags.values())} (pass '{name}')" if flags else f"pass '{name}'"


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


def _convert(label: str, raw: OptionText, hint: Any) -> Any:
    """One option's value, as written, converted to its field's type: the one validator of pass options. `raw` is the
    text of the value, or (for a tuple option) its items one by one, as a repeatable flag gives them."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        if isinstance(raw, str):
            body = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
            raw = re.split(r"[;|]" if "[" not in raw else r",", body)
        item_hint = args[0] if args else str
        return tuple(_convert(label, item.strip(), item_hint) for item in raw if item.strip())
    if not isinstance(raw, str):
        raise OptionError(f"{label} takes one value, not {len(raw)}")
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
                raise OptionError(f"{label} must be one of {', '.join(args)}, not '{raw}'")
            return raw
    except ValueError:
        pass
    raise OptionError(f"{label} = '{raw}' is not a valid {getattr(hint, '__name__', hint)}")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _format_option(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one step of a PassManager run did: its number (1-based), the pass, whether it changed the graph, how long
    it took, and the pass's data (e.g. fold-ternary's TernaryReport; None for most passes)."""

    step: int
    pass_: Pass
    changed: bool
    seconds: float
    data: object = None

    @property
    def name(self) -> str:
        return self.pass_.describe()


@dataclass
class PassManager:
    """Runs passes in order. After each: verify (unless disabled), record a StepResult, and call `after`
    (e.g. to dump the IR) with the step number, the pass and the graph."""

    passes: Sequence[Pass]
    verify_each: bool = True
    after: Callable[[int, Pass, Graph], None] | None = None
    progress: Callable[[str], None] | None = None
    before_each: Callable[[str], None] | None = None  # called with "pass 'NAME'" before each step (the compile clock)
    steps: list[StepResult] = field(default_factory=list)  # of the last run, one per step

    def run(self, graph: Graph) -> bool:
        """Run every pass on `graph` (in place); whether any changed it. A CompilerError raised by a pass (a problem
        with the input) keeps its class, its message prefixed with the pass; anything else, and a graph left invalid,
        is a tritc bug: InternalError, from the original exception."""
        self.steps = []
        if self.verify_each and self.passes:
            try:  # so that an invalid graph after a pass is that pass's fault, not the input's
                verify(graph)
            except VerificationError as e:
                e.args = (f"before the first pass: {e}",)
                raise
        done: list[str] = []
        for step, p in enumerate(self.passes, 1):
            if self.before_each is not None:
                self.before_each(f"pass '{p.describe()}'")
            if self.progress:
                self.progress(f"[{step}/{len(self.passes)}] {p.describe()}")
            t0 = time.perf_counter()
            try:
                result = p.run(graph)
            except CompilerError as e:
                # A problem with the input found by a pass (e.g. a pattern that matches nothing): keep its class.
                e.args = (f"pass '{p.describe()}'{_after(done)}: {e}",)
                raise
            except Exception as e:
                raise InternalError(f"pass '{p.describe()}' failed{_after(done)}: {type(e).__name__}: {e}") from e
            if self.verify_each:
                try:
                    verify(graph)
                except VerificationError as e:
                    raise InternalError(f"pass '{p.describe()}' left an invalid graph{_after(done)}: {e}") from e
            if not isinstance(result, PassResult):
                result = PassResult(bool(result))
            self.steps.append(StepResult(step, p, result.changed, time.perf_counter() - t0, result.data))
            done.append(p.describe())
            if self.after is not None:
                self.after(step, p, graph)
        return any(s.changed for s in self.steps)

    def result_of(self, name: str) -> object:
        """The data of the last step of the pass called `name` (e.g. "fold-ternary"), or None if none ran."""
        return next((s.data for s in reversed(self.steps) if s.pass_.name == name), None)

    def timing_table(self) -> str:
        """A table of time per step (and whether it changed the graph), one line each, the total last."""
        width = max([len(s.name) for s in self.steps] + [4])
        lines = [f"{'pass':<{width}}  {'ms':>9}  changed"]
        for s in self.steps:
            lines.append(f"{s.name:<{width}}  {s.seconds * 1e3:9.2f}  {'yes' if s.changed else 'no'}")
        total = sum(s.seconds for s in self.steps)
        lines.append(f"{'total':<{width}}  {total * 1e3:9.2f}")
        return "\n".join(lines) + "\n"


def _after(done: list[str]) -> str:
    if not done:
        return " (the first pass)"
    return f" (after {', '.join(done)})"

"""What a call of compiled code needs to know about its sizes, as one Python function made from the code's size
expressions: its outputs' shapes, its arena size, and whether the relations it assumes hold.

    fn = call_sizes(code, ["batch", "seq", "past"], bound={"batch", "seq", "past"})
    shapes, arena, ok = fn(1, 1, 127)     # the dims array's order; (a code whose sizes need an unbound symbol: None)

The runtime calls it once per run instead of walking the expression trees (symbolic.evaluate) for every dim: the
expressions are emitted as straight-line Python, one assignment per sub-expression (shared ones once), so depth never
meets the parser's nesting limit. `ok` is False when a relation or check fails: the runtime then runs the slow checks
(runtime/model.py, check_relations) for their message. Results equal symbolic.evaluate's (a test holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from ...ir import dims as dimlib
from .compiler import Specialization
from .symbolic import Size, Sym, size, symbols

SizeFunction = Callable[..., tuple[tuple[tuple[int, ...], ...], int, bool]]

_FORMS = {  # kind -> Python over the operands' names (each a name or an int literal: evaluated once)
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "max": "max({0}, {1})", "min": "min({0}, {1})",
    "div": "({0} // {1} if {1} else 0)", "mod": "({0} % {1} if {1} else 0)", "align": "({0} + {1} - 1) // {1} * {1}",
    "if1": "({1} if {0} == 1 else {2})",
}


class _Emitter:
    """Straight-line Python for size expressions over the arguments s0, s1, ... (one per symbol)."""

    def __init__(self, symbols: Sequence[str]):
        self.arg = {s: f"s{i}" for i, s in enumerate(symbols)}
        self.lines: list[str] = []
        self.names: dict[str, str] = {}  # Sym key -> the temporary holding it

    def __call__(self, x: Size) -> str:
        """The name (or literal) holding x, emitting what it needs first: operands before the forms that use them,
        walked with a stack, not recursion (an arena's max over hundreds of schedule steps is that deep)."""
        stack = [x]
        while stack:
            y = stack[-1]
            if isinstance(y, int) or y.key in self.names:
                stack.pop()
                continue
            todo = [a for a in y.args if isinstance(a, Sym) and a.key not in self.names] if y.kind != "poly" else []
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if y.kind == "poly":
                expr = self.poly(y.args[0])
            else:
                expr = _FORMS[y.kind].format(*(self.ref(a) for a in y.args))
            self.names[y.key] = name = f"t{len(self.names)}"
            self.lines.append(f"    {name} = {expr}")
        return self.ref(x)

    def ref(self, x: Size) -> str:
        return self.names[x.key] if isinstance(x, Sym) else str(int(x))

    def poly(self, text: str) -> str:
        terms = [" * ".join([str(c), *(self.arg[s] for s in monomial)]) for monomial, c in
                 sorted((dimlib.to_poly(text) or {}).items())]
        return " + ".join(terms) or "0"


def size_function(shapes: Sequence[Sequence[Size]], arena: Size, conditions: Sequence[tuple[Size, str, Size]],
                  order: Sequence[str]) -> SizeFunction:
    """f(*dims) -> (shapes, arena, every condition holds), dims in the order of the symbols `order` (every symbol
    the expressions use must be among them). A condition is (a, "=" or ">=", b)."""
    emit = _Emitter(order)
    out_shapes = [f"({''.join(emit(d) + ', ' for d in shape)})" for shape in shapes]
    out_arena = emit(arena)
    tests = [f"{emit(a)} {'==' if how == '=' else '>='} {emit(b)}" for a, how, b in conditions]
    source = "\n".join([f"def sizes({', '.join(emit.arg.values())}):", *emit.lines,
                        f"    return ({''.join(s + ', ' for s in out_shapes)}), {out_arena}, "
                        f"{' and '.join(f'({t})' for t in tests) or 'True'}", ""])
    scope: dict[str, Any] = {}
    exec(compile(source, "<tritc sizes>", "exec"), scope)  # noqa: S102 (our own text: names s<i>, t<i>, int literals)
    fn = scope["sizes"]
    fn.source = source
    return fn


def call_sizes(code: Specialization, order: Sequence[str], bound: Collection[str]) -> SizeFunction | None:
    """The size function of a call of `code` whose inputs bind the symbols `bound`: its output shapes and arena
    (None when they need a symbol no input binds: the runtime's slow path says so), and the code's relations and
    checks (`check_relations`' rule: one with an unbound symbol is skipped, as dims.evaluate gives None for it)."""
    out = [[size(d) for d in (t.shape or ())] for t in code.output_types]
    arena = code.arena_bytes
    used = set().union(*(symbols(d) for shape in out for d in shape), symbols(arena))
    if not used <= set(bound) or not used <= set(order):
        return None
    conditions: list[tuple[Size, str, Size]] = []
    for symbol, dim in code.relations.items():
        if symbol in bound and dimlib.symbols(dim) <= set(bound):
            conditions.append((size(symbol), "=", size(dim)))
    for a, b, _where, *how in code.checks:
        if (dimlib.symbols(a) | dimlib.symbols(b)) <= set(bound):
            conditions.append((size(a), how[0] if how else "=", size(b)))
    if not set().union(*(symbols(x) for c in conditions for x in (c[0], c[2]))) <= set(order):
        return None
    return size_function(out, arena, conditions, order)


__all__ = ["SizeFunction", "call_sizes", "size_function"]

"""Arithmetic on dims, static or symbolic, for type rules and shape inference.

A symbolic dim is a string holding a polynomial in named symbols with integer coefficients
(``batch``, ``past+seq``, ``2*heads*seq``). Sums, differences and products stay exact; a
division is kept only when it is exact, otherwise the result is unknown (None). Names that are
not identifiers (ONNX allows any dim_param text; the frontend names unknown input dims `x.0`) are
opaque symbols; inside a polynomial they are written as quoted strings (``"x.0"+1``), which parse back.
"""

from __future__ import annotations

import ast
import contextlib
import json
import keyword
from collections.abc import Iterator
from contextvars import ContextVar
from functools import lru_cache

from .types import Dim

Poly = dict[tuple[str, ...], int]  # monomial (sorted symbol names) -> coefficient


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[tuple[tuple[str, ...], int], ...] | None:
    try:
        tree = ast.parse(text, mode="eval").body
        poly = _from_ast(tree)
    except (SyntaxError, ValueError, RecursionError):
        return None
    return None if poly is None else tuple(sorted(poly.items()))


def _from_ast(node: ast.AST) -> Poly | None:
    if isinstance(node, ast.Name):
        return {(node.id,): 1}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {(node.value,): 1}  # an opaque symbol, as from_poly writes it
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return {(): node.value} if node.value else {}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        p = _from_ast(node.operand)
        return None if p is None else {m: -c for m, c in p.items()}
    if isinstance(node, ast.BinOp):
        a, b = _from_ast(node.left), _from_ast(node.right)
        if a is None or b is None:
            return None
        if isinstance(node.op, ast.Add):
            return _add(a, b)
        if isinstance(node.op, ast.Sub):
            return _add(a, {m: -c for m, c in b.items()})
        if isinstance(node.op, ast.Mult):
            return _mul(a, b)
        if isinstance(node.op, (ast.Div, ast.FloorDiv)):
            return _div(a, b)
    return None


def _add(a: Poly, b: Poly) -> Poly:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0) + c
        if out[m] == 0:
            del out[m]
    return out


def _mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
            if out[m] == 0:
                del out[m]
    return out


def _div(a: Poly, b: Poly) -> Poly | None:
    """a / b when b is a single monomial dividing every term of a exactly, else None."""
    if len(b) != 1:
        return None
    ((mb, cb),) = b.items()
    out: Poly = {}
    for ma, ca in a.items():
        rest = list(ma)
        for s in mb:
            if s not in rest:
                return None
            rest.remove(s)
        if ca % cb:
            return None
        out[tuple(rest)] = ca // cb
    return out


def is_polynomial(text: str) -> bool:
    """Whether `text` is an integer polynomial in named symbols (what unquoted dims may be)."""
    return _parse(text) is not None


def to_poly(d: Dim) -> Poly | None:
    if d is None:
        return None
    if isinstance(d, int):
        return {(): d} if d else {}
    parsed = _parse(d)
    if parsed is None:
        return {(d,): 1}  # an opaque symbol
    return dict(parsed)


def from_poly(p: Poly | None) -> Dim:
    """The dim a polynomial stands for: an int if constant, else its canonical text."""
    if p is None:
        return None
    if not p:
        return 0
    if list(p) == [()]:
        return p[()]
    if len(p) == 1 and next(iter(p.values())) == 1 and len(next(iter(p))) == 1:
        return next(iter(p))[0]  # one symbol: its own name, opaque or not
    terms = []
    for m, c in sorted(p.items(), key=lambda mc: (len(mc[0]) == 0, mc[0])):
        names = [s if s.isidentifier() and not keyword.iskeyword(s) else json.dumps(s) for s in m]
        body = "*".join(([str(abs(c))] if abs(c) != 1 or not names else []) + names)
        terms.append(("-" if c < 0 else "+") + body)
    text = "".join(terms)
    return text[1:] if text.startswith("+") else text


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    pa, pb = to_poly(a), to_poly(b)
    return None if pa is None or pb is None else from_poly(_add(pa, pb))


def sub(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    pa, pb = to_poly(a), to_poly(b)
    return None if pa is None or pb is None else from_poly(_add(pa, {m: -c for m, c in pb.items()}))


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 0 or b == 0:
        return 0
    pa, pb = to_poly(a), to_poly(b)
    return None if pa is None or pb is None else from_poly(_mul(pa, pb))


def div_exact(a: Dim, b: Dim) -> Dim:
    """a / b if it divides exactly (statically or symbolically), else None."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b if b and a % b == 0 else None
    pa, pb = to_poly(a), to_poly(b)
    return None if pa is None or pb is None else from_poly(_div(pa, pb))


def product(dims: list[Dim] | tuple[Dim, ...]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
        if out is None:
            return None
    return out


def equal(a: Dim, b: Dim) -> bool | None:
    """True or False when provable, None when it depends on unknown values."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    pa, pb = to_poly(a), to_poly(b)
    if pa == pb:
        return True
    return None


# ---- assumptions: dims a type rule needs equal but cannot prove equal (checked at run time) ----------------------

_ASSUMED: ContextVar[list[tuple] | None] = ContextVar("tritc_assumed_equal", default=None)
WHERE: ContextVar[str] = ContextVar("tritc_assumed_where", default="")


def assume_equal(a: Dim, b: Dim) -> bool:
    """False when a and b are provably different; else True. When their equality depends on the sizes (symbolic
    dims that are not the same polynomial), the rule goes on as if they were equal, and, while `recording()`,
    the assumption is noted with WHERE (the node being inferred) for the generated code's callers to check."""
    r = equal(a, b)
    if r is None and a is not None and b is not None:
        found = _ASSUMED.get()
        if found is not None:
            found.append((a, b, WHERE.get()))
    return r is not False


def assume_nonnegative(d: Dim) -> None:
    """A rule goes on as if `d` >= 0 (a Range of limit - start elements); noted, like assume_equal, unless provable
    (a polynomial whose coefficients are all >= 0)."""
    p = to_poly(d)
    if p is None or all(c >= 0 for c in p.values()):
        return
    found = _ASSUMED.get()
    if found is not None:
        found.append((d, 0, WHERE.get(), ">="))


def recording_active() -> bool:
    return _ASSUMED.get() is not None


@contextlib.contextmanager
def recording() -> Iterator[list[tuple]]:
    """Collect what type rules assume inside the block: (a, b, where) for a = b, (a, b, where, ">=") for a >= b, in
    order, without repeats."""
    found: list[tuple] = []
    token = _ASSUMED.set(found)
    try:
        yield found
    finally:
        _ASSUMED.reset(token)
        unique: dict[tuple[str, ...], tuple] = {}
        for entry in found:  # one per pair, naming a node when some inference did (verify's does not)
            key = (str(entry[0]), str(entry[1]), *entry[3:])
            if key not in unique or not unique[key][2]:
                unique[key] = entry
        found[:] = list(unique.values())


def evaluate(d: Dim, bindings: dict[str, int]) -> int | None:
    """The value of a dim given values for its symbols, or None if a symbol is unbound."""
    if d is None:
        return None
    if isinstance(d, int):
        return d
    if d in bindings:
        return bindings[d]
    p = to_poly(d)
    total = 0
    for m, c in (p or {}).items():
        term = c
        for s in m:
            if s not in bindings:
                return None
            term *= bindings[s]
        total += term
    return total


def symbols(d: Dim) -> set[str]:
    if not isinstance(d, str):
        return set()
    p = to_poly(d) or {}
    return {s for m in p for s in m}

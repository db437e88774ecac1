"""Size expressions: byte counts and arena offsets as functions of the symbolic dims, for the memory schedule.

    s = Size.of_type(f32[seq,128])      # 512*seq
    (s.aligned() + s).max(Size.const(64)).evaluate({"seq": 3}) == 3072
    Size.const(0).le(s)                 # True: provably <= for every binding of the symbols

A Size is the maximum of terms; a term is an integer combination of monomials in the symbols (dims.py's
polynomials) and of `align(p)` atoms, p rounded up to a multiple of ALIGN bytes. `le` proves a <= b for every
binding of non-negative symbols, or answers False when it cannot (callers then stack above instead of reusing).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from . import dims
from .dims import Poly
from .types import TensorType

ALIGN = 64  # bytes: every arena slot starts and ends on this boundary (a cache line, an AVX-512 vector)

Mono = tuple[str, ...]  # sorted symbol names; () is the constant monomial


@dataclass(frozen=True, order=True)
class Aligned:
    """align(p): the polynomial p rounded up to a multiple of ALIGN. Normalised so that every coefficient of p lies
    in 1..ALIGN-1 (multiples of ALIGN are taken out of the atom, since align(ALIGN*q + r) = ALIGN*q + align(r))."""

    poly: tuple[tuple[Mono, int], ...]


Atom = Mono | Aligned
Term = tuple[tuple[Atom, int], ...]  # canonical: sorted by _atom_key, no zero coefficients


def _atom_key(atom: Atom) -> tuple:
    if isinstance(atom, Aligned):
        return (1, atom.poly)
    return (0 if atom else 2, atom)  # monomials with symbols, then align atoms, then the constant


def _term(parts: Mapping[Atom, int]) -> Term:
    return tuple(sorted(((a, c) for a, c in parts.items() if c), key=lambda ac: _atom_key(ac[0])))


def _merge(*terms: Iterable[tuple[Atom, int]], scale: Iterable[int] | None = None) -> dict[Atom, int]:
    out: dict[Atom, int] = {}
    for term, k in zip(terms, scale or [1] * len(terms)):
        for a, c in term:
            out[a] = out.get(a, 0) + k * c
    return out


def _poly_of(term: Term) -> Poly | None:
    """The polynomial a term is, or None if it holds an align atom."""
    if any(isinstance(a, Aligned) for a, _ in term):
        return None
    return {a: c for a, c in term}  # type: ignore[misc]


def _align_poly(p: Poly) -> dict[Atom, int]:
    """align(p) as atoms: the multiples of ALIGN stay monomials, the remainders go into one Aligned atom."""
    out: dict[Atom, int] = {}
    rest: Poly = {}
    for m, c in p.items():
        q, r = divmod(c, ALIGN)
        if q:
            out[m] = out.get(m, 0) + q * ALIGN
        if r:
            rest[m] = r
    if list(rest) == [()]:
        out[()] = out.get((), 0) + ALIGN  # a constant remainder 1..ALIGN-1 rounds up to ALIGN
    elif rest:
        atom = Aligned(tuple(sorted(rest.items())))
        out[atom] = out.get(atom, 0) + 1
    return out


def _nonneg(p: Poly) -> bool:
    """p >= 0 for every binding of non-negative symbols, proved coefficient by coefficient."""
    return all(c >= 0 for c in p.values())


@lru_cache(maxsize=1 << 16)
def _term_le(t: Term, u: Term) -> bool:
    """Provably t <= u: u - t with align atoms cancelled by monotonicity (align(p) >= align(q) when p >= q), then
    bounded (p <= align(p) <= p + ALIGN - 1), is a polynomial with no negative coefficient."""
    d = _merge(u, t, scale=[1, -1])
    pos = {a: c for a, c in d.items() if isinstance(a, Aligned) and c > 0}
    for a, c in [(a, -c) for a, c in d.items() if isinstance(a, Aligned) and c < 0]:
        for b in sorted(pos, key=_atom_key):
            if c and pos[b] and _nonneg(dims._add(dict(b.poly), {m: -k for m, k in a.poly})):
                used = min(c, pos[b])
                pos[b] -= used
                d[b] -= used
                d[a] += used
                c -= used
    bound: Poly = {}
    for a, c in d.items():
        if not isinstance(a, Aligned):
            bound = dims._add(bound, {a: c})
            continue
        bound = dims._add(bound, {m: c * k for m, k in a.poly})  # c > 0: align(p) >= p
        if c < 0:
            bound = dims._add(bound, {(): c * (ALIGN - 1)})  # c < 0: align(p) <= p + ALIGN - 1
    return _nonneg(bound)


def _close(a: int, b: int, rel: float, slack: int) -> bool:
    return abs(a - b) <= rel * min(abs(a), abs(b)) + slack


def _term_eval(t: Term, bindings: Mapping[str, int]) -> int:
    total = 0
    for a, c in t:
        if isinstance(a, Aligned):
            v = _poly_eval(a.poly, bindings)
            total += c * (-(-v // ALIGN) * ALIGN)
        else:
            total += c * _mono_eval(a, bindings)
    return total


def _mono_eval(m: Mono, bindings: Mapping[str, int]) -> int:
    v = 1
    for s in m:
        if s not in bindings:
            raise ValueError(f"no size given for symbol {s}")
        v *= int(bindings[s])
    return v


def _poly_eval(p: Iterable[tuple[Mono, int]], bindings: Mapping[str, int]) -> int:
    return sum(c * _mono_eval(m, bindings) for m, c in p)


def _prune(terms: Iterable[Term]) -> tuple[Term, ...]:
    """The terms of a max with the provably dominated ones dropped, in canonical order."""
    uniq = sorted(set(terms), key=_term_text)
    kept: list[Term] = []
    for i, t in enumerate(uniq):
        others = kept + uniq[i + 1:]
        if not any(_term_le(t, u) for u in others):
            kept.append(t)
    return tuple(kept) or ((),)


@dataclass(frozen=True)
class Size:
    """max(terms): a size or offset in bytes for every binding of the symbols. Build with const / of_poly /
    of_type / parse and combine with +, * (by an int), max and aligned; canonical, so equal Sizes print the same."""

    terms: tuple[Term, ...] = ((),)

    @staticmethod
    def const(n: int) -> Size:
        return Size((_term({(): n}),))

    @staticmethod
    def of_poly(p: Poly) -> Size:
        return Size((_term(p),))  # type: ignore[arg-type]

    @staticmethod
    def of_type(t: TensorType) -> Size | None:
        """The bytes of a value of type `t` (unpacked, numpy itemsize), or None when a dim or the rank is unknown."""
        if t.shape is None or any(d is None for d in t.shape):
            return None
        p: Poly = {(): t.dtype.itemsize}
        for d in t.shape:
            q = dims.to_poly(d)
            if q is None:
                return None
            p = dims._mul(p, q)
        return Size.of_poly(p)

    # ---- arithmetic -----------------------------------------------------------------------------

    def __add__(self, other: Size) -> Size:
        return Size(_prune(_term(_merge(t, u)) for t in self.terms for u in other.terms))

    def __mul__(self, k: int) -> Size:
        if k < 0:
            raise ValueError("a Size scaled by a negative number is no longer a maximum of its terms")
        return Size(_prune(_term(_merge(t, scale=[k])) for t in self.terms))

    __rmul__ = __mul__

    def max(self, *others: Size) -> Size:
        return Size(_prune([t for s in (self, *others) for t in s.terms]))

    def aligned(self) -> Size:
        """Rounded up to a multiple of ALIGN for every binding (align atoms already are multiples of ALIGN)."""
        out = []
        for t in self.terms:
            poly = {a: c for a, c in t if not isinstance(a, Aligned)}
            atoms = {a: c for a, c in t if isinstance(a, Aligned)}
            out.append(_term(_merge(tuple(_align_poly(poly).items()), tuple(atoms.items()))))  # type: ignore[arg-type]
        return Size(_prune(out))

    def bounded(self) -> Size:
        """An upper bound with no align atoms (align(p) <= p + ALIGN - 1): fewer, readable terms; equal to self when
        self has no align atom."""
        out = []
        for t in self.terms:
            poly: Poly = {}
            for a, c in t:
                if not isinstance(a, Aligned):
                    poly = dims._add(poly, {a: c})
                    continue
                poly = dims._add(poly, {m: c * k for m, k in a.poly})
                if c > 0:
                    poly = dims._add(poly, {(): c * (ALIGN - 1)})
            out.append(_term(poly))  # type: ignore[arg-type]
        return Size(_prune(out))

    def simplified(self, rel: float = 0.05) -> Size:
        """A short upper bound for people: bounded(), then terms that differ by at most `rel` in every coefficient
        (ALIGN bytes in the constant) merged into their coefficient-wise maximum."""
        merged: list[dict[Atom, int]] = []
        for t in self.bounded().terms:
            cur = dict(t)
            for m in merged:
                keys = set(m) | set(cur)
                if all(_close(m.get(k, 0), cur.get(k, 0), rel, ALIGN if k == () else 0) for k in keys):
                    for k in keys:
                        m[k] = max(m.get(k, 0), cur.get(k, 0))
                    break
            else:
                merged.append(cur)
        return Size(_prune(_term(m) for m in merged))

    @property
    def is_exact_polynomial(self) -> bool:
        """No align atom: bounded() is self."""
        return not any(isinstance(a, Aligned) for t in self.terms for a, _ in t)

    # ---- questions ------------------------------------------------------------------------------

    def le(self, other: Size) -> bool:
        """Provably self <= other for every binding of non-negative symbols (False: not proved, maybe not true)."""
        return all(any(_term_le(t, u) for u in other.terms) for t in self.terms)

    def evaluate(self, bindings: Mapping[str, int]) -> int:
        """The value at one binding of every symbol it mentions (ValueError naming a symbol left out)."""
        return max(_term_eval(t, bindings) for t in self.terms)

    @property
    def is_const(self) -> bool:
        return len(self.terms) == 1 and all(a == () for a, _ in self.terms[0])

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for t in self.terms:
            for a, _ in t:
                for m in ([m for m, _ in a.poly] if isinstance(a, Aligned) else [a]):
                    out.update(m)
        return out

    def __str__(self) -> str:
        texts = [_term_text(t) for t in self.terms]
        return texts[0] if len(texts) == 1 else f"max({', '.join(texts)})"

    def __repr__(self) -> str:
        return f"Size({str(self)!r})"

    @staticmethod
    def parse(text: str) -> Size:
        """The Size a text written by str() stands for (ValueError if it is not one)."""
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            raise ValueError(f"not a size expression: {text!r}") from None
        return _from_ast(tree, text)


def _poly_text(p: Poly) -> str:
    text = str(dims.from_poly(p))
    # from_poly writes a lone symbol as its bare name, which an expression reads back only if it is an identifier
    return text if dims.is_polynomial(text) else json.dumps(text)


def _term_text(t: Term) -> str:
    syms = {a: c for a, c in t if not isinstance(a, Aligned) and a != ()}
    parts = [_poly_text(syms)] if syms else []  # type: ignore[arg-type]
    for a, c in t:
        if isinstance(a, Aligned):
            body = f"align({_poly_text(dict(a.poly))})"
            parts.append(("-" if c < 0 else "+") + (f"{abs(c)}*" if abs(c) != 1 else "") + body)
    const = dict(t).get((), 0)
    if const:
        parts.append(f"{const:+d}")
    text = "".join(p if i == 0 or p[0] in "+-" else "+" + p for i, p in enumerate(parts)) or "0"
    return text[1:] if text.startswith("+") else text


def _from_ast(node: ast.AST, text: str) -> Size:
    """Sizes from the expression grammar str() writes: integers, symbols (names or JSON strings), + - *, max(...),
    align(...)."""
    if isinstance(node, ast.Name):
        return Size.of_poly({(node.id,): 1})
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return Size.of_poly({(node.value,): 1})
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return Size.const(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _scaled(_from_ast(node.operand, text), -1, text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        a, b = _from_ast(node.left, text), _from_ast(node.right, text)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a + _scaled(b, -1, text)
        pa, pb = _single_poly(a), _single_poly(b)
        if pa is not None and pb is not None:
            return Size.of_poly(dims._mul(pa, pb))
        k, s = (pa, b) if pa is not None and list(pa) in ([()], []) else (pb, a)
        if k is None or list(k) not in ([()], []):
            raise ValueError(f"in {text!r}: only a polynomial or an integer multiplies an align() or max()")
        return _scaled(s, k.get((), 0), text)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords and node.args:
        args = [_from_ast(a, text) for a in node.args]
        if node.func.id == "max":
            return args[0].max(*args[1:])
        if node.func.id == "align" and len(args) == 1:
            return args[0].aligned()
    raise ValueError(f"not a size expression: {text!r}")


def _single_poly(s: Size) -> Poly | None:
    return _poly_of(s.terms[0]) if len(s.terms) == 1 else None


def _scaled(s: Size, k: int, text: str) -> Size:
    """k * s; a negative k only for a single term (a difference), which is exact."""
    if k >= 0:
        return s * k
    if len(s.terms) != 1:
        raise ValueError(f"in {text!r}: a max() cannot be negated")
    return Size((_term(_merge(s.terms[0], scale=[k])),))


def format_symbols(bindings: Mapping[str, int]) -> str:
    """`batch=1, seq=128`: a binding as messages and reports write it."""
    return ", ".join(f"{k if k.isidentifier() else json.dumps(k)}={v}" for k, v in bindings.items())

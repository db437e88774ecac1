"""Sizes known only at run time: a symbolic dim is a Python object lowerings compute with like an int.

    n = buf.shape[1]                          # an int when static, else a Sym (here the polynomial "seq")
    rows = math.prod(buf.shape[:-1])          # "batch*seq": Python arithmetic keeps polynomials exact
    with for_range(b, rows) as i: ...         # a Sym is an i64 ir.Value: every builder takes it as an operand

A Sym stands for one i64 computed from the model's symbols (the `dims` array of tritc_main, one i64 per
symbol). It belongs to no function: `materialize(module, ...)` runs once the module is built and, in each
function that uses a Sym, loads the symbols it needs and computes it at the top of the entry block, then
puts that value in place of the Sym in every instruction. So static code stays constant-folded (an int
never becomes a Sym) and symbolic code costs a few loads per function. Polynomials (`past+seq`,
`4*batch*seq`) use tritc/ir/dims.py's canonical text; the other forms (max, min, floor division, alignment,
"1 or not") are small expression trees. Every Sym also evaluates in Python (`evaluate`) for the runtime's
output shapes and arena size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Union

import llvmlite.ir as ir

from ...ir import dims as dimlib
from ...ir import sizes as sizelib
from ...ir.types import Dim

I64 = ir.IntType(64)
Size = Union[int, "Sym"]


class SymbolicDimError(TypeError):
    """A lowering asked a question about a symbolic dim that only run time can answer (a tritc bug)."""


class Sym(ir.Value):
    """An i64 computed from the model's symbols. kind "poly": args = (canonical polynomial text,);
    "max" / "min" / "div" (floor, operands >= 0) / "mod" / "align" (args: x, n): x rounded up to n;
    "if1" (args: c, x, y): x when c == 1 else y."""

    __slots__ = ("kind", "args", "key")
    type = I64

    def __init__(self, kind: str, args: tuple):
        self.kind, self.args = kind, args
        self.key = args[0] if kind == "poly" else f"{kind}({','.join(_key(a) for a in args)})"

    # ---- Python arithmetic: exact for polynomials, expression trees otherwise ----

    def __add__(self, other: Size) -> Size:
        return _arith("add", self, other)

    def __radd__(self, other: Size) -> Size:
        return _arith("add", other, self)

    def __sub__(self, other: Size) -> Size:
        return _arith("sub", self, other)

    def __rsub__(self, other: Size) -> Size:
        return _arith("sub", other, self)

    def __mul__(self, other: Size) -> Size:
        return _arith("mul", self, other)

    def __rmul__(self, other: Size) -> Size:
        return _arith("mul", other, self)

    def __floordiv__(self, other: Size) -> Size:
        return floordiv(self, other)

    def __rfloordiv__(self, other: Size) -> Size:
        return floordiv(other, self)

    def __mod__(self, other: Size) -> Size:
        return mod(self, other)

    def __neg__(self) -> Size:
        return _arith("sub", 0, self)

    # ---- questions: equality is structural; order and truth need run time ----

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sym) and other.key == self.key

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("Sym", self.key))

    def _unknown(self, *_: object) -> bool:
        raise SymbolicDimError(f"the symbolic dim '{self.key}' has no value before run time; the lowering must "
                               f"compute with it (or branch in the generated code) instead of asking Python")

    __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _unknown

    def __index__(self) -> int:
        return self._unknown()  # type: ignore[return-value]

    __int__ = __index__

    def get_reference(self) -> str:
        raise SymbolicDimError(f"symbolic dim '{self.key}' was not materialised in its function (a function that "
                               f"uses symbolic dims needs the dims pointer: NodeCtx.register_dims)")

    def __repr__(self) -> str:
        return f"Sym({self.key})"

    def __str__(self) -> str:
        return self.key


def _key(x: Size) -> str:
    return x.key if isinstance(x, Sym) else str(int(x))


def is_static(x: object) -> bool:
    return isinstance(x, int)


def size(d: Dim | Sym) -> Size:
    """An IR dim (int or polynomial text) as an int or a Sym."""
    if isinstance(d, Sym):
        return d
    if isinstance(d, bool) or d is None:
        raise SymbolicDimError(f"dim {d!r} is unknown: no code can be generated for it")
    if isinstance(d, int):
        return d
    canonical = dimlib.from_poly(dimlib.to_poly(d))
    if canonical is None:
        raise SymbolicDimError(f"dim {d!r} is not a polynomial over the symbols")
    return canonical if isinstance(canonical, int) else Sym("poly", (canonical,))


def _dim(x: Size) -> Dim:
    """x as an IR dim (int or polynomial text), None when it is not a polynomial."""
    if isinstance(x, int):
        return x
    return x.args[0] if x.kind == "poly" else None


def _from_dim(d: Dim) -> Size | None:
    return None if d is None else size(d)


def _arith(op: str, a: Size, b: Size) -> Size:
    if not isinstance(a, (int, Sym)) or not isinstance(b, (int, Sym)):
        return NotImplemented
    if isinstance(a, int) and isinstance(b, int):
        return a + b if op == "add" else a - b if op == "sub" else a * b
    da, db = _dim(a), _dim(b)
    if da is not None and db is not None:
        out = _from_dim({"add": dimlib.add, "sub": dimlib.sub, "mul": dimlib.mul}[op](da, db))
        if out is not None:
            return out
    if op == "mul" and (a == 0 or b == 0):
        return 0
    if (op == "mul" and b == 1) or (op in ("add", "sub") and b == 0):
        return a
    if (op == "mul" and a == 1) or (op == "add" and a == 0):
        return b
    return Sym(op, (a, b))


def floordiv(a: Size, b: Size) -> Size:
    """a // b (both >= 0): exact polynomial division stays a polynomial."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    if b == 1:
        return a
    q = _exact(a, b)
    return q if q is not None else Sym("div", (a, b))


def mod(a: Size, b: Size) -> Size:
    if isinstance(a, int) and isinstance(b, int):
        return a % b
    if b == 1:
        return 0
    return 0 if _exact(a, b) is not None else Sym("mod", (a, b))


def _exact(a: Size, b: Size) -> Size | None:
    """a / b when it divides exactly as polynomials."""
    da, db = _dim(a), _dim(b)
    return None if da is None or db is None else _from_dim(dimlib.div_exact(da, db))


def smax(a: Size, b: Size) -> Size:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    if a == b or dominates(a, b):
        return a
    if dominates(b, a):
        return b
    return Sym("max", (a, b))


def smin(a: Size, b: Size) -> Size:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    if a == b or dominates(b, a):
        return a
    if dominates(a, b):
        return b
    return Sym("min", (a, b))


def align(x: Size, n: int) -> Size:
    """x rounded up to a multiple of n (a power of two)."""
    if isinstance(x, int):
        return (x + n - 1) // n * n
    if x.kind == "align" and x.args[1] % n == 0:
        return x
    poly = dimlib.to_poly(x.args[0]) if x.kind == "poly" else None
    if poly is not None and all(c % n == 0 for c in poly.values()):
        return x  # a multiple of n whatever the symbols are
    return Sym("align", (x, n))


def if_one(c: Size, x: Size, y: Size) -> Size:
    """x when c == 1 at run time, else y (a dim that broadcasts when it is 1)."""
    if isinstance(c, int):
        return x if c == 1 else y
    return x if x == y else Sym("if1", (c, x, y))


def pretty(x: Size) -> str:
    """x for people: a sum's polynomial terms gathered into one polynomial, the other terms after it
    (`512*batch*seq+536576 + align(4*seq, 64) + max(...)`)."""
    if isinstance(x, int):
        return str(x)
    terms: list[Size] = []

    def gather(y: Size) -> None:
        if isinstance(y, Sym) and y.kind == "add":
            gather(y.args[0])
            gather(y.args[1])
        else:
            terms.append(y)

    gather(x)
    poly: Dim = 0
    rest: list[str] = []
    for t in terms:
        d = _dim(t)
        if d is not None:
            poly = dimlib.add(poly, d)
        else:
            assert isinstance(t, Sym)
            args = _flat_max(t) if t.kind == "max" else t.args  # max(max(a, b), c) reads as max(a, b, c)
            inner = ", ".join(pretty(a) if isinstance(a, (int, Sym)) else str(a) for a in args)
            rest.append(f"{t.kind}({inner})")
    parts = ([str(poly)] if poly != 0 or not rest else []) + rest
    return " + ".join(parts)


def _flat_max(x: Size) -> list[Size]:
    if isinstance(x, Sym) and x.kind == "max":
        return _flat_max(x.args[0]) + _flat_max(x.args[1])
    return [x]


def dominates(a: Size, b: Size) -> bool:
    """Whether a >= b for every binding of the symbols to sizes >= 0 (False when unsure)."""
    da, db = _dim(a), _dim(b)
    diff = None if da is None or db is None else dimlib.to_poly(dimlib.sub(da, db))
    return diff is not None and all(c >= 0 for c in diff.values())


def symbols(x: Size) -> set[str]:
    if isinstance(x, int):
        return set()
    if x.kind == "poly":
        return dimlib.symbols(x.args[0])
    return set().union(*(symbols(a) for a in x.args if isinstance(a, (int, Sym))))


def evaluate(x: Size, bindings: Mapping[str, int]) -> int:
    """The value of x for sizes of its symbols."""
    if isinstance(x, int):
        return x
    if x.kind == "poly":
        v = dimlib.evaluate(x.args[0], dict(bindings))
        if v is None:
            raise KeyError(f"no size for a symbol of '{x.key}' (given: {', '.join(sorted(bindings)) or 'none'})")
        return v
    a = [evaluate(y, bindings) if isinstance(y, (int, Sym)) else y for y in x.args]
    if x.kind == "add":
        return a[0] + a[1]
    if x.kind == "sub":
        return a[0] - a[1]
    if x.kind == "mul":
        return a[0] * a[1]
    if x.kind == "max":
        return max(a)
    if x.kind == "min":
        return min(a)
    if x.kind == "div":
        return a[0] // a[1] if a[1] else 0
    if x.kind == "mod":
        return a[0] % a[1] if a[1] else 0
    if x.kind == "align":
        return (a[0] + a[1] - 1) // a[1] * a[1]
    if x.kind == "if1":
        return a[1] if a[0] == 1 else a[2]
    raise ValueError(f"unknown symbolic form {x.kind}")


def to_json(x: Size) -> object:
    """A JSON form (an int, or [kind, args...]) that from_json reads back."""
    if isinstance(x, int):
        return x
    if x.kind == "poly":
        return x.key
    return [x.kind, *(to_json(a) for a in x.args)]


def from_json(j: object) -> Size:
    if isinstance(j, bool):
        raise ValueError(f"bad size expression {j!r}")
    if isinstance(j, int):
        return j
    if isinstance(j, str):
        return size(j)
    if isinstance(j, list) and j and isinstance(j[0], str):
        kind, args = j[0], [from_json(a) for a in j[1:]]
        build: dict[str, Callable[..., Size]] = {
            "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "max": smax, "min": smin,
            "div": floordiv, "mod": mod, "align": lambda a, n: align(a, int(n)), "if1": if_one}
        if kind in build:
            return build[kind](*args)
    raise ValueError(f"bad size expression {j!r}")


# ---- the memory schedule's sizes (tritc/ir/sizes.py) ----------------------------------------------------------


def from_size(s: sizelib.Size) -> Size:
    """A schedule's Size (a max of sums of monomials and align atoms) as an int or a Sym."""
    terms = [_from_term(t) for t in s.terms]
    out = terms[0]
    for t in terms[1:]:
        out = smax(out, t)
    return out


def _from_term(term: sizelib.Term) -> Size:
    poly = {a: c for a, c in term if not isinstance(a, sizelib.Aligned)}
    out = _from_dim(dimlib.from_poly(poly))  # type: ignore[arg-type]
    assert out is not None
    for a, c in term:
        if isinstance(a, sizelib.Aligned):
            atom = align(_from_dim(dimlib.from_poly(dict(a.poly))), sizelib.ALIGN)  # type: ignore[arg-type]
            out = out + c * atom if c > 0 else out - (-c) * atom
    return out


def to_size(x: Size) -> sizelib.Size:
    """An int or Sym as a schedule's Size; ValueError for forms it cannot express (floor division, min, ...)."""
    if isinstance(x, int):
        return sizelib.Size.const(x)
    if x.kind == "poly":
        return sizelib.Size.of_poly(dimlib.to_poly(x.args[0]) or {})
    a = [to_size(y) for y in x.args if isinstance(y, (int, Sym))]
    if x.kind == "add":
        return a[0] + a[1]
    if x.kind == "max":
        return a[0].max(a[1])
    if x.kind == "mul" and a[0].is_const:
        return a[1] * a[0].evaluate({})
    if x.kind == "mul" and a[1].is_const:
        return a[0] * a[1].evaluate({})
    if x.kind == "align" and sizelib.ALIGN % int(x.args[1]) == 0:
        return a[0].aligned()  # rounded up to a multiple of ALIGN: at least as large
    raise ValueError(f"the size {pretty(x)} has no form in the memory schedule (sums, products by constants, max, "
                     f"align of polynomials)")


# ---- materialisation: each function computes the Syms it uses from its dims pointer ---------------------------


def emit(b: ir.IRBuilder, x: Size, symbol: Callable[[str], ir.Value], cache: dict[str, ir.Value]) -> ir.Value:
    """x as an i64 computed with `b`; symbol(name) loads one symbol; cache holds what was computed already."""
    if isinstance(x, int):
        return ir.Constant(I64, x)
    if x.key in cache:
        return cache[x.key]
    if x.kind == "poly":
        p = dimlib.to_poly(x.args[0]) or {}
        total: ir.Value | None = None
        for monomial, coeff in sorted(p.items()):
            term: ir.Value | None = ir.Constant(I64, coeff) if not monomial or coeff != 1 else None
            for s in monomial:
                v = symbol(s)
                term = v if term is None else b.mul(term, v, flags=["nsw"])
            total = term if total is None else b.add(total, term, flags=["nsw"])
        out = total if total is not None else ir.Constant(I64, 0)
    else:
        a = [emit(b, y, symbol, cache) if isinstance(y, (int, Sym)) else y for y in x.args]
        if x.kind == "add":
            out = b.add(a[0], a[1], flags=["nsw"])
        elif x.kind == "sub":
            out = b.sub(a[0], a[1], flags=["nsw"])
        elif x.kind == "mul":
            out = b.mul(a[0], a[1], flags=["nsw"])
        elif x.kind in ("max", "min"):
            out = b.select(b.icmp_signed(">" if x.kind == "max" else "<", a[0], a[1]), a[0], a[1])
        elif x.kind in ("div", "mod"):
            safe = b.select(b.icmp_signed("==", a[1], ir.Constant(I64, 0)), ir.Constant(I64, 1), a[1])
            out = b.sdiv(a[0], safe) if x.kind == "div" else b.srem(a[0], safe)
        elif x.kind == "align":
            n = int(x.args[1])
            out = b.and_(b.add(a[0], ir.Constant(I64, n - 1)), ir.Constant(I64, -n))
        elif x.kind == "if1":
            out = b.select(b.icmp_signed("==", a[0], ir.Constant(I64, 1)), a[1], a[2])
        else:
            raise ValueError(f"unknown symbolic form {x.kind}")
    cache[x.key] = out
    return out


def _sym_of(v: object) -> object:
    """v itself, or the Sym an i64 constant was made of (`I64(n)` with n symbolic: lowerings may write either)."""
    return v.constant if isinstance(v, ir.Constant) and isinstance(v.constant, Sym) else v


def _uses(instr: ir.Instruction) -> Iterable[ir.Value]:
    yield from map(_sym_of, instr.operands)
    if isinstance(instr, ir.GEPInstr):
        yield _sym_of(instr.pointer)
        yield from map(_sym_of, instr.indices)
    if isinstance(instr, ir.PhiInstr):
        yield from (_sym_of(v) for v, _ in instr.incomings)


def _replace(instr: ir.Instruction, replace: Callable[[ir.Value], ir.Value]) -> None:
    def new(v):
        return replace(_sym_of(v))

    instr.operands = type(instr.operands)(new(v) for v in instr.operands) if isinstance(instr.operands, tuple) \
        else [new(v) for v in instr.operands]
    if isinstance(instr, ir.GEPInstr):
        instr.pointer = new(instr.pointer)
        instr.indices = [new(v) for v in instr.indices]
    if isinstance(instr, ir.PhiInstr):
        instr.incomings = [(new(v), blk) for v, blk in instr.incomings]


def materialize(module: ir.Module, dims_of: Mapping[str, ir.Value], symbol_index: Mapping[str, int]) -> None:
    """Replace every Sym operand in `module` by its value computed at the top of its function's entry block.
    dims_of: function name -> that function's `ptr dims`; symbol_index: symbol -> slot in dims."""
    for fn in module.functions:
        if not fn.blocks:
            continue
        used: dict[str, Sym] = {}
        for block in fn.blocks:
            for instr in block.instructions:
                for v in _uses(instr):
                    if isinstance(v, Sym):
                        used.setdefault(v.key, v)
        if not used:
            continue
        dims = dims_of.get(fn.name)
        if dims is None:
            raise SymbolicDimError(f"function {fn.name} uses symbolic dims ({', '.join(sorted(used))}) but has no dims "
                                   f"pointer to compute them from")
        values = _compute(fn, dims, used, symbol_index)
        for block in fn.blocks:
            for instr in block.instructions:
                if any(isinstance(v, Sym) for v in _uses(instr)):
                    _replace(instr, lambda v: values[v.key] if isinstance(v, Sym) else v)  # noqa: B023 - used at once


def _compute(fn: ir.Function, dims: ir.Value, used: Mapping[str, Sym], symbol_index: Mapping[str, int]) -> dict[str, ir.Value]:
    """Each used Sym computed at the top of fn's entry block (after `dims` when fn loads it itself)."""
    entry = fn.blocks[0]
    b = ir.IRBuilder(entry)
    if isinstance(dims, ir.Instruction):  # loaded in the function (a task reads it from its context): after that
        b.position_after(dims)
    elif entry.instructions:
        b.position_before(entry.instructions[0])
    loaded: dict[str, ir.Value] = {}

    def symbol(name: str) -> ir.Value:
        if name not in loaded:
            if name not in symbol_index:
                raise SymbolicDimError(f"function {fn.name} needs symbol '{name}', which is not one of the model's "
                                       f"({', '.join(symbol_index) or 'none'})")
            ptr = b.gep(dims, [ir.Constant(I64, symbol_index[name])], inbounds=True, source_etype=I64)
            loaded[name] = b.load(ptr, typ=I64, name=f"dim.{name}")
        return loaded[name]

    cache: dict[str, ir.Value] = {}
    return {key: emit(b, s, symbol, cache) for key, s in used.items()}


__all__ = ["Size", "Sym", "SymbolicDimError", "align", "dominates", "emit", "evaluate", "floordiv", "from_json", "from_size",
           "if_one", "is_static", "materialize", "mod", "size", "smax", "smin", "symbols", "to_json", "to_size"]

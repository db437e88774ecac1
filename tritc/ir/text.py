"""The textual IR: `print_graph` and `parse_graph`, exact inverses of each other.

    graph @main(%x: f32[batch,4]) -> (%y: f32[batch,8]) {
      %w = weight "fc.weight" : f32[4,8]
      %y = matmul(%x, %w) : f32[batch,8] loc("/fc/MatMul")
      return %y
    }

One op per line, result types always printed, attributes sorted by name, floats printed in the
shortest form that reads back to the same bits. Weights are printed by reference (their key in
Graph.weights); `parse_graph` takes the weights mapping to attach. docs/IR.md has the grammar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import IRParseError
from .casts import int_range, round_float, wrap_int
from .graph import Graph, Node, Value
from .memory_text import attach_schedule, memory_lines, parse_memory_block
from .types import DType, Shape, TensorType, format_type, is_plain_dim_text

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.$/\-]+")


# ---- printing -------------------------------------------------------------------------------


def quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=True)


def format_name(sigil: str, name: str) -> str:
    return sigil + (name if _PLAIN_NAME.fullmatch(name) else quote(name))


def format_float(x: float, dtype: DType = DType.F32) -> str:
    """The shortest text that parses back to the same value of `dtype`."""
    if dtype is DType.F32:
        text = str(np.float32(x))
    elif dtype is DType.F16:
        text = str(np.float16(x))
    else:  # f64 and bf16 (exact in f64): Python's shortest repr
        text = repr(float(x))
    if text in ("inf", "-inf", "nan"):
        return text
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def format_scalar(x: Any, dtype: DType) -> str:
    if dtype is DType.BOOL:
        return "true" if bool(x) else "false"
    if dtype.is_float:
        return format_float(float(x), dtype)
    return str(int(x))


def format_literal(array: np.ndarray, dtype: DType) -> str:
    """A tensor's elements, row-major and flat; a bare scalar for rank 0."""
    a = np.asarray(array)
    if a.ndim == 0:
        return format_scalar(a.item() if dtype is not DType.BF16 else float(a), dtype)
    flat = a.reshape(-1)
    return "[" + ", ".join(format_scalar(v, dtype) for v in flat) + "]"


def format_attr(value: Any) -> str:
    if isinstance(value, np.generic) and not isinstance(value, np.ndarray):
        value = value.item()  # numpy scalars print as the Python values they hold
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, DType):
        return value.ir_name
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        dt = DType.from_numpy(value.dtype)
        return f"tensor<{format_type(TensorType(dt, value.shape))}: {format_literal(value, dt)}>"
    raise TypeError(f"cannot print attribute value {value!r}")


def _format_attrs(attrs: Mapping[str, Any], skip: tuple[str, ...] = ()) -> str:
    items = [(k, v) for k, v in sorted(attrs.items()) if k not in skip and v is not None]
    if not items:
        return ""
    return " {" + ", ".join(f"{k} = {format_attr(v)}" for k, v in items) + "}"


def format_node(node: Node) -> str:
    results = ", ".join(format_name("%", v.name) for v in node.outputs)
    if node.op == "weight":
        body = f"weight {quote(node.attrs['ref'])}{_format_attrs(node.attrs, ('ref',))}"
    elif node.op == "constant" and set(node.attrs) == {"value"}:
        value = node.attrs["value"]
        body = f"constant {format_literal(value, DType.from_numpy(value.dtype))}"
    else:
        args = ", ".join("none" if v is None else format_name("%", v.name) for v in node.inputs)
        body = f"{node.op}({args}){_format_attrs(node.attrs)}"
    types = ", ".join(format_type(v.type) for v in node.outputs)
    loc = f" loc({quote(node.name)})" if node.name is not None else ""
    return f"{results} = {body} : {types}{loc}"


def print_graph(graph: Graph) -> str:
    """The whole graph as text (ends with a newline)."""
    args = ", ".join(f"{format_name('%', v.name)}: {format_type(v.type)}{_value_symbol(graph, v.name)}"
                     for v in graph.inputs)
    rets = ", ".join(f"{format_name('%', v.name)}: {format_type(v.type)}" for v in graph.outputs)
    lines = [f"graph {format_name('@', graph.name)}({args}) -> ({rets}) {{"]
    lines.extend("  " + format_node(n) for n in graph)
    lines.append("  return " + ", ".join(format_name("%", v.name) for v in graph.outputs))
    lines.extend(memory_lines(graph))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _value_symbol(graph: Graph, name: str) -> str:
    """` = past` after an input whose value is the size of a symbol (Graph.value_symbols), else nothing."""
    symbol = graph.value_symbols.get(name)
    if symbol is None:
        return ""
    return f" = {symbol if _IDENT.fullmatch(symbol) else json.dumps(symbol)}"


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---- lexing ---------------------------------------------------------------------------------

_DTYPES = "|".join(sorted((d.ir_name for d in DType), key=len, reverse=True))
# JSON's string grammar exactly (the printer writes json.dumps): a string the lexer takes, json.loads reads.
_STRING = r'"(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\x00-\x1f])*"'
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t\r]+|//[^\n]*)
  | (?P<nl>\n)
  | (?P<value>%(?:{_STRING}|[A-Za-z0-9_.$/\-]+))
  | (?P<global>@(?:{_STRING}|[A-Za-z0-9_.$/\-]+))
  | (?P<type>\b(?:{_DTYPES})\[(?:[^\]"\n]|{_STRING})*\])
  | (?P<string>{_STRING})
  | (?P<number>-?(?:inf|nan)\b|-?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>->|[(){{}}\[\]<>,=:])
    """,
    re.VERBOSE,
)


_KIND_NAMES = {"ident": "a name", "value": "a %value", "global": "an @name", "type": "a type such as f32[4]",
               "string": "a quoted string", "number": "a number", "eof": "the end of the input"}


class _Tok:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind: str, text: str, line: int, col: int):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def __repr__(self) -> str:
        return f"{self.kind}:{self.text!r}"


def _lex(text: str) -> Iterator[_Tok]:
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise IRParseError(f"line {line}, column {pos - line_start + 1}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind == "nl":
            line, line_start = line + 1, m.end()
        elif kind != "ws":
            yield _Tok(kind, m.group(), line, pos - line_start + 1)
        pos = m.end()
    yield _Tok("eof", "", line, pos - line_start + 1)


def _unname(tok: _Tok) -> str:
    body = tok.text[1:]
    return json.loads(body) if body.startswith('"') else body


def parse_type(text: str) -> TensorType:
    """A type such as ``f32[batch,?,4]`` or ``i64[*]``."""
    name, _, rest = text.partition("[")
    dtype = DType.from_name(name)
    inner = rest[:-1]
    if inner == "*":
        return TensorType(dtype, None)
    if inner == "":
        return TensorType(dtype, ())
    dims: list[Any] = []
    for part in _split_dims(inner):
        part = part.strip()
        if part == "?":
            dims.append(None)
        elif part.isdigit():
            dims.append(int(part))
        elif part.startswith('"') and part.endswith('"') and len(part) >= 2:
            dims.append(json.loads(part))
        elif part and is_plain_dim_text(part):
            dims.append(part)
        else:
            raise ValueError(f"bad dim {part!r} in type {text} (a dim is a size, a name, a polynomial "
                             f"such as 2*seq+past, ?, or a quoted string)")
    return TensorType(dtype, tuple(dims))


def _split_dims(inner: str) -> list[str]:
    parts, cur, in_str, esc = [], [], False, False
    for ch in inner:
        if in_str:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            cur.append(ch)
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


# ---- parsing --------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, weights: Mapping[str, Any] | None):
        self.toks = list(_lex(text))
        self.pos = 0
        self.weights = weights

    # token helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.pos]

    def error(self, msg: str, tok: _Tok | None = None) -> IRParseError:
        t = tok or self.tok
        found = t.text if t.kind != "eof" else "end of input"
        return IRParseError(f"line {t.line}, column {t.col}: {msg} (found {found!r})")

    def take(self, kind: str, text: str | None = None) -> _Tok:
        t = self.tok
        if t.kind != kind or (text is not None and t.text != text):
            raise self.error(f"expected {repr(text) if text else _KIND_NAMES.get(kind, kind)}")
        self.pos += 1
        return t

    def accept(self, kind: str, text: str | None = None) -> _Tok | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.pos += 1
            return t
        return None

    def type(self) -> TensorType:
        t = self.take("type")
        try:
            return parse_type(t.text)
        except (ValueError, TypeError) as e:
            raise self.error(f"bad type: {e}", t) from None

    # grammar
    def graph(self) -> Graph:
        self.take("ident", "graph")
        g = Graph(_unname(self.take("global")))
        self.env: dict[str, Value] = {}
        self.take("punct", "(")
        if not self.accept("punct", ")"):
            while True:
                tok = self.take("value")
                self.take("punct", ":")
                name = _unname(tok)
                if name in self.env:
                    raise self.error(f"value %{name} is defined twice", tok)
                self.env[name] = g.add_input(name, self.type())
                if self.accept("punct", "="):
                    sym = self.accept("ident") or self.take("string")
                    g.value_symbols[name] = json.loads(sym.text) if sym.kind == "string" else sym.text
                if self.accept("punct", ")"):
                    break
                self.take("punct", ",")
        self.take("punct", "->")
        self.take("punct", "(")
        declared: list[tuple[_Tok, str, TensorType]] = []
        if not self.accept("punct", ")"):
            while True:
                tok = self.take("value")
                self.take("punct", ":")
                declared.append((tok, _unname(tok), self.type()))
                if self.accept("punct", ")"):
                    break
                self.take("punct", ",")
        self.take("punct", "{")
        while not (self.tok.kind == "ident" and self.tok.text == "return"):
            self.statement(g)
        self.take("ident", "return")
        rets: list[Value] = []
        if not (self.tok.kind == "punct" and self.tok.text == "}" or self.tok.kind == "ident" and self.tok.text == "memory"):
            while True:
                rets.append(self.use())
                if not self.accept("punct", ","):
                    break
        memory = parse_memory_block(self) if self.tok.kind == "ident" and self.tok.text == "memory" else None
        self.take("punct", "}")
        self.take("eof")
        if [v.name for v in rets] != [n for _, n, _ in declared]:
            raise IRParseError(f"return values ({', '.join(v.name for v in rets)}) do not match the "
                               f"signature's results ({', '.join(n for _, n, _ in declared)})")
        for v, (tok, _, t) in zip(rets, declared):
            if v.type != t:
                raise self.error(f"result %{v.name} is declared {format_type(t)} but is {format_type(v.type)}", tok)
        g.outputs = rets
        if memory is not None:
            attach_schedule(g, memory)
        if self.weights is not None:
            for n in g:
                if n.op == "weight":
                    ref = n.attrs["ref"]
                    if ref not in self.weights:
                        raise IRParseError(f"weight \"{ref}\" is not in the weights given to parse_graph")
                    g.weights[ref] = self.weights[ref]
        return g

    def use(self) -> Value:
        tok = self.take("value")
        name = _unname(tok)
        if name not in self.env:
            raise self.error(f"value %{name} is used before it is defined", tok)
        return self.env[name]

    def statement(self, g: Graph) -> None:
        first = self.tok
        names = [self.take("value")]
        while self.accept("punct", ","):
            names.append(self.take("value"))
        self.take("punct", "=")
        op_tok = self.take("ident")
        op = op_tok.text
        inputs: list[Value | None] = []
        attrs: dict[str, Any] = {}
        literal: Any = None
        if op == "weight" and self.tok.kind == "string":
            attrs["ref"] = json.loads(self.take("string").text)
            if self.tok.kind == "punct" and self.tok.text == "{":
                attrs.update(self.attr_dict())
        elif op == "constant" and not (self.tok.kind == "punct" and self.tok.text in "({"):
            literal = self.literal()
        else:
            self.take("punct", "(")
            if not self.accept("punct", ")"):
                while True:
                    if self.accept("ident", "none"):
                        inputs.append(None)
                    else:
                        inputs.append(self.use())
                    if self.accept("punct", ")"):
                        break
                    self.take("punct", ",")
            if self.tok.kind == "punct" and self.tok.text == "{":
                attrs = self.attr_dict()
        self.take("punct", ":")
        types = [self.type()]
        while self.accept("punct", ","):
            types.append(self.type())
        loc = None
        if self.accept("ident", "loc"):
            self.take("punct", "(")
            loc = json.loads(self.take("string").text)
            self.take("punct", ")")
        if len(types) != len(names):
            raise self.error(f"{len(names)} results but {len(types)} types", first)
        if literal is not None:
            try:
                attrs["value"] = _literal_array(literal, types[0])
            except ValueError as e:
                raise self.error(str(e), first) from None
        outs = []
        for tok, t in zip(names, types):
            name = _unname(tok)
            if name in self.env:
                raise self.error(f"value %{name} is defined twice", tok)
            v = Value(name, t)
            self.env[name] = v
            outs.append(v)
        g.append(Node(op, inputs, outs, attrs, loc))

    def attr_dict(self) -> dict[str, Any]:
        self.take("punct", "{")
        attrs: dict[str, Any] = {}
        if self.accept("punct", "}"):
            return attrs
        while True:
            key = self.take("ident")
            if key.text in attrs:
                raise self.error(f"attribute {key.text} is given twice", key)
            self.take("punct", "=")
            attrs[key.text] = self.attr_value()
            if self.accept("punct", "}"):
                return attrs
            self.take("punct", ",")

    def attr_value(self) -> Any:
        t = self.tok
        if t.kind == "number":
            self.pos += 1
            return _number(t.text, attr=True)
        if t.kind == "string":
            self.pos += 1
            return json.loads(t.text)
        if t.kind == "ident" and t.text in ("true", "false"):
            self.pos += 1
            return t.text == "true"
        if t.kind == "ident" and t.text == "tensor":
            self.pos += 1
            self.take("punct", "<")
            ty = self.type()
            self.take("punct", ":")
            lit = self.literal()
            self.take("punct", ">")
            try:
                return _literal_array(lit, ty)
            except ValueError as e:
                raise self.error(str(e), t) from None
        if t.kind == "ident":
            # A dtype name is a dtype; any other bare word is a string (`scale = per_channel`).
            self.pos += 1
            try:
                return DType.from_name(t.text)
            except ValueError:
                return t.text
        if t.kind == "punct" and t.text == "[":
            self.pos += 1
            items: list[Any] = []
            if self.accept("punct", "]"):
                return items
            while True:
                items.append(self.attr_value())
                if self.accept("punct", "]"):
                    return items
                self.take("punct", ",")
        raise self.error("expected an attribute value")

    def literal(self) -> Any:
        """A scalar or a flat bracketed list of scalars (numbers, true, false)."""
        if self.accept("punct", "["):
            items: list[Any] = []
            if self.accept("punct", "]"):
                return items
            while True:
                items.append(self.scalar())
                if self.accept("punct", "]"):
                    return items
                self.take("punct", ",")
        return self.scalar()

    def scalar(self) -> Any:
        t = self.tok
        if t.kind == "number":
            self.pos += 1
            return t.text
        if t.kind == "ident" and t.text in ("true", "false"):
            self.pos += 1
            return t.text == "true"
        raise self.error("expected a number")


def _number(text: str, attr: bool = False) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    value = float(text)
    # Float attributes are float32 in ONNX and in the IR.
    return float(np.float32(value)) if attr else value


def _literal_array(lit: Any, t: TensorType) -> np.ndarray:
    if not t.is_static:
        raise ValueError(f"a literal needs a static type, not {format_type(t)}")
    shape: Shape = t.shape  # type: ignore[assignment]
    items = lit if isinstance(lit, list) else [lit]
    n = t.numel()
    if isinstance(lit, list) and len(items) != n or not isinstance(lit, list) and shape != ():
        raise ValueError(f"literal has {len(items)} elements, type {format_type(t)} needs {n}")
    np_dt = t.dtype.np_dtype
    if t.dtype is DType.BOOL:
        vals = [bool(x) if isinstance(x, bool) else bool(int(x)) for x in items]
        return np.array(vals, dtype=np_dt).reshape(shape)
    if t.dtype.is_float:
        return round_float(np.array([float(x) for x in items], dtype=np.float64), t.dtype).reshape(shape)
    ints = [int(x) if not isinstance(x, bool) else int(x) for x in items]
    lo, hi = int_range(t.dtype)
    for x in ints:
        if not lo <= x <= hi:
            raise ValueError(f"{x} does not fit {t.dtype}")
    return wrap_int(np.array(ints, dtype=np.uint64 if t.dtype is DType.U64 else np.int64), t.dtype).reshape(shape)


def parse_graph(text: str, weights: Mapping[str, Any] | None = None) -> Graph:
    """Parse IR text; `weights` supplies the data of every `weight "key"` it references."""
    return _Parser(text, weights).graph()

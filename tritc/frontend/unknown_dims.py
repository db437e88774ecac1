"""Unknown dims in ONNX types: which dims name a symbol, and the fresh symbols that graph inputs get for the others.

Exporters write an unknown dim as `dim_value: -1` (paddle2onnx before 1.0), as a dim with neither value nor name,
as `dim_param: "?"` (on several axes and inputs, which must not mean the same size), or as text that names no
symbol. On a graph input each becomes a symbol of its own, `<input>.<axis>` (docs/FRONTEND.md); elsewhere
(outputs, value_info) it is an unknown dim, so it never claims that two sizes are equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import onnx

from ..ir import dims as dimlib
from ..ir.types import Shape

UNKNOWN_DIM_VALUE = -1  # the one negative dim_value read as "unknown"; any other is an error
_GENERATED = re.compile(r"unk__\d+")  # names ONNX shape inference makes up for dims it cannot name
_NOT_IN_SYMBOL = re.compile(r"[\s,=]")  # would not survive `--shape NAME=SIZE,NAME=SIZE`


def is_unknown_value(d: onnx.TensorShapeProto.Dimension) -> bool:
    return d.HasField("dim_value") and d.dim_value == UNKNOWN_DIM_VALUE


def symbol_name(d: onnx.TensorShapeProto.Dimension) -> str | None:
    """The symbol a dim_param names, or None when it names none: no text, blank text, `?`, ONNX's generated
    `unk__N`, or text that is a constant (`3`, `-1`) rather than a symbol."""
    if not d.HasField("dim_param"):
        return None
    text = d.dim_param
    if not text.strip() or text.strip() == "?" or _GENERATED.fullmatch(text) or not dimlib.symbols(text):
        return None
    return text


class SymbolNamer:
    """Fresh symbols `<input>.<axis>` for the unknown dims of graph inputs, distinct from every name the model
    declares and from each other."""

    def __init__(self, declared: Iterable[str]):
        self.taken = set(declared)

    def fresh(self, input_name: str, axis: int) -> str:
        base = f"{_NOT_IN_SYMBOL.sub('_', input_name)}.{axis}"
        name, k = base, 1
        # `<name>.<digits>` never parses as a polynomial of other symbols, so it stays one opaque symbol.
        while name in self.taken or not dimlib.symbols(name) == {name}:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


def declared_names(graph: onnx.GraphProto) -> set[str]:
    """Every dim_param of the graph's inputs, outputs and value_info."""
    names: set[str] = set()
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.WhichOneof("value") == "tensor_type":
            names.update(d.dim_param for d in vi.type.tensor_type.shape.dim if d.HasField("dim_param"))
    return names


def for_inference(vi: onnx.ValueInfoProto, shape: Shape | None = None) -> onnx.ValueInfoProto:
    """A copy of `vi` for ONNX shape inference: dims written with the symbols of `shape` (a graph input's type as
    tritc reads it), or, without `shape`, unknown dims left blank, so that inference neither rejects a -1 nor
    unifies two `?`."""
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    if out.type.WhichOneof("value") != "tensor_type":
        return out
    for axis, d in enumerate(out.type.tensor_type.shape.dim):
        ours = shape[axis] if shape is not None and axis < len(shape) else None
        if isinstance(ours, str) and symbol_name(d) != ours:
            d.Clear()
            d.dim_param = ours
        elif is_unknown_value(d) or (d.HasField("dim_param") and symbol_name(d) is None):
            d.Clear()
    return out

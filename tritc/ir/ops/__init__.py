"""The op table: one `OpDef` per IR op, holding its operands, attributes, type rule and semantics.

Ops are data. Each family file in this package (elementwise, shape, reduce, nn, ...) registers
its ops with `@defop`, which puts the OpDef (signature, type rule) right beside the numpy
function that *is* the op's meaning; `tritc.ir.interpreter` runs graphs with those functions.
IR op names are snake_case words; `onnx` names the ONNX op type an op comes from, if any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..types import DType, TensorType

# ---- attribute kinds ------------------------------------------------------------------------

REQUIRED = object()  # sentinel default: the attribute must be given
ABSENT = None  # default None: the attribute is optional and has no value when missing

ATTR_KINDS = ("int", "float", "string", "ints", "floats", "strings", "tensor", "dtype")


@dataclass(frozen=True)
class Attr:
    """An attribute of an op: its kind (one of ATTR_KINDS) and default."""

    kind: str
    default: Any = REQUIRED

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def Int(default: Any = REQUIRED) -> Attr:  # noqa: N802 - reads like a type in op tables
    return Attr("int", default)


def Float(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("float", default)


def Str(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("string", default)


def Ints(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("ints", default)


def Floats(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("floats", default)


def Strs(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("strings", default)


def Tensor(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("tensor", default)


def Type(default: Any = REQUIRED) -> Attr:  # noqa: N802
    return Attr("dtype", default)


def check_attr_value(kind: str, value: Any) -> bool:
    """Whether `value` is a valid attribute value of `kind` (as held in Node.attrs)."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, float)
    if kind == "string":
        return isinstance(value, str)
    if kind == "ints":
        return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    if kind == "floats":
        return isinstance(value, list) and all(isinstance(x, float) for x in value)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if kind == "tensor":
        return isinstance(value, np.ndarray)
    if kind == "dtype":
        return isinstance(value, DType)
    return False


# ---- operands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operand:
    """A named operand or result; optional ones may be `none`, a variadic one takes the rest."""

    name: str
    optional: bool = False
    variadic: bool = False


def _operands(spec: Sequence[str | Operand]) -> tuple[Operand, ...]:
    """Operands from a compact spec: "X", "B?" (optional), "inputs*" (variadic)."""
    out = []
    for s in spec:
        if isinstance(s, Operand):
            out.append(s)
        elif s.endswith("*"):
            out.append(Operand(s[:-1], variadic=True))
        elif s.endswith("?"):
            out.append(Operand(s[:-1], optional=True))
        else:
            out.append(Operand(s))
    return tuple(out)


# ---- type rules -----------------------------------------------------------------------------


@dataclass
class InferContext:
    """What a type rule sees: input types, attributes (defaults filled) and constant inputs."""

    op: str
    input_types: list[TensorType | None]
    attrs: dict[str, Any]
    consts: list[np.ndarray | None]  # data of inputs whose value is known at compile time
    num_outputs: int
    name: str | None = None  # node location, for messages
    # Symbolic values of small integer inputs (tritc.ir.symvalues.SymValue), where known.
    syms: list[Any] = field(default_factory=list)

    def type(self, i: int) -> TensorType:
        t = self.input_types[i] if i < len(self.input_types) else None
        if t is None:
            raise TypeRuleError(f"input {i} is missing")
        return t

    def has(self, i: int) -> bool:
        return i < len(self.input_types) and self.input_types[i] is not None

    def const(self, i: int) -> np.ndarray | None:
        return self.consts[i] if i < len(self.consts) else None

    def sym_ints(self, i: int) -> list[Any] | None:
        """Input i's elements as a list of dims (ints, or symbols such as 'seq'), when every one is
        known: a constant's values, or a shape computation's symbolic value. None otherwise."""
        c = self.const(i)
        if c is not None:
            return [int(x) for x in np.asarray(c).reshape(-1)] if np.asarray(c).dtype.kind in "iu" else None
        s = self.syms[i] if i < len(self.syms) else None
        return list(s.elems) if s is not None and s.known else None


class TypeRuleError(Exception):
    """Raised by a type rule when inputs do not fit the op (caught and reported with the node)."""


TypeRule = Callable[[InferContext], list[TensorType]]


# ---- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpDef:
    """Everything the IR knows about one op."""

    name: str
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    attrs: Mapping[str, Attr]
    infer: TypeRule
    compute: Callable[..., Any]
    onnx: str | None = None
    domain: str = ""
    # The ONNX since_versions whose semantics are exactly this op's (older ones need an adapter
    # in tritc/frontend/adapters/, or are unsupported).
    since: tuple[int, ...] = ()
    # Extra keyword arguments the compute function wants from the interpreter (e.g. "out_types").
    wants: tuple[str, ...] = ()
    doc: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    def min_inputs(self) -> int:
        """Operands up to the last required one must be present (a required variadic needs one)."""
        return max((i + 1 for i, o in enumerate(self.inputs) if not o.optional), default=0)

    def max_inputs(self) -> int | None:
        if self.inputs and self.inputs[-1].variadic:
            return None
        return len(self.inputs)

    def min_outputs(self) -> int:
        return max((i + 1 for i, o in enumerate(self.outputs) if not o.optional), default=1)

    def max_outputs(self) -> int | None:
        if self.outputs and self.outputs[-1].variadic:
            return None
        return len(self.outputs)

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes with every unset optional one filled in from its default."""
        out = {}
        for k, a in self.attrs.items():
            if k in attrs:
                out[k] = attrs[k]
            elif not a.required:
                out[k] = a.default
        return out


OPS: dict[str, OpDef] = {}
BY_ONNX: dict[tuple[str, str], OpDef] = {}


def defop(name: str, *, inputs: Sequence[str | Operand], outputs: Sequence[str | Operand] = ("Y",),
          attrs: Mapping[str, Attr] | None = None, infer: TypeRule, onnx: str | None = None,
          since: Sequence[int] = (), domain: str = "",
          wants: Sequence[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an op. The decorated function is its numpy semantics:
    ``compute(*input_arrays, **attrs) -> array | tuple of arrays``.

    `onnx` names the ONNX op type it imports from and `since` the ONNX since_versions that
    import as-is (required with `onnx`)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in OPS:
            raise ValueError(f"op '{name}' is defined twice")
        if onnx is not None and not since:
            raise ValueError(f"op '{name}' maps ONNX {onnx} but lists no since versions")
        op = OpDef(name=name, inputs=_operands(inputs), outputs=_operands(outputs), attrs=dict(attrs or {}),
                   infer=infer, compute=fn, onnx=onnx, domain=domain, since=tuple(since), wants=tuple(wants),
                   doc=(fn.__doc__ or "").strip())
        OPS[name] = op
        if onnx is not None:
            BY_ONNX[(domain, onnx)] = op
        return fn

    return register


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op '{name}'") from None


def onnx_op(op_type: str, domain: str = "") -> OpDef | None:
    """The OpDef an ONNX op type maps to, or None."""
    if domain == "ai.onnx":
        domain = ""
    return BY_ONNX.get((domain, op_type))


# Importing a family registers its ops; the order does not matter.
FAMILIES = ("core", "elementwise", "shape", "reduce", "nn", "cnn", "quant", "attention", "attention_fused", "ternary", "ternary_conv",
            "qonnx", "fused")
for _family in FAMILIES:
    __import__(f"{__name__}.{_family}")

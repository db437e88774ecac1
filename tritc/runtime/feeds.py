"""A call's inputs checked against a model's signature: by name, dtype and shape, the symbols bound from them.

    arrays, bindings, values, bound_by = check_feed(specs, feed, graph.value_symbols)   # every check, every call
    feeds = FeedChecker(specs, graph.value_symbols);  feeds.check(feed)                  # the same answer, faster

`check_feed` is the rule and gives every error. `FeedChecker` answers the same for a feed whose arrays are already
what the compiled code takes (numpy arrays of the exact dtype, C-contiguous, aligned, writable, not empty) with the
checks of every input's shape made one Python function at construction (`shape_binder`) and where each symbol comes
from worked out once; anything else, a wrong name, dtype or shape included, goes through `check_feed` and gets its
error. Used by every run of a compiled model (runtime/model.py, fpga_model.py): a decode step calls it once per
token, with shapes that change every step (the attention mask grows), so nothing is kept per shape.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputShapeError, RunOutOfMemoryError
from ..ir import dims as dimlib
from ..ir.types import format_type

READY = 0x1 | 0x100 | 0x400  # numpy's flags C_CONTIGUOUS | ALIGNED | WRITEABLE: what the compiled code assumes
_BYTE = ctypes.c_byte


def data_pointer(a: np.ndarray) -> int:
    """The address of a C-contiguous array's data (`a.ctypes.data`, which costs several times more: it builds a
    ctypes helper object each time)."""
    try:
        return ctypes.addressof(_BYTE.from_buffer(a))  # a writable, contiguous, non-empty buffer
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def check_feed(specs: Sequence[Any], feed: Mapping[str, Any], value_symbols: Mapping[str, str],
               value_inputs: Sequence[str] | set[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, int],
                                                                      dict[str, bytes], dict[str, str]]:
    """A call's inputs checked against the model's `specs` (IOSpec) by name, dtype and shape: the arrays (native,
    contiguous), the symbols' sizes, the bytes of value-specialised inputs, and where each symbol was bound (for
    messages)."""
    if not isinstance(feed, Mapping):
        raise TypeError(f"input_feed must be a dict of name -> array, got {type(feed).__name__}")
    expected = [i.name for i in specs]
    unknown = [n for n in feed if n not in expected]
    if unknown:
        raise ValueError(f"unknown input name(s) {', '.join(map(repr, unknown))}; the model takes {', '.join(expected)}")
    missing = [n for n in expected if n not in feed]
    if missing:
        raise ValueError(f"missing input(s) {', '.join(map(repr, missing))}")
    arrays: dict[str, np.ndarray] = {}
    bindings: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    for spec in specs:
        a = feed[spec.name]
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        want = spec.type.dtype.np_dtype
        if a.dtype.newbyteorder("=") != want.newbyteorder("=") or a.dtype.kind != want.kind:
            raise TypeError(f"input '{spec.name}' has dtype {a.dtype}, expected {want} ({format_type(spec.type)})")
        bind_shape(spec, a.shape, bindings, bound_by)
        # Copy into native byte order, C order, aligned, writable: the compiled code assumes all four.
        arrays[spec.name] = native_array(spec.name, a, want)
    bind_value_symbols(value_symbols, arrays, bindings, bound_by)
    for name, axis, d in polynomial_dims(specs):  # checked once every symbol is bound
        value = dimlib.evaluate(d, bindings)
        n = arrays[name].shape[axis]
        if value is not None and value != n:
            raise InputShapeError(f"input '{name}' dim {axis} is {n}, but '{d}' = {value}")
    values = {n: arrays[n].tobytes() for n in sorted(value_inputs)}
    return arrays, bindings, values, bound_by


def native_array(name: str, a: np.ndarray, want: np.dtype) -> np.ndarray:
    """Input `name` as the compiled code reads it: native byte order, C order, aligned, writable (a copy unless it
    already is). A copy that memory cannot hold (a broadcast view of 2^33 rows costs nothing to make) is a
    RunOutOfMemoryError naming the input, not numpy's bare MemoryError."""
    if not a.size:
        return np.empty(a.shape, want)
    try:
        return np.require(a.astype(want, copy=False), want, ["C", "A", "W"])
    except MemoryError:
        raise RunOutOfMemoryError(f"out of memory: input '{name}' of shape {list(a.shape)} ({a.size * want.itemsize} "
                                  f"bytes of {want}) must be copied into a contiguous native array, and that memory "
                                  f"could not be had") from None


def bind_shape(spec: Any, shape: Sequence[int], bindings: dict[str, int], bound_by: dict[str, str]) -> None:
    """Check an input's shape against its spec's rank and static dims, and bind the plain symbols among its dims."""
    want = spec.type.shape
    if want is None:
        return
    if len(shape) != len(want):
        raise ValueError(f"input '{spec.name}' has rank {len(shape)} (shape {list(shape)}), expected "
                         f"{format_type(spec.type)}")
    for axis, (d, n) in enumerate(zip(want, shape)):
        if isinstance(d, int):
            if d != n:
                raise InputShapeError(f"input '{spec.name}' has size {n} in dim {axis}, expected {d} "
                                      f"({format_type(spec.type)})")
        elif isinstance(d, str) and dimlib.symbols(d) == {d}:  # a plain symbol: bind it
            if d in bindings and bindings[d] != n:
                raise InputShapeError(f"input '{spec.name}' dim {axis} ('{d}') is {n}, but '{d}' is "
                                      f"{bindings[d]} in another input ({bound_by[d]})")
            bindings[d] = int(n)
            bound_by.setdefault(d, f"input '{spec.name}' dim {axis}")


def polynomial_dims(specs: Sequence[Any]) -> list[tuple[str, int, str]]:
    """(input, axis, dim) of the inputs' dims that are polynomials, not plain symbols (checked once all are bound)."""
    return [(spec.name, axis, d) for spec in specs for axis, d in enumerate(spec.type.shape or ())
            if isinstance(d, str) and dimlib.symbols(d) != {d}]


def bind_value_symbols(value_symbols: Mapping[str, str], arrays: Mapping[str, np.ndarray], bindings: dict[str, int],
                       bound_by: dict[str, str]) -> None:
    """Bind the symbols that inputs give by value (Graph.value_symbols: `past_len` holds `past`)."""
    for name, symbol in value_symbols.items():
        a = arrays[name]
        n = int(a.reshape(-1)[0]) if a.size == 1 else -1
        if n < 0:
            raise InputShapeError(f"input '{name}' holds the size '{symbol}': one integer >= 0, not {a.tolist()}")
        if symbol in bindings and bindings[symbol] != n:
            raise InputShapeError(f"input '{name}' gives '{symbol}' = {n}, but '{symbol}' is {bindings[symbol]} "
                                  f"in another input ({bound_by[symbol]})")
        bindings[symbol] = n
        bound_by.setdefault(symbol, f"the value of input '{name}'")


def shape_binder(specs: Sequence[Any]) -> tuple[Callable[..., tuple[int, ...] | None], list[str]]:
    """bind_shape for every input at once, as one Python function made from the specs: f(shape_0, shape_1, ...) ->
    the sizes of the plain symbols (in the order of the returned names), or None when a rank, a static dim or two
    sizes of a symbol disagree (check_feed then says which)."""
    lines, names = [], {}
    for i, spec in enumerate(specs):
        if spec.type.shape is None:
            continue
        lines.append(f"if len(a{i}) != {len(spec.type.shape)}: return None")
        for axis, d in enumerate(spec.type.shape):
            x = f"a{i}[{axis}]"
            if isinstance(d, int):
                lines.append(f"if {x} != {d}: return None")
            elif isinstance(d, str) and dimlib.symbols(d) == {d}:
                if d in names:
                    lines.append(f"if {x} != {names[d]}: return None")
                else:
                    names[d] = f"v{len(names)}"
                    lines.append(f"{names[d]} = {x}")
    source = "\n".join([f"def bind({', '.join(f'a{i}' for i in range(len(specs)))}):", *("    " + x for x in lines),
                        f"    return ({''.join(v + ', ' for v in names.values())})", ""])
    scope: dict[str, Any] = {}
    exec(compile(source, "<tritc feed>", "exec"), scope)  # noqa: S102 (our own text: names a<i>, v<i>, int literals)
    return scope["bind"], list(names)


class FeedChecker:
    """check_feed for one model's signature, with the shape checks and bindings made one Python function
    (shape_binder) and where each symbol is bound worked out once."""

    def __init__(self, specs: Sequence[Any], value_symbols: Mapping[str, str], value_inputs: Sequence[str] = ()):
        self.specs = list(specs)
        self.value_symbols = dict(value_symbols)
        self.value_inputs = sorted(value_inputs)
        self.signature = [(s.name, s.type.dtype.np_dtype) for s in self.specs]
        self.polynomial = polynomial_dims(self.specs)
        self.bind, self.symbols = shape_binder(self.specs)
        self.bound_by: dict[str, str] = {}  # the same for every call: the first input (and axis) naming a symbol
        for spec in self.specs:
            for axis, d in enumerate(spec.type.shape or ()):
                if isinstance(d, str) and dimlib.symbols(d) == {d}:
                    self.bound_by.setdefault(d, f"input '{spec.name}' dim {axis}")
        for name, symbol in self.value_symbols.items():
            self.bound_by.setdefault(symbol, f"the value of input '{name}'")

    def check(self, feed: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, bytes],
                                                      dict[str, str]]:
        """check_feed's answer (and errors) for `feed`."""
        fast = self._ready(feed)
        return fast if fast is not None else check_feed(self.specs, feed, self.value_symbols, self.value_inputs)

    def _ready(self, feed: Any) -> tuple | None:
        """The answer for a feed of arrays that are what the compiled code takes as they are (numpy arrays of the
        exact dtype, C-contiguous, aligned, writable, not empty) and pass every check; else None (check_feed
        decides, and makes the error)."""
        if type(feed) is not dict or len(feed) != len(self.signature):
            return None
        arrays: dict[str, np.ndarray] = {}
        for name, want in self.signature:
            a = feed.get(name)
            if type(a) is not np.ndarray or (a.dtype is not want and a.dtype != want) or a.flags.num & READY != READY \
                    or not a.size:
                return None
            arrays[name] = a
        sizes = self.bind(*(a.shape for a in arrays.values()))
        if sizes is None:
            return None
        bindings = dict(zip(self.symbols, sizes))
        for name, symbol in self.value_symbols.items():
            a = arrays[name]
            n = int(a.item()) if a.size == 1 else -1
            if n < 0 or bindings.setdefault(symbol, n) != n:
                return None
        for name, axis, d in self.polynomial:
            value = dimlib.evaluate(d, bindings)
            if value is not None and value != arrays[name].shape[axis]:
                return None
        values = {n: arrays[n].tobytes() for n in self.value_inputs}
        return arrays, bindings, values, self.bound_by


__all__ = ["READY", "FeedChecker", "bind_value_symbols", "check_feed", "data_pointer", "shape_binder"]

"""A model's compiled code: generic code for every size, specialisations for chosen sizes, the choice per call.

    program = Program(graph, layout, target, threads=4)
    program.build()                         # the generic code (or, if the graph cannot have it, why not)
    program.add_specialisation({"seq": 1})  # --shape seq=1: code with seq bound, generic in the other symbols
    code = program.code_for({"batch": 2, "seq": 7}, {})   # the most specific code that fits; compiled only if none

This is numba's split of codegen and code library: compiling, including any code for particular sizes, happens
here in tritc/codegen; tritc/runtime binds the symbols from the input arrays, allocates, and calls the code
it is handed. `stats["compilations"]` counts the codes compiled by this object (after `tritc.load`, running at
new sizes leaves it at 0 whenever there is generic code). A graph that cannot have generic code (a node whose
lowering needs static shapes, a dim no rule can express, inputs whose values decide shapes) is compiled per
binding on first use, as before, and `generic_error` says why. Those codes compiled on first use are kept up to
`max_runtime_codes` (least recently used dropped first), so that a thousand distinct shapes through such a model
stay within a stated memory bound (docs/THREADS.md); codes compiled ahead of time are always kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np

from ...errors import UnsupportedError
from ...ir.graph import Graph
from ...ir.types import DType
from .compiler import Specialization, compile_code, symbols_of
from .ops import CONST_OPERANDS
from .symbolic import SymbolicDimError
from .target import Target
from .weights import WeightLayout

MAX_RUNTIME_CODES = 32  # codes compiled on first use that a Program keeps (the least recently used go first)
MAX_VALUE_SPECIALISED = 64  # elements: integer inputs this small that decide shapes are specialised on
VALUE_BLIND = frozenset({"shape", "size"})  # ops whose results depend on their operand's shape only

Key = tuple[tuple[tuple[str, int], ...], tuple[tuple[str, bytes], ...]]


def value_specialised_inputs(graph: Graph) -> list:
    """Small static inputs from which some operand that must be constant is reachable (integers, and floats:
    Range's bounds and OneHot's depth may be float). Not an input whose value is a size (Graph.value_symbols): the
    code reads that size from the dims array like any other symbol."""
    found = []
    for v in graph.inputs:
        t = v.type
        if v.name in graph.value_symbols:
            continue
        if not (t.dtype.is_int or t.dtype.is_float or t.dtype is DType.BOOL) or not t.is_static or (t.numel() or 0) > MAX_VALUE_SPECIALISED:
            continue
        stack, seen = [v], set()
        hit = False
        while stack and not hit:
            x = stack.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            for node, i in x.uses:
                if i in CONST_OPERANDS.get(node.op, ()):
                    hit = True
                    break
                if node.op not in VALUE_BLIND:
                    stack.extend(node.outputs)
        if hit:
            found.append(v)
    return found


def key_of(bindings: Mapping[str, int], values: Mapping[str, bytes]) -> Key:
    return (tuple(sorted((k, int(v)) for k, v in bindings.items())), tuple(sorted(values.items())))


class Program:
    """The codes of one model (graph + weight layout + target) and how a call picks one."""

    def __init__(self, graph: Graph, layout: WeightLayout, target: Target, *, threads: int = 1, fold: bool = True,
                 progress: Callable[[str], None] | None = None):
        self.graph = graph
        self.layout = layout
        self.target = target
        self.threads = threads
        self.fold = fold  # False: codes keep every node (compiler.prepare), for tests of the lowerings
        self.progress = progress
        self.symbols = symbols_of(graph)
        self.value_inputs = [v.name for v in value_specialised_inputs(graph)]
        self.codes: dict[Key, Specialization] = {}
        self.generic_error: str | None = None  # why there is no generic code, once build() found out
        self.stats: dict[str, int] = {"compilations": 0, "evictions": 0}
        self.max_runtime_codes = MAX_RUNTIME_CODES
        self._runtime: OrderedDict[Key, None] = OrderedDict()  # codes compiled on first use, least recent first
        self._lock = threading.Lock()

    # ---- compiling ---------------------------------------------------------------------------------------------

    def build(self) -> Specialization | None:
        """The generic code (compiled unless present); None, with `generic_error` set, when the graph cannot have
        it. A static graph's generic code is simply its code."""
        existing = self.codes.get(key_of({}, {}))
        if existing is not None:
            return existing
        if self.value_inputs:
            self.generic_error = (f"input{'s' if len(self.value_inputs) > 1 else ''} {', '.join(self.value_inputs)} "
                                  f"decide{'' if len(self.value_inputs) > 1 else 's'} shapes by value: compiled per value")
            return None
        try:
            return self._compile({}, {}, "every size" if self.symbols else "static shapes")
        except (UnsupportedError, SymbolicDimError) as e:
            if not self.symbols:
                raise
            self.generic_error = str(e)
            return None

    def add_specialisation(self, bindings: Mapping[str, int], values: Mapping[str, bytes] | None = None) -> Specialization:
        """Code for `bindings` (some or all symbols; `values` for value-specialised inputs), kept for later calls."""
        values = dict(values or {})
        with self._lock:  # (two threads asking for the same sizes compile them once)
            code = self.codes.get(key_of(bindings, values))
            if code is not None:
                self._runtime.pop(key_of(bindings, values), None)  # asked for ahead of time now: kept
                return code
            return self._compile(bindings, values,
                                 ", ".join(f"{k}={v}" for k, v in sorted(bindings.items())) or "static shapes")

    def _compile(self, bindings: Mapping[str, int], values: Mapping[str, bytes], what: str) -> Specialization:
        if self.progress:
            self.progress(f"compiling for {what}")
        code = compile_code(self.with_values(values), self.layout, bindings, self.target, symbols=self.symbols,
                            threads=self.threads, fold=self.fold)
        self.stats["compilations"] += 1
        self.codes[key_of(bindings, values)] = code
        return code

    def with_values(self, values: Mapping[str, bytes]) -> Graph:
        """The graph with value-specialised inputs replaced by constants holding `values` (raw bytes)."""
        if not values:
            return self.graph
        g = self.graph.copy()
        for name, raw in values.items():
            v = g.value(name)
            arr = np.frombuffer(raw, dtype=v.type.dtype.np_dtype).reshape(v.type.shape).copy()  # type: ignore[arg-type]
            c = g.add_constant(arr, v.type, name + ".value")
            g.replace_all_uses(v, c)
            g.inputs = [x for x in g.inputs if x is not v]
        return g

    def add(self, code: Specialization, values: Mapping[str, bytes] | None = None) -> None:
        """A code compiled before (read from an artifact)."""
        self.codes[key_of(code.bindings, values or {})] = code

    # ---- choosing ----------------------------------------------------------------------------------------------

    def choose(self, bindings: Mapping[str, int], values: Mapping[str, bytes]) -> tuple[Key, Specialization] | None:
        """The most specific code that fits a call (its bound symbols agree with the call's sizes, its values are
        the call's), or None."""
        vkey = tuple(sorted(values.items()))
        best: tuple[Key, Specialization] | None = None
        # a snapshot: another thread may add a code (code_for, under the lock) while this one chooses
        for key, code in list(self.codes.items()):
            if key[1] != vkey or any(bindings.get(s) != n for s, n in key[0]):
                continue
            if best is None or len(key[0]) > len(best[0][0]):
                best = (key, code)
        return best

    def code_for(self, bindings: Mapping[str, int], values: Mapping[str, bytes]) -> tuple[Key, Specialization]:
        """The code for a call: chosen, or compiled for exactly these sizes when none fits (a model without generic
        code), and kept."""
        found = self.choose(bindings, values)
        if found is not None:
            if found[0] in self._runtime:
                try:
                    self._runtime.move_to_end(found[0])
                except KeyError:  # another thread dropped it meanwhile: the code is still good for this call
                    pass
            return found
        with self._lock:
            found = self.choose(bindings, values)
            if found is None:
                if not self.value_inputs and self.generic_error is None and key_of({}, {}) not in self.codes:
                    if self.build() is not None:
                        return self.choose(bindings, values)  # type: ignore[return-value]
                self._compile(bindings, values, ", ".join(f"{k}={v}" for k, v in sorted(bindings.items()))
                              or "static shapes")
                found = self.choose(bindings, values)
                assert found is not None
                self._runtime[found[0]] = None
                while len(self._runtime) > max(self.max_runtime_codes, 1):
                    old, _ = self._runtime.popitem(last=False)
                    self.codes.pop(old, None)
                    self.stats["evictions"] += 1
        assert found is not None
        return found


__all__ = ["Program", "key_of", "value_specialised_inputs"]

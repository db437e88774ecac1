"""CompiledModel: a compiled tritc model you can run, save and load, with onnxruntime's calling style.

    model = tritc.compile("model.onnx")          # or tritc.load("model.tritc")
    logits, = model.run(None, {"input_ids": ids})
    logits = model(input_ids=ids)

Shapes are specialised (docs/CODEGEN.md): code exists for each binding of the symbolic dims
that was compiled ahead of time; a new binding is compiled on first use (from the final IR kept
in the model) and cached. Integer inputs that decide shapes (a Reshape's shape fed as an input)
are specialised on their values the same way. Inputs are checked by name, dtype and shape before
any native code runs.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..codegen.llvm.compiler import Specialization, compile_specialization, object_from_bitcode, symbols_of
from ..codegen.llvm.ops import CONST_OPERANDS
from ..codegen.llvm.target import Target
from ..codegen.llvm.weights import WeightLayout
from ..ir import dims as dimlib
from ..ir.graph import Graph, Value
from ..ir.text import print_graph
from ..ir.types import DType, TensorType, format_type
from .cpu import CpuExecutable, aligned_empty

MAX_VALUE_SPECIALISED = 64  # elements: integer inputs this small that decide shapes are specialised on
VALUE_BLIND = frozenset({"shape", "size"})  # ops whose results depend on their operand's shape only


@dataclass(frozen=True)
class IOSpec:
    """A model input or output: name, dtype and (possibly symbolic) shape."""

    name: str
    type: TensorType

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype.np_dtype

    @property
    def shape(self) -> list[int | str | None]:
        return list(self.type.shape) if self.type.shape is not None else []

    def __str__(self) -> str:
        return f"{self.name}: {format_type(self.type)}"


def value_specialised_inputs(graph: Graph) -> list[Value]:
    """Small static inputs from which some operand that must be constant is reachable (integers, and floats:
    Range's bounds and OneHot's depth may be float)."""
    found = []
    for v in graph.inputs:
        t = v.type
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


class CompiledModel:
    """A model compiled for the CPU: final IR, weights, and code per shape binding."""

    def __init__(self, graph: Graph, layout: WeightLayout, blob: bytes | np.ndarray, target: Target, *,
                 threads: int | None = None, meta: Mapping[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None, fold: bool = True):
        self.graph = graph
        self.layout = layout
        buf = aligned_empty(max(len(blob), 1))
        buf[:len(blob)] = np.frombuffer(bytes(blob), dtype=np.uint8) if not isinstance(blob, np.ndarray) else blob
        self.blob = buf
        self.target = target
        self.threads = threads or os.cpu_count() or 1
        self.meta = dict(meta or {})
        self.progress = progress
        self.fold = fold  # False: specialisations keep every node (codegen.llvm.compiler.specialize), for tests
        self.inputs = [IOSpec(v.name, v.type) for v in graph.inputs]
        self.outputs = [IOSpec(v.name, v.type) for v in graph.outputs]
        self.symbols = symbols_of(graph)
        self._value_inputs = {v.name for v in value_specialised_inputs(graph)}
        self._specs: dict[tuple, tuple[Specialization, CpuExecutable | None]] = {}
        self._lock = threading.Lock()

    # ---- signatures ------------------------------------------------------------------------------

    def get_inputs(self) -> list[IOSpec]:
        return list(self.inputs)

    def get_outputs(self) -> list[IOSpec]:
        return list(self.outputs)

    @property
    def ir_text(self) -> str:
        return print_graph(self.graph)

    @property
    def specializations(self) -> list[Specialization]:
        return [s for s, _ in self._specs.values()]

    # ---- running ---------------------------------------------------------------------------------

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None) -> list[np.ndarray]:
        """onnxruntime's InferenceSession.run: outputs in the order of `output_names` (all if None)."""
        arrays, bindings, values = self._check_inputs(input_feed)
        names = [o.name for o in self.outputs]
        if output_names is not None:
            unknown = [n for n in output_names if n not in names]
            if unknown:
                raise ValueError(f"unknown output name(s) {', '.join(map(repr, unknown))}; outputs are {', '.join(names)}")
        spec, exe = self._executable(bindings, values)
        call_inputs = [arrays[v.name] for v in spec.graph.inputs] if spec.graph is not None else \
            [arrays[i.name] for i in self.inputs if i.name not in self._value_inputs]
        results = exe(call_inputs)  # type: ignore[misc]
        by_name = dict(zip(names, results))
        return [by_name[n] for n in (output_names if output_names is not None else names)]

    def __call__(self, **inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """model(x=...) -> the output (or a tuple of outputs, in order)."""
        out = self.run(None, inputs)
        return out[0] if len(out) == 1 else tuple(out)

    def _check_inputs(self, feed: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, bytes]]:
        if not isinstance(feed, Mapping):
            raise TypeError(f"input_feed must be a dict of name -> array, got {type(feed).__name__}")
        expected = [i.name for i in self.inputs]
        unknown = [n for n in feed if n not in expected]
        if unknown:
            raise ValueError(f"unknown input name(s) {', '.join(map(repr, unknown))}; the model takes {', '.join(expected)}")
        missing = [n for n in expected if n not in feed]
        if missing:
            raise ValueError(f"missing input(s) {', '.join(map(repr, missing))}")
        arrays: dict[str, np.ndarray] = {}
        bindings: dict[str, int] = {}
        for spec in self.inputs:
            a = feed[spec.name]
            if not isinstance(a, np.ndarray):
                a = np.asarray(a)
            want = spec.type.dtype.np_dtype
            if a.dtype.newbyteorder("=") != want.newbyteorder("=") or a.dtype.kind != want.kind:
                raise TypeError(f"input '{spec.name}' has dtype {a.dtype}, expected {want} ({format_type(spec.type)})")
            shape = spec.type.shape
            if shape is not None:
                if a.ndim != len(shape):
                    raise ValueError(f"input '{spec.name}' has rank {a.ndim} (shape {list(a.shape)}), expected "
                                     f"{format_type(spec.type)}")
                for axis, (d, n) in enumerate(zip(shape, a.shape)):
                    if isinstance(d, int):
                        if d != n:
                            raise ValueError(f"input '{spec.name}' has size {n} in dim {axis}, expected {d} "
                                             f"({format_type(spec.type)})")
                    elif isinstance(d, str) and dimlib.symbols(d) == {d}:  # a plain symbol: bind it
                        if d in bindings and bindings[d] != n:
                            raise ValueError(f"input '{spec.name}' dim {axis} ('{d}') is {n}, but '{d}' is "
                                             f"{bindings[d]} in another input")
                        bindings[d] = int(n)
            # Copy into native byte order, C order, aligned, writable: the compiled code assumes all four.
            arrays[spec.name] = np.require(a.astype(want, copy=False), want, ["C", "A", "W"]) if a.size else \
                np.empty(a.shape, want)
        for spec in self.inputs:  # polynomial dims are checked once every symbol is bound
            for axis, d in enumerate(spec.type.shape or ()):
                if isinstance(d, str) and dimlib.symbols(d) != {d}:
                    value = dimlib.evaluate(d, bindings)
                    n = arrays[spec.name].shape[axis]
                    if value is not None and value != n:
                        raise ValueError(f"input '{spec.name}' dim {axis} is {n}, but '{d}' = {value}")
        values = {n: arrays[n].tobytes() for n in sorted(self._value_inputs)}
        return arrays, bindings, values

    # ---- specialisations ---------------------------------------------------------------------------

    def _key(self, bindings: Mapping[str, int], values: Mapping[str, bytes]) -> tuple:
        return (tuple(sorted(bindings.items())), tuple(sorted(values.items())))

    def _executable(self, bindings: dict[str, int], values: dict[str, bytes]) -> tuple[Specialization, CpuExecutable]:
        key = self._key(bindings, values)
        entry = self._specs.get(key)
        if entry is None or entry[1] is None:
            with self._lock:
                entry = self._specs.get(key)
                if entry is None:
                    spec = self.compile_for(bindings, values)
                    entry = (spec, None)
                if entry[1] is None:
                    exe = CpuExecutable(entry[0].object, self.target, entry[0].entry, entry[0].input_types,
                                        entry[0].output_types, entry[0].arena_bytes, self.blob, self.threads)
                    entry = (entry[0], exe)
                self._specs[key] = entry
        return entry  # type: ignore[return-value]

    def compile_for(self, bindings: Mapping[str, int], values: Mapping[str, bytes] | None = None) -> Specialization:
        """Compile (and remember) code for one binding of the symbolic dims / value inputs."""
        g = self._with_values(values or {})
        if self.progress:
            self.progress(f"compiling for {', '.join(f'{k}={v}' for k, v in sorted(bindings.items())) or 'static shapes'}")
        spec = compile_specialization(g, self.layout, bindings, self.target, threads=self.threads, fold=self.fold,
                                      progress=None)
        self._specs.setdefault(self._key(bindings, values or {}), (spec, None))
        return spec

    def _with_values(self, values: Mapping[str, bytes]) -> Graph:
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

    def add_specialization(self, spec: Specialization, values: Mapping[str, bytes] | None = None) -> None:
        self._specs[self._key(spec.bindings, values or {})] = (spec, None)

    def recompile_objects_for(self, target: Target) -> None:
        """Rebuild every stored object from its bitcode for `target` (same ISA family)."""
        for key, (spec, _) in list(self._specs.items()):
            spec.object = object_from_bitcode(spec.bitcode, target)
            self._specs[key] = (spec, None)
        self.target = target

    def save(self, path: str | os.PathLike[str]) -> None:
        from .serialize import save_model

        save_model(self, path)

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"CompiledModel({ins} -> {outs}; target {self.target.cpu} [{self.target.isa}], {len(self._specs)} compiled shapes)"


def warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


__all__ = ["CompiledModel", "IOSpec", "__version__", "value_specialised_inputs", "warn"]

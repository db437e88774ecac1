"""CompiledModel: a compiled tritc model you can run, save and load, with onnxruntime's calling style.

    model = tritc.compile("model.onnx")          # or tritc.load("model.tritc")
    logits, = model.run(None, {"input_ids": ids})
    logits = model(input_ids=ids)
    model.run(None, feed, outputs={"present.0.key": buffer})    # outputs written into the caller's arrays

The code lives in a codegen Program (codegen/llvm/program.py): generic code that takes every size, plus any
specialisations compiled for chosen sizes. A call checks its inputs by name, dtype and shape, binds the
model's symbols from the arrays (checking the relations between them that the model implies), asks the
program for the code that fits, computes the outputs' shapes and the arena size from that code's symbolic
types, and calls it with the sizes as the `dims` array. The arena is allocated once per model and thread and
grown (doubling) when a call needs more. `model.stats["compilations"]` counts the codes compiled since the
model was created or loaded: with generic code, running at new sizes compiles nothing.

`with_cache_in_place()` derives (once) the model whose KV cache is appended in place: its capacity form, compiled
from the same final IR and weights, for tritc.generate (docs/GENERATE.md, "The cache").
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
from ..codegen.llvm.compiler import Specialization, object_from_bitcode
from ..codegen.llvm.program import Key, Program, value_specialised_inputs
from ..codegen.llvm.symbolic import evaluate, size
from ..codegen.llvm.target import Target
from ..codegen.llvm.weights import WeightLayout
from ..errors import InputShapeError, RunOutOfMemoryError
from ..ir import dims as dimlib
from ..ir.graph import Graph
from ..ir.sizes import format_symbols
from ..ir.text import print_graph
from ..ir.types import TensorType, format_type
from ..limits import DEFAULT_LIMITS, Limits
from .cpu import ALIGN, CpuExecutable, aligned_empty

ARENA_GROWTH = 2  # a thread's arena grows to at least this many times its size: decoding grows it every step


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


class CompiledModel:
    """A model compiled for the CPU: final IR, weights, and its Program of codes."""

    max_arena_bytes: int = DEFAULT_LIMITS.max_arena_bytes  # a run needing more is refused before allocating (settable)

    def __init__(self, graph: Graph, layout: WeightLayout, blob: bytes | np.ndarray, target: Target, *,
                 threads: int | None = None, meta: Mapping[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None, fold: bool = True):
        self.graph = graph
        self.layout = layout
        self.blob = blob if is_aligned_blob(blob) else copy_aligned(blob)  # type: ignore[arg-type]
        self.threads = threads or os.cpu_count() or 1
        self.meta = dict(meta or {})
        self.program = Program(graph, layout, target, threads=self.threads, fold=fold, progress=progress)
        self.inputs = [IOSpec(v.name, v.type) for v in graph.inputs]
        self.outputs = [IOSpec(v.name, v.type) for v in graph.outputs]
        self._exes: dict[Key, CpuExecutable] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # .arena: this thread's scratch
        self._in_place_pairs = in_place_pairs(graph)  # output -> the input whose buffer it may be bound to
        self._cache_in_place: tuple[CompiledModel | None, str] | None = None  # with_cache_in_place's answer, kept

    # ---- signatures ------------------------------------------------------------------------------

    def get_inputs(self) -> list[IOSpec]:
        return list(self.inputs)

    def get_outputs(self) -> list[IOSpec]:
        return list(self.outputs)

    @property
    def target(self) -> Target:
        return self.program.target

    @target.setter
    def target(self, target: Target) -> None:
        self.program.target = target

    @property
    def progress(self) -> Callable[[str], None] | None:
        """Called with a line when code is compiled (a size without code, in a model that has no generic code)."""
        return self.program.progress

    @progress.setter
    def progress(self, say: Callable[[str], None] | None) -> None:
        self.program.progress = say

    @property
    def symbols(self) -> list[str]:
        return self.program.symbols

    @property
    def stats(self) -> dict[str, int]:
        """"compilations": codes compiled since this model was made or loaded; "evictions": codes compiled on first
        use and dropped again (Program.max_runtime_codes)."""
        return self.program.stats

    @property
    def ir_text(self) -> str:
        return print_graph(self.graph)

    @property
    def specializations(self) -> list[Specialization]:
        """Every code the model holds: the generic one (bindings {}) and the specialisations."""
        return list(self.program.codes.values())

    # ---- running ---------------------------------------------------------------------------------

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None, *, outputs: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """onnxruntime's InferenceSession.run: outputs in the order of `output_names` (all if None).

        `outputs` binds some outputs to arrays of the caller's (name -> array of the output's dtype and this call's
        shape, C-contiguous, writable): the code writes into them and returns them, whether fetched or not. Only a
        capacity-form present output may share memory with an input, its past input's very array (the KV cache
        appended in place: with_cache_in_place)."""
        arrays, bindings, values, bound_by = self._check_inputs(input_feed)
        names = [o.name for o in self.outputs]
        if output_names is not None:
            unknown = [n for n in output_names if n not in names]
            if unknown:
                raise ValueError(f"unknown output name(s) {', '.join(map(repr, unknown))}; outputs are {', '.join(names)}")
        key, code = self.program.code_for(bindings, values)
        check_relations(code, bindings, bound_by)
        exe = self._executable(key, code)
        call_inputs = [arrays[n] for n in (code.input_names or [i.name for i in self.inputs])]
        shapes = [[evaluate(size(d), bindings) for d in t.shape] for t in code.output_types]  # type: ignore[union-attr]
        bound = self._check_outputs(outputs, dict(zip(names, shapes)), arrays) if outputs else None
        dims = np.array([bindings.get(s, 0) for s in self.program.symbols] or [0], dtype=np.int64)
        results = exe(call_inputs, shapes, self._arena(evaluate(code.arena_bytes, bindings), bindings), dims,
                      [bound.get(n) for n in names] if bound else None)
        by_name = dict(zip(names, results))
        return [by_name[n] for n in (output_names if output_names is not None else names)]

    def _check_outputs(self, outputs: Mapping[str, Any], shapes: Mapping[str, Sequence[int]],
                       inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The bound output arrays, each checked (one error per problem, naming the output)."""
        return check_bound_outputs(self.outputs, outputs, shapes, inputs, self._in_place_pairs)

    def __call__(self, **inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """model(x=...) -> the output (or a tuple of outputs, in order)."""
        out = self.run(None, inputs)
        return out[0] if len(out) == 1 else tuple(out)

    def _arena(self, nbytes: int, bindings: Mapping[str, int]) -> np.ndarray:
        """This thread's arena, grown to hold `nbytes` (never shrunk, never allocated per call): the memory of every
        intermediate value and kernel scratch. RunOutOfMemoryError when not even `nbytes` can be had."""
        arena = getattr(self._local, "arena", None)
        if nbytes > self.max_arena_bytes:
            at = f" at {format_symbols(bindings)}" if bindings else ""
            raise Limits(max_arena_bytes=self.max_arena_bytes).exceeded(
                "max_arena_bytes", nbytes, f"the run{at} needs an arena (intermediate values and kernel scratch) of")
        if arena is None or arena.size < nbytes:
            grown = max(nbytes, ARENA_GROWTH * arena.size if arena is not None else 0, 1)
            for size in dict.fromkeys((grown, max(nbytes, 1))):  # the doubling is a wish, nbytes a need
                try:
                    arena = self._local.arena = aligned_empty(size)
                    break
                except (MemoryError, ValueError):  # ValueError: more than numpy can index
                    continue
            else:
                at = f" at {format_symbols(bindings)}" if bindings else ""
                raise RunOutOfMemoryError(f"out of memory: could not allocate {nbytes} bytes of arena (the model's "
                                          f"intermediate values and kernel scratch){at}")
        return arena

    def _check_inputs(self, feed: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, bytes],
                                                                dict[str, str]]:
        """The arrays (native, contiguous), the symbols' sizes, the bytes of value-specialised inputs, and where each
        symbol was bound (for messages)."""
        return check_feed(self.inputs, feed, self.graph.value_symbols, self.program.value_inputs)

    # ---- codes -------------------------------------------------------------------------------------

    def _executable(self, key: Key, code: Specialization) -> CpuExecutable:
        exe = self._exes.get(key)
        if exe is None:
            with self._lock:
                exe = self._exes.get(key)
                if exe is None:
                    exe = CpuExecutable(code.object, self.target, code.entry, code.output_types, self.blob, self.threads)
                    self._exes[key] = exe
                    for gone in [k for k in self._exes if k not in self.program.codes]:  # codes the program dropped
                        del self._exes[gone]
        return exe

    def with_cache_in_place(self) -> tuple[CompiledModel | None, str]:
        """This model with its KV cache in the capacity form (kv-cache-in-place on the final IR: the past inputs are
        buffers, `past_len` says how many rows they hold, the present outputs are the buffers appended in place),
        compiled once and kept; or None and why the model cannot take that form. This model is left as it is."""
        if self._cache_in_place is None:
            with self._lock:
                if self._cache_in_place is None:
                    self._cache_in_place = self._derive_cache_in_place()
        return self._cache_in_place

    def _derive_cache_in_place(self) -> tuple[CompiledModel | None, str]:
        from ..ir.memory import current_schedule
        from ..passes.kv_cache_in_place import KVCacheInPlace
        from ..passes.pass_manager import PassManager
        from ..passes.schedule_memory import ScheduleMemory

        graph = self.graph.copy()
        step = PassManager([KVCacheInPlace()])
        step.run(graph)
        report = step.result_of(KVCacheInPlace.name)
        if not report.in_place:
            return None, report.reason
        if current_schedule(self.graph) is not None:  # the IR's memory schedule describes the new graph again
            PassManager([ScheduleMemory()]).run(graph)
        model = CompiledModel(graph, self.layout, self.blob, self.target, threads=self.threads,
                              meta={**self.meta, "kv_cache": "in place"}, progress=self.progress, fold=self.program.fold)
        if model.compile_generic() is None:  # (a code per past length would compile at every step)
            return None, f"its capacity form has no generic code: {model.program.generic_error}"
        return model, ""

    def compile_for(self, bindings: Mapping[str, int], values: Mapping[str, bytes] | None = None) -> Specialization:
        """Compile (and keep) code for some sizes: a specialisation, generic in the symbols not in `bindings`."""
        return self.program.add_specialisation(bindings, values)

    def compile_generic(self) -> Specialization | None:
        """The code for every size (None when the model cannot have it: `program.generic_error` says why)."""
        return self.program.build()

    def add_specialization(self, spec: Specialization, values: Mapping[str, bytes] | None = None) -> None:
        self.program.add(spec, values)

    def recompile_objects_for(self, target: Target) -> None:
        """Rebuild every stored object from its bitcode for `target` (same ISA family)."""
        for code in self.program.codes.values():
            code.object = object_from_bitcode(code.bitcode, target)
        self._exes.clear()
        self.target = target

    def save(self, path: str | os.PathLike[str], *, sign_key: bytes | None = None) -> None:
        """Write the artifact (atomically); with `sign_key`, signed with HMAC-SHA256 (docs/ARTIFACT.md)."""
        from .serialize import save_model

        save_model(self, path, sign_key=sign_key)

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        n = len(self.program.codes)
        return f"CompiledModel({ins} -> {outs}; target {self.target.cpu} [{self.target.isa}], {n} compiled code{'s' * (n != 1)})"


def check_feed(specs: Sequence[IOSpec], feed: Mapping[str, Any], value_symbols: Mapping[str, str],
               value_inputs: Sequence[str] | set[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, int],
                                                                      dict[str, bytes], dict[str, str]]:
    """A call's inputs checked against the model's `specs` by name, dtype and shape: the arrays (native, contiguous),
    the symbols' sizes, the bytes of value-specialised inputs, and where each symbol was bound (for messages)."""
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
                        raise InputShapeError(f"input '{spec.name}' dim {axis} ('{d}') is {n}, but '{d}' is "
                                              f"{bindings[d]} in another input ({bound_by[d]})")
                    bindings[d] = int(n)
                    bound_by.setdefault(d, f"input '{spec.name}' dim {axis}")
        # Copy into native byte order, C order, aligned, writable: the compiled code assumes all four.
        arrays[spec.name] = native_array(spec.name, a, want)
    bind_value_symbols(value_symbols, arrays, bindings, bound_by)
    for spec in specs:  # polynomial dims are checked once every symbol is bound
        for axis, d in enumerate(spec.type.shape or ()):
            if isinstance(d, str) and dimlib.symbols(d) != {d}:
                value = dimlib.evaluate(d, bindings)
                n = arrays[spec.name].shape[axis]
                if value is not None and value != n:
                    raise InputShapeError(f"input '{spec.name}' dim {axis} is {n}, but '{d}' = {value}")
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


def check_bound_outputs(specs: Sequence[IOSpec], outputs: Mapping[str, Any], shapes: Mapping[str, Sequence[int]],
                        inputs: Mapping[str, np.ndarray], pairs: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The output arrays a call binds (`outputs`), each checked against the model's `specs` and this call's `shapes`
    (one error per problem, naming the output); only a present output may share its past input's array (`pairs`)."""
    if not isinstance(outputs, Mapping):
        raise TypeError(f"outputs must be a dict of output name -> array, got {type(outputs).__name__}")
    by_name = {o.name: o for o in specs}
    unknown = [n for n in outputs if n not in by_name]
    if unknown:
        raise ValueError(f"cannot bind unknown output(s) {', '.join(map(repr, unknown))}; outputs are "
                         f"{', '.join(by_name)}")
    for name, a in outputs.items():
        spec, want = by_name[name], list(shapes[name])
        where = f"output '{name}' ({format_type(spec.type)})"
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{where} is bound to a {type(a).__name__}, not a numpy array")
        if a.dtype != spec.dtype:
            raise TypeError(f"{where} is bound to an array of dtype {a.dtype}, expected {spec.dtype}")
        if list(a.shape) != want:
            raise ValueError(f"{where} is bound to an array of shape {list(a.shape)}; this call writes {want}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{where} is bound to an array that is not C-contiguous (a view with strides "
                             f"{list(a.strides)}): bind the whole contiguous array")
        if not a.flags.writeable:
            raise ValueError(f"{where} is bound to a read-only array")
        if not a.flags.aligned:
            raise ValueError(f"{where} is bound to an array whose data is not aligned for {a.dtype}")
    check_overlaps(dict(outputs), inputs, pairs)
    return dict(outputs)


def check_relations(code: Specialization, bindings: Mapping[str, int], bound_by: Mapping[str, str]) -> None:
    """The relations the code takes between symbols (`total` = `past+seq`) hold for this call's sizes: else one
    InputShapeError naming the input, axis, symbol and both values."""
    for symbol, dim in code.relations.items():
        if symbol not in bindings:
            continue
        want = dimlib.evaluate(dim, dict(bindings))
        if want is None or want == bindings[symbol]:
            continue
        parts = ", ".join(f"{s}={bindings[s]}" + (f" from {bound_by[s]}" if s in bound_by else "")
                          for s in sorted(dimlib.symbols(dim)) if s in bindings)
        raise InputShapeError(f"{bound_by.get(symbol, 'an input')} ('{symbol}') is {bindings[symbol]}, but the model needs "
                              f"{symbol} = {dim} = {want} ({parts})")
    for a, b, where, *how in code.checks:
        relation = how[0] if how else "="
        va, vb = dimlib.evaluate(a, dict(bindings)), dimlib.evaluate(b, dict(bindings))
        if va is None or vb is None or (va >= vb if relation == ">=" else va == vb):
            continue
        used = sorted(dimlib.symbols(a) | dimlib.symbols(b))
        parts = ", ".join(f"{s}={bindings[s]}" + (f" from {bound_by[s]}" if s in bound_by else "") for s in used if s in bindings)
        values = " and ".join(f"{x} is {v}" for x, v in ((a, va), (b, vb)) if not isinstance(x, int))
        raise InputShapeError(f"{where or 'the model'} needs {a} {relation} {b}, but at these sizes ({parts}) {values}")


def is_aligned_blob(blob: Any) -> bool:
    """Whether `blob` can serve as the weight blob as it is (shared, not copied): an aligned contiguous uint8 array
    (the blob of another model with the same weights)."""
    return isinstance(blob, np.ndarray) and blob.dtype == np.uint8 and blob.ndim == 1 and blob.flags.c_contiguous \
        and blob.size > 0 and blob.ctypes.data % ALIGN == 0


def copy_aligned(blob: bytes | np.ndarray) -> np.ndarray:
    buf = aligned_empty(max(len(blob), 1))
    buf[:len(blob)] = np.frombuffer(bytes(blob), dtype=np.uint8) if not isinstance(blob, np.ndarray) else blob
    return buf


def in_place_pairs(graph: Graph) -> dict[str, str]:
    """Present outputs of capacity-form fused_attention nodes -> their past inputs: the one case where an output may
    be bound to an input's array (the lowering copies no past row when both are the same buffer)."""
    inputs, outputs = {id(v) for v in graph.inputs}, {id(v) for v in graph.outputs}
    pairs = {}
    for node in graph:
        if node.op != "fused_attention" or len(node.inputs) < 7 or node.inputs[6] is None:
            continue
        for out, past in zip(node.outputs[2:4], node.inputs[4:6]):
            if past is not None and id(out) in outputs and id(past) in inputs:
                pairs[out.name] = past.name
    return pairs


def check_overlaps(outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray], pairs: Mapping[str, str]) -> None:
    """ValueError when a bound output shares memory with another bound output or with an input, unless it is a
    present output bound to its own past input's very array (`pairs`). One sweep over the arrays' byte ranges."""
    spans = [(a.ctypes.data, a.ctypes.data + a.nbytes, kind, n) for kind, arrays in (("output", outputs), ("input", inputs))
             for n, a in arrays.items() if a.size]  # (all C-contiguous: checked, or made so by the input checks)
    spans.sort()
    active: list[tuple[int, int, str, str]] = []
    for span in spans:
        active = [x for x in active if x[1] > span[0]]
        for other in active:
            if "output" not in (span[2], other[2]) or _same_buffer(span, other, outputs, inputs, pairs):
                continue
            out, peer = (span, other) if span[2] == "output" else (other, span)
            what = f"output '{peer[3]}'" if peer[2] == "output" else f"input '{peer[3]}'"
            allowed = f"; only a present output may share its past input's array ({', '.join(f'{o} <- {i}' for o, i in pairs.items())})" \
                if pairs else ": the model has no output that may share an input's array"
            raise ValueError(f"output '{out[3]}' is bound to memory that {what} uses too{allowed}")
        active.append(span)


def _same_buffer(a: tuple, b: tuple, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
                 pairs: Mapping[str, str]) -> bool:
    out, inp = (a, b) if a[2] == "output" else (b, a)
    if inp[2] != "input" or pairs.get(out[3]) != inp[3]:
        return False
    x, y = outputs[out[3]], inputs[inp[3]]
    return x.ctypes.data == y.ctypes.data and x.shape == y.shape


def warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


__all__ = ["CompiledModel", "IOSpec", "__version__", "value_specialised_inputs", "warn"]

"""The CPU compiler driver: final IR + weight layout (+ sizes for some symbols) -> object code.

One compile serves every size (docs/CODEGEN.md): symbolic dims are run-time values of the generated code,
which reads them from tritc_main's `dims` argument. `compile_code(graph, ..., bindings={})` makes that
generic code; bindings for some or all symbols make a specialisation (`--shape`), generic in the others.
Steps:

    prepare   the "specialise" pipeline (passes/pipelines.py): infer-shapes{bind=...}, fold-constants,
              eliminate-dead-code, infer-shapes; then relations between the symbols left (relations.py), shape
              values known statically folded; each graph output produced by a node of its own
    plan      memory: caller buffers, weight blob offsets, and schedule-memory run on this graph (node order, views,
              in place); after lowering, the arena placed with the scratch the lowerings asked for (memory.py)
    lower     one LLVM function per distinct node signature and the entry tritc_main
    emit      verify, optimise (new pass manager, O3), object code and bitcode (worker.py: in a child
              process, so an LLVM crash is an error, not the end of the caller)

program.py holds the codes of one model and chooses one per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ...errors import UnsupportedError
from ...ir import dims as dimlib
from ...ir.graph import Graph, Node
from ...ir.memory import MemorySchedule
from ...ir.types import Dim, TensorType, format_type
from ...passes.infer_shapes import InferShapes
from ...passes.pass_manager import PassManager
from ...passes.pipelines import SPECIALISED_FOLD_MAX_BYTES, specialise_passes
from .jit import emit_assembly, emit_object, optimize
from .lower import ENTRY, NO_CODE, check_lowerable, lower_graph
from .memory import plan_memory
from .ops import CONST_OPERANDS
from .relations import fold_shape_values, infer_relations, rewrite_symbol
from .symbolic import Size
from .target import Target
from .weights import WeightLayout
from .worker import compile_text


@dataclass
class Specialization:
    """Code for the graph with some (or none: generic code) of its symbols bound to sizes."""

    bindings: dict[str, int]
    input_types: list[TensorType]
    output_types: list[TensorType]
    arena_bytes: Size  # bytes of scratch a call needs: an int, or an expression over the unbound symbols
    object: bytes
    bitcode: bytes
    entry: str = ENTRY
    stats: dict[str, float] = field(default_factory=dict)
    llvm_ir: str = ""  # unoptimised LLVM IR text (kept for `tritc inspect --llvm`)
    graph: Graph | None = None  # the prepared graph (not stored in artifacts)
    relations: dict[str, Dim] = field(default_factory=dict)  # symbol -> the dim the code takes it to equal
    # equalities of dims the code assumes but the type rules could not prove (a reshape of 3*n elements to [7,11]):
    # [a, b, where], checked by the runtime before each call (runtime/model.py, check_relations)
    checks: list[tuple] = field(default_factory=list)
    input_names: list[str] | None = None  # the inputs the code reads, in order (None: all the model's)
    schedule: MemorySchedule | None = None  # the arena's placement in `graph`, scratch slots included (not stored)

    def key(self) -> tuple:
        return tuple(sorted(self.bindings.items()))

    @property
    def is_generic(self) -> bool:
        """Whether the code takes sizes at run time (some dim it sees is symbolic)."""
        return any(not t.is_static for t in [*self.input_types, *self.output_types]) or not isinstance(self.arena_bytes, int)


def symbols_of(graph: Graph) -> list[str]:
    """The symbols naming the graph inputs' dims, in order of first appearance, then those only an input's value
    gives (Graph.value_symbols): the order of the dims array."""
    from ...ir import dims as dimlib

    seen: dict[str, None] = {}
    for v in graph.inputs:
        for d in v.type.shape or ():
            for s in sorted(dimlib.symbols(d)):
                seen.setdefault(s, None)
    for v in graph.inputs:
        if v.name in graph.value_symbols:
            seen.setdefault(graph.value_symbols[v.name], None)
    return list(seen)


def _check_inputs(g: Graph) -> None:
    for v in g.inputs:
        # The ONNX frontend names every unknown input dim (<input>.<axis>); a graph built otherwise may still have one.
        if v.type.shape is None:
            raise UnsupportedError(f"input '{v.name}' ({format_type(v.type)}) has an unknown rank; give its type a shape")
        if None in v.type.shape:
            axis = v.type.shape.index(None)
            raise UnsupportedError(f"dim {axis} of input '{v.name}' ({format_type(v.type)}) is unknown and has no symbol "
                                   f"to bind a size to; name it (as the ONNX frontend would: {v.name}.{axis})")


def specialize(graph: Graph, bindings: Mapping[str, int], progress: Callable[[str], None] | None = None, *,
               fold: bool = True) -> Graph:
    """A copy of `graph` with every symbolic dim replaced by its size and shape arithmetic folded (all symbols
    must be bound). fold=False keeps every node (nothing is evaluated at compile time): for tests of the
    lowerings that folding would otherwise replace by constants; a graph whose shapes need folding then fails."""
    missing = [s for s in symbols_of(graph) if s not in bindings]
    if missing:
        raise UnsupportedError(f"no size given for dim{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    g, _ = prepare(graph, bindings, progress, fold=fold)
    return g


def prepare(graph: Graph, bindings: Mapping[str, int], progress: Callable[[str], None] | None = None, *,
            fold: bool = True, checks: list | None = None) -> tuple[Graph, dict[str, Dim]]:
    """The graph code is generated from, with `bindings` applied (some, all or none of the symbols), and the
    relations found between the symbols left unbound. Raises UnsupportedError when some dim stays unknown.
    `checks` (a list) receives the equalities of dims the type rules assume without proof, [a, b, where]."""
    g = graph.copy()
    _check_inputs(g)
    known = {s: d for s, d in graph.source_relations.items() if s not in bindings}
    for symbol, dim in known.items():  # relations of the source model hold at every call (checked): use them here
        rewrite_symbol(g, symbol, dim)
    bind = tuple(f"{k}={int(v)}" for k, v in sorted(bindings.items()))
    PassManager(specialise_passes(bind, fold=fold), progress=progress).run(g)
    # A shape made static by folding can make another shape op foldable (Shape of a Split whose lengths were just
    # folded, as in ONNX's expanded RotaryEmbedding): repeat the folding while that leaves fewer unknown dims.
    for _ in range(8 if fold else 0):
        unknown = _unknown_values(g)
        if not unknown:
            break
        PassManager(specialise_passes((), fold=True)[1:], progress=progress).run(g)
        if _unknown_values(g) >= unknown:
            break
    relations = known | infer_relations(g, [s for s in symbols_of(graph) if s not in bindings and s not in known])
    if fold and fold_shape_values(g):
        PassManager(specialise_passes((), fold=True)[1:], progress=progress).run(g)
    for node in g:
        for v in node.outputs:
            if v.type.shape is None or None in v.type.shape:
                raise UnsupportedError(f"dim of %{v.name} ({format_type(v.type)}, from node {node.describe()}) "
                                       f"is not known after binding {', '.join(bind) or 'no dims'}")
    _own_outputs(g)
    if checks is not None:
        with dimlib.recording() as found:
            PassManager([InferShapes()]).run(g)
        checks.extend(list(entry) for entry in found)
    return g, relations


def _unknown_values(g: Graph) -> int:
    """Results with unknown dims, plus operands a lowering needs constant that are not yet (a Slice's starts
    computed from the Shape of a Pad whose result only just became static)."""
    pending = sum(1 for node in g for i in CONST_OPERANDS.get(node.op, ())
                  if i < len(node.inputs) and node.inputs[i] is not None and g.const_value(node.inputs[i]) is None)
    return pending + sum(v.type.shape is None or None in v.type.shape for node in g for v in node.outputs)


def _own_outputs(g: Graph) -> None:
    """Make each graph output a distinct value computed by a node of its own (not an input or constant)."""
    seen: set[int] = set()
    new_outputs = []
    for v in g.outputs:
        p = v.producer
        if p is None or p.op in ("weight", "constant") or id(v) in seen:
            name = v.name
            if id(v) in seen:
                out_name = name + ".dup"
            elif p is None:  # a graph input keeps its name: the code reads its inputs by name
                out_name = name + ".out"
            else:
                g.rename(v, g.fresh_name(name + ".src"))
                out_name = name
            node = Node("identity", [v], [_fresh(g, out_name, v.type)])
            g.append(node)
            v = node.outputs[0]
        seen.add(id(v))
        new_outputs.append(v)
    g.outputs = new_outputs


def _fresh(g: Graph, name: str, t: TensorType):
    from ...ir.graph import Value

    return Value(g.fresh_name(name), t)


def lowered_nodes(g: Graph) -> list[Node]:
    """The nodes of a prepared graph left for the lowerings (a view that aliases its operand included): not weights
    or constants, nor an identity copying a constant to an output (all that is left of a graph folded whole)."""
    return [n for n in g if n.op not in NO_CODE and not (n.op == "identity" and g.const_value(n.inputs[0]) is not None)]


def check_code(g: Graph, symbols_allowed: Sequence[str]) -> None:
    """UnsupportedError unless every node of the prepared graph can be lowered: its lowering takes the shapes it
    has (symbolic dims only where written for them) and its dims use the model's symbols only."""
    from ...ir import dims as dimlib

    allowed = set(symbols_allowed)
    for node in g:
        if node.op in NO_CODE:
            continue
        for v in node.outputs:
            extra = {s for d in v.type.shape or () for s in dimlib.symbols(d)} - allowed
            if extra:
                raise UnsupportedError(f"dim of %{v.name} ({format_type(v.type)}, from node {node.describe()}) uses "
                                       f"{', '.join(sorted(extra))}, which no input gives a size")
        check_lowerable(g, node)


def compile_code(graph: Graph, layout: WeightLayout, bindings: Mapping[str, int], target: Target, *,
                 symbols: Sequence[str] | None = None, threads: int = 1, keep_ir: bool = False, fold: bool = True,
                 share: bool = True, progress: Callable[[str], None] | None = None) -> Specialization:
    """Object code (and bitcode) for `graph` with the symbols in `bindings` bound and the others read at run time
    from the dims array ordered as `symbols` (default: symbols_of(graph)). Raises UnsupportedError when some node
    cannot run with the shapes left symbolic (then bind them all: that always works)."""
    order = list(symbols) if symbols is not None else symbols_of(graph)
    t0 = time.perf_counter()
    checks: list = []
    g, relations = prepare(graph, bindings, progress, fold=fold, checks=checks)
    check_code(g, [s for s in order if s not in bindings])
    t1 = time.perf_counter()
    plan = plan_memory(g, {k: e.offset for k, e in layout.entries.items()})
    module = lower_graph(g, plan, layout, target, threads=threads, symbols=order, share=share)
    text = str(module)
    t2 = time.perf_counter()
    obj, bitcode = compile_text(text, target, f"@{graph.name}")  # optimise + emit, in the LLVM worker process
    t3 = time.perf_counter()
    functions = sum(1 for f in module.functions if f.name.startswith("node.") and "." not in f.name[5:])
    stats = {"specialise_s": t1 - t0, "lower_s": t2 - t1, "llvm_s": t3 - t2, "nodes": float(len(g)),
             "nodes_lowered": float(len(lowered_nodes(g))), "node_functions": float(functions),
             "arena_bytes": float(plan.arena_bytes) if isinstance(plan.arena_bytes, int) else -1.0,
             "views_aliased": float(plan.aliases), "in_place": float(plan.in_place),
             "scratch_slots": float(len(plan.scratch_slots))}
    return Specialization(dict(bindings), [v.type for v in g.inputs], [v.type for v in g.outputs], plan.arena_bytes,
                          obj, bitcode, stats=stats, llvm_ir=text if keep_ir else "", graph=g,
                          relations=dict(graph.source_relations) | relations,
                          checks=[list(c) for c in graph.source_checks] + [c for c in checks if list(c) not in graph.source_checks],
                          input_names=[v.name for v in g.inputs], schedule=plan.schedule)


def compile_specialization(graph: Graph, layout: WeightLayout, bindings: Mapping[str, int], target: Target, *,
                           threads: int = 1, keep_ir: bool = False, fold: bool = True,
                           progress: Callable[[str], None] | None = None) -> Specialization:
    """Object code for `graph` with every symbol bound to `bindings` (static shapes throughout)."""
    missing = [s for s in symbols_of(graph) if s not in bindings]
    if missing:
        raise UnsupportedError(f"no size given for dim{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return compile_code(graph, layout, bindings, target, threads=threads, keep_ir=keep_ir, fold=fold, progress=progress)


def assembly(spec: Specialization, target: Target) -> str:
    """Target assembly of a specialisation, regenerated from its bitcode."""
    import llvmlite.binding as llvm

    from .target import init_llvm

    init_llvm()
    ref = llvm.parse_bitcode(spec.bitcode)
    return emit_assembly(ref, target)


def object_from_bitcode(bitcode: bytes, target: Target) -> bytes:
    """Recompile stored bitcode for another CPU (same ISA family) without re-lowering."""
    import llvmlite.binding as llvm

    from .target import init_llvm

    init_llvm()
    ref = llvm.parse_bitcode(bitcode)
    ref.triple = target.triple
    return emit_object(optimize(ref, target), target)


__all__ = ["SPECIALISED_FOLD_MAX_BYTES", "Specialization", "assembly", "check_code", "compile_code",
           "compile_specialization", "lowered_nodes", "object_from_bitcode", "prepare", "specialize", "symbols_of"]

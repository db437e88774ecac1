"""The CPU compiler driver: final IR + weight layout + concrete dim sizes -> object code.

Shapes are specialised (docs/CODEGEN.md): the artifact holds the final IR with its symbolic
dims, and code for one or more concrete bindings of those dims (`batch=1, seq=128`). A binding
seen for the first time at run time is compiled then, from the same IR, and cached. Steps:

    bind      infer-shapes{bind=...}, fold-constants, eliminate-dead-code: every shape static
    outputs   each graph output produced by its own node (identity copies where needed)
    plan      memory plan: caller buffers, weight blob offsets, one arena
    lower     one LLVM function per node and the entry tritc_main
    emit      verify, optimise (new pass manager, O3), object code and bitcode (worker.py: in a child
              process, so an LLVM crash is an error, not the end of the caller)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ...errors import UnsupportedError
from ...ir.graph import Graph, Node
from ...ir.types import TensorType, format_type
from ...passes.eliminate_dead_code import EliminateDeadCode
from ...passes.fold_constants import FoldConstants
from ...passes.infer_shapes import InferShapes
from ...passes.pass_manager import PassManager
from .jit import emit_assembly, emit_object, optimize
from .lower import ENTRY, NO_CODE, lower_graph
from .memory import plan_memory
from .ops import CONST_OPERANDS
from .target import Target
from .weights import WeightLayout
from .worker import compile_text


@dataclass
class Specialization:
    """Code for one binding of the graph's symbolic dims."""

    bindings: dict[str, int]
    input_types: list[TensorType]
    output_types: list[TensorType]
    arena_bytes: int
    object: bytes
    bitcode: bytes
    entry: str = ENTRY
    stats: dict[str, float] = field(default_factory=dict)
    llvm_ir: str = ""  # unoptimised LLVM IR text (kept for `tritc inspect --llvm`)
    graph: Graph | None = None  # the specialised graph (not stored in artifacts)

    def key(self) -> tuple:
        return tuple(sorted(self.bindings.items()))


def symbols_of(graph: Graph) -> list[str]:
    """The symbols naming the graph inputs' dims, in order of first appearance."""
    from ...ir import dims as dimlib

    seen: dict[str, None] = {}
    for v in graph.inputs:
        for d in v.type.shape or ():
            for s in sorted(dimlib.symbols(d)):
                seen.setdefault(s, None)
    return list(seen)


def specialize(graph: Graph, bindings: Mapping[str, int], progress: Callable[[str], None] | None = None, *,
               fold: bool = True) -> Graph:
    """A copy of `graph` with every symbolic dim replaced by its size and shape arithmetic folded. fold=False keeps
    every node (nothing is evaluated at compile time): for tests of the lowerings that folding would otherwise
    replace by constants (shape, size, range, ...); a graph whose shapes need folding then fails."""
    g = graph.copy()
    missing = [s for s in symbols_of(g) if s not in bindings]
    if missing:
        raise UnsupportedError(f"no size given for dim{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for v in g.inputs:
        # The ONNX frontend names every unknown input dim (<input>.<axis>); a graph built otherwise may still have one.
        if v.type.shape is None:
            raise UnsupportedError(f"input '{v.name}' ({format_type(v.type)}) has an unknown rank; give its type a shape")
        if None in v.type.shape:
            axis = v.type.shape.index(None)
            raise UnsupportedError(f"dim {axis} of input '{v.name}' ({format_type(v.type)}) is unknown and has no symbol "
                                   f"to bind a size to; name it (as the ONNX frontend would: {v.name}.{axis})")
    bind = tuple(f"{k}={int(v)}" for k, v in sorted(bindings.items()))
    folding = [_fold()] if fold else []
    PassManager([InferShapes(bind=bind), *folding, EliminateDeadCode(), InferShapes()], progress=progress).run(g)
    # A shape made static by folding can make another shape op foldable (Shape of a Split whose lengths were just
    # folded, as in ONNX's expanded RotaryEmbedding): repeat the folding while that leaves fewer unknown dims.
    for _ in range(8 if fold else 0):
        unknown = _unknown_values(g)
        if not unknown:
            break
        PassManager([_fold(), EliminateDeadCode(), InferShapes()], progress=progress).run(g)
        if _unknown_values(g) >= unknown:
            break
    for node in g:
        for v in node.outputs:
            if not v.type.is_static:
                raise UnsupportedError(f"dim of %{v.name} ({format_type(v.type)}, from node {node.describe()}) "
                                       f"is not known after binding {', '.join(bind) or 'no dims'}")
    _own_outputs(g)
    return g


# Constants folded here become globals of this one specialisation's object code (the weight blob is
# shared by all of them and laid out before); large ones stay run-time computations instead (a
# ConstantOfShape fill costs nothing next to embedding hundreds of megabytes in an object file).
SPECIALISED_FOLD_MAX_BYTES = 1 << 20


def _fold() -> FoldConstants:
    return FoldConstants(max_bytes=SPECIALISED_FOLD_MAX_BYTES)


def _unknown_values(g: Graph) -> int:
    """Results with unknown dims, plus operands a lowering needs constant that are not yet (a Slice's starts
    computed from the Shape of a Pad whose result only just became static)."""
    pending = sum(1 for node in g for i in CONST_OPERANDS.get(node.op, ())
                  if i < len(node.inputs) and node.inputs[i] is not None and g.const_value(node.inputs[i]) is None)
    return pending + sum(not v.type.is_static for node in g for v in node.outputs)


def _own_outputs(g: Graph) -> None:
    """Make each graph output a distinct value computed by a node of its own (not an input or constant)."""
    seen: set[int] = set()
    new_outputs = []
    for v in g.outputs:
        p = v.producer
        if p is None or p.op in ("weight", "constant") or id(v) in seen:
            name = v.name
            if id(v) not in seen:
                g.rename(v, g.fresh_name(name + ".src"))
            node = Node("identity", [v], [_fresh(g, name if id(v) not in seen else name + ".dup", v.type)])
            g.append(node)
            v = node.outputs[0]
        seen.add(id(v))
        new_outputs.append(v)
    g.outputs = new_outputs


def _fresh(g: Graph, name: str, t: TensorType):
    from ...ir.graph import Value

    return Value(g.fresh_name(name), t)


def lowered_nodes(g: Graph) -> list[Node]:
    """The nodes of a specialised graph left for the lowerings (a view that aliases its operand included): not weights
    or constants, nor an identity copying a constant to an output (all that is left of a graph folded whole)."""
    return [n for n in g if n.op not in NO_CODE and not (n.op == "identity" and g.const_value(n.inputs[0]) is not None)]


def compile_specialization(graph: Graph, layout: WeightLayout, bindings: Mapping[str, int], target: Target, *,
                           threads: int = 1, keep_ir: bool = False, fold: bool = True,
                           progress: Callable[[str], None] | None = None) -> Specialization:
    """Object code (and bitcode) for `graph` with its dims bound to `bindings` (`fold`: see specialize)."""
    t0 = time.perf_counter()
    g = specialize(graph, bindings, progress, fold=fold)
    t1 = time.perf_counter()
    plan = plan_memory(g, {k: e.offset for k, e in layout.entries.items()})
    module = lower_graph(g, plan, layout, target, threads=threads)
    text = str(module)
    t2 = time.perf_counter()
    obj, bitcode = compile_text(text, target, f"@{graph.name}")  # optimise + emit, in the LLVM worker process
    t3 = time.perf_counter()
    stats = {"specialise_s": t1 - t0, "lower_s": t2 - t1, "llvm_s": t3 - t2,
             "nodes": float(len(g)), "nodes_lowered": float(len(lowered_nodes(g))), "arena_bytes": float(plan.arena_bytes),
             "views_aliased": float(plan.aliases)}
    return Specialization(dict(bindings), [v.type for v in g.inputs], [v.type for v in g.outputs], plan.arena_bytes,
                          obj, bitcode, stats=stats, llvm_ir=text if keep_ir else "", graph=g)


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

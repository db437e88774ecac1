"""Graph -> one LLVM module with a single entry point that runs the whole graph.

    i32 tritc_main(ptr inputs[], ptr outputs[], ptr weights, ptr arena, ptr dims)   -> 0, or a failure's status

`dims` holds one i64 per symbol of the model (`symbols`, in order): the sizes of this call. Steps: give
every node an internal function whose parameters are its operand and result buffers, its scratch and `dims`,
let the op's lowering fill it in (and say what scratch it needs: NodeCtx.scratch), place the arena with that
scratch (memory.py), then emit the entry: compute each buffer's address from the memory plan (caller arrays,
weight blob, arena offsets computed from the dims, or a global) and call the node functions in order. No
Python runs between ops.

Nodes with the same signature (op, attributes, operand and result types, weight layouts, and the values of
the constants their lowering read) share one function, so a model's compile time grows with its distinct
layer shapes, not its depth. A node that can fail at run time (a check of values its lowering registered with
NodeCtx.fail_if; kernel scratch is in the arena, so no lowering allocates) returns a non-zero status local to
its function; the entry maps it to the call site's own status and returns at once. The
string FAILURES holds one "kind<TAB>message" line per status (status k is line k), for the runtime to raise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from ...errors import UnsupportedError
from ...ir.graph import Graph, Node, Value
from ...ir.types import format_type
from .builder import I8, I32, I64, PTR, gep
from .context import Buf, ModuleCtx, NodeCtx
from .memory import MemoryPlan, Storage
from .ops import CONST_OPERANDS, LOWERINGS, RUNTIME_OPERANDS, SYMBOLIC
from .symbolic import Size, materialize
from .target import Target
from .weights import WeightLayout

ENTRY = "tritc_main"
FAILURES = "tritc_failures"
ABI_VERSION = 3  # 3: a fifth argument, the dims of the call (2: failures return a status; 1 trapped)
NO_CODE = frozenset({"weight", "constant"})


@dataclass
class _Shared:
    """A node function and what another node must agree on to call it."""

    fn: ir.Function
    failures: list[tuple[str, str]]  # (kind, message) of local status k + 1
    consts_read: dict[int, str]  # operand index -> digest of the constant value the lowering read
    scratch: Size = 0  # bytes of scratch each call needs (an arena slot live for the node's step)


def lower_graph(graph: Graph, plan: MemoryPlan, layout: WeightLayout, target: Target, *, threads: int = 1,
                name: str = "tritc", symbols: Sequence[str] = (), share: bool = True) -> ir.Module:
    """The module for `graph`; `symbols` orders the dims array (every symbol a dim of the graph may use)."""
    module = ir.Module(name)
    module.triple = target.triple
    mctx = ModuleCtx(module, target, graph, threads)
    abi = ir.GlobalVariable(module, I32, name="tritc_abi_version")
    abi.global_constant = True
    abi.initializer = ir.Constant(I32, ABI_VERSION)

    entry = ir.Function(module, ir.FunctionType(I32, [PTR] * 5), ENTRY)
    inputs_arr, outputs_arr, weights, arena, dims = entry.args
    for a, n in zip(entry.args, ("inputs", "outputs", "weights", "arena", "dims")):
        a.name = n
    mctx.dims_of[ENTRY] = dims
    # Every node's function first: the lowerings say what scratch their nodes need, which the arena then holds.
    shared: dict[tuple, list[_Shared]] = {}
    digests: dict[int, str] = {}
    calls: list[tuple[Node, _Shared]] = []
    for index, node in enumerate(graph):
        if node.op in NO_CODE or plan.is_view(node):
            continue
        if LOWERINGS.get(node.op) is None:
            raise UnsupportedError(f"node {node.describe()}: op '{node.op}' has no LLVM lowering")
        check_lowerable(graph, node)
        key = _signature(node, plan, layout, threads) if share else (index,)
        lowered = _find_shared(graph, node, shared.get(key, []), digests)
        if lowered is None:
            lowered = _node_function(mctx, node, index, plan, layout, digests)
            shared.setdefault(key, []).append(lowered)
        calls.append((node, lowered))
    plan.place({node: lowered.scratch for node, lowered in calls})

    b = ir.IRBuilder(entry.append_basic_block("entry"))
    offsets = plan.emit_offsets(b)
    addr: dict[int, ir.Value] = {}

    def address(v: Value) -> ir.Value:
        v = plan.owner(v)
        if id(v) in addr:
            return addr[id(v)]
        s: Storage = plan.of(v)
        if s.kind == "input":
            p = b.load(gep(b, inputs_arr, s.index, PTR), typ=PTR, name=f"in{s.index}")
        elif s.kind == "output":
            p = b.load(gep(b, outputs_arr, s.index, PTR), typ=PTR, name=f"out{s.index}")
        elif s.kind == "arena":
            p = gep(b, arena, offsets[s.key], I8)
        elif s.kind == "weight" and s.key in layout.entries:
            p = gep(b, weights, s.index, I8)
        else:  # inline constants, and weights folded after shape specialisation
            p = mctx.global_array(_const_data(graph, v), "w" if s.kind == "weight" else "c")
        addr[id(v)] = p
        return p

    for node, lowered in calls:
        slot = plan.scratch_slot(node)
        scratch = gep(b, arena, offsets[slot], I8) if slot is not None else ir.Constant(PTR, None)
        args = [address(v) for v in node.inputs if v is not None] + [address(v) for v in node.outputs] + [scratch, dims]
        status = b.call(lowered.fn, args)
        if lowered.failures:  # later nodes would read what this one did not write: stop here
            base = len(mctx.failures)
            for kind, message in lowered.failures:
                mctx.failure_site(kind, f"node {node.describe()}: {message}")
            with b.if_then(b.icmp_unsigned("!=", status, ir.Constant(I32, 0)), likely=False):
                b.ret(b.add(status, ir.Constant(I32, base)) if base else status)
    b.ret(ir.Constant(I32, 0))
    _failure_table(module, mctx.failures)
    materialize(module, mctx.dims_of, {s: i for i, s in enumerate(symbols)})
    return module


def check_lowerable(graph: Graph, node: Node) -> None:
    """UnsupportedError unless the node's lowering can run it: operands it needs at compile time are constants,
    and symbolic dims reach only lowerings written for them."""
    static = all(v is None or v.type.is_static for v in [*node.inputs, *node.outputs])
    runtime_ok = () if static else RUNTIME_OPERANDS.get(node.op, ())
    for i in CONST_OPERANDS.get(node.op, ()):
        if i < len(node.inputs) and node.inputs[i] is not None and i not in runtime_ok \
                and graph.const_value(node.inputs[i]) is None:
            raise UnsupportedError(f"node {node.describe()}: operand {i} ({node.inputs[i].name}) must be known "
                                   f"at compile time")
    if not static and node.op not in SYMBOLIC:
        shapes = ", ".join(format_type(v.type) for v in [*node.inputs, *node.outputs] if v is not None)
        raise UnsupportedError(f"node {node.describe()}: the lowering of '{node.op}' needs static shapes, not {shapes}")


def _failure_table(module: ir.Module, failures: list[tuple[str, str]]) -> None:
    """FAILURES: a NUL-terminated string, line k (from 1) = "kind<TAB>message" of status k."""
    text = "\n".join(f"{kind}\t{' '.join(message.split())}" for kind, message in failures).encode() + b"\0"
    table = ir.GlobalVariable(module, ir.ArrayType(I8, len(text)), name=FAILURES)
    table.global_constant = True
    table.initializer = ir.Constant(ir.ArrayType(I8, len(text)), bytearray(text))


def _const_data(graph: Graph, v: Value):
    data = graph.const_value(v)
    if data is None or not hasattr(data, "tobytes"):
        raise UnsupportedError(f"value %{v.name} has no constant data to embed")
    return data


# ---- one function per distinct node signature ------------------------------------------------------------------


def _attr_key(value: object) -> object:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, float):
        return ("f", float(np.float64(value)).hex())  # -0.0 and 0.0, nan: distinct keys
    return (type(value).__name__, value)


def _signature(node: Node, plan: MemoryPlan, layout: WeightLayout, threads: int) -> tuple:
    """What a lowering may read besides constant values: op, attributes, types, weight layouts; and which operands
    share a result's storage (in place: their parameters are not noalias)."""
    operands = []
    for v in node.inputs:
        if v is None:
            operands.append(None)
            continue
        s = plan.of(v)
        entry = layout.entries.get(s.key) if s.kind == "weight" else None
        # the scales' place relative to the trits is read by the lowering; a dense weight has no scales (its
        # scale_offset says nothing: keying on it gave every RMSNorm weight a function of its own)
        scales_at = entry.scale_offset - entry.offset if entry is not None and entry.kind == "ternary" else 0
        where = (entry.kind, entry.dtype, entry.shape, entry.nbytes, scales_at, entry.scale_shape,
                 entry.group_size) if entry is not None else s.kind in ("weight", "constant")
        operands.append((format_type(v.type), where))
    return (node.op, tuple(sorted((k, _attr_key(a)) for k, a in node.attrs.items())), tuple(operands),
            tuple(format_type(v.type) for v in node.outputs), threads, plan.shared_operands(node))


def _digest(graph: Graph, v: Value, cache: dict[int, str]) -> str:
    if id(v) not in cache:
        c = np.ascontiguousarray(graph.const_value(v))
        cache[id(v)] = hashlib.sha256(f"{c.dtype.str}{c.shape}".encode() + c.tobytes()).hexdigest()
    return cache[id(v)]


def _find_shared(graph: Graph, node: Node, candidates: list[_Shared], digests: dict[int, str]) -> _Shared | None:
    for cand in candidates:
        if all(node.inputs[i] is not None and graph.const_value(node.inputs[i]) is not None
               and _digest(graph, node.inputs[i], digests) == d for i, d in cand.consts_read.items()):
            return cand
    return None


def _node_function(mctx: ModuleCtx, node: Node, index: int, plan: MemoryPlan, layout: WeightLayout,
                   digests: dict[int, str]) -> _Shared:
    """Emit `i32 @node.<index>(ptr operands..., ptr results..., ptr scratch, ptr dims)` for `node`. Pointers are
    noalias, except an in-place result and the operands it is written over (memory.py)."""
    ins = [v for v in node.inputs if v is not None]
    params = [PTR] * (len(ins) + len(node.outputs) + 2)
    fn = ir.Function(mctx.module, ir.FunctionType(I32, params), f"node.{index}")
    fn.linkage = "internal"
    # Out of line: inlining every node into tritc_main makes one huge function whose optimisation
    # time grows much faster than its size; a call per node costs nanoseconds.
    fn.attributes.add("noinline")
    n_in = len(ins)
    shared = plan.shared_operands(node)
    aliased = {k for k, i in enumerate(j for j, v in enumerate(node.inputs) if v is not None) if i in shared}
    if shared:
        aliased |= set(range(n_in, n_in + len(node.outputs)))
    for i, a in enumerate(fn.args[:-2]):
        if i not in aliased:
            a.add_attribute("noalias")
        a.name = f"in{i}" if i < n_in else f"out{i - n_in}"
    scratch, dims = fn.args[-2:]
    scratch.name, dims.name = "scratch", "dims"
    scratch.add_attribute("noalias")
    dims.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    bufs: list[Buf | None] = []
    weights = []
    it = iter(enumerate(fn.args[:n_in]))
    for v in node.inputs:
        if v is None:
            bufs.append(None)
            weights.append(None)
            continue
        k, arg = next(it)
        bufs.append(Buf(arg, v.type, noalias=k not in aliased))
        s = plan.of(v)
        weights.append(layout.entries.get(s.key) if s.kind == "weight" else None)
    outs = [Buf(a, v.type, noalias=not shared) for a, v in zip(fn.args[n_in:-2], node.outputs)]
    ctx = NodeCtx(mctx, b, node, bufs, outs, weights, index, dims=dims, scratch_ptr=scratch)
    ctx.register_dims(fn, dims)
    LOWERINGS[node.op](ctx)
    if not ctx.b.block.is_terminated:
        ctx.b.ret(ir.Constant(I32, 0))
    read = {i: _digest(mctx.graph, node.inputs[i], digests) for i in sorted(ctx.consts_read)}  # type: ignore[arg-type]
    return _Shared(fn, list(ctx.failures), read, ctx.scratch_bytes)


__all__ = ["ABI_VERSION", "ENTRY", "FAILURES", "I64", "check_lowerable", "lower_graph"]

"""Graph -> one LLVM module with a single entry point that runs the whole graph.

    i32 tritc_main(ptr inputs[], ptr outputs[], ptr weights, ptr arena)   -> 0, or a failure's status

Steps: give every node an internal function whose parameters are its operand and result
buffers, let the op's lowering fill it in, then emit the entry: compute each buffer's address
from the memory plan (caller arrays, weight blob, arena, or a global) and call the node
functions in order. No Python runs between ops. A node that can fail at run time (a scratch
allocation) returns a non-zero status, which the entry returns at once; the string FAILURES
holds one "kind<TAB>message" line per status (status k is line k), for the runtime to raise.
"""

from __future__ import annotations

import llvmlite.ir as ir

from ...errors import UnsupportedError
from ...ir.graph import Graph, Node, Value
from .builder import I8, I32, I64, PTR, gep
from .context import Buf, ModuleCtx, NodeCtx
from .memory import MemoryPlan, Storage
from .ops import CONST_OPERANDS, LOWERINGS
from .target import Target
from .weights import WeightLayout

ENTRY = "tritc_main"
FAILURES = "tritc_failures"
ABI_VERSION = 2  # 2: node failures return a status described by FAILURES (1 trapped)
NO_CODE = frozenset({"weight", "constant"})


def lower_graph(graph: Graph, plan: MemoryPlan, layout: WeightLayout, target: Target, *, threads: int = 1,
                name: str = "tritc") -> ir.Module:
    module = ir.Module(name)
    module.triple = target.triple
    mctx = ModuleCtx(module, target, graph, threads)
    abi = ir.GlobalVariable(module, I32, name="tritc_abi_version")
    abi.global_constant = True
    abi.initializer = ir.Constant(I32, ABI_VERSION)

    entry = ir.Function(module, ir.FunctionType(I32, [PTR, PTR, PTR, PTR]), ENTRY)
    inputs_arr, outputs_arr, weights, arena = entry.args
    for a, n in zip(entry.args, ("inputs", "outputs", "weights", "arena")):
        a.name = n
    b = ir.IRBuilder(entry.append_basic_block("entry"))
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
            p = gep(b, arena, s.index, I8)
        elif s.kind == "weight" and s.key in layout.entries:
            p = gep(b, weights, s.index, I8)
        else:  # inline constants, and weights folded after shape specialisation
            p = mctx.global_array(_const_data(graph, v), "w" if s.kind == "weight" else "c")
        addr[id(v)] = p
        return p

    for index, node in enumerate(graph):
        if node.op in NO_CODE:
            continue
        fn = LOWERINGS.get(node.op)
        if fn is None:
            raise UnsupportedError(f"node {node.describe()}: op '{node.op}' has no LLVM lowering")
        for i in CONST_OPERANDS.get(node.op, ()):
            if i < len(node.inputs) and node.inputs[i] is not None and graph.const_value(node.inputs[i]) is None:
                raise UnsupportedError(f"node {node.describe()}: operand {i} ({node.inputs[i].name}) must be known "
                                       f"at compile time")
        args = [address(v) for v in node.inputs if v is not None] + [address(v) for v in node.outputs]
        lowered = _node_function(mctx, node, index, plan, layout)
        if lowered is not None:
            nfn, can_fail = lowered
            status = b.call(nfn, args)
            if can_fail:  # later nodes would read what this one did not write: stop here
                with b.if_then(b.icmp_unsigned("!=", status, ir.Constant(I32, 0)), likely=False):
                    b.ret(status)
    b.ret(ir.Constant(I32, 0))
    _failure_table(module, mctx.failures)
    return module


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


def _node_function(mctx: ModuleCtx, node: Node, index: int, plan: MemoryPlan,
                   layout: WeightLayout) -> tuple[ir.Function, bool] | None:
    """Emit `i32 @node.<index>` for `node`, and whether it can fail; None when the node needs no code (a view that
    aliases)."""
    if node.op in ("reshape", "squeeze", "unsqueeze", "flatten") and plan.of(node.outputs[0]) == plan.of(node.inputs[0]) \
            and plan.of(node.inputs[0]).kind in ("arena", "input", "weight", "output"):
        return None
    ins = [v for v in node.inputs if v is not None]
    params = [PTR] * (len(ins) + len(node.outputs))
    fn = ir.Function(mctx.module, ir.FunctionType(I32, params), f"node.{index}")
    fn.linkage = "internal"
    # Out of line: inlining every node into tritc_main makes one huge function whose optimisation
    # time grows much faster than its size; a call per node costs nanoseconds.
    fn.attributes.add("noinline")
    n_in = len(ins)
    for i, a in enumerate(fn.args):
        a.add_attribute("noalias")
        a.name = f"in{i}" if i < n_in else f"out{i - n_in}"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    bufs: list[Buf | None] = []
    weights = []
    it = iter(fn.args[:n_in])
    for v in node.inputs:
        if v is None:
            bufs.append(None)
            weights.append(None)
            continue
        bufs.append(Buf(next(it), v.type))
        s = plan.of(v)
        weights.append(layout.entries.get(s.key) if s.kind == "weight" else None)
    outs = [Buf(a, v.type) for a, v in zip(fn.args[n_in:], node.outputs)]
    ctx = NodeCtx(mctx, b, node, bufs, outs, weights, index)
    LOWERINGS[node.op](ctx)
    if not ctx.b.block.is_terminated:
        ctx.b.ret(ir.Constant(I32, 0))
    return fn, ctx.can_fail


__all__ = ["ABI_VERSION", "ENTRY", "FAILURES", "I64", "lower_graph"]

"""Elementwise fp32 ops on the vector unit, with numpy broadcasting: one tiled loop per node (lower_map).

The result is viewed as rows x columns after merging the dims along which every operand steps evenly; each
operand is loaded as what it has of a tile (a bias row once, a per-row factor as a column) and read with
stride 0 along what it is broadcast over. Tiles alternate between two VEC areas, so the LOAD of tile i+1 and
the STORE of tile i-1 overlap the vector ops of tile i. A one-element constant operand is an immediate.

An op is a list of steps over the output tile "o", a temporary tile "t", the operands (by index) and
immediates, each the interpreter's fp32 operation in the interpreter's order: add, sub, mul, div, max, min, neg,
abs, sqrt, reciprocal, relu, round are exact; exp, tanh, erf, sin, cos and what is made of them (sigmoid, silu,
gelu) differ from numpy's by the vector unit's function error (docs/ISA.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ...ir.graph import Graph, Node, Value
from ...ir.types import DType
from .config import FpgaConfig
from .isa import Buf, VFunc
from .lower_ctx import DTensor, LowerCtx, LoweringError, View, attrs_of, lowering
from .lower_operands import RowOperand, broadcast_strides, load_run, row_offsets, split_runs

Ref = str | int | float          # "o", "t", an operand index, an immediate
Step = tuple                     # (func, dst, a[, b]) or (VFunc.WHERE, dst, a, cond, imm)

COMMUTATIVE = {VFunc.ADD, VFunc.MUL, VFunc.MAX, VFunc.MIN}
BINARY_OPS = {"add": VFunc.ADD, "sub": VFunc.SUB, "mul": VFunc.MUL, "div": VFunc.DIV}
VARIADIC_OPS = {"max": VFunc.MAX, "min": VFunc.MIN, "sum": VFunc.ADD, "mean": VFunc.ADD}
UNARY_OPS = {"neg": VFunc.NEG, "abs": VFunc.ABS, "sqrt": VFunc.SQRT, "exp": VFunc.EXP, "sin": VFunc.SIN,
             "cos": VFunc.COS, "tanh": VFunc.TANH, "erf": VFunc.ERF, "reciprocal": VFunc.RECIP, "relu": VFunc.RELU,
             "round": VFunc.ROUND}
# numpy's float32 power is correctly rounded: x^2, x^1, x^0.5, x^-1 are exactly one multiply / root / reciprocal;
# x^3 as (x * x) * x is within 2 ulp of it (GPT-2's tanh GELU)
POW_EXPONENTS = (2.0, 1.0, 0.5, -1.0, 3.0)


# ---- the tiled loop ---------------------------------------------------------------------------------------

def merge_dims(shape: Sequence[int], stride_sets: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims, then merge neighbours along which every stride set steps evenly."""
    keep = [i for i, d in enumerate(shape) if d != 1]
    dims = [int(shape[i]) for i in keep]
    sts = [[int(s[i]) for i in keep] for s in stride_sets]
    i = len(dims) - 2
    while i >= 0:
        if all(st[i] == st[i + 1] * dims[i + 1] for st in sts):
            dims[i] *= dims[i + 1]
            for st in sts:
                st[i] = st[i + 1]
                del st[i + 1]
            del dims[i + 1]
        i -= 1
    if not dims:
        return [1], [[0] for _ in sts]
    return dims, sts


def lower_map(ctx: LowerCtx, out_v: Value, inputs: Sequence[Value | None], steps: list[Step]) -> None:
    """out = the steps applied elementwise to the (broadcast) inputs (operand i of a step is inputs[i])."""
    out = ctx.output(out_v)
    if out.numel == 0:
        return
    operands: list[float | DTensor | None] = []
    for v in inputs:
        imm = ctx.scalar(v)
        operands.append(None if v is None else imm if imm is not None else ctx.tensor(v))
    tensors = [op for op in operands if isinstance(op, DTensor)]
    dims, sts = merge_dims(out.shape, [out.strides] + [broadcast_strides(t.shape, out.shape) for t in tensors])
    cols, row_dims = dims[-1], dims[:-1]
    rows = math.prod(row_dims)
    ops: list[float | RowOperand | None] = []
    it = iter(sts[1:])
    for op in operands:
        if isinstance(op, DTensor):
            st = next(it)
            ops.append(RowOperand(op, row_offsets(row_dims, st[:-1]), 1 if st[-1] else 0))
        else:
            ops.append(op)
    temp = any(s[1] == "t" for s in steps)
    row_ops = [op for op in ops if isinstance(op, RowOperand)]
    half = ctx.half[Buf.VEC] - 16
    resident = [op for op in row_ops if op.invariant and op.buf == Buf.VEC]
    res_words = sum(cols if op.cs else 1 for op in resident)
    per_slot = (half - res_words) // ctx.slots()
    a = 1 + temp + sum(1 for op in row_ops if op not in resident and op.cs and op.buf == Buf.VEC)
    b = sum(1 for op in row_ops if op not in resident and not op.cs and op.buf == Buf.VEC)
    if cols * a + b <= per_slot:
        c_t, r_t = cols, max(1, min(rows, per_slot // (cols * a + b)))
    else:  # a row does not fit: tiles of columns, and nothing stays resident
        resident = []
        a = 1 + temp + sum(1 for op in row_ops if op.cs and op.buf == Buf.VEC)
        b = sum(1 for op in row_ops if not op.cs and op.buf == Buf.VEC)
        c_t, r_t = max(1, (half // ctx.slots() - b) // a), 1
    act_ops = [op for op in row_ops if op.buf == Buf.ACT]
    if act_ops:
        act_per_row = sum(c_t if op.cs else 1 for op in act_ops)
        r_t = max(1, min(r_t, ctx.half[Buf.ACT] // ctx.slots() // act_per_row))
    vec, act = ctx.arena(Buf.VEC), ctx.arena(Buf.ACT)
    views: dict[int, View] = {}
    for op in resident:
        width = cols if op.cs else 1
        views[id(op)] = load_run(ctx, op, vec.alloc(width, "operand"), 0, 0, 1, 0, cols)
    slots = []
    for _ in range(ctx.slots()):
        area = {"o": vec.alloc(r_t * c_t, "result"), "t": vec.alloc(r_t * c_t, "temporary") if temp else 0}
        for op in row_ops:
            if id(op) not in views:
                arena = act if op.buf == Buf.ACT else vec
                area[id(op)] = arena.alloc(r_t * (c_t if op.cs else 1), "operand")
        slots.append(area)
    varying = [op for op in row_ops if id(op) not in views]
    tile = 0
    for r0 in range(0, rows, r_t):
        rn = min(r_t, rows - r0)
        for c0 in range(0, cols, c_t):
            cn = min(c_t, cols - c0)
            area = slots[tile % len(slots)]
            tile += 1
            for ra, n in split_runs(varying, r0, rn):
                refs: dict[Ref, View | float] = {"o": View(Buf.VEC, area["o"] + (ra - r0) * cn, cn, 1),
                                                 "t": View(Buf.VEC, area["t"] + (ra - r0) * cn, cn, 1)}
                for i, op in enumerate(ops):
                    if op is None:
                        continue
                    if not isinstance(op, RowOperand):
                        refs[i] = op
                    elif id(op) in views:
                        refs[i] = views[id(op)].shift(0, c0)
                    else:
                        refs[i] = load_run(ctx, op, area[id(op)], ra - r0, ra, n, c0, cn)
                emit_steps(ctx, steps, refs, n, cn)
            ctx.store(Buf.VEC, area["o"], out, (r0 * cols + c0) * 4, rn, cn, cols * 4, 4, cn)
    if tile == 1:
        ctx.keep(out, slots[0]["o"])


def emit_steps(ctx: LowerCtx, steps: list[Step], refs: dict, rows: int, cols: int) -> None:
    def r(x: Ref) -> View | float:
        return refs[x] if not isinstance(x, float) else x

    for st in steps:
        f = st[0]
        if f == VFunc.WHERE:
            ctx.vop(f, rows, cols, r(st[1]), r(st[2]), r(st[3]), imm=st[4])  # type: ignore[arg-type]
        elif f == VFunc.FILL:
            ctx.vop(f, rows, cols, r(st[1]), None, st[2])  # type: ignore[arg-type]
        else:
            ctx.vop(f, rows, cols, r(st[1]), r(st[2]), r(st[3]) if len(st) > 3 else None)  # type: ignore[arg-type]


# ---- the steps of each op ----------------------------------------------------------------------------------

def binary_steps(f: VFunc, a: Ref, b: Ref, dst: str = "o") -> list[Step]:
    """dst = a f b, where either may be an immediate."""
    if isinstance(a, float) and isinstance(b, float):
        return [(VFunc.FILL, dst, a), (f, dst, dst, b)]
    if not isinstance(a, float):
        return [(f, dst, a, b)]
    if f in COMMUTATIVE:
        return [(f, dst, b, a)]
    if f == VFunc.SUB:          # a - b == (-b) + a exactly
        return [(VFunc.NEG, dst, b), (VFunc.ADD, dst, dst, a)]
    if f == VFunc.DIV and a == 1.0:
        return [(VFunc.RECIP, dst, b)]
    return [(VFunc.FILL, dst, a), (f, dst, dst, b)]


def _refs(ctx: LowerCtx, node: Node) -> list[Ref | None]:
    out: list[Ref | None] = []
    for i, v in enumerate(node.inputs):
        imm = ctx.scalar(v)
        out.append(None if v is None else imm if imm is not None else i)
    return out


def steps_of(ctx: LowerCtx, node: Node) -> list[Step]:
    op, refs, attrs = node.op, _refs(ctx, node), attrs_of(node)
    if op in BINARY_OPS:
        return binary_steps(BINARY_OPS[op], refs[0], refs[1])
    if op in VARIADIC_OPS:
        f = VARIADIC_OPS[op]
        steps = [(VFunc.COPY, "o", refs[0])] if len(refs) == 1 else binary_steps(f, refs[0], refs[1])
        for x in refs[2:]:
            steps += binary_steps(f, "o", x)
        if op == "mean":
            steps.append((VFunc.DIV, "o", "o", float(len(refs))))
        return steps
    if op in UNARY_OPS:
        return [(UNARY_OPS[op], "o", refs[0])]
    if op == "cast":    # bool -> f32: the 0 / 1 bytes read as fp32
        return [(VFunc.COPY, "o", refs[0])]
    if op == "sigmoid":  # 1 / (1 + exp(-x))
        return [(VFunc.NEG, "o", refs[0]), (VFunc.EXP, "o", "o"), (VFunc.ADD, "o", "o", 1.0), (VFunc.RECIP, "o", "o")]
    if op == "swish":    # x / (1 + exp(-alpha x))
        return [(VFunc.MUL, "t", refs[0], _f32(-attrs["alpha"])), (VFunc.EXP, "t", "t"), (VFunc.ADD, "t", "t", 1.0),
                (VFunc.DIV, "o", refs[0], "t")]
    if op == "gelu":
        x = refs[0]
        if attrs["approximate"] == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            return [(VFunc.MUL, "t", x, x), (VFunc.MUL, "t", "t", x), (VFunc.MUL, "t", "t", _f32(0.044715)),
                    (VFunc.ADD, "t", "t", x), (VFunc.MUL, "t", "t", _f32(math.sqrt(2 / math.pi))),
                    (VFunc.TANH, "t", "t"), (VFunc.ADD, "t", "t", 1.0), (VFunc.MUL, "o", x, 0.5),
                    (VFunc.MUL, "o", "o", "t")]
        return [(VFunc.MUL, "t", x, _f32(1 / math.sqrt(2))), (VFunc.ERF, "t", "t"), (VFunc.ADD, "t", "t", 1.0),
                (VFunc.MUL, "o", x, 0.5), (VFunc.MUL, "o", "o", "t")]
    if op == "pow":
        e = refs[1]
        return {2.0: [(VFunc.MUL, "o", refs[0], refs[0])], 1.0: [(VFunc.COPY, "o", refs[0])],
                0.5: [(VFunc.SQRT, "o", refs[0])], -1.0: [(VFunc.RECIP, "o", refs[0])],
                3.0: [(VFunc.MUL, "o", refs[0], refs[0]), (VFunc.MUL, "o", "o", refs[0])]}[e]  # type: ignore[index]
    if op == "clip":    # min(max(x, lo), hi), a missing bound no bound
        steps = [(VFunc.COPY, "o", refs[0])]
        lo, hi = (refs + [None, None])[1:3]
        steps += [(VFunc.MAX, "o", "o", lo)] if lo is not None else []
        return steps + ([(VFunc.MIN, "o", "o", hi)] if hi is not None else [])
    if op == "where":
        c, x, y = refs
        if isinstance(y, float):                 # x where c else the immediate y
            first = [(VFunc.FILL, "o", x)] if isinstance(x, float) else []
            return first + [(VFunc.WHERE, "o", "o" if first else x, c, y)]
        if isinstance(x, float):                 # y where not c else the immediate x
            return [(VFunc.EQ, "t", c, 0.0), (VFunc.WHERE, "o", y, "t", x)]
        # x where c, plus y where not c (a chosen -0.0 comes out +0.0)
        return [(VFunc.WHERE, "o", x, c, 0.0), (VFunc.EQ, "t", c, 0.0), (VFunc.WHERE, "t", y, "t", 0.0),
                (VFunc.ADD, "o", "o", "t")]
    raise LoweringError(f"op {op} has no vector lowering")


def _f32(x: float) -> float:
    return float(np.float32(x))


def lower_elementwise(ctx: LowerCtx, node: Node) -> None:
    lower_map(ctx, node.output, node.inputs, steps_of(ctx, node))


def support_elementwise(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    for v in node.inputs:
        if v is None:
            continue
        if v.type.dtype is DType.BOOL and not (node.op == "where" and v is node.inputs[0]) and node.op != "cast":
            return f"{node.op} of booleans"
        if node.op == "cast" and v.type.dtype is not DType.BOOL:
            return None  # a float cast to itself: an alias (lower_move.py)
        if v.type.dtype not in (DType.F32, DType.BOOL):
            return f"{v.type.dtype} operands: the vector unit computes fp32"
    if node.op == "where" and node.inputs[0].type.dtype is not DType.BOOL:
        return "where with a non-boolean condition"
    if node.op == "pow":
        e = graph.const_value(node.inputs[1])
        if e is None or np.asarray(e).size != 1 or float(np.asarray(e).reshape(-1)[0]) not in POW_EXPONENTS:
            return "pow with an exponent other than a constant 2, 3, 1, 0.5 or -1"
    if node.op == "clip":
        for v in node.inputs[1:]:
            if v is not None and (graph.const_value(v) is None or np.asarray(graph.const_value(v)).size != 1):
                return "clip with bounds that are not constants"
    return None


lowering(*BINARY_OPS, *VARIADIC_OPS, *UNARY_OPS, "sigmoid", "swish", "gelu", "pow", "clip", "where",
         support=support_elementwise)(lower_elementwise)

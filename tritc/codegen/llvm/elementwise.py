"""The elementwise engine: a loop over the result with broadcast reads, and scalar emitters per op.

    SCALAR["relu"] = lambda s, x: s.b.select(s.b.fcmp_ordered(">", x, s.zero(x)), x, s.zero(x))

A scalar emitter gets a Scalar helper and its operands as *compute values* (floats as f32/f64/
half, bf16 widened to f32, ints as iN, bool as i1) and returns its result the same way.
`emit_elementwise` lowers a single elementwise node; `fused_elementwise` nodes evaluate their
whole body per element with the same emitters (ops/fused.py). Loops are simple enough for LLVM's
vectoriser: dims that every operand walks the same way are merged, so the innermost loop is one
long contiguous (or broadcast) run, and most nodes become one flat loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir

from ...ir.types import DType
from . import mathfns
from .builder import (
    F32,
    I1,
    I16,
    I32,
    PTR,
    VOID,
    broadcast_strides,
    elem_type,
    for_nest,
    for_range,
    gep,
    i64,
    intrinsic,
    linear_index,
    suffix,
)
from .context import Buf, NodeCtx
from .symbolic import Size, Sym, floordiv, smax, smin

ScalarEmitter = Callable[..., ir.Value]
SCALAR: dict[str, ScalarEmitter] = {}


def scalar(*ops: str) -> Callable[[ScalarEmitter], ScalarEmitter]:
    """Register the scalar emitter of elementwise ops. A bf16 result is rounded to bf16 right away
    (it is carried in f32), so that inside a fused body each op rounds as the interpreter does."""

    def register(fn: ScalarEmitter) -> ScalarEmitter:
        def emit(s: Scalar, *args: ir.Value | None) -> ir.Value:
            out = fn(s, *args)
            return round_bf16(s.b, out) if s.out_dtype is DType.BF16 else out

        emit.__name__ = emit.__qualname__ = fn.__name__
        emit.__doc__ = fn.__doc__
        for op in ops:
            SCALAR[op] = emit
        return fn

    return register


def compute_type(dtype: DType) -> ir.Type:
    """The LLVM type a value of `dtype` is computed in (4- and 2-bit ints: i8, sign- or zero-extended)."""
    if dtype is DType.BOOL:
        return I1
    if dtype is DType.BF16:
        return F32
    return elem_type(dtype)


@dataclass
class Scalar:
    """What a scalar emitter works with: the builder, the node's attributes and operand dtypes."""

    b: ir.IRBuilder
    attrs: dict[str, Any]
    in_dtypes: list[DType | None]
    out_dtype: DType

    def zero(self, like: ir.Value | ir.Type) -> ir.Constant:
        t = like if isinstance(like, ir.Type) else like.type
        return ir.Constant(t, 0.0 if _is_float(t) else 0)

    def const(self, like: ir.Value | ir.Type, v: float | int) -> ir.Constant:
        t = like if isinstance(like, ir.Type) else like.type
        return ir.Constant(t, float(v) if _is_float(t) else int(v))

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        """An LLVM intrinsic overloaded on the first operand's type: call("llvm.sqrt", x)."""
        return intrinsic(self.b, f"{name}.{suffix(args[0].type)}", args[0].type, list(args))

    def libm(self, name: str, *args: ir.Value) -> ir.Value:
        """A C math library function (expf / exp by operand type); half is computed in float."""
        t = args[0].type
        if isinstance(t, ir.HalfType):
            wide = [self.b.fpext(a, F32) for a in args]
            return self.b.fptrunc(self.libm(name, *wide), t)
        fname = name + ("f" if isinstance(t, ir.FloatType) else "")
        return intrinsic(self.b, fname, t, list(args))

    def math(self, name: str, x: ir.Value) -> ir.Value:
        """exp, expm1, log, log1p, tanh, sigmoid, erf, erfc, gelu_erf: inline vectorisable code for f32
        (half computed in f32 and rounded once), libm for f64."""
        if isinstance(x.type, ir.HalfType):
            return self.b.fptrunc(self.math(name, self.b.fpext(x, F32)), x.type)
        if isinstance(x.type, ir.FloatType):
            return mathfns.FUNCTIONS[name](self.b, x)
        b, one = self.b, self.const(x, 1.0)
        if name == "sigmoid":  # the interpreter's formulas
            return b.fdiv(one, b.fadd(one, self.libm("exp", b.fneg(x))))
        if name == "gelu_erf":
            z = b.fdiv(x, self.const(x, 2 ** 0.5))
            return b.fmul(b.fmul(self.const(x, 0.5), x), b.fadd(one, self.libm("erf", z)))
        return self.libm(name, x)

    def wide(self, x: ir.Value) -> ir.Value:
        """16-bit floats are computed in f32 (bf16 already is): half -> float."""
        return self.b.fpext(x, F32) if isinstance(x.type, ir.HalfType) else x

    def narrow(self, v: ir.Value) -> ir.Value:
        """A value computed by `wide` back in the result's compute type (one rounding)."""
        t = compute_type(self.out_dtype)
        return self.b.fptrunc(v, t) if isinstance(t, ir.HalfType) and not isinstance(v.type, ir.HalfType) else v

    def dtype(self, i: int = 0) -> DType:
        d = self.in_dtypes[i] if i < len(self.in_dtypes) else None
        return d if d is not None else self.out_dtype

    @property
    def signed(self) -> bool:
        d = self.in_dtypes[0]
        return d is None or d.is_signed


def _is_float(t: ir.Type) -> bool:
    return isinstance(t, (ir.FloatType, ir.DoubleType, ir.HalfType))


def is_float(v: ir.Value) -> bool:
    return _is_float(v.type)


# ---- storage <-> compute conversions ------------------------------------------------------------


def load_compute(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, dtype: DType) -> ir.Value:
    raw = b.load(gep(b, ptr, index, elem_type(dtype)), typ=elem_type(dtype))
    return to_compute(b, raw, dtype)


def to_compute(b: ir.IRBuilder, raw: ir.Value, dtype: DType) -> ir.Value:
    if dtype is DType.BOOL:
        return b.icmp_unsigned("!=", raw, ir.Constant(raw.type, 0))
    if dtype is DType.BF16:  # bf16 bits are the high half of an f32
        return b.bitcast(b.shl(b.zext(raw, I32), ir.Constant(I32, 16)), F32)
    if dtype.is_sub_byte:  # the value is the byte's low bits (the others are ignored, as ml_dtypes does)
        if dtype.is_signed:
            unused = ir.Constant(raw.type, 8 - dtype.bits)
            return b.ashr(b.shl(raw, unused), unused)
        return b.and_(raw, ir.Constant(raw.type, (1 << dtype.bits) - 1))
    return raw


def to_storage(b: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    if dtype is DType.BOOL:
        return b.zext(value, elem_type(dtype))
    if dtype is DType.BF16:
        return f32_to_bf16_bits(b, value)
    if dtype.is_sub_byte:  # the low bits, the rest of the byte zero (ml_dtypes' layout)
        return b.and_(value, ir.Constant(value.type, (1 << dtype.bits) - 1))
    return value


def f32_to_bf16_bits(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Round-to-nearest-even f32 -> bf16 bits, a NaN made quiet (tritc/ir/casts.py's rule)."""
    bits = b.bitcast(x, I32)
    lsb = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    rounded = b.add(bits, b.add(ir.Constant(I32, 0x7FFF), lsb))
    is_nan = b.fcmp_unordered("uno", x, x)
    quiet = b.or_(bits, ir.Constant(I32, 0x00400000))
    out = b.select(is_nan, quiet, rounded)
    return b.trunc(b.lshr(out, ir.Constant(I32, 16)), I16)


def round_bf16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """An f32 rounded to the nearest bf16 value, still as f32."""
    return to_compute(b, f32_to_bf16_bits(b, x), DType.BF16)


def f64_to_f32_odd(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """f64 -> f32 rounding to odd: truncate toward zero, then set the last bit if inexact. Rounding the result
    again to f16 or bf16 (<= 22 bits) gives the correctly rounded value of x."""
    y = b.fptrunc(x, F32)
    back = b.fpext(y, x.type)
    fabs = f"llvm.fabs.{suffix(x.type)}"
    away = b.fcmp_ordered(">", intrinsic(b, fabs, x.type, [back]), intrinsic(b, fabs, x.type, [x]))
    bits = b.bitcast(y, I32)
    bits = b.select(away, b.sub(bits, ir.Constant(I32, 1)), bits)
    bits = b.select(b.fcmp_ordered("!=", back, x), b.or_(bits, ir.Constant(I32, 1)), bits)
    return b.bitcast(bits, F32)


def store_compute(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, index: ir.Value, dtype: DType) -> None:
    b.store(to_storage(b, value, dtype), gep(b, ptr, index, elem_type(dtype)))


# ---- the loop ---------------------------------------------------------------------------------------


def collapse_dims(out_shape: Sequence[Size], strides: Sequence[Sequence[Size]]) -> tuple[list[Size], list[list[Size]]]:
    """Drop size-1 dims and merge neighbours that every operand walks alike (both broadcast, or
    contiguous across the pair), so that the loop nest has as few, and as long, loops as possible.
    Symbolic dims and strides merge when the equalities hold as polynomials."""
    dims: list[Size] = []
    merged: list[list[Size]] = [[] for _ in strides]
    for d, n in enumerate(out_shape):
        if n == 1:
            continue
        if dims and all(m[-1] == st[d] * n for m, st in zip(merged, strides)):
            dims[-1] = dims[-1] * n
            for m, st in zip(merged, strides):
                m[-1] = st[d]
            continue
        dims.append(n)
        for m, st in zip(merged, strides):
            m.append(st[d])
    return dims, merged


def broadcast_loop(ctx: NodeCtx, operands: Sequence[Buf | None], out_shape: Sequence[Size],
                   body: Callable[[list[ir.Value]], None], work: float | None = None) -> None:
    """Call body(linear_indices) for every element of out_shape; linear_indices[i] indexes operand i
    (broadcast), and the last entry indexes the result. `work` (about 1 per cheap op per element;
    by default estimated from the node) decides whether a large loop is split over the node's threads
    (the outermost dim is split)."""
    if _numel(out_shape) == 0:
        return
    if work is None:
        work = _work_of(ctx)
    strides = [broadcast_strides(op.shape if op is not None else (), out_shape) for op in operands]
    strides.append(broadcast_strides(out_shape, out_shape))
    dims, merged = collapse_dims(out_shape, strides)
    if not dims:
        body([i64(0)] * len(merged))
        return

    def part(lo: ir.Value, hi: ir.Value) -> None:
        b = ctx.b  # the task's builder when split
        with for_range(b, hi, start=lo, name="e0") as i0, for_nest(b, dims[1:], name="e") as rest:
            body([linear_index(b, [i0, *rest], st) for st in merged])

    parallel_range(ctx, dims[0], _scaled(_numel(dims[1:]), work), part)


def _work_of(ctx: NodeCtx) -> float:
    """Per-element cost of a node: its op's, or the sum over a fused body's ops."""
    if ctx.node.op != "fused_elementwise":
        return WORK.get(ctx.node.op, 1.0)
    from ...ir.ops.fused import parse_body

    return float(sum(WORK.get(n.op, 1.0) for n in parse_body(ctx.node.attrs["body"]) if n.op != "constant"))


def _scaled(n: Size, work: float) -> Size | float:
    """n elements of `work` each: a float when static, else a symbolic count of cheap-op units."""
    return n * work if isinstance(n, int) else n * max(1, math.ceil(work))


# ---- splitting a node's work over the thread pool ---------------------------------------------------------

MIN_TASK_WORK = 1 << 15  # a task should do at least this much (cheap element ops): a parallel_for costs microseconds
TASKS_PER_THREAD = 4  # tasks are claimed dynamically: a few per thread even out uneven cores


def parallel_range(ctx: NodeCtx, units: Size, work_per_unit: float | Size, part: Callable[[ir.Value, ir.Value], None]) -> None:
    """part(lo, hi) for [lo, hi) covering range(units): inline when the node has one thread or little work,
    else in tasks on the thread pool. `part` must emit with `ctx.b` and read buffers through the Bufs of
    ctx.ins / ctx.outs at emission time (their pointers are the task's own while it is emitted), and make
    its stack slots with entry_alloca on ctx.b (so that each task has its own). With symbolic sizes the
    number of tasks is chosen at run time (inline below two); symbolic dims work inside `part` as anywhere."""
    threads = ctx.m.threads
    if threads <= 1:
        part(i64(0), i64(units))
        return
    if isinstance(units, int) and not isinstance(work_per_unit, Sym):
        ntasks = min(units, threads * TASKS_PER_THREAD, int(units * work_per_unit // MIN_TASK_WORK))
        if ntasks < 2:
            part(i64(0), i64(units))
            return
        chunk: Size = -(-units // ntasks)
        _split(ctx, -(-units // chunk), chunk, units, part)
        return
    total = units * (work_per_unit if not isinstance(work_per_unit, float) else max(1, math.ceil(work_per_unit)))
    ntasks_s = smin(units, smin(threads * TASKS_PER_THREAD, floordiv(total, MIN_TASK_WORK)))
    chunk = floordiv(units + smax(ntasks_s, 1) - 1, smax(ntasks_s, 1))
    b = ctx.b
    with b.if_else(b.icmp_signed("<", i64(ntasks_s), i64(2))) as (alone, split):
        with alone:
            part(i64(0), i64(units))
        with split:
            _split(ctx, floordiv(units + chunk - 1, chunk), chunk, units, part)


def _split(ctx: NodeCtx, ntasks: Size, chunk: Size, units: Size, part: Callable[[ir.Value, ir.Value], None]) -> None:
    """part over `ntasks` tasks of `chunk` units (the last one clipped to `units`), on the pool."""
    from .kernels.threads import TASK_FN, emit_parallel_call, ensure_pool
    from .kernels.vec import entry_alloca

    ensure_pool(ctx.m.threads)
    b, bufs = ctx.b, [buf for buf in ctx.ins if buf is not None] + list(ctx.outs)
    dims = ctx.m.dims_of.get(b.function.name)
    ptrs = [buf.ptr for buf in bufs] + ([dims] if dims is not None else [])
    # The range's code goes in a function of its own whose pointer parameters are noalias, as the node's are (not
    # those of an in-place result and the operand it is written over).
    k = sum(1 for g in ctx.module.globals if g.startswith(f"node.{ctx.index}.part"))
    fn = ctx.new_function(f"part{k}", VOID, [PTR] * len(ptrs) + [ir.IntType(64)] * 2)
    for a, buf in zip(fn.args, bufs):
        if buf.noalias:
            a.add_attribute("noalias")
    if dims is not None:
        ctx.register_dims(fn, fn.args[len(bufs)])
    saved = [buf.ptr for buf in bufs]
    try:
        for buf, a in zip(bufs, fn.args):
            buf.ptr = a
        ctx.b = ir.IRBuilder(fn.append_basic_block("entry"))
        part(fn.args[-2], fn.args[-1])
        ctx.b.ret_void()
    finally:
        for buf, p in zip(bufs, saved):
            buf.ptr = p
        ctx.b = b
    task = ctx.new_function(f"task{k}", VOID, list(TASK_FN.args))
    tb = ir.IRBuilder(task.append_basic_block("entry"))
    loaded = [tb.load(gep(tb, task.args[0], j, PTR), typ=PTR) for j in range(len(ptrs))]
    if dims is not None:
        ctx.register_dims(task, loaded[-1])
    lo = tb.mul(task.args[1], i64(chunk))
    hi = tb.add(lo, i64(chunk))
    hi = tb.select(tb.icmp_signed("<", hi, i64(units)), hi, i64(units))
    tb.call(fn, [*loaded, lo, hi])
    tb.ret_void()
    table = entry_alloca(b, ir.ArrayType(PTR, len(ptrs)))
    for j, a in enumerate(ptrs):
        b.store(a, gep(b, table, j, PTR))
    emit_parallel_call(b, task, table, ntasks)  # the tasks run inline if no pool is linked in


def _numel(shape: Sequence[Size]) -> Size:
    n: Size = 1
    for d in shape:
        n = n * d
    return n


def emit_elementwise(ctx: NodeCtx, op: str | None = None, operands: int | None = None) -> None:
    """Lower a one-result elementwise node with SCALAR[op]; only the first `operands` operands are
    read (the others reach the emitter as None), all of them by default."""
    node = ctx.node
    name = op or node.op
    fn = SCALAR[name]
    out = ctx.outs[0]
    attrs, dtypes = ctx.attrs, [None if v is None else v.type.dtype for v in node.inputs]
    ins = [buf if operands is None or i < operands else None for i, buf in enumerate(ctx.ins)]

    def body(idx: list[ir.Value]) -> None:
        b = ctx.b
        args = [None if buf is None else load_compute(b, buf.ptr, i, buf.dtype) for buf, i in zip(ins, idx[:-1])]
        store_compute(b, fn(Scalar(b, attrs, dtypes, out.dtype), *args), out.ptr, idx[-1], out.dtype)

    broadcast_loop(ctx, ins, out.shape, body, work=WORK.get(name, 1.0))


# Rough cost per element of ops much dearer than a load/add/store: decides when a node is worth splitting.
WORK = {op: 8.0 for op in ("exp", "log", "tanh", "sigmoid", "erf", "gelu", "softplus", "mish", "swish", "elu", "selu", "celu",
                           "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "pow", "mod")}


def lower_elementwise(ctx: NodeCtx) -> None:
    emit_elementwise(ctx)


__all__ = ["SCALAR", "WORK", "Scalar", "broadcast_loop", "collapse_dims", "compute_type", "emit_elementwise", "f64_to_f32_odd", "is_float",
           "load_compute", "lower_elementwise", "parallel_range", "round_bf16", "scalar", "store_compute", "to_compute",
           "to_storage"]

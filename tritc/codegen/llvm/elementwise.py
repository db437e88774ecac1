"""The elementwise engine: a loop over the result with broadcast reads, and scalar emitters per op.

    SCALAR["relu"] = lambda s, x: s.b.select(s.b.fcmp_ordered(">", x, s.zero(x)), x, s.zero(x))

A scalar emitter gets a Scalar helper and its operands as *compute values* (floats as f32/f64/
half, bf16 widened to f32, ints as iN, bool as i1) and returns its result the same way.
`emit_elementwise` lowers a single elementwise node; `fused_elementwise` nodes evaluate their
whole body per element with the same emitters (ops/fused.py). Loops are simple enough for LLVM's
vectoriser: one flat loop when every operand is either the full shape or a scalar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir

from ...ir.types import DType
from .builder import F32, I1, I16, I32, I64, broadcast_strides, elem_type, for_nest, for_range, gep, intrinsic, linear_index, suffix
from .context import Buf, NodeCtx

ScalarEmitter = Callable[..., ir.Value]
SCALAR: dict[str, ScalarEmitter] = {}


def scalar(*ops: str) -> Callable[[ScalarEmitter], ScalarEmitter]:
    """Register the scalar emitter of elementwise ops."""

    def register(fn: ScalarEmitter) -> ScalarEmitter:
        for op in ops:
            SCALAR[op] = fn
        return fn

    return register


def compute_type(dtype: DType) -> ir.Type:
    """The LLVM type a value of `dtype` is computed in."""
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
    return raw


def to_storage(b: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    if dtype is DType.BOOL:
        return b.zext(value, elem_type(dtype))
    if dtype is DType.BF16:
        return f32_to_bf16_bits(b, value)
    return value


def f32_to_bf16_bits(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Round-to-nearest-even f32 -> bf16 bits (NaN kept quiet), as ml_dtypes does."""
    bits = b.bitcast(x, I32)
    lsb = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    rounded = b.add(bits, b.add(ir.Constant(I32, 0x7FFF), lsb))
    is_nan = b.fcmp_unordered("uno", x, x)
    quiet = b.or_(bits, ir.Constant(I32, 0x00400000))
    out = b.select(is_nan, quiet, rounded)
    return b.trunc(b.lshr(out, ir.Constant(I32, 16)), I16)


def store_compute(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, index: ir.Value, dtype: DType) -> None:
    b.store(to_storage(b, value, dtype), gep(b, ptr, index, elem_type(dtype)))


# ---- the loop ---------------------------------------------------------------------------------------


def broadcast_loop(ctx: NodeCtx, operands: Sequence[Buf | None], out_shape: Sequence[int],
                   body: Callable[[list[ir.Value]], None]) -> None:
    """Call body(linear_indices) for every element of out_shape; linear_indices[i] indexes operand i
    (broadcast), and the last entry indexes the result."""
    b = ctx.b
    shapes = [op.shape if op is not None else () for op in operands]
    numel = 1
    for d in out_shape:
        numel *= d
    if numel == 0:
        return
    flat_ok = all(op is None or tuple(s) == tuple(out_shape) or _numel(s) == 1 for op, s in zip(operands, shapes))
    if flat_ok:
        with for_range(b, numel, name="e") as i:
            idx = [I64(0) if op is None or (_numel(s) == 1 and numel != 1) else i for op, s in zip(operands, shapes)]
            body(idx + [i])
        return
    strides = [broadcast_strides(s, out_shape) for s in shapes]
    out_strides = broadcast_strides(out_shape, out_shape)
    with for_nest(b, list(out_shape), name="e") as ix:
        idx = [linear_index(b, ix, st) for st in strides]
        body(idx + [linear_index(b, ix, out_strides)])


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def emit_elementwise(ctx: NodeCtx, op: str | None = None) -> None:
    """Lower a one-result elementwise node with SCALAR[op]."""
    node = ctx.node
    fn = SCALAR[op or node.op]
    out = ctx.outs[0]
    s = Scalar(ctx.b, ctx.attrs, [None if v is None else v.type.dtype for v in node.inputs], out.dtype)

    def body(idx: list[ir.Value]) -> None:
        args = [None if op_buf is None else load_compute(ctx.b, op_buf.ptr, i, op_buf.dtype)
                for op_buf, i in zip(ctx.ins, idx[:-1])]
        store_compute(ctx.b, fn(s, *args), out.ptr, idx[-1], out.dtype)

    broadcast_loop(ctx, ctx.ins, out.shape, body)


def lower_elementwise(ctx: NodeCtx) -> None:
    emit_elementwise(ctx)


__all__ = ["SCALAR", "Scalar", "broadcast_loop", "compute_type", "emit_elementwise", "is_float", "load_compute",
           "lower_elementwise", "scalar", "store_compute", "to_compute", "to_storage"]

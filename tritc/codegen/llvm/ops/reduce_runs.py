"""Building blocks of the reduction lowerings: combining values, and vectorised runs over contiguous memory.

    reduce_run(b, slot, x.ptr, x.dtype, base, n, "add", pre=square)   # *slot = *slot + sum(x[base:base+n]^2)

LLVM does not vectorise a floating-point reduction without fast-math flags (which tritc never
sets), so float runs are vectorised here by hand: one wide vector accumulator, a tree sum of its
lanes, then a scalar tail. That reorders the additions, as numpy's pairwise summation does too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import llvmlite.ir as ir

from ....ir.types import DType
from .. import mathfns
from ..builder import F32, F64, I1, I32, elem_type, for_range, gep, intrinsic, suffix
from ..elementwise import compute_type, load_compute
from ..kernels.vec import entry_alloca, splat

Map = Callable[[ir.IRBuilder, ir.Value], ir.Value]
LANES = 32  # f32 lanes per vector accumulator (16 for f64): several registers, independent add chains


def acc_dtype(dtype: DType) -> DType:
    """16-bit floats accumulate in f32, as the interpreter does; everything else in its own dtype."""
    return DType.F32 if dtype in (DType.F16, DType.BF16) else dtype


def is_float_type(t: ir.Type) -> bool:
    e = t.element if isinstance(t, ir.VectorType) else t
    return isinstance(e, (ir.FloatType, ir.DoubleType, ir.HalfType))


def const_like(t: ir.Type, v: float | int) -> ir.Constant:
    """A scalar or splatted vector constant of type t."""
    e = t.element if isinstance(t, ir.VectorType) else t
    c = ir.Constant(e, float(v) if is_float_type(e) else int(v))
    return ir.Constant(t, [c] * t.count) if isinstance(t, ir.VectorType) else c


def identity(how: str, dtype: DType) -> ir.Constant:
    """The value a reduction of no elements gives (in the accumulation type)."""
    t = compute_type(dtype)
    if how in ("add", "mul"):
        return const_like(t, 0 if how == "add" else 1)
    largest = how in ("min", "fmin")
    if dtype is DType.BOOL:
        return ir.Constant(I1, int(largest))
    if dtype.is_float:
        return const_like(t, math.inf if largest else -math.inf)
    bits = dtype.itemsize * 8
    if dtype.is_signed:
        return const_like(t, (1 << (bits - 1)) - 1 if largest else -(1 << (bits - 1)))
    return const_like(t, -1 if largest else 0)  # all ones is the largest unsigned value


def combine(b: ir.IRBuilder, how: str, a: ir.Value, v: ir.Value, signed: bool = True) -> ir.Value:
    """a (+ * max min) v for floats (max/min propagate nan, like np.maximum), ints and bools.
    fmax/fmin are max/min that skip a nan v (one vmaxps: for callers where nan does not matter)."""
    if how in ("fmax", "fmin"):
        if not is_float_type(a.type):
            return combine(b, how[1:], a, v, signed)
        return b.select(b.fcmp_ordered(">" if how == "fmax" else "<", v, a), v, a)
    if is_float_type(a.type):
        if how == "add":
            return b.fadd(a, v)
        if how == "mul":
            return b.fmul(a, v)
        name = "llvm.maximum" if how == "max" else "llvm.minimum"
        return intrinsic(b, f"{name}.{suffix(a.type)}", a.type, [a, v])
    if a.type == I1 and how in ("max", "min"):
        return b.or_(a, v) if how == "max" else b.and_(a, v)
    if how == "add":
        return b.add(a, v)
    if how == "mul":
        return b.mul(a, v)
    cmp = b.icmp_signed if signed else b.icmp_unsigned
    return b.select(cmp(">" if how == "max" else "<", a, v), a, v)


def hreduce(b: ir.IRBuilder, how: str, v: ir.Value) -> ir.Value:
    """The lanes of v combined pairwise (halving tree) into one scalar."""
    n = v.type.count
    while n > 1:
        n //= 2
        lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
        v = combine(b, how, lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))


def load_wide(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, dtype: DType) -> ir.Value:
    """One element as a compute value, 16-bit floats widened to f32."""
    v = load_compute(b, ptr, index, dtype)
    return b.fpext(v, F32) if dtype is DType.F16 else v


def load_vec(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, dtype: DType, lanes: int) -> ir.Value:
    """`lanes` consecutive elements as a vector of f32 (16-bit floats widened) or f64."""
    et = elem_type(dtype)
    raw = b.load(gep(b, ptr, index, et), typ=ir.VectorType(et, lanes), align=dtype.itemsize)
    if dtype is DType.F16:
        return b.fpext(raw, ir.VectorType(F32, lanes))
    if dtype is DType.BF16:
        wide = b.shl(b.zext(raw, ir.VectorType(I32, lanes)), const_like(ir.VectorType(I32, lanes), 16))
        return b.bitcast(wide, ir.VectorType(F32, lanes))
    return raw


def store_vec(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, index: ir.Value) -> None:
    """Store an f32/f64 vector into a buffer of the same element type."""
    b.store(v, gep(b, ptr, index, v.type.element), align=8 if isinstance(v.type.element, ir.DoubleType) else 4)


def reduce_run(b: ir.IRBuilder, slot: ir.Value, ptr: ir.Value, dtype: DType, base: ir.Value, n: int, how: str,
               pre: Map | None = None, store: Callable[[ir.IRBuilder, ir.Value, ir.Value], None] | None = None,
               vectorize: bool = True, signed: bool = True, acc: DType | None = None) -> None:
    """*slot = combine(*slot, pre(x[base + i])) for i < n, in the accumulation dtype `acc` (by default
    acc_dtype(dtype)). `pre` maps loaded values (scalars or vectors) into it before combining;
    `store(b, index, value)` sees each mapped value (softmax writes them)."""
    acc_t = compute_type(acc or acc_dtype(dtype))
    pre = pre or (lambda _b, v: v)
    lanes = LANES if isinstance(acc_t, ir.FloatType) else LANES // 2
    nvec = n // lanes if vectorize and isinstance(acc_t, (ir.FloatType, ir.DoubleType)) else 0
    if nvec:
        vt = ir.VectorType(acc_t, lanes)
        # max/min: llvm.maximum's nan and signed-zero fixups sit on the accumulator's dependency
        # chain; a plain vmaxps plus a separate "saw a nan" mask is several times faster
        fast = {"max": "fmax", "min": "fmin"}.get(how, how)
        mt = ir.VectorType(I1, lanes)
        vslot, nan_slot = entry_alloca(b, vt), entry_alloca(b, mt) if fast != how else None
        b.store(const_like(vt, _identity_value(how)), vslot)
        if nan_slot is not None:
            b.store(ir.Constant(mt, [ir.Constant(I1, 0)] * lanes), nan_slot)
        with for_range(b, nvec, name="v") as k:
            i = b.add(base, b.mul(k, ir.Constant(k.type, lanes)))
            v = pre(b, load_vec(b, ptr, i, dtype, lanes))
            if store is not None:
                store(b, i, v)
            b.store(combine(b, fast, b.load(vslot, typ=vt), v), vslot)
            if nan_slot is not None:
                b.store(b.or_(b.load(nan_slot, typ=mt), b.fcmp_unordered("uno", v, v)), nan_slot)
        h = hreduce(b, fast, b.load(vslot, typ=vt))
        if nan_slot is not None:
            saw_nan = intrinsic(b, f"llvm.vector.reduce.or.v{lanes}i1", I1, [b.load(nan_slot, typ=mt)])
            h = b.select(saw_nan, const_like(acc_t, math.nan), h)
        b.store(combine(b, how, b.load(slot, typ=acc_t), h), slot)
    if n - nvec * lanes:
        with for_range(b, n, start=nvec * lanes, name="t") as k:
            i = b.add(base, k)
            v = pre(b, load_wide(b, ptr, i, dtype))
            if store is not None:
                store(b, i, v)
            b.store(combine(b, how, b.load(slot, typ=acc_t), v, signed), slot)


def _identity_value(how: str) -> float:
    return {"add": 0.0, "mul": 1.0, "max": -math.inf, "min": math.inf, "fmax": -math.inf, "fmin": math.inf}[how]


def vsplat(b: ir.IRBuilder, v: ir.Value, like: ir.Value) -> ir.Value:
    """v as a vector shaped like `like` when that is a vector, else v."""
    return splat(b, v, like.type.count) if isinstance(like.type, ir.VectorType) else v


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x for f32 (inline, vectorisable) or f64 (libm)."""
    if mathfns.is_f32(x.type):
        return mathfns.exp_f32(b, x)
    return intrinsic(b, "exp", F64, [x])


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    if mathfns.is_f32(x.type):
        return mathfns.log_f32(b, x)
    return intrinsic(b, "log", F64, [x])


__all__ = ["acc_dtype", "combine", "const_like", "entry_alloca", "exp", "hreduce", "identity", "load_vec", "load_wide",
           "log", "reduce_run", "store_vec", "vsplat"]

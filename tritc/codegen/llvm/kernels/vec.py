"""Vector helpers for hand-written kernels: constants, splats, stack slots, loads and stores with ragged tails.

Everything here is target-independent LLVM IR; the ISA-specific parts of a kernel call intrinsics
directly. Vector memory accesses carry an explicit small alignment: numpy buffers are not 64-byte
aligned, and LLVM would otherwise assume the vector type's natural alignment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import llvmlite.ir as ir

from ..builder import F32, I8, I32, PTR, VOID, for_range, gep, i64

V16I32 = ir.VectorType(I32, 16)
V16F32 = ir.VectorType(F32, 16)
V64I8 = ir.VectorType(I8, 64)


def vec(elem: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(elem, n)


def const_vec(t: ir.VectorType, values: Sequence[int | float] | int | float) -> ir.Constant:
    """A constant vector; integers may be given as unsigned bit patterns (0xC0000000 for i32)."""
    vals = [values] * t.count if isinstance(values, (int, float)) else list(values)
    if isinstance(t.element, ir.IntType):
        w = t.element.width
        vals = [((int(v) + (1 << (w - 1))) % (1 << w)) - (1 << (w - 1)) for v in vals]
    return ir.Constant(t, [ir.Constant(t.element, v) for v in vals])


def ival(v: ir.Value | int) -> ir.Value:
    """An i64 IR value from a Python int or an IR value."""
    return i64(v) if isinstance(v, int) else v


def add(b: ir.IRBuilder, x: ir.Value | int, y: ir.Value | int) -> ir.Value | int:
    """x + y on i64, folded when both are Python ints (so static offsets stay static)."""
    if isinstance(x, int) and isinstance(y, int):
        return x + y
    if isinstance(y, int) and y == 0:
        return x
    if isinstance(x, int) and x == 0:
        return y
    return b.add(ival(x), ival(y), flags=["nsw"])


def mul(b: ir.IRBuilder, x: ir.Value | int, y: int) -> ir.Value | int:
    if isinstance(x, int):
        return x * y
    return x if y == 1 else b.mul(x, i64(y), flags=["nsw"])


def splat(b: ir.IRBuilder, value: ir.Value, n: int) -> ir.Value:
    """<n x T> with every lane = value."""
    t = vec(value.type, n)
    one = b.insert_element(ir.Constant(t, ir.Undefined), value, ir.Constant(I32, 0))
    return b.shuffle_vector(one, ir.Constant(t, ir.Undefined), ir.Constant(vec(I32, n), [0] * n))


def entry_alloca(b: ir.IRBuilder, typ: ir.Type, name: str = "") -> ir.Value:
    """A stack slot in the entry block, so that mem2reg/SROA promote it to a register."""
    here = b.block
    entry = b.function.entry_basic_block
    if entry.instructions:
        b.position_before(entry.instructions[0])
    else:
        b.position_at_end(entry)
    slot = b.alloca(typ, name=name)
    slot.type = PTR  # llvmlite types allocas as typed pointers; geps over them must see an opaque ptr
    b.position_at_end(here)
    return slot


STACK_SCRATCH = 64 * 1024  # larger scratch comes from the heap: a thread's stack may be small


def heap_scratch_bytes(nbytes: int) -> int:
    """The bytes alloc_scratch asks the heap for (0 when the scratch fits on the stack)."""
    return 0 if nbytes <= STACK_SCRATCH else (nbytes + 63) // 64 * 64


def alloc_scratch(b: ir.IRBuilder, nbytes: int, name: str = "scratch") -> tuple[ir.Value, ir.Value | None]:
    """(pointer, heap) to nbytes of 64-byte aligned scratch: on the stack up to STACK_SCRATCH, else from
    aligned_alloc. `heap` is the pointer when it came from the heap (None on the stack): the caller checks it for
    null (the allocation failed: never trap, return a status) and gives it to free_scratch."""
    size = heap_scratch_bytes(nbytes)
    if not size:
        base = entry_alloca(b, ir.ArrayType(I8, max(nbytes, 1)), name)
        base.align = 64
        return base, None
    base = call(b, "aligned_alloc", PTR, i64(64), i64(size))
    return base, base


def free_scratch(b: ir.IRBuilder, heap: ir.Value | None) -> None:
    if heap is not None:
        call(b, "free", VOID, heap)


def slots(b: ir.IRBuilder, typ: ir.Type, zero: ir.Constant | None, *dims: int) -> list:
    """A nested list (shape dims) of stack slots of `typ`, each set to `zero` here if given."""
    if len(dims) == 1:
        out = [entry_alloca(b, typ) for _ in range(dims[0])]
        if zero is not None:
            for s in out:
                b.store(zero, s)
        return out
    return [slots(b, typ, zero, *dims[1:]) for _ in range(dims[0])]


def vload(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value | int, t: ir.VectorType, align: int = 1) -> ir.Value:
    """The vector at &ptr[index] (index counts elements of t.element)."""
    return b.load(gep(b, ptr, ival(index), t.element), typ=t, align=align)


def vload_bytes(b: ir.IRBuilder, ptr: ir.Value, byte: ir.Value | int, t: ir.VectorType, align: int = 1) -> ir.Value:
    """The vector at byte offset `byte` from ptr."""
    return b.load(gep(b, ptr, ival(byte), I8), typ=t, align=align)


def vstore(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, index: ir.Value | int, align: int = 1) -> None:
    b.store(value, gep(b, ptr, ival(index), value.type.element), align=align)


def sload(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value | int, t: ir.Type, align: int = 4) -> ir.Value:
    """The scalar ptr[index]."""
    return b.load(gep(b, ptr, ival(index), t), typ=t, align=align)


def load_prefix(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value | int, t: ir.VectorType, count: int,
                fill: float | int = 0) -> ir.Value:
    """A vector of t whose first `count` lanes come from &ptr[index] and the rest are `fill`.

    Never reads past the count, for ragged tails of caller buffers."""
    if count == t.count:
        return vload(b, ptr, index, t)
    out: ir.Value = const_vec(t, fill)
    for lane in range(count):
        elem = sload(b, ptr, add(b, index, lane), t.element)
        out = b.insert_element(out, elem, ir.Constant(I32, lane))
    return out


def store_prefix(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, index: ir.Value | int, count: int) -> None:
    """Store the first `count` lanes of `value` at &ptr[index] (never writes past the count)."""
    if count == value.type.count:
        vstore(b, value, ptr, index)
        return
    for lane in range(count):
        elem = b.extract_element(value, ir.Constant(I32, lane))
        b.store(elem, gep(b, ptr, ival(add(b, index, lane)), value.type.element), align=4)


@contextmanager
def loop(b: ir.IRBuilder, start: ir.Value | int, stop: ir.Value | int, name: str) -> Iterator[ir.Value]:
    """for i in range(start, stop) on i64; no loop at all when the static trip count is 1."""
    if isinstance(start, int) and isinstance(stop, int) and stop - start == 1:
        yield i64(start)
        return
    with for_range(b, ival(stop), start=ival(start), name=name) as i:
        yield i


def intrinsic_fn(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    existing = module.globals.get(name)
    if existing is not None:
        return existing  # type: ignore[return-value]
    return ir.Function(module, ir.FunctionType(ret, list(args)), name)


def call(b: ir.IRBuilder, name: str, ret: ir.Type, *args: ir.Value) -> ir.Value:
    """Call the intrinsic or libc function `name` (declared on first use)."""
    return b.call(intrinsic_fn(b.module, name, ret, [a.type for a in args]), list(args))


def tree_sum(b: ir.IRBuilder, values: Sequence[ir.Value]) -> ir.Value:
    """values[0] + values[1] + ... added pairwise (a shorter dependency chain than in order)."""
    vals = list(values)
    while len(vals) > 1:
        vals = [b.fadd(vals[i], vals[i + 1]) if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
    return vals[0]


def activation(b: ir.IRBuilder, kind: str | None, v: ir.Value) -> ir.Value:
    """relu / silu (or nothing) on an f32 scalar or vector; NaN stays NaN, as with np.maximum and np.exp."""
    t = v.type
    vector = isinstance(t, ir.VectorType)
    zero = const_vec(t, 0.0) if vector else ir.Constant(F32, 0.0)
    if kind == "relu":
        return b.select(b.fcmp_ordered("<", v, zero), zero, v)
    if kind == "silu":
        e = call(b, f"llvm.exp.v{t.count}f32" if vector else "llvm.exp.f32", t, b.fneg(v))
        return b.fdiv(v, b.fadd(const_vec(t, 1.0) if vector else ir.Constant(F32, 1.0), e))
    return v

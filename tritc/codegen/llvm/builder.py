"""Small helpers that make LLVM IR emitters read like pseudocode: types, constants and loops.

    with for_range(b, n) as i:
        b.store(b.fadd(load(b, x, i), one), gep(b, y, i))

Sizes may be ints or symbolic dims (symbolic.Sym, an i64 known at run time): `i64`, `gep`, `for_range`,
`linear_index` and the stride helpers take either, so one emitter serves static and symbolic shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import llvmlite.ir as ir

from ...ir.types import DType
from .symbolic import Size, Sym, if_one

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F16 = ir.HalfType()
F32 = ir.FloatType()
F64 = ir.DoubleType()
BF16 = ir.IntType(16)  # bf16 values are carried as raw bits and widened to f32 for arithmetic
PTR = ir.PointerType()
VOID = ir.VoidType()

_ELEM = {
    DType.F32: F32, DType.F16: F16, DType.F64: F64, DType.BF16: BF16,
    DType.I8: I8, DType.U8: I8, DType.I16: I16, DType.U16: I16, DType.I32: I32, DType.U32: I32,
    DType.I64: I64, DType.U64: I64, DType.BOOL: I8, DType.T2: I8,
    DType.I4: I8, DType.U4: I8, DType.I2: I8, DType.U2: I8,  # one value per byte, in the byte's low bits
}


def elem_type(dtype: DType) -> ir.Type:
    """The LLVM type one element of `dtype` is stored as (bool as i8, bf16 as i16 bits, 4- and 2-bit ints as i8)."""
    return _ELEM[dtype]


def i64(v: Size) -> ir.Value:
    """An i64 operand: a constant for an int, the symbolic dim itself (an i64 value) for a Sym."""
    return v if isinstance(v, Sym) else ir.Constant(I64, int(v))


def i32(v: int) -> ir.Constant:
    return ir.Constant(I32, int(v))


def const(t: ir.Type, v: float | int) -> ir.Constant:
    return ir.Constant(t, v)


def gep(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value | Size, etype: ir.Type, name: str = "") -> ir.Value:
    """&ptr[index] for elements of type `etype`."""
    idx = i64(index) if isinstance(index, int) else index
    return b.gep(ptr, [idx], inbounds=True, source_etype=etype, name=name)


def load(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value | int, etype: ir.Type, name: str = "") -> ir.Value:
    return b.load(gep(b, ptr, index, etype), typ=etype, name=name)


def store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, index: ir.Value | int) -> None:
    b.store(value, gep(b, ptr, index, value.type))


@contextmanager
def for_range(b: ir.IRBuilder, stop: ir.Value | Size, start: ir.Value | Size = 0, step: int = 1,
              name: str = "i") -> Iterator[ir.Value]:
    """A counted loop `for i in range(start, stop, step)` (i64); the body is what the `with` emits. start and
    stop may be run-time values (an i64 ir.Value or a symbolic dim); step is a constant."""
    start_v = i64(start) if isinstance(start, int) else start
    stop_v = i64(stop) if isinstance(stop, int) else stop
    fn = b.function
    pre = b.block
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start_v, pre)
    cmp = "<" if step > 0 else ">"
    b.cbranch(b.icmp_signed(cmp, i, stop_v), body, end)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, i64(step), name=f"{name}.next", flags=["nsw"])
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(end)


@contextmanager
def for_nest(b: ir.IRBuilder, shape: Sequence[Size], name: str = "i") -> Iterator[list[ir.Value]]:
    """Nested loops over a shape (outermost first, static or symbolic dims); yields the index of each dim."""
    if not shape:
        yield []
        return
    with for_range(b, shape[0], name=f"{name}0") as i0:
        with for_nest(b, shape[1:], name=f"{name}_") as rest:
            yield [i0, *rest]


def linear_index(b: ir.IRBuilder, idx: Sequence[ir.Value], strides: Sequence[Size], offset: Size = 0) -> ir.Value:
    """offset + sum(idx[d] * strides[d]), skipping zero strides (broadcast dims)."""
    acc: ir.Value = i64(offset)
    for i, s in zip(idx, strides):
        if isinstance(s, int) and s == 0:
            continue
        term = i if isinstance(s, int) and s == 1 else b.mul(i, i64(s), flags=["nsw"])
        acc = term if (isinstance(acc, ir.Constant) and acc.constant == 0) else b.add(acc, term, flags=["nsw"])
    return acc


def contiguous_strides(shape: Sequence[Size]) -> list[Size]:
    strides: list[Size] = []
    n: Size = 1
    for d in reversed(shape):
        strides.append(n)
        n *= d
    return list(reversed(strides))


def broadcast_strides(in_shape: Sequence[Size], out_shape: Sequence[Size]) -> list[Size]:
    """Element strides of an input read at output indices (0 where it broadcasts). A symbolic input dim that
    differs from the result's (it is 1 or the same at run time) gets a stride chosen at run time."""
    pad = len(out_shape) - len(in_shape)
    full: list[Size] = [1] * pad + list(in_shape)
    base = contiguous_strides(full)
    out: list[Size] = []
    for d in range(len(out_shape)):
        if isinstance(full[d], Sym) and full[d] != out_shape[d]:
            out.append(if_one(full[d], 0, base[d]))
        else:
            out.append(0 if full[d] == 1 and out_shape[d] != 1 else base[d])
    return out


def declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    """The function `name` in `module`, declared once (intrinsics, libm, runtime helpers)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing  # type: ignore[return-value]
    return ir.Function(module, ir.FunctionType(ret, list(args)), name)


def intrinsic(b: ir.IRBuilder, name: str, ret: ir.Type, args: Sequence[ir.Value]) -> ir.Value:
    fn = declare(b.module, name, ret, [a.type for a in args])
    return b.call(fn, list(args))


def suffix(t: ir.Type) -> str:
    """The overload suffix of an intrinsic for type t: f32, v16f32, i8, ..."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{suffix(t.element)}"
    if isinstance(t, ir.FloatType):
        return "f32"
    if isinstance(t, ir.DoubleType):
        return "f64"
    if isinstance(t, ir.HalfType):
        return "f16"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    raise TypeError(f"no intrinsic suffix for {t}")

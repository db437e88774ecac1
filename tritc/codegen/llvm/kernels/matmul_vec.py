"""Vectors and parameters of the GEMM kernels (kernels/matmul.py): the compute type and its vector helpers
(`Gen`: loads that convert storage to compute type, masked and gathered loads, stores back), the runtime
parameter block (`Params`, `Values`), and where B comes from (`BSource`, `StridedB`; conv sources in ops/cnn.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import F32, F64, I1, I16, I32, I64, PTR, VOID, declare, elem_type, gep, i64, suffix


def compute_type(dtype: DType) -> ir.Type:
    """What the kernel accumulates in: f16 and bf16 in f32, unsigned ints as their bits."""
    if dtype in (DType.F16, DType.BF16, DType.F32):
        return F32
    if dtype is DType.F64:
        return F64
    if dtype in (DType.I32, DType.U32):
        return I32
    if dtype in (DType.I64, DType.U64):
        return I64
    raise ValueError(f"no GEMM kernel for {dtype}")


def lanes(dtype: DType) -> int:
    """Elements per 64-byte vector of the compute type."""
    t = compute_type(dtype)
    return 8 if t in (F64, I64) else 16


# ---- vectors in the kernel's compute type ------------------------------------------------------------------


class Gen:
    """The builder plus vector helpers for one kernel: loads convert storage -> compute type, stores back."""

    def __init__(self, b: ir.IRBuilder, dtype: DType):
        self.b = b
        self.dtype = dtype
        self.ct = compute_type(dtype)
        self.st = elem_type(dtype)
        self.L = lanes(dtype)
        self.vt = ir.VectorType(self.ct, self.L)
        self.vst = ir.VectorType(self.st, self.L)
        self.is_float = not isinstance(self.ct, ir.IntType)

    def zero(self) -> ir.Constant:
        return ir.Constant(self.vt, [ir.Constant(self.ct, 0.0 if self.is_float else 0)] * self.L)

    def mask(self, count: int) -> ir.Constant:
        return ir.Constant(ir.VectorType(I1, self.L), [ir.Constant(I1, int(i < count)) for i in range(self.L)])

    def call(self, name: str, ret: ir.Type, *args: ir.Value) -> ir.Value:
        return self.b.call(declare(self.b.module, name, ret, [a.type for a in args]), list(args))

    def to_compute(self, raw: ir.Value) -> ir.Value:
        b = self.b
        if self.dtype is DType.F16:
            return b.fpext(raw, self.vt if isinstance(raw.type, ir.VectorType) else self.ct)
        if self.dtype is DType.BF16:
            wide = ir.VectorType(I32, self.L) if isinstance(raw.type, ir.VectorType) else I32
            shift = ir.Constant(wide, [ir.Constant(I32, 16)] * self.L) if wide != I32 else ir.Constant(I32, 16)
            return b.bitcast(b.shl(b.zext(raw, wide), shift), self.vt if wide != I32 else F32)
        return raw

    def to_storage(self, v: ir.Value) -> ir.Value:
        b = self.b
        if self.dtype is DType.F16:
            return b.fptrunc(v, self.vst)
        if self.dtype is DType.BF16:  # round to nearest even, NaN kept quiet (as ml_dtypes)
            vi = ir.VectorType(I32, self.L)

            def c(x: int) -> ir.Constant:
                return ir.Constant(vi, [ir.Constant(I32, x)] * self.L)

            bits = b.bitcast(v, vi)
            lsb = b.and_(b.lshr(bits, c(16)), c(1))
            rounded = b.add(bits, b.add(c(0x7FFF), lsb))
            out = b.select(b.fcmp_unordered("uno", v, v), b.or_(bits, c(0x400000)), rounded)
            return b.trunc(b.lshr(out, c(16)), ir.VectorType(I16, self.L))
        return v

    def valid_mask(self, valid: int | ir.Value | None) -> ir.Value | None:
        """None when every lane is valid; else a lane mask (from a static count or a runtime mask)."""
        if valid is None or (isinstance(valid, int) and valid >= self.L):
            return None
        return self.mask(valid) if isinstance(valid, int) else valid

    def lanes_below(self, count: ir.Value, offset: int = 0) -> ir.Value:
        """The runtime mask of lanes l with offset + l < count (count an i64)."""
        iota = self.iconst([offset + lane for lane in range(self.L)], I64)
        return self.b.icmp_signed("<", iota, self.splat_int(count))

    def splat_int(self, s: ir.Value) -> ir.Value:
        t = ir.VectorType(s.type, self.L)
        one = self.b.insert_element(ir.Constant(t, ir.Undefined), s, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, ir.Constant(t, ir.Undefined), ir.Constant(ir.VectorType(I32, self.L), [0] * self.L))

    def load(self, ptr: ir.Value, index: ir.Value | int, valid: int | ir.Value | None = None, align: int = 4) -> ir.Value:
        """L consecutive elements from &ptr[index]; lanes not `valid` (a count or a mask) are 0 and not read."""
        b = self.b
        p = gep(self.b, ptr, index, self.st)
        m = self.valid_mask(valid)
        if m is None:
            raw = b.load(p, typ=self.vst, align=align)
        else:
            raw = self.call(f"llvm.masked.load.{suffix(self.vst)}.p0", self.vst, p, ir.Constant(I32, align), m,
                            ir.Constant(self.vst, None))
        return self.to_compute(raw)

    def gather(self, ptr: ir.Value, index: ir.Value, mask: ir.Value | None = None) -> ir.Value:
        """ptr[index[l]] for each lane (index an integer vector); lanes off in mask are 0 and not read."""
        b = self.b
        ptrs = b.gep(ptr, [index], inbounds=True, source_etype=self.st)
        ptrs.type = ir.VectorType(PTR, self.L)  # llvmlite types a GEP by its base; a vector index makes a vector
        m = mask if mask is not None else self.mask(self.L)
        raw = self.call(f"llvm.masked.gather.{suffix(self.vst)}.v{self.L}p0", self.vst, ptrs, ir.Constant(I32, 2), m,
                        ir.Constant(self.vst, None))
        return self.to_compute(raw)

    def store(self, v: ir.Value, ptr: ir.Value, index: ir.Value | int, valid: int | ir.Value | None = None,
              align: int = 4) -> None:
        b = self.b
        raw = self.to_storage(v)
        p = gep(b, ptr, index, self.st)
        m = self.valid_mask(valid)
        if m is None:
            b.store(raw, p, align=align)
        else:
            self.call(f"llvm.masked.store.{suffix(self.vst)}.p0", VOID, raw, p, ir.Constant(I32, align), m)

    def scalar(self, ptr: ir.Value, index: ir.Value | int) -> ir.Value:
        return self.to_compute(self.b.load(gep(self.b, ptr, index, self.st), typ=self.st))

    def splat(self, s: ir.Value) -> ir.Value:
        b = self.b
        one = b.insert_element(ir.Constant(self.vt, ir.Undefined), s, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(self.vt, ir.Undefined), ir.Constant(ir.VectorType(I32, self.L), [0] * self.L))

    def splat_f(self, s: ir.Value, t: ir.VectorType) -> ir.Value:
        """A scalar splat to vector type t (of this kernel's lane count)."""
        one = self.b.insert_element(ir.Constant(t, ir.Undefined), s, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, ir.Constant(t, ir.Undefined), ir.Constant(ir.VectorType(I32, self.L), [0] * self.L))

    def madd(self, acc: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
        if self.is_float:
            return self.call(f"llvm.fma.{suffix(self.vt)}", self.vt, x, y, acc)
        return self.b.add(acc, self.b.mul(x, y))

    def iconst(self, values: Sequence[int], t: ir.IntType = I32) -> ir.Constant:
        return ir.Constant(ir.VectorType(t, len(values)), [ir.Constant(t, int(v)) for v in values])


class Params:
    """A kernel's runtime parameters: named i64 slots of one array (floats as their f64 bits) and table pointers.

    The emitter declares the names (`slot`), the caller fills the values in the same order, and the
    kernel reads them once at the top of each task (`load`)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.n_ptrs = 0

    def slot(self, *names: str) -> None:
        self.names.extend(names)

    def values(self, given: dict[str, int | float]) -> list[int]:
        return [param_bits(given[n]) for n in self.names]


def param_bits(v: int | float) -> int:
    """A parameter slot's i64: an int as it is, a float as its f64 bits."""
    return int(np.float64(v).view(np.int64)) if isinstance(v, float) else int(v)


class Values:
    """The loaded parameters inside a task: p["M"] is an i64, p.f("alpha", F32) a float, p.ptr(i) a table."""

    def __init__(self, b: ir.IRBuilder, layout: Params, params: ir.Value, ptrs: ir.Value):
        self.b = b
        self._v = {n: b.load(gep(b, params, i, I64), typ=I64, name=n) for i, n in enumerate(layout.names)}
        self._p = [b.load(gep(b, ptrs, i, PTR), typ=PTR) for i in range(layout.n_ptrs)]

    def __getitem__(self, name: str) -> ir.Value:
        return self._v[name]

    def f(self, name: str, t: ir.Type) -> ir.Value:
        v = self.b.bitcast(self._v[name], F64)
        return v if t == F64 else self.b.fptrunc(v, t)

    def ptr(self, i: int) -> ir.Value:
        return self._p[i]


class BSource:
    """Where B(k..., j) comes from. `vector` returns lanes j0 .. j0 + L - 1 in the compute type, 0 (and not read)
    for lanes not `valid` (None: all; else a lane mask). A kernel is specialised on `key` only; the rest of a
    source is runtime parameters (`declare` names them, `values` gives a node's) and `tables` (arrays the
    kernel reads through pointers). `dot` is set when B(k, j) = base[j * ("s.sj") + k] (the dot loops)."""

    dot = False

    @property
    def key(self) -> tuple:
        raise NotImplementedError

    def declare(self, layout: Params) -> None:
        raise NotImplementedError

    def values(self) -> dict[str, int]:
        raise NotImplementedError

    def tables(self) -> list[np.ndarray]:
        return []

    def vector(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: ir.Value | None) -> ir.Value:
        raise NotImplementedError

    def prefetch(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, width: int) -> None:
        """Hint that B(ks, j0 .. j0 + width) will be read soon (by default: nothing)."""


class StridedB(BSource):
    """B(k, j) = base[k * sk + j * sj]: a plain or transposed matrix."""

    def __init__(self, sk: int, sj: int):
        self.sk, self.sj = sk, sj
        self.dot = sk == 1 and sj != 1

    @property
    def key(self) -> tuple:
        return ("strided", self.sj == 1, self.dot)

    def declare(self, layout: Params) -> None:
        layout.slot("s.sk", "s.sj")

    def values(self) -> dict[str, int]:
        return {"s.sk": self.sk, "s.sj": self.sj}

    def prefetch(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, width: int) -> None:
        if self.sj != 1:
            return
        b = g.b
        at = b.add(b.mul(ks[0], p["s.sk"]), j0)
        size = self.dtype_bytes(g)
        for off in range(0, width * size, 64):  # every cache line of the run
            # a hint only: the address may lie past B's end, which a prefetch never faults on
            ptr = b.gep(base, [b.add(at, i64(off // size))], source_etype=g.st)
            g.call("llvm.prefetch.p0", VOID, ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1))

    @staticmethod
    def dtype_bytes(g: Gen) -> int:
        return g.dtype.itemsize

    def vector(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: ir.Value | None) -> ir.Value:
        b = g.b
        row = b.mul(ks[0], p["s.sk"])
        if self.sj == 1:
            return g.load(base, b.add(row, j0), valid)
        lanes = b.mul(g.iconst(range(g.L), I64), g.splat_int(p["s.sj"]))
        return g.gather(gep(b, base, b.add(row, b.mul(j0, p["s.sj"])), g.st), lanes, valid)

"""The GEMM kernel emitter behind matmul, gemm, conv and conv_transpose: for every batch index,

    C[i, j] = alpha * sum_k A(i, k) * B(k, j) + beta * bias(i, j)        (static shapes)

    fn = emit_gemm(module, target, spec, StridedB(sk, sj), "name")   # void fn(ptr a, ptr b, ptr bias, ptr c)

K may be a nest of loops (a convolution's channels and kernel offsets) and B any `BSource`, so a
convolution is this kernel with an implicit-im2col source. Three loop shapes, chosen per spec:
  packed  f32, M > 4: B is packed per (NR-column panel, K block) into a stack buffer, then an MR x NR
          register tile (6 x 32 on AVX-512) of FMAs runs over it for every row block of A (GotoBLAS).
  dot     small M with B contiguous along k (a transposed weight): vector dot products, tree-reduced.
  direct  everything else (small M, f16/bf16/f64/ints): an MR x (nv * lanes) register tile reading B
          straight from the source; f16 and bf16 are computed in f32, rounded once at the store.
Work is split into tasks over (batch, column blocks, row blocks) for the thread pool when threads > 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import F32, F64, I1, I16, I32, I64, PTR, VOID, declare, elem_type, for_range, gep, i64, suffix
from .threads import TASK_FN, declare_parallel_for, default_threads
from .vec import entry_alloca

KC_TARGET = 256  # rows of a packed B block: a 32-wide panel is then 32 KB, the size of L1
MAX_PACK_ROWS = 1024  # a K block is whole outer k steps; larger inner nests use the direct loops
TASKS_PER_THREAD = 4
A_IN_L2 = 1 << 20  # bytes of L2 per core (Zen 4), for the packed loops' order
MAX_TILE_COLUMNS = 128  # the widest register tile (8 vectors of 16): sources' tables are padded by this
MIN_PARALLEL_FLOPS = 1 << 21  # below this a parallel_for costs more than it saves


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


@dataclass(frozen=True)
class GemmSpec:
    M: int
    N: int
    k_shape: tuple[int, ...]  # K as nested loops, outermost first (a conv: C/group, k1, ..., kd)
    dtype: DType
    a_m: int  # A(i, k...) = a[i * a_m + sum(k[d] * a_k[d])]
    a_k: tuple[int, ...]
    ldc: int  # C(i, j) = c[i * ldc + j]
    batch: tuple[int, ...] = ()
    a_batch: tuple[int, ...] = ()  # element strides of each operand per batch dim (0 where it broadcasts)
    b_batch: tuple[int, ...] = ()
    c_batch: tuple[int, ...] = ()
    bias_batch: tuple[int, ...] = ()
    bias: tuple[int, int] | None = None  # bias(i, j) = bias[i * s0 + j * s1] with s1 in (0, 1)
    alpha: float = 1.0
    beta: float = 1.0
    threads: int = 1  # 1: no pool; n > 1: tasks for n threads; 0: the pool's default size

    @property
    def K(self) -> int:
        return math.prod(self.k_shape)

    @property
    def nb(self) -> int:
        return math.prod(self.batch)

    @property
    def a_linear(self) -> bool:
        """A's k offsets are k_linear * a_k[-1] (then a packed K block is a plain range of A's row)."""
        inner = self.a_k[-1]
        return all(s == inner * math.prod(self.k_shape[d + 1:]) for d, s in enumerate(self.a_k))


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
        out = []
        for n in self.names:
            v = given[n]
            out.append(int(np.float64(v).view(np.int64)) if isinstance(v, float) else int(v))
        return out


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

    def vector(self, g: Gen, p: Values, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: ir.Value | None) -> ir.Value:
        b = g.b
        row = b.mul(ks[0], p["s.sk"])
        if self.sj == 1:
            return g.load(base, b.add(row, j0), valid)
        lanes = b.mul(g.iconst(range(g.L), I64), g.splat_int(p["s.sj"]))
        return g.gather(gep(b, base, b.add(row, b.mul(j0, p["s.sj"])), g.st), lanes, valid)


# ---- plans --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    kind: str  # "packed" | "direct" | "dot" | "stream"
    mr: int  # rows of A per register tile
    nv: int  # vectors per tile row (packed, direct, stream); dot: columns per tile
    tj: int = 1  # tasks per batch over column blocks (a runtime parameter)
    tm: int = 1  # ... and over row blocks

    def width(self, lanes: int) -> int:
        """Columns of C per unit of work."""
        return self.nv if self.kind == "dot" else self.nv * lanes


def _registers(isa: str) -> int:
    """How many 64-byte vectors the register file holds."""
    return {"avx512vnni": 32, "avx2": 8}.get(isa, 4)


def choose_plan(spec: GemmSpec, source: BSource, isa: str) -> Plan:
    regs = _registers(isa)
    small = spec.M <= 4
    if spec.dtype is DType.F32 and spec.K > 0 and not small and spec.a_linear and \
            math.prod(spec.k_shape[1:]) <= MAX_PACK_ROWS:
        # 16 accumulators + 2 B vectors + a broadcast of A on AVX-512 (measured best of 4..14 x 32 on Zen 4)
        mr, nv = (8, 2) if regs >= 32 else (6, 1) if regs >= 8 else (3, 1)
        plan = Plan("packed", mr, nv)
    elif spec.dtype is DType.F32 and spec.M == 1 and isinstance(source, StridedB) and source.sj == 1:
        plan = Plan("stream", 1, 16)
    elif spec.dtype is DType.F32 and small and source.dot and len(spec.k_shape) == 1 and spec.a_k[0] == 1:
        plan = Plan("dot", spec.M, 8 if spec.M == 1 and regs >= 32 else 4)
    else:
        mr = min(spec.M, 4) if spec.M else 1
        nv = max(1, min(8, (regs * 3 // 4) // mr))
        plan = Plan("direct", mr, nv)
    return _split(spec, plan)


def _split(spec: GemmSpec, plan: Plan) -> Plan:
    threads = spec.threads if spec.threads != 0 else default_threads()
    flops = 2 * spec.nb * spec.M * spec.N * max(spec.K, 1)
    if threads <= 1 or flops < MIN_PARALLEL_FLOPS:
        return plan
    want = threads * TASKS_PER_THREAD
    if spec.nb >= want:
        return plan
    per_batch = -(-want // spec.nb)
    j_units, m_units = max(1, -(-spec.N // plan.width(lanes(spec.dtype)))), max(1, -(-spec.M // plan.mr))
    tj = min(j_units, per_batch)
    tm = min(m_units, -(-per_batch // tj)) if tj < per_batch else 1
    return Plan(plan.kind, plan.mr, plan.nv, tj, tm)


# ---- the kernel: specialised on a signature, sizes at run time ---------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """What a kernel is compiled for; every size and stride is a runtime parameter, so nodes share kernels."""

    dtype: DType
    kind: str
    mr: int
    nv: int
    k_rank: int
    batch_rank: int
    bias: int | None  # None, or the bias' column stride (0 or 1)
    scaled: bool  # alpha or beta != 1: results are alpha * acc + beta * bias (exact when either is 1)
    source: tuple
    parallel: bool
    unit_k: bool = False  # packed: A's k stride is 1


def signature(spec: GemmSpec, plan: Plan, source: BSource) -> Signature:
    return Signature(spec.dtype, plan.kind, plan.mr, plan.nv, len(spec.k_shape), len(spec.batch),
                     None if spec.bias is None else spec.bias[1], spec.alpha != 1.0 or spec.beta != 1.0, source.key,
                     plan.tj * plan.tm > 1, plan.kind == "packed" and spec.a_k[-1] == 1)


def layout_of(sig: Signature, source: BSource) -> Params:
    layout = Params()
    layout.slot("M", "N", "a_m", "ldc", "tj", "tm", "nb", "bias_s0", "alpha", "beta", "kb_outer")
    layout.slot(*(f"k{d}" for d in range(sig.k_rank)), *(f"ak{d}" for d in range(sig.k_rank)))
    for d in range(sig.batch_rank):
        layout.slot(f"bd{d}", f"ba{d}", f"bb{d}", f"bbias{d}", f"bc{d}")
    source.declare(layout)
    layout.n_ptrs = len(source.tables())
    return layout


def param_values(spec: GemmSpec, plan: Plan, source: BSource) -> dict[str, int | float]:
    v: dict[str, int | float] = {"M": spec.M, "N": spec.N, "a_m": spec.a_m, "ldc": spec.ldc, "tj": plan.tj, "tm": plan.tm,
                                 "nb": spec.nb, "bias_s0": spec.bias[0] if spec.bias else 0,
                                 "alpha": float(spec.alpha), "beta": float(spec.beta),
                                 "kb_outer": int(_k_blocks_outermost(spec, plan))}
    for d, (k, s) in enumerate(zip(spec.k_shape, spec.a_k)):
        v[f"k{d}"], v[f"ak{d}"] = k, s
    for d, size in enumerate(spec.batch):
        v[f"bd{d}"] = size
        for name, strides in (("ba", spec.a_batch), ("bb", spec.b_batch), ("bbias", spec.bias_batch), ("bc", spec.c_batch)):
            v[f"{name}{d}"] = strides[d] if strides else 0
    v.update(source.values())
    return v


def _k_blocks_outermost(spec: GemmSpec, plan: Plan) -> bool:
    """The packed loops' order: K blocks outermost when the task's A is too big for L2 and its C is small
    (few panels: C tiles re-read per K block stay cached); else panels outermost (measured on Zen 4)."""
    rows = -(-spec.M // plan.tm)
    cols = -(-spec.N // plan.tj)
    return rows * spec.K * 4 > A_IN_L2 and rows * cols * 4 <= A_IN_L2 // 2


def emit_kernel(module: ir.Module, isa: str, sig: Signature, source: BSource, name: str) -> ir.Function:
    """`void name(ptr a, ptr b, ptr bias, ptr c, ptr params, ptr tables)`: the GEMM for every spec of `sig`."""
    layout = layout_of(sig, source)
    task = _emit_task(module, sig, layout, source, f"{name}.task")
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * 6), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx = entry_alloca(b, ir.ArrayType(PTR, 6), "ctx")
    for i, a in enumerate(fn.args):
        b.store(a, b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=ir.ArrayType(PTR, 6)))
    params = fn.args[4]
    nb = b.load(gep(b, params, layout.names.index("nb"), I64), typ=I64)
    per = b.mul(b.load(gep(b, params, layout.names.index("tj"), I64), typ=I64),
                b.load(gep(b, params, layout.names.index("tm"), I64), typ=I64))
    ntasks = b.mul(nb, per)
    if sig.parallel:
        b.call(declare_parallel_for(module), [task, ctx, ntasks])
    else:
        with for_range(b, ntasks, name="t") as t:
            b.call(task, [ctx, t])
    b.ret_void()
    return fn


@dataclass
class _Task:
    """What the tile emitters need inside one task: runtime parameters and pointers offset to the batch."""

    g: Gen
    sig: Signature
    p: Values
    source: BSource
    a: ir.Value
    b: ir.Value
    bias: ir.Value
    c: ir.Value

    @property
    def ks(self) -> list[ir.Value]:
        return [self.p[f"k{d}"] for d in range(self.sig.k_rank)]


def _emit_task(module: ir.Module, sig: Signature, layout: Params, source: BSource, name: str) -> ir.Function:
    fn = ir.Function(module, TASK_FN, name)
    fn.linkage = "internal"
    ctx, t = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    g = Gen(b, sig.dtype)
    arr = ir.ArrayType(PTR, 6)
    ptrs = [b.load(b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=arr), typ=PTR) for i in range(6)]
    p = Values(b, layout, ptrs[4], ptrs[5])
    tj, tm = p["tj"], p["tm"]
    per = b.mul(tj, tm)
    bi, part = b.udiv(t, per), b.urem(t, per)
    jp, mp = b.udiv(part, tm), b.urem(part, tm)
    offs = _batch_offsets(b, sig, p, bi)
    a, bb, bias, c = (gep(b, q, o, g.st) if o is not None else q for q, o in zip(ptrs[:4], offs))
    k = _Task(g, sig, p, source, a, bb, bias, c)
    M, N = p["M"], p["N"]
    width = i64(Plan(sig.kind, sig.mr, sig.nv).width(g.L))
    units = b.udiv(b.add(N, b.sub(width, i64(1))), width)  # column blocks, the last maybe ragged
    nm = b.udiv(M, i64(sig.mr))
    j_lo, j_hi = _part(b, jp, units, tj)
    m_lo, m_hi = _part(b, mp, nm, tm)
    last_m = b.icmp_unsigned("==", mp, b.sub(tm, i64(1)))
    i_lo = b.mul(m_lo, i64(sig.mr))
    i_hi = b.select(last_m, M, b.mul(m_hi, i64(sig.mr)))

    def tiles(emit, tail_rows) -> None:
        """Row tiles [m_lo, m_hi) of sig.mr rows, then (last row part only) the M % mr leftover rows."""
        with for_range(b, m_hi, start=m_lo, name="mt") as mt:
            emit(b.mul(mt, i64(sig.mr)), sig.mr)
        with b.if_then(b.and_(last_m, b.icmp_unsigned("<", b.mul(nm, i64(sig.mr)), M))):
            tail_rows(b.mul(nm, i64(sig.mr)))

    def one_by_one(emit):
        def rows(start: ir.Value) -> None:
            with for_range(b, M, start=start, name="mr") as i:
                emit(i, 1)
        return rows

    if sig.kind == "packed":
        _packed(k, j_lo, j_hi, tiles, i_lo, i_hi)
    else:
        with for_range(b, j_hi, start=j_lo, name="jt") as jt:
            j0 = b.mul(jt, width)
            count = b.sub(N, j0)
            count = b.select(b.icmp_signed("<", count, width), count, width)
            if sig.kind == "stream":
                _stream(k, j0, count)
            else:
                tile = _dot_tile if sig.kind == "dot" else _direct_tile

                def emit(i0: ir.Value, mr: int) -> None:
                    tile(k, i0, mr, j0, count)

                tiles(emit, one_by_one(emit))
    b.ret_void()
    return fn


def _batch_offsets(b: ir.IRBuilder, sig: Signature, p: Values, bi: ir.Value) -> list[ir.Value | None]:
    """Element offsets of a, b, bias, c for batch index bi (row-major over the batch dims)."""
    if not sig.batch_rank:
        return [None] * 4
    offs: list[ir.Value] = [i64(0)] * 4
    rest = bi
    for d in reversed(range(sig.batch_rank)):
        size = p[f"bd{d}"]
        idx = b.urem(rest, size)
        rest = b.udiv(rest, size)
        for n, name in enumerate(("ba", "bb", "bbias", "bc")):
            offs[n] = b.add(offs[n], b.mul(idx, p[f"{name}{d}"]))
    return list(offs)


def _part(b: ir.IRBuilder, index: ir.Value, total: ir.Value, parts: ir.Value) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of part `index` when `total` units are cut into `parts` near-equal parts."""
    per = b.udiv(b.add(total, b.sub(parts, i64(1))), parts)
    lo = b.mul(index, per)
    hi = b.add(lo, per)
    lo = b.select(b.icmp_unsigned("<", lo, total), lo, total)
    hi = b.select(b.icmp_unsigned("<", hi, total), hi, total)
    return lo, hi


def _k_nest(b: ir.IRBuilder, extents: Sequence[ir.Value], body, start: ir.Value | None = None,
            stop: ir.Value | None = None, depth: int = 0, ks: tuple = ()) -> None:
    """Nested loops over runtime extents (the outermost optionally over [start, stop)); body(ks)."""
    if depth == len(extents):
        body(list(ks))
        return
    lo = start if depth == 0 and start is not None else i64(0)
    hi = stop if depth == 0 and stop is not None else extents[depth]
    with for_range(b, hi, start=lo, name=f"k{depth}") as kd:
        _k_nest(b, extents, body, start, stop, depth + 1, ks + (kd,))


def _a_offset(k: _Task, i: ir.Value, ks: Sequence[ir.Value]) -> ir.Value:
    b = k.g.b
    off = b.mul(i, k.p["a_m"])
    for d, kd in enumerate(ks):
        off = b.add(off, b.mul(kd, k.p[f"ak{d}"]))
    return off


def _masks(k: _Task, count: ir.Value | None, nv: int) -> list[ir.Value | None]:
    return [None if count is None else k.g.lanes_below(count, v * k.g.L) for v in range(nv)]


def _epilogue(k: _Task, acc: ir.Value, i: ir.Value, j0: ir.Value, valid: ir.Value | None) -> ir.Value:
    """alpha * acc + beta * bias(i, j0 + lane), in the compute type (ints with a float alpha/beta via f64)."""
    g, sig = k.g, k.sig
    b = g.b
    bias = None
    if sig.bias is not None:
        row = b.mul(i, k.p["bias_s0"])
        bias = g.load(k.bias, b.add(row, j0), valid) if sig.bias else g.splat(g.scalar(k.bias, row))
    if not sig.scaled:
        if bias is None:
            return acc
        return b.fadd(acc, bias) if g.is_float else b.add(acc, bias)
    if not g.is_float:  # numpy: an int product times a Python float is float64, cast back at the end
        wide = ir.VectorType(F64, g.L)
        signed = sig.dtype.is_signed

        def to_f(v: ir.Value) -> ir.Value:
            return b.sitofp(v, wide) if signed else b.uitofp(v, wide)

        y = b.fmul(to_f(acc), g.splat_f(k.p.f("alpha", F64), wide))
        if bias is not None:
            y = b.fadd(y, b.fmul(to_f(bias), g.splat_f(k.p.f("beta", F64), wide)))
        return b.fptosi(y, g.vt) if signed else b.fptoui(y, g.vt)
    y = b.fmul(acc, g.splat(k.p.f("alpha", g.ct)))
    if bias is not None:
        y = b.fadd(y, b.fmul(bias, g.splat(k.p.f("beta", g.ct))))
    return y


# ---- direct: a register tile over the whole K, B read from the source -------------------------------------


def _direct_tile(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, count: ir.Value) -> None:
    g, sig = k.g, k.sig
    b = g.b
    valid = _masks(k, count, sig.nv)
    accs = [[entry_alloca(b, g.vt) for _ in range(sig.nv)] for _ in range(mr)]
    for row in accs:
        for s in row:
            b.store(g.zero(), s)

    def step(ks: list[ir.Value]) -> None:
        bv = [k.source.vector(g, k.p, k.b, ks, b.add(j0, i64(v * g.L)), valid[v]) for v in range(sig.nv)]
        for r in range(mr):
            a = g.splat(g.scalar(k.a, _a_offset(k, b.add(i0, i64(r)), ks)))
            for v, s in enumerate(accs[r]):
                b.store(g.madd(b.load(s, typ=g.vt), a, bv[v]), s)

    _k_nest(b, k.ks, step)
    for r in range(mr):
        i = b.add(i0, i64(r))
        for v in range(sig.nv):
            jv = b.add(j0, i64(v * g.L))
            y = _epilogue(k, b.load(accs[r][v], typ=g.vt), i, jv, valid[v])
            g.store(y, k.c, b.add(b.mul(i, k.p["ldc"]), jv), valid[v])


# ---- stream: one row of A against a row-major B ---------------------------------------------------------------


def _stream(k: _Task, j0: ir.Value, count: ir.Value) -> None:
    """C[0, j0 : j0 + count] = A[0, :] @ B[:, j0 : j0 + count], accumulated in place over steps of 4 rows of B,
    so B streams through memory row by row (a GEMV is bound by reading B)."""
    g, sig = k.g, k.sig
    b = g.b
    L = g.L
    K, ak, sk = k.p["k0"], k.p["ak0"], k.p["s.sk"]
    full = b.udiv(count, i64(L))
    tail = b.urem(count, i64(L))

    def vectors(body) -> None:
        with for_range(b, full, name="v") as v:
            body(b.add(j0, b.mul(v, i64(L))), None)
        with b.if_then(b.icmp_unsigned("!=", tail, i64(0))):
            body(b.add(j0, b.mul(full, i64(L))), g.lanes_below(tail))

    vectors(lambda j, valid: g.store(g.zero(), k.c, j, valid))

    def step(k0: ir.Value, rows: int) -> None:
        xs = [g.splat(g.scalar(k.a, b.mul(b.add(k0, i64(r)), ak))) for r in range(rows)]
        starts = [b.mul(b.add(k0, i64(r)), sk) for r in range(rows)]

        def update(j: ir.Value, valid: ir.Value | None) -> None:
            acc = g.load(k.c, j, valid)
            for r in range(rows):
                acc = g.madd(acc, xs[r], g.load(k.b, b.add(starts[r], j), valid))
            g.store(acc, k.c, j, valid)

        vectors(update)

    with for_range(b, b.udiv(K, i64(4)), name="ks") as ks:
        step(b.mul(ks, i64(4)), 4)
    with for_range(b, K, start=b.mul(b.udiv(K, i64(4)), i64(4)), name="kr") as kr:
        step(kr, 1)
    if sig.bias is not None or sig.scaled:
        vectors(lambda j, valid: g.store(_epilogue(k, g.load(k.c, j, valid), i64(0), j, valid), k.c, j, valid))


# ---- dot: small M against B contiguous along k ----------------------------------------------------------------


def _dot_tile(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, count: ir.Value) -> None:
    """C[i0:i0+mr, j0:j0+count] as vector dot products along k, tree-reduced at the end; a ragged last block
    (count < nv) runs one column at a time."""
    b = k.g.b
    with b.if_else(b.icmp_unsigned("==", count, i64(k.sig.nv))) as (whole, ragged):
        with whole:
            _dot_columns(k, i0, mr, j0, k.sig.nv)
        with ragged:
            with for_range(b, b.add(j0, count), start=j0, name="jc") as j:
                _dot_columns(k, i0, mr, j, 1)


def _dot_columns(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, cols: int) -> None:
    g = k.g
    b = g.b
    K, ds, a_m = k.p["k0"], k.p["s.sj"], k.p["a_m"]
    accs = [[entry_alloca(b, g.vt) for _ in range(cols)] for _ in range(mr)]
    for row in accs:
        for s in row:
            b.store(g.zero(), s)

    def step(kk: ir.Value, valid: ir.Value | None) -> None:
        av = [g.load(k.a, b.add(b.mul(b.add(i0, i64(r)), a_m), kk), valid) for r in range(mr)]
        for t in range(cols):
            bv = g.load(k.b, b.add(b.mul(b.add(j0, i64(t)), ds), kk), valid)
            for r in range(mr):
                b.store(g.madd(b.load(accs[r][t], typ=g.vt), av[r], bv), accs[r][t])

    full = b.udiv(K, i64(g.L))
    with for_range(b, full, name="kv") as kv:
        step(b.mul(kv, i64(g.L)), None)
    rest = b.urem(K, i64(g.L))
    with b.if_then(b.icmp_unsigned("!=", rest, i64(0))):
        step(b.mul(full, i64(g.L)), g.lanes_below(rest))
    valid = g.lanes_below(i64(cols))
    for r in range(mr):
        i = b.add(i0, i64(r))
        out = g.zero()
        for t in range(cols):
            out = b.insert_element(out, _reduce(g, b.load(accs[r][t], typ=g.vt)), ir.Constant(I32, t))
        y = _epilogue(k, out, i, j0, valid)
        g.store(y, k.c, b.add(b.mul(i, k.p["ldc"]), j0), valid)


def _reduce(g: Gen, v: ir.Value) -> ir.Value:
    """Sum of the lanes, by halving (a fixed tree: the same result on every run)."""
    b = g.b
    n = g.L
    while n > 1:
        half = n // 2
        lo = b.shuffle_vector(v, v, g.iconst(range(half)))
        hi = b.shuffle_vector(v, v, g.iconst(range(half, n)))
        v = b.fadd(lo, hi) if g.is_float else b.add(lo, hi)
        n = half
    return b.extract_element(v, ir.Constant(I32, 0))


# ---- packed: B panels packed per K block, an MR x NR FMA tile over them ------------------------------------------


def _packed(k: _Task, j_lo: ir.Value, j_hi: ir.Value, tiles, i_lo: ir.Value, i_hi: ir.Value) -> None:
    """Column panels [j_lo, j_hi) of C: for each (K block, panel) pack B into the panel buffer, then run every
    row tile over it. K blocks outermost when A is too big for L2 (its block then stays there for every
    panel; C tiles are re-read per block), else panels outermost (A stays cached anyway; C is written once)."""
    g, sig = k.g, k.sig
    b = g.b
    width = sig.nv * g.L
    buf = entry_alloca(b, ir.ArrayType(F32, MAX_PACK_ROWS * width), "panel")
    buf.align = 64
    extents = k.ks
    outer = extents[0]
    inner: ir.Value = i64(1)
    for e in extents[1:]:
        inner = b.mul(inner, e)
    # K blocks of whole outer steps, about KC_TARGET rows each (inner <= MAX_PACK_ROWS by the plan)
    per_block = b.udiv(i64(KC_TARGET), inner)
    per_block = b.select(b.icmp_unsigned("<", per_block, i64(1)), i64(1), per_block)
    nkb = b.udiv(b.add(outer, b.sub(per_block, i64(1))), per_block)
    a_k = k.p[f"ak{sig.k_rank - 1}"]

    def columns(jt: ir.Value) -> tuple[ir.Value, ir.Value, list[ir.Value]]:
        j0 = b.mul(jt, i64(width))
        count = b.sub(k.p["N"], j0)
        count = b.select(b.icmp_signed("<", count, i64(width)), count, i64(width))
        return j0, count, [g.lanes_below(count, v * g.L) for v in range(sig.nv)]

    def block(kb: ir.Value, jt: ir.Value) -> None:
        j0, count, valid = columns(jt)
        c0 = b.mul(kb, per_block)
        c1 = b.add(c0, per_block)
        c1 = b.select(b.icmp_unsigned("<", c1, outer), c1, outer)
        kc = b.mul(b.sub(c1, c0), inner)

        def pack(ks: list[ir.Value]) -> None:
            row = b.sub(ks[0], c0)
            for d, kd in enumerate(ks[1:]):
                row = b.add(b.mul(row, extents[d + 1]), kd)
            base = b.mul(row, i64(width))
            for v in range(sig.nv):
                vec = k.source.vector(g, k.p, k.b, ks, b.add(j0, i64(v * g.L)), valid[v])
                b.store(vec, gep(b, buf, b.add(base, i64(v * g.L)), F32), align=64)

        _k_nest(b, extents, pack, start=c0, stop=c1)
        first = b.icmp_unsigned("==", kb, i64(0))
        k0 = b.mul(b.mul(c0, inner), a_k)

        def micro(i0: ir.Value, mr: int) -> None:
            fn = _micro_fn(b.module, mr, sig.nv, sig.unit_k)
            a = gep(b, k.a, b.add(b.mul(i0, k.p["a_m"]), k0), F32)
            c = gep(b, k.c, b.add(b.mul(i0, k.p["ldc"]), j0), F32)
            b.call(fn, [a, k.p["a_m"], a_k, buf, kc, c, k.p["ldc"], count, first])

        def tail_rows(i0: ir.Value) -> None:
            # the M % mr leftover rows as tiles of 4, 2 and 1 rows: few micro-kernels per module
            row = i0
            size = 1 << max(0, (sig.mr - 1).bit_length() - 1)  # the largest power of two below mr
            while size >= 1 and sig.mr > 1:
                left = b.sub(k.p["M"], row)
                take = b.icmp_unsigned(">=", left, i64(size))
                with b.if_then(take):
                    micro(row, size)
                row = b.select(take, b.add(row, i64(size)), row)
                size //= 2

        tiles(micro, tail_rows)

    with b.if_else(b.icmp_unsigned("!=", k.p["kb_outer"], i64(0))) as (blocks_first, panels_first):
        with blocks_first:
            with for_range(b, nkb, name="kb") as kb:
                with for_range(b, j_hi, start=j_lo, name="jt") as jt:
                    block(kb, jt)
        with panels_first:
            with for_range(b, j_hi, start=j_lo, name="jt") as jt:
                with for_range(b, nkb, name="kb") as kb:
                    block(kb, jt)
    if sig.bias is not None or sig.scaled:
        with for_range(b, j_hi, start=j_lo, name="jt") as jt:
            j0, _, valid = columns(jt)
            with for_range(b, i_hi, start=i_lo, name="ep") as i:
                for v in range(sig.nv):
                    at = b.add(b.mul(i, k.p["ldc"]), b.add(j0, i64(v * g.L)))
                    y = _epilogue(k, g.load(k.c, at, valid[v]), i, b.add(j0, i64(v * g.L)), valid[v])
                    g.store(y, k.c, at, valid[v])


MICRO_UNROLL = 4  # k steps per loop iteration in the micro-kernel (LLVM's unroller is off)


def _micro_fn(module: ir.Module, mr: int, nv: int, unit_k: bool) -> ir.Function:
    """`void micro(a, a_m, a_k, panel, kc, c, ldc, count, first)`: C[0:mr, 0:count] (+)= A[0:mr, 0:kc] @ panel.

    The register tile: mr x nv accumulators of 16 floats, one FMA per (row, vector) per k, A broadcast
    from memory. One function per tile shape, shared by every kernel of the module. With `unit_k`
    (A's rows contiguous, the usual case) the a_k argument is ignored and each row of A is addressed
    as its own base plus one shared index, instead of a chain of adds from the first row."""
    name = f"tritc.sgemm.micro.{mr}x{nv * 16}{'.u' if unit_k else ''}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing  # type: ignore[return-value]
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64, PTR, I64, PTR, I64, I64, I1]), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")  # one copy per module: inlining it into every kernel multiplies compile time
    a, a_m, a_k, panel, kc, c, ldc, count, first = fn.args
    for arg in (a, panel, c):
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    g = Gen(b, DType.F32)
    width = nv * g.L
    valid = [g.lanes_below(count, v * g.L) for v in range(nv)]
    rows = [gep(b, a, b.mul(i64(r), a_m), F32) for r in range(mr)]
    c_at = [[b.add(b.mul(i64(r), ldc), i64(v * g.L)) for v in range(nv)] for r in range(mr)]
    accs = [[entry_alloca(b, g.vt) for _ in range(nv)] for _ in range(mr)]
    for r in range(mr):
        for v in range(nv):
            b.store(b.select(first, g.zero(), g.load(c, c_at[r][v], valid[v])), accs[r][v])

    def step(kk: ir.Value) -> None:
        bv = [b.load(gep(b, panel, b.add(b.mul(kk, i64(width)), i64(v * g.L)), F32), typ=g.vt, align=64) for v in range(nv)]
        ka = kk if unit_k else b.mul(kk, a_k)
        for r in range(mr):
            x = g.splat(b.load(gep(b, rows[r], ka, F32), typ=F32))
            for v in range(nv):
                b.store(g.madd(b.load(accs[r][v], typ=g.vt), x, bv[v]), accs[r][v])

    steps = b.udiv(kc, i64(MICRO_UNROLL))
    with for_range(b, steps, name="kk") as kk:
        for u in range(MICRO_UNROLL):
            step(b.add(b.mul(kk, i64(MICRO_UNROLL)), i64(u)))
    with for_range(b, kc, start=b.mul(steps, i64(MICRO_UNROLL)), name="kr") as kk:
        step(kk)
    for r in range(mr):
        for v in range(nv):
            g.store(b.load(accs[r][v], typ=g.vt), c, c_at[r][v], valid[v])
    b.ret_void()
    return fn


def call_gemm(b: ir.IRBuilder, cache: dict, isa: str, spec: GemmSpec, source: BSource, table, a: ir.Value,
              bm: ir.Value, bias: ir.Value | None, c: ir.Value) -> None:
    """Emit a call of the kernel for spec (emitted once per module and signature) with spec's sizes.

    `table(array, name)` embeds a read-only array (the caller's global_array); cache is per module."""
    if spec.M == 0 or spec.N == 0 or spec.nb == 0:
        return
    module = b.module
    plan = choose_plan(spec, source, isa)
    sig = signature(spec, plan, source)
    fn = cache.get(("gemm", sig))
    if fn is None:
        fn = emit_kernel(module, isa, sig, source, f"tritc.gemm.{sum(1 for key in cache if key[0] == 'gemm')}")
        cache[("gemm", sig)] = fn
    layout = layout_of(sig, source)
    params = table(np.asarray(layout.values(param_values(spec, plan, source)), dtype=np.int64), "gemm_params")
    globs = []
    for arr in source.tables():
        key = ("gemm_table", arr.dtype.str, arr.shape, arr.tobytes())
        if key not in cache:
            cache[key] = table(arr, "gemm_table")
        globs.append(cache[key])
    if globs:
        ptrs = ir.GlobalVariable(module, ir.ArrayType(PTR, len(globs)), f"{fn.name}.tables.{len(cache)}")
        ptrs.global_constant = True
        ptrs.linkage = "internal"
        ptrs.initializer = ir.Constant(ir.ArrayType(PTR, len(globs)), globs)
        cache[("gemm_tables", ptrs.name)] = ptrs
    else:
        ptrs = ir.Constant(PTR, None)
    null = ir.Constant(PTR, None)
    b.call(fn, [a, bm, bias if bias is not None else null, c, params, ptrs])

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

from ....ir.types import DType
from ..builder import F32, F64, I1, I16, I32, I64, PTR, VOID, declare, elem_type, for_range, gep, i64, suffix
from .threads import TASK_FN, declare_parallel_for, default_threads
from .vec import entry_alloca

KC_TARGET = 256  # rows of a packed B block: a 32-wide panel is then 32 KB, the size of L1
MAX_PACK_ROWS = 1024  # a K block is whole outer k steps; larger inner nests use the direct loops
TASKS_PER_THREAD = 4
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

    def madd(self, acc: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
        if self.is_float:
            return self.call(f"llvm.fma.{suffix(self.vt)}", self.vt, x, y, acc)
        return self.b.add(acc, self.b.mul(x, y))

    def iconst(self, values: Sequence[int], t: ir.IntType = I32) -> ir.Constant:
        return ir.Constant(ir.VectorType(t, len(values)), [ir.Constant(t, int(v)) for v in values])


class BSource:
    """Where B(k..., j) comes from. `vector` returns lanes j0 .. j0 + L - 1 in the compute type, 0 (and not
    read) for lanes that are not `valid` (a static count or a runtime mask). `dot_stride` is set when
    B(k, j) = base[j * dot_stride + k] (the dot loops). `key` identifies the source for kernel reuse."""

    dot_stride: int | None = None

    @property
    def key(self) -> tuple:
        raise NotImplementedError

    def vector(self, g: Gen, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: int | ir.Value | None) -> ir.Value:
        raise NotImplementedError


class StridedB(BSource):
    """B(k, j) = base[k * sk + j * sj]: a plain or transposed matrix."""

    def __init__(self, sk: int, sj: int):
        self.sk, self.sj = sk, sj
        self.dot_stride = sj if sk == 1 and sj != 1 else None

    @property
    def key(self) -> tuple:
        return ("strided", self.sk, self.sj)

    def vector(self, g: Gen, base: ir.Value, ks: Sequence[ir.Value], j0: ir.Value, valid: int | ir.Value | None) -> ir.Value:
        b = g.b
        row = b.mul(ks[0], i64(self.sk)) if self.sk != 1 else ks[0]
        if self.sj == 1:
            return g.load(base, b.add(row, j0), valid)
        start = b.add(row, b.mul(j0, i64(self.sj)))
        lanes = g.iconst([lane * self.sj for lane in range(g.L)], I64)
        return g.gather(gep(b, base, start, g.st), lanes, g.valid_mask(valid))


# ---- plans --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    kind: str  # "packed" | "direct" | "dot"
    mr: int  # rows of A per register tile
    nv: int  # vectors per tile row (packed, direct); dot: columns per tile
    tj: int = 1  # tasks per batch over column blocks
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
    elif spec.dtype is DType.F32 and spec.M == 1 and isinstance(source, StridedB) and source.sj == 1 and spec.K > 0:
        plan = Plan("stream", 1, 16)
    elif spec.dtype is DType.F32 and small and source.dot_stride is not None and len(spec.k_shape) == 1 \
            and spec.a_k[0] == 1 and spec.K >= 16:
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
    width = plan.width(lanes(spec.dtype))
    j_units, m_units = max(1, -(-spec.N // width)), max(1, -(-spec.M // plan.mr))
    tj = min(j_units, per_batch)
    tm = min(m_units, -(-per_batch // tj)) if tj < per_batch else 1
    return Plan(plan.kind, plan.mr, plan.nv, tj, tm)


# ---- the kernel ---------------------------------------------------------------------------------------------


def emit_gemm(module: ir.Module, isa: str, spec: GemmSpec, source: BSource, name: str) -> ir.Function:
    """Emit `void name(ptr a, ptr b, ptr bias, ptr c)` (bias may be null when spec.bias is None)."""
    plan = choose_plan(spec, source, isa)
    task = _emit_task(module, spec, source, plan, f"{name}.task")
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * 4), name)
    fn.linkage = "internal"
    for a, n in zip(fn.args, ("a", "b", "bias", "c")):
        a.name = n
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ntasks = spec.nb * plan.tj * plan.tm
    if ntasks and spec.M and spec.N:
        ctx = entry_alloca(b, ir.ArrayType(PTR, 4), "ctx")
        for i, a in enumerate(fn.args):
            b.store(a, b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=ir.ArrayType(PTR, 4)))
        if plan.tj * plan.tm > 1:
            b.call(declare_parallel_for(module), [task, ctx, i64(ntasks)])
        elif ntasks == 1:
            b.call(task, [ctx, i64(0)])
        else:
            with for_range(b, ntasks, name="t") as t:
                b.call(task, [ctx, t])
    b.ret_void()
    return fn


@dataclass
class _Task:
    """What the tile emitters need inside one task: pointers already offset to the batch."""

    g: Gen
    spec: GemmSpec
    source: BSource
    plan: Plan
    a: ir.Value
    b: ir.Value
    bias: ir.Value
    c: ir.Value


def _emit_task(module: ir.Module, spec: GemmSpec, source: BSource, plan: Plan, name: str) -> ir.Function:
    fn = ir.Function(module, TASK_FN, name)
    fn.linkage = "internal"
    ctx, t = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    g = Gen(b, spec.dtype)
    arr = ir.ArrayType(PTR, 4)
    ptrs = [b.load(b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=arr), typ=PTR) for i in range(4)]
    per = plan.tj * plan.tm
    bi = b.udiv(t, i64(per)) if per > 1 else t
    part = b.urem(t, i64(per)) if per > 1 else i64(0)
    jp = b.udiv(part, i64(plan.tm)) if plan.tm > 1 else part
    mp = b.urem(part, i64(plan.tm)) if plan.tm > 1 else i64(0)
    offs = _batch_offsets(b, spec, bi)
    a, bb, bias, c = (gep(b, p, o, g.st) if o is not None else p for p, o in zip(ptrs, offs))
    k = _Task(g, spec, source, plan, a, bb, bias, c)
    width = plan.width(g.L)
    nj, tail_j = divmod(spec.N, width)
    nm, tail_m = divmod(spec.M, plan.mr)
    j_lo, j_hi = _part(b, jp, nj, plan.tj)
    m_lo, m_hi = _part(b, mp, nm, plan.tm)
    last_j = b.icmp_unsigned("==", jp, i64(plan.tj - 1))
    last_m = b.icmp_unsigned("==", mp, i64(plan.tm - 1))
    buf: ir.Value | None = None
    if plan.kind == "packed":
        rows = _block_rows(spec)
        buf = entry_alloca(b, ir.ArrayType(F32, rows * width), "panel")
        buf.align = 64

    def tiles(emit) -> None:
        if nm:
            with for_range(b, m_hi, start=m_lo, name="mt") as mt:
                emit(b.mul(mt, i64(plan.mr)), plan.mr)
        if tail_m:
            with b.if_then(last_m):
                emit(i64(nm * plan.mr), tail_m)

    if plan.kind == "packed":
        # every panel, the ragged last one included, runs the same code with a runtime column count
        units = nj + (1 if tail_j else 0)
        p_lo, p_hi = _part(b, jp, units, plan.tj)
        i_lo = b.mul(m_lo, i64(plan.mr))
        i_hi = b.select(last_m, i64(spec.M), b.mul(m_hi, i64(plan.mr)))
        with for_range(b, p_hi, start=p_lo, name="jt") as jt:
            j0 = b.mul(jt, i64(width))
            count = b.sub(i64(spec.N), j0)
            count = b.select(b.icmp_signed("<", count, i64(width)), count, i64(width))
            _packed_panel(k, buf, j0, count, tiles, i_lo, i_hi)
        b.ret_void()
        return fn

    if plan.kind == "stream":
        units = nj + (1 if tail_j else 0)
        u_lo, u_hi = _part(b, jp, units, plan.tj)
        v_hi = b.mul(u_hi, i64(plan.nv))
        full_vectors = spec.N // g.L
        v_hi = b.select(b.icmp_unsigned("<", v_hi, i64(full_vectors)), v_hi, i64(full_vectors))
        _stream(k, b.mul(u_lo, i64(plan.nv)), v_hi, last_j)
        b.ret_void()
        return fn

    def rows_of(j0: ir.Value, count: int) -> None:
        if plan.kind == "dot":
            tiles(lambda i0, mr: _dot_tile(k, i0, mr, j0, count))
        else:
            tiles(lambda i0, mr: _direct_tile(k, i0, mr, j0, count))

    if nj:
        with for_range(b, j_hi, start=j_lo, name="jt") as jt:
            rows_of(b.mul(jt, i64(width)), width)
    if tail_j:
        with b.if_then(last_j):
            rows_of(i64(nj * width), tail_j)
    b.ret_void()
    return fn


def _batch_offsets(b: ir.IRBuilder, spec: GemmSpec, bi: ir.Value) -> list[ir.Value | None]:
    """Element offsets of a, b, bias, c for batch index bi (row-major over spec.batch)."""
    if not spec.batch:
        return [None] * 4
    idx = []
    rest = spec.nb
    for d in spec.batch:
        rest //= d
        q = b.udiv(bi, i64(rest)) if rest > 1 else bi
        idx.append(b.urem(q, i64(d)) if d > 1 else i64(0))
    out: list[ir.Value | None] = []
    for strides in (spec.a_batch, spec.b_batch, spec.bias_batch, spec.c_batch):
        if not strides or not any(strides):
            out.append(None)
            continue
        acc: ir.Value = i64(0)
        for i, s in zip(idx, strides):
            if s:
                acc = b.add(acc, b.mul(i, i64(s)))
        out.append(acc)
    return out


def _part(b: ir.IRBuilder, index: ir.Value, total: int, parts: int) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of part `index` when `total` units are cut into `parts` near-equal parts."""
    if parts == 1:
        return i64(0), i64(total)
    per = -(-total // parts) if total else 0
    lo = b.mul(index, i64(per))
    hi = b.add(lo, i64(per))
    lo = b.select(b.icmp_unsigned("<", lo, i64(total)), lo, i64(total))
    hi = b.select(b.icmp_unsigned("<", hi, i64(total)), hi, i64(total))
    return lo, hi


def _counts(count: int, lanes: int, nv: int) -> list[int]:
    """Valid lanes of each vector of a tile row holding `count` columns."""
    return [max(0, min(lanes, count - v * lanes)) for v in range(nv)]


def _k_nest(b: ir.IRBuilder, extents: Sequence[int], body, start: ir.Value | None = None,
            stop: ir.Value | None = None, depth: int = 0, ks: tuple = ()) -> None:
    """Nested loops over extents (the outermost optionally over [start, stop)); body(ks)."""
    if depth == len(extents):
        body(list(ks))
        return
    lo = start if depth == 0 and start is not None else i64(0)
    hi = stop if depth == 0 and stop is not None else i64(extents[depth])
    if extents[depth] == 1 and not (depth == 0 and start is not None):
        _k_nest(b, extents, body, start, stop, depth + 1, ks + (i64(0),))
        return
    with for_range(b, hi, start=lo, name=f"k{depth}") as k:
        _k_nest(b, extents, body, start, stop, depth + 1, ks + (k,))


def _a_offset(k: _Task, i: ir.Value, ks: Sequence[ir.Value]) -> ir.Value:
    b = k.g.b
    off = b.mul(i, i64(k.spec.a_m)) if k.spec.a_m != 1 else i
    for kd, s in zip(ks, k.spec.a_k):
        if s:
            off = b.add(off, b.mul(kd, i64(s)) if s != 1 else kd)
    return off


def _epilogue(k: _Task, acc: ir.Value, i: ir.Value, j0: ir.Value, valid: int | ir.Value | None) -> ir.Value:
    """alpha * acc + beta * bias(i, j0 + lane), in the compute type (ints with a float alpha/beta via f64)."""
    g, spec = k.g, k.spec
    b = g.b
    bias = None
    if spec.bias is not None:
        s0, s1 = spec.bias
        row = b.mul(i, i64(s0)) if s0 else i64(0)
        bias = g.load(k.bias, b.add(row, j0), valid) if s1 else g.splat(g.scalar(k.bias, row))
    if spec.alpha == 1.0 and (bias is None or spec.beta == 1.0):
        if bias is None:
            return acc
        return b.fadd(acc, bias) if g.is_float else b.add(acc, bias)
    if not g.is_float:  # numpy: an int product times a Python float is float64, cast back at the end
        wide = ir.VectorType(F64, g.L)
        signed = spec.dtype.is_signed
        y = b.fmul(b.sitofp(acc, wide) if signed else b.uitofp(acc, wide), _fconst(wide, spec.alpha))
        if bias is not None:
            fb = b.sitofp(bias, wide) if signed else b.uitofp(bias, wide)
            y = b.fadd(y, b.fmul(fb, _fconst(wide, spec.beta)) if spec.beta != 1.0 else fb)
        return b.fptosi(y, g.vt) if signed else b.fptoui(y, g.vt)
    y = b.fmul(acc, _fconst(g.vt, spec.alpha)) if spec.alpha != 1.0 else acc
    if bias is not None:
        y = b.fadd(y, b.fmul(bias, _fconst(g.vt, spec.beta)) if spec.beta != 1.0 else bias)
    return y


def _fconst(t: ir.VectorType, v: float) -> ir.Constant:
    import numpy as np

    value = float(np.float32(v)) if t.element == F32 else float(v)
    return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)


# ---- direct: a register tile over the whole K, B read from the source -------------------------------------


def _direct_tile(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, count: int) -> None:
    g, spec = k.g, k.spec
    b = g.b
    counts = [c for c in _counts(count, g.L, k.plan.nv) if c]
    accs = [[entry_alloca(b, g.vt) for _ in counts] for _ in range(mr)]
    for row in accs:
        for s in row:
            b.store(g.zero(), s)

    def step(ks: list[ir.Value]) -> None:
        bv = [k.source.vector(g, k.b, ks, b.add(j0, i64(v * g.L)), c) for v, c in enumerate(counts)]
        for r in range(mr):
            a = g.splat(g.scalar(k.a, _a_offset(k, b.add(i0, i64(r)), ks)))
            for v, s in enumerate(accs[r]):
                b.store(g.madd(b.load(s, typ=g.vt), a, bv[v]), s)

    _k_nest(b, spec.k_shape, step)
    for r in range(mr):
        i = b.add(i0, i64(r))
        for v, c in enumerate(counts):
            jv = b.add(j0, i64(v * g.L))
            y = _epilogue(k, b.load(accs[r][v], typ=g.vt), i, jv, c)
            g.store(y, k.c, b.add(b.mul(i, i64(spec.ldc)), jv), c)


# ---- stream: one row of A against a row-major B, B read as long contiguous rows -------------------------


def _stream(k: _Task, v_lo: ir.Value, v_hi: ir.Value, last: ir.Value) -> None:
    """C[0, 16 v_lo : 16 v_hi] (and the ragged end when `last`) = A[0, :] @ B: C accumulates in place
    over steps of 4 rows of B, so B streams through memory row by row (a GEMV is bound by reading B)."""
    g, spec = k.g, k.spec
    b = g.b
    source = k.source
    assert isinstance(source, StridedB)
    K, L, ak = spec.K, g.L, spec.a_k[0]
    tail = spec.N % L
    t0 = spec.N - tail

    def vectors(body) -> None:
        with for_range(b, v_hi, start=v_lo, name="v") as v:
            body(b.mul(v, i64(L)), None)
        if tail:
            with b.if_then(last):
                body(i64(t0), tail)

    vectors(lambda j, valid: g.store(g.zero(), k.c, j, valid))

    def step(k0: ir.Value, rows: int) -> None:
        xs = [g.splat(g.scalar(k.a, b.mul(b.add(k0, i64(r)), i64(ak)))) for r in range(rows)]
        starts = [b.mul(b.add(k0, i64(r)), i64(source.sk)) for r in range(rows)]

        def update(j: ir.Value, valid: int | None) -> None:
            acc = g.load(k.c, j, valid)
            for r in range(rows):
                acc = g.madd(acc, xs[r], g.load(k.b, b.add(starts[r], j), valid))
            g.store(acc, k.c, j, valid)

        vectors(update)

    steps, rest = divmod(K, 4)
    if steps:
        with for_range(b, steps, name="ks") as ks:
            step(b.mul(ks, i64(4)), 4)
    if rest:
        step(i64(steps * 4), rest)
    if spec.bias is not None or spec.alpha != 1.0:
        vectors(lambda j, valid: g.store(_epilogue(k, g.load(k.c, j, valid), i64(0), j, valid), k.c, j, valid))


# ---- dot: small M against B contiguous along k ----------------------------------------------------------------


def _dot_tile(k: _Task, i0: ir.Value, mr: int, j0: ir.Value, count: int) -> None:
    """C[i0:i0+mr, j0:j0+count] as vector dot products along k, tree-reduced at the end."""
    g, spec = k.g, k.spec
    b = g.b
    K, ds = spec.K, k.source.dot_stride
    assert ds is not None
    accs = [[entry_alloca(b, g.vt) for _ in range(count)] for _ in range(mr)]
    for row in accs:
        for s in row:
            b.store(g.zero(), s)

    def step(kk: ir.Value, kcount: int) -> None:
        av = [g.load(k.a, b.add(b.mul(b.add(i0, i64(r)), i64(spec.a_m)), kk), kcount) for r in range(mr)]
        for t in range(count):
            bv = g.load(k.b, b.add(b.mul(b.add(j0, i64(t)), i64(ds)), kk), kcount)
            for r in range(mr):
                b.store(g.madd(b.load(accs[r][t], typ=g.vt), av[r], bv), accs[r][t])

    full, tail = divmod(K, g.L)
    if full:
        with for_range(b, full, name="kv") as kv:
            step(b.mul(kv, i64(g.L)), g.L)
    if tail:
        step(i64(full * g.L), tail)
    for r in range(mr):
        i = b.add(i0, i64(r))
        out = g.zero()
        for t in range(count):
            out = b.insert_element(out, _reduce(g, b.load(accs[r][t], typ=g.vt)), ir.Constant(I32, t))
        y = _epilogue(k, out, i, j0, count)
        g.store(y, k.c, b.add(b.mul(i, i64(spec.ldc)), j0), count)


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


def _block_rows(spec: GemmSpec) -> int:
    inner = math.prod(spec.k_shape[1:])
    return max(1, KC_TARGET // inner) * inner if inner <= KC_TARGET else inner


def _packed_panel(k: _Task, buf: ir.Value, j0: ir.Value, count: ir.Value, tiles, i_lo: ir.Value, i_hi: ir.Value) -> None:
    """Columns j0 .. j0 + count of C: for each K block, pack B into buf, then run every row tile over it."""
    g, spec, plan = k.g, k.spec, k.plan
    b = g.b
    outer, inner = spec.k_shape[0], math.prod(spec.k_shape[1:])
    per_block = _block_rows(spec) // inner  # outer k steps per block
    nkb = -(-outer // per_block)
    width = plan.nv * g.L
    valid = [g.lanes_below(count, v * g.L) for v in range(plan.nv)]
    with for_range(b, nkb, name="kb") as kb:
        c0 = b.mul(kb, i64(per_block))
        c1 = b.add(c0, i64(per_block))
        c1 = b.select(b.icmp_unsigned("<", c1, i64(outer)), c1, i64(outer))
        kc = b.mul(b.sub(c1, c0), i64(inner))

        def pack(ks: list[ir.Value]) -> None:
            row = b.sub(ks[0], c0)
            for d, kd in enumerate(ks[1:]):
                row = b.add(b.mul(row, i64(spec.k_shape[d + 1])), kd)
            base = b.mul(row, i64(width))
            for v in range(plan.nv):
                vec = k.source.vector(g, k.b, ks, b.add(j0, i64(v * g.L)), valid[v])
                b.store(vec, gep(b, buf, b.add(base, i64(v * g.L)), F32), align=64)

        _k_nest(b, spec.k_shape, pack, start=c0, stop=c1)
        first = b.icmp_unsigned("==", kb, i64(0))
        a_k = spec.a_k[-1]
        k0 = b.mul(c0, i64(inner * a_k))

        def micro(i0: ir.Value, mr: int) -> None:
            fn = _micro_fn(b.module, mr, plan.nv)
            a = gep(b, k.a, b.add(b.mul(i0, i64(spec.a_m)), k0), F32)
            c = gep(b, k.c, b.add(b.mul(i0, i64(spec.ldc)), j0), F32)
            b.call(fn, [a, i64(spec.a_m), i64(a_k), buf, kc, c, i64(spec.ldc), count, first])

        tiles(micro)
    if spec.bias is not None or spec.alpha != 1.0:
        with for_range(b, i_hi, start=i_lo, name="ep") as i:
            for v in range(plan.nv):
                at = b.add(b.mul(i, i64(spec.ldc)), b.add(j0, i64(v * g.L)))
                y = _epilogue(k, g.load(k.c, at, valid[v]), i, b.add(j0, i64(v * g.L)), valid[v])
                g.store(y, k.c, at, valid[v])


def _micro_fn(module: ir.Module, mr: int, nv: int) -> ir.Function:
    """`void micro(a, a_m, a_k, panel, kc, c, ldc, count, first)`: C[0:mr, 0:count] (+)= A[0:mr, 0:kc] @ panel.

    The register tile: mr x nv accumulators of 16 floats, one FMA per (row, vector) per k, A broadcast
    from memory. One function per tile shape, shared by every kernel of the module."""
    name = f"tritc.sgemm.micro.{mr}x{nv * 16}"
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
    with for_range(b, kc, name="kk") as kk:
        bv = [b.load(gep(b, panel, b.add(b.mul(kk, i64(width)), i64(v * g.L)), F32), typ=g.vt, align=64) for v in range(nv)]
        ka = b.mul(kk, a_k)
        for r in range(mr):
            x = g.splat(b.load(gep(b, rows[r], ka, F32), typ=F32))
            for v in range(nv):
                b.store(g.madd(b.load(accs[r][v], typ=g.vt), x, bv[v]), accs[r][v])
    for r in range(mr):
        for v in range(nv):
            g.store(b.load(accs[r][v], typ=g.vt), c, c_at[r][v], valid[v])
    b.ret_void()
    return fn

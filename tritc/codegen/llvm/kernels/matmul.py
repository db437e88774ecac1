"""The GEMM kernels behind matmul, gemm, conv and conv_transpose: for every batch index,

    C[i, j] = alpha * sum_k A(i, k) * B(k, j) + beta * bias(i, j)

    call_gemm(builder, cache, isa, GemmSpec(...), StridedB(sk, sj), table, a, b, bias, c)

A kernel is compiled per `Signature` (dtype, loop shape, tile, ranks, bias mode, source kind) and takes
every size and stride as a runtime parameter, so all nodes of a kind share it. K may be a nest of loops
(a convolution's channels and kernel offsets) and B any `BSource`, so a convolution is this kernel with
an implicit-im2col source. The loop shapes (matmul_loops.py), chosen per spec:
  packed  f32, M > 4: B packed per (32-column panel, K block) into a stack buffer, then an 8 x 32 register
          tile of FMAs (AVX-512; 6 x 16 on AVX2) runs over it for every row block of A (GotoBLAS style).
  stream  f32, one row of A against a row-major B: C accumulates in place while B streams row by row.
  dot     small M with B contiguous along k (a transposed weight): vector dot products, tree-reduced.
  direct  everything else (small M, f16/bf16/f64/ints): an MR x (nv * lanes) register tile reading B
          straight from the source; f16 and bf16 are computed in f32, rounded once at the store.
Work is split into tasks over (batch, column blocks, row blocks) for the thread pool when threads > 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import llvmlite.ir as ir
import numpy as np

from ....ir.types import DType
from ..builder import I1, I64, PTR, VOID, for_range, gep, i64
from ..symbolic import Sym, SymbolicDimError
from .matmul_loops import MAX_PACK_ROWS, _direct_tile, _dot_tile, _packed, _stream, _Task
from .matmul_vec import BSource, Gen, Params, StridedB, Values, compute_type, lanes, param_bits
from .threads import TASK_FN, declare_parallel_for, default_threads
from .vec import entry_alloca

TASKS_PER_THREAD = 4
A_IN_L2 = 1 << 20  # bytes of L2 per core (Zen 4), for the packed loops' order
MAX_TILE_COLUMNS = 128  # the widest register tile (8 vectors of 16): sources' tables are padded by this
STREAM_ROWS = 8  # up to this many rows of A against a row-major B: the stream loops, not the packed ones
MIN_PARALLEL_FLOPS = 1 << 21  # below this a parallel_for costs more than it saves


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
    f32 = spec.dtype is DType.F32
    streams = f32 and spec.M <= STREAM_ROWS and isinstance(source, StridedB) and source.sj == 1 and spec.a_k[0] == 1
    if streams:
        plan = Plan("stream", spec.M, 16)
    elif f32 and spec.K > 0 and spec.M > 4 and spec.a_linear and math.prod(spec.k_shape[1:]) <= MAX_PACK_ROWS:
        # 16 accumulators + 2 B vectors + a broadcast of A on AVX-512 (measured best of 4..14 x 32 on Zen 4)
        mr, nv = (8, 2) if regs >= 32 else (6, 1) if regs >= 8 else (3, 1)
        plan = Plan("packed", mr, nv)
    elif f32 and spec.M <= 4 and source.dot and len(spec.k_shape) == 1 and spec.a_k[0] == 1:
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
    # a GEMV is bound by reading B: one long column range per thread reads it in the longest runs
    want = threads * (1 if plan.kind == "stream" else TASKS_PER_THREAD)
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


def param_values(spec: GemmSpec, plan: Plan, source: BSource, planned: GemmSpec | None = None) -> dict[str, int | float]:
    """The kernel's parameters for `spec` (sizes and strides may be symbolic); the loop order is chosen for the
    static spec the plan was made for (`planned`, default spec itself)."""
    v: dict[str, int | float] = {"M": spec.M, "N": spec.N, "a_m": spec.a_m, "ldc": spec.ldc, "tj": plan.tj, "tm": plan.tm,
                                 "nb": spec.nb, "bias_s0": spec.bias[0] if spec.bias else 0,
                                 "alpha": float(spec.alpha), "beta": float(spec.beta),
                                 "kb_outer": int(_k_blocks_outermost(planned or spec, plan))}
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
    serial = ir.Constant(I1, 1)
    if sig.parallel:  # the pool when one is linked in (tritc_parallel_for is extern_weak), else in a loop here
        pfor = declare_parallel_for(module)
        serial = b.icmp_unsigned("==", pfor, ir.Constant(PTR, None))
        with b.if_then(b.not_(serial), likely=True):
            b.call(pfor, [task, ctx, ntasks])
    with b.if_then(serial):
        with for_range(b, ntasks, name="t") as t:
            b.call(task, [ctx, t])
    b.ret_void()
    return fn


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
    elif sig.kind == "stream":  # the task's whole column range at once: the longest runs of B's rows
        j_start = b.mul(j_lo, width)
        j_end = b.mul(j_hi, width)
        j_end = b.select(b.icmp_unsigned("<", j_end, N), j_end, N)
        with b.if_then(b.icmp_unsigned("<", j_start, j_end)):
            _stream(k, j_start, b.sub(j_end, j_start), sig.mr)
    else:
        with for_range(b, j_hi, start=j_lo, name="jt") as jt:
            j0 = b.mul(jt, width)
            count = b.sub(N, j0)
            count = b.select(b.icmp_signed("<", count, width), count, width)
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


BIG_ROWS = 64  # the row count a kernel for "more than one row" is planned for when M is known only at run time


def _sym(x: object) -> bool:
    return isinstance(x, Sym)


def is_symbolic(spec: GemmSpec) -> bool:
    """Whether some size or stride of spec is a symbolic dim (a run-time value)."""
    return any(_sym(x) for x in (spec.M, spec.N, spec.a_m, spec.ldc, *spec.k_shape, *spec.a_k, *spec.batch, *spec.a_batch,
                                  *spec.b_batch, *spec.c_batch, *spec.bias_batch, *(spec.bias or ())))


def planned_as(spec: GemmSpec, rows: int) -> GemmSpec:
    """A static spec like `spec` for choosing a plan: M = rows, symbolic batch dims 1, symbolic strides 0 (a plan
    depends on M, N, K, the dtype and A's k strides; the sizes and strides themselves are run-time parameters)."""
    def st(x):
        return 0 if _sym(x) else x
    if any(_sym(x) for x in (spec.N, *spec.k_shape, *spec.a_k)):
        raise SymbolicDimError("a GEMM's N and K must be static (the weights' dims); only M and the batch may be symbolic")
    return replace(spec, M=rows, a_m=st(spec.a_m), ldc=st(spec.ldc), batch=tuple(1 if _sym(d) else d for d in spec.batch),
                   a_batch=tuple(map(st, spec.a_batch)), b_batch=tuple(map(st, spec.b_batch)),
                   c_batch=tuple(map(st, spec.c_batch)), bias_batch=tuple(map(st, spec.bias_batch)))


def call_gemm(b: ir.IRBuilder, cache: dict, isa: str, spec: GemmSpec, source: BSource, table, a: ir.Value,
              bm: ir.Value, bias: ir.Value | None, c: ir.Value) -> None:
    """Emit a call of the kernel for spec (emitted once per module and signature) with spec's sizes.

    `table(array, name)` embeds a read-only array (the caller's global_array); cache is per module. A spec whose M
    is a symbolic dim holds two kernels and chooses per call: one row (decode: the GEMV plans) or many (GEMM plans,
    planned for BIG_ROWS rows, correct for any count); symbolic batch dims and strides are run-time parameters."""
    if not is_symbolic(spec):
        if spec.M == 0 or spec.N == 0 or spec.nb == 0:
            return
        _call_kernel(b, cache, isa, spec, spec, source, table, a, bm, bias, c)
        return
    if not _sym(spec.M):
        _call_kernel(b, cache, isa, spec, planned_as(spec, spec.M), source, table, a, bm, bias, c)
        return
    with b.if_else(b.icmp_unsigned("==", spec.M, i64(1))) as (one, many):
        with one:
            _call_kernel(b, cache, isa, replace(spec, M=1), planned_as(spec, 1), source, table, a, bm, bias, c)
        with many:
            _call_kernel(b, cache, isa, spec, planned_as(spec, BIG_ROWS), source, table, a, bm, bias, c)


def _call_kernel(b: ir.IRBuilder, cache: dict, isa: str, spec: GemmSpec, planned: GemmSpec, source: BSource, table,
                 a: ir.Value, bm: ir.Value, bias: ir.Value | None, c: ir.Value) -> None:
    module = b.module
    plan = choose_plan(planned, source, isa)
    sig = signature(planned, plan, source)
    fn = cache.get(("gemm", sig))
    if fn is None:
        fn = emit_kernel(module, isa, sig, source, f"tritc.gemm.{sum(1 for key in cache if key[0] == 'gemm')}")
        cache[("gemm", sig)] = fn
    layout = layout_of(sig, source)
    given = param_values(spec, plan, source, planned)
    if not any(_sym(v) for v in given.values()):
        params = table(np.asarray(layout.values(given), dtype=np.int64), "gemm_params")
    else:  # sizes of this call: filled in on the stack
        arr = ir.ArrayType(I64, len(layout.names))
        params = entry_alloca(b, arr, "gemm_params")
        for i, name in enumerate(layout.names):
            v = given[name]
            b.store(v if _sym(v) else i64(param_bits(v)), b.gep(params, [i64(0), i64(i)], inbounds=True, source_etype=arr))
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


__all__ = ["MAX_TILE_COLUMNS", "BSource", "GemmSpec", "Gen", "Params", "Plan", "StridedB", "Values", "call_gemm",
           "choose_plan", "compute_type", "is_symbolic", "lanes", "planned_as"]

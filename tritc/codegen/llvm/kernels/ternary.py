"""The ternary matmul kernel emitter: y[M, N] = epilogue(x[M, K] @ W) for static shapes, W packed by packing.py.

    fn = emit_ternary_matmul(module, target, M=1, K=4096, N=4096, act="int8", granularity="per_channel")
    # i32 fn(ptr x, ptr w, ptr scales, [ptr bias], [ptr residual], ptr y) -> 0, or 1 if scratch allocation failed

Matches `ternary_matmul` of tritc/ir/ops/ternary.py: act="int8" bit for bit (quantisation, int32
sums, rescale), act="float" to rounding. The epilogue is y = act(pre + bias + residual), in that
order, where pre is the op's result. docs/KERNELS.md describes the layout, the per-ISA loops and
their measured speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from ....errors import UnsupportedError
from ....ir.ternary import GRANULARITIES
from ..builder import F32, I32, I64, PTR, VOID, for_range, gep, i64
from ..packing import padded
from ..target import Target
from .ternary_float import accumulate_float
from .ternary_int8 import MASKED_MAX_KB, accumulate_avx2, accumulate_portable, accumulate_vnni
from .threads import TASK_FN, declare_parallel_for, default_threads
from .vec import (
    V16F32,
    V16I32,
    add,
    call,
    const_vec,
    entry_alloca,
    ival,
    load_prefix,
    loop,
    mul,
    sload,
    slots,
    splat,
    store_prefix,
    vec,
    vload,
    vstore,
)

ACTIVATIONS = (None, "relu", "silu")
MAX_K = 1 << 22  # sum_k c * q with c <= 2, |q| <= 128 stays inside int32 for KP <= 2^22
STACK_SCRATCH = 64 * 1024  # larger quantisation scratch comes from malloc
TASKS_PER_THREAD = 8  # more tasks than threads: a busy core then only delays a small task


@dataclass(frozen=True)
class MatmulSpec:
    M: int
    K: int
    N: int
    act: str = "int8"
    granularity: str = "per_channel"
    group_size: int = 0
    bias: bool = False
    residual: bool = False
    activation: str | None = None
    threads: int = 1  # 1: no pool; 0: the pool's size (default_threads()); n > 1: tasks sized for n threads
    act_max: float = 127.0
    act_eps: float = 1e-5
    act_scale: str = "div"  # s = act_max / clamped absmax, or "mul_reciprocal": act_max * (1 / clamped)

    @property
    def KP(self) -> int:
        return padded(self.K)

    @property
    def NP(self) -> int:
        return padded(self.N)

    @property
    def KB(self) -> int:
        return self.KP // 16

    @property
    def NB(self) -> int:
        return self.NP // 16

    @property
    def G(self) -> int:
        """Scale groups along K (1 unless per_group)."""
        return self.K // self.group_size if self.granularity == "per_group" else 1

    @property
    def GKB(self) -> int:
        """K blocks per group."""
        return self.KB // self.G

    def check(self) -> None:
        if min(self.M, self.K, self.N) < 1:
            raise UnsupportedError(f"ternary matmul needs M, K, N >= 1, got {self.M}x{self.K}x{self.N}")
        if self.act not in ("int8", "float"):
            raise UnsupportedError(f"act must be int8 or float, got '{self.act}'")
        if self.granularity not in GRANULARITIES:
            raise UnsupportedError(f"granularity must be one of {', '.join(GRANULARITIES)}, got '{self.granularity}'")
        if self.granularity == "per_group" and (self.group_size <= 0 or self.group_size % 16 or self.K % self.group_size):
            raise UnsupportedError(f"per-group kernels need a group size that is a multiple of 16 and divides K; "
                                   f"got group {self.group_size} for K={self.K}")
        if self.activation not in ACTIVATIONS:
            raise UnsupportedError(f"activation must be relu, silu or none, got '{self.activation}'")
        if self.KP > MAX_K:
            raise UnsupportedError(f"K={self.K} is too large for int32 accumulation (at most {MAX_K})")
        if self.act_scale not in ("div", "mul_reciprocal"):
            raise UnsupportedError(f"act_scale must be div or mul_reciprocal, got '{self.act_scale}'")
        if self.threads < 0:
            raise UnsupportedError(f"threads must be >= 0, got {self.threads}")


@dataclass(frozen=True)
class TilePlan:
    mt: int  # tokens per register tile
    nc: int  # 16-output chunks per register tile
    masked: bool = False  # VNNI GEMV variant (see accumulate_vnni)


def plan_tiles(spec: MatmulSpec, isa: str) -> TilePlan:
    """Register tile per ISA and mode, sized so accumulators, codes and masks fit the register file."""
    grouped = spec.granularity == "per_group"
    if spec.act == "float":
        if isa == "avx512vnni":
            return TilePlan(min(spec.M, 4), 2)
        return TilePlan(min(spec.M, 2), 1) if isa == "avx2" else TilePlan(1, 1)
    if isa == "avx512vnni":
        if spec.M == 1 and spec.GKB <= MASKED_MAX_KB:
            return TilePlan(1, 4, masked=True)
        return TilePlan(min(spec.M, 4), 2 if grouped else 4)
    if isa == "avx2":
        return TilePlan(1, 2) if spec.M == 1 else TilePlan(min(spec.M, 4), 1)
    return TilePlan(1, 1)


@dataclass
class Frame:
    """What the tile emitters need: the builder, the spec, and the kernel's buffers (IR pointers)."""

    b: ir.IRBuilder
    spec: MatmulSpec
    isa: str
    plan: TilePlan
    act: ir.Value  # int8 q [M, KP] (act="int8") or f32 x [M, K]
    w: ir.Value
    scales: ir.Value
    bias: ir.Value | None
    residual: ir.Value | None
    y: ir.Value
    s: ir.Value | None  # f32 [M]: the quantisation factor, y = acc * scale / s
    sumq: ir.Value | None  # i32 [M, G]: sum of q over each group (c = trit + 1 counts it once too many)


CTX_FIELDS = ("act", "w", "scales", "bias", "residual", "y", "s", "sumq")


def emit_ternary_matmul(module: ir.Module, target: Target, *, M: int, K: int, N: int, act: str = "int8",
                        granularity: str = "per_channel", group_size: int = 0, bias: bool = False,
                        residual: bool = False, activation: str | None = None, threads: int = 1,
                        name: str = "ternary_matmul", act_max: float = 127.0, act_eps: float = 1e-5,
                        act_scale: str = "div") -> ir.Function:
    """Emit `name` into module; threads != 1 splits output blocks over the pool (threads.ensure_pool)."""
    spec = MatmulSpec(M, K, N, act, granularity, group_size if granularity == "per_group" else 0, bias, residual,
                      activation, threads, act_max, act_eps, act_scale)
    spec.check()
    isa = target.isa
    plan = plan_tiles(spec, isa)
    tn, tm = task_grid(spec, plan)
    task = _emit_task(module, spec, isa, plan, tn, tm, f"{name}.task")

    params = ["x", "w", "scales"] + (["bias"] if bias else []) + (["residual"] if residual else []) + ["y"]
    fn = ir.Function(module, ir.FunctionType(I32, [PTR] * len(params)), name)
    for a, pname in zip(fn.args, params):
        a.name = pname
    args = dict(zip(params, fn.args))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx = entry_alloca(b, ir.ArrayType(PTR, len(CTX_FIELDS)), "ctx")
    fields = {k: ir.Constant(PTR, None) for k in CTX_FIELDS}
    fields.update(w=args["w"], scales=args["scales"], y=args["y"], act=args["x"])
    if bias:
        fields["bias"] = args["bias"]
    if residual:
        fields["residual"] = args["residual"]
    scratch = None
    if act == "int8":
        scratch, q, s, sumq = _scratch(b, spec)
        _emit_quantize(b, spec, args["x"], q, s, sumq)
        fields.update(act=q, s=s, sumq=sumq)
    for i, key in enumerate(CTX_FIELDS):
        b.store(fields[key], b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=ctx.allocated_type))
    if tn * tm == 1:
        b.call(task, [ctx, i64(0)])
    else:
        b.call(declare_parallel_for(module), [task, ctx, i64(tn * tm)])
    if act == "float":
        _emit_nonfinite_fixup(b, spec, args)
    if scratch is not None:
        b.call(_libc(module, "free", VOID, [PTR]), [scratch])
    b.ret(ir.Constant(I32, 0))
    return fn


def task_grid(spec: MatmulSpec, plan: TilePlan) -> tuple[int, int]:
    """(tasks over N tiles, tasks over M tiles): 1 x 1 when single-threaded."""
    if spec.threads == 1:
        return 1, 1
    want = TASKS_PER_THREAD * (spec.threads if spec.threads > 1 else default_threads())
    n_tiles, m_tiles = max(1, spec.NB // plan.nc), max(1, spec.M // plan.mt)
    tn = min(n_tiles, want)
    tm = min(m_tiles, -(-want // tn)) if tn < want else 1
    return tn, tm


def _libc(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    existing = module.globals.get(name)
    return existing if existing is not None else ir.Function(module, ir.FunctionType(ret, args), name)  # type: ignore[return-value]


def _scratch(b: ir.IRBuilder, spec: MatmulSpec) -> tuple[ir.Value | None, ir.Value, ir.Value, ir.Value]:
    """q [M, KP] i8 (64-byte aligned), s [M] f32, sumq [M, G] i32: on the stack if small, else malloc.

    A failed malloc makes the kernel return 1."""
    qbytes = spec.M * spec.KP
    total = qbytes + 4 * spec.M + 4 * spec.M * spec.G + 64
    if total <= STACK_SCRATCH:
        base = entry_alloca(b, ir.ArrayType(ir.IntType(8), total), "scratch")
        base.align = 64
        owned = None
    else:
        size = (total + 63) // 64 * 64
        base = b.call(_libc(b.module, "aligned_alloc", PTR, [I64, I64]), [i64(64), i64(size)])
        with b.if_then(b.icmp_unsigned("==", base, ir.Constant(PTR, None)), likely=False):
            b.ret(ir.Constant(I32, 1))
        owned = base
    s = gep(b, base, qbytes, ir.IntType(8))
    sumq = gep(b, base, qbytes + 4 * spec.M, ir.IntType(8))
    return owned, base, s, sumq


def _emit_quantize(b: ir.IRBuilder, spec: MatmulSpec, x: ir.Value, q: ir.Value, s: ir.Value, sumq: ir.Value) -> None:
    """Per row: s = act_max / max(max|x|, eps) (f32; or act_max * (1 / ...)), q = clip(roundeven(x * s), -128, 127) -> int8, sums of q.

    Exactly quantize_activations: the same f32 operations; max is order-independent. Padding
    columns K..KP-1 get q = 0."""
    K, KP = spec.K, spec.KP
    full, tail = divmod(K, 16)
    act_max = ir.Constant(F32, float(np.float32(spec.act_max)))
    eps = ir.Constant(F32, float(np.float32(spec.act_eps)))
    with for_range(b, spec.M, name="qm") as m:
        row = b.mul(m, i64(K))
        amax = slots(b, V16F32, const_vec(V16F32, 0.0), 1)[0]
        with loop(b, 0, full, "qa") as v:
            xv = vload(b, x, b.add(row, b.mul(v, i64(16))), V16F32)
            b.store(call(b, "llvm.maximum.v16f32", V16F32, b.load(amax, typ=V16F32), call(b, "llvm.fabs.v16f32", V16F32, xv)), amax)
        cur = b.load(amax, typ=V16F32)
        if tail:
            xv = load_prefix(b, x, b.add(row, i64(full * 16)), V16F32, tail, 0.0)
            cur = call(b, "llvm.maximum.v16f32", V16F32, cur, call(b, "llvm.fabs.v16f32", V16F32, xv))
        # NaN-propagating maxima, as numpy's: a row holding a NaN gets s = NaN, so its outputs are NaN
        absmax = call(b, "llvm.vector.reduce.fmaximum.v16f32", F32, cur)
        clamped = call(b, "llvm.maximum.f32", F32, absmax, eps)
        if spec.act_scale == "mul_reciprocal":
            sm = b.fmul(b.fdiv(ir.Constant(F32, 1.0), clamped), act_max)
        else:
            sm = b.fdiv(act_max, clamped)
        b.store(sm, gep(b, s, m, F32))
        ssplat = splat(b, sm, 16)

        def quant(xv: ir.Value) -> ir.Value:
            r = call(b, "llvm.roundeven.v16f32", V16F32, b.fmul(xv, ssplat))
            # maxnum maps NaN to -128, so fptosi never sees a NaN (the row's outputs are NaN anyway)
            r = call(b, "llvm.minnum.v16f32", V16F32, call(b, "llvm.maxnum.v16f32", V16F32, r, const_vec(V16F32, -128.0)),
                     const_vec(V16F32, 127.0))
            return b.fptosi(r, vec(ir.IntType(8), 16))

        qrow = b.mul(m, i64(KP))
        vecs_per_group = spec.group_size // 16 if spec.G > 1 else full
        with loop(b, 0, spec.G, "qg") as g:
            total = slots(b, V16I32, const_vec(V16I32, 0), 1)[0]
            with loop(b, 0, vecs_per_group, "qv") as v:
                kv = b.add(mul(b, g, spec.group_size) if spec.G > 1 else i64(0), b.mul(v, i64(16)))
                qv = quant(vload(b, x, b.add(row, kv), V16F32))
                vstore(b, qv, q, b.add(qrow, kv), align=16)
                b.store(b.add(b.load(total, typ=V16I32), b.sext(qv, V16I32)), total)
            acc = b.load(total, typ=V16I32)
            if tail:  # only when G == 1 (per-group needs K % 16 == 0)
                qv = quant(load_prefix(b, x, b.add(row, i64(full * 16)), V16F32, tail, 0.0))
                vstore(b, qv, q, b.add(qrow, i64(full * 16)), align=16)
                acc = b.add(acc, b.sext(qv, V16I32))
            b.store(call(b, "llvm.vector.reduce.add.v16i32", I32, acc), gep(b, sumq, b.add(b.mul(m, i64(spec.G)), ival(g)), I32))


def _emit_nonfinite_fixup(b: ir.IRBuilder, spec: MatmulSpec, args: dict[str, ir.Value]) -> None:
    """Float path, rows of x holding NaN or +-Inf: recompute those rows' outputs as numpy does.

    In numpy every output of such a row is NaN or +-Inf (0 * Inf = NaN, Inf - Inf = NaN), and which
    one depends only on the non-finite terms; the add-only loop skips trit 0 and folds the minus
    sums twice, so it can get that class wrong. Here pre[n] = sum over the non-finite x[k] of
    x[k] * trit(k, n) * scale(k, n), then the usual epilogue. A scan of x is cheap next to the
    matmul; the recomputation only runs for rows that need it."""
    x, w, y = args["x"], args["w"], args["y"]
    I8T = ir.IntType(8)
    bad = entry_alloca(b, I8T, "bad")
    with for_range(b, spec.M, name="fm") as m:
        row = b.mul(m, i64(spec.K))
        b.store(ir.Constant(I8T, 0), bad)
        with for_range(b, spec.K, name="fk") as k:
            v = sload(b, x, b.add(row, k), F32)
            nonfinite = b.fcmp_unordered("uno", b.fsub(v, v), b.fsub(v, v))
            b.store(b.or_(b.load(bad, typ=I8T), b.zext(nonfinite, I8T)), bad)
        with b.if_then(b.icmp_unsigned("!=", b.load(bad, typ=I8T), ir.Constant(I8T, 0)), likely=False):
            with for_range(b, spec.N, name="fn") as n:
                pre = entry_alloca(b, F32, "pre")
                b.store(ir.Constant(F32, 0.0), pre)
                nb, lane = b.udiv(n, i64(16)), b.urem(n, i64(16))
                with for_range(b, spec.K, name="fk2") as k:
                    v = sload(b, x, b.add(row, k), F32)
                    with b.if_then(b.fcmp_unordered("uno", b.fsub(v, v), b.fsub(v, v))):
                        kb, kr = b.udiv(k, i64(16)), b.urem(k, i64(16))
                        byte = b.add(b.mul(b.add(b.mul(nb, i64(spec.KB)), kb), i64(64)),
                                     b.add(b.mul(lane, i64(4)), b.urem(kr, i64(4))))
                        shift = b.trunc(b.mul(b.udiv(kr, i64(4)), i64(2)), I8T)
                        code = b.and_(b.lshr(sload(b, w, byte, I8T, align=1), shift), ir.Constant(I8T, 3))
                        trit = b.sitofp(b.sub(b.zext(code, ir.IntType(32)), ir.Constant(ir.IntType(32), 1)), F32)
                        if spec.granularity == "per_tensor":
                            scale = sload(b, args["scales"], 0, F32)
                        elif spec.granularity == "per_channel":
                            scale = sload(b, args["scales"], n, F32)
                        else:
                            g = b.udiv(k, i64(spec.group_size))
                            scale = sload(b, args["scales"], b.add(b.mul(g, i64(spec.NP)), n), F32)
                        b.store(b.fadd(b.load(pre, typ=F32), b.fmul(b.fmul(v, trit), scale)), pre)
                out = b.load(pre, typ=F32)
                if spec.bias:
                    out = b.fadd(out, sload(b, args["bias"], n, F32))
                if spec.residual:
                    out = b.fadd(out, sload(b, args["residual"], b.add(b.mul(m, i64(spec.N)), n), F32))
                b.store(_activate(b, spec, out), gep(b, y, b.add(b.mul(m, i64(spec.N)), n), F32))


def _emit_task(module: ir.Module, spec: MatmulSpec, isa: str, plan: TilePlan, tn: int, tm: int, name: str) -> ir.Function:
    """`void name(ptr ctx, i64 task)`: task -> a range of N tiles x a range of M tiles, remainders to the last."""
    fn = ir.Function(module, TASK_FN, name)
    fn.linkage = "internal"
    ctx, task = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vals = {key: b.load(b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=ir.ArrayType(PTR, len(CTX_FIELDS))), typ=PTR)
            for i, key in enumerate(CTX_FIELDS)}
    f = Frame(b, spec, isa, plan, vals["act"], vals["w"], vals["scales"], vals["bias"] if spec.bias else None,
              vals["residual"] if spec.residual else None, vals["y"], vals["s"] if spec.act == "int8" else None,
              vals["sumq"] if spec.act == "int8" else None)
    NT, rc = divmod(spec.NB, plan.nc)
    MT, rm = divmod(spec.M, plan.mt)
    ti_n, ti_m = (b.udiv(task, i64(tm)), b.urem(task, i64(tm))) if tm > 1 else (task, i64(0))
    n_lo, n_hi = _range(b, ti_n, NT, tn)
    m_lo, m_hi = _range(b, ti_m, MT, tm)
    last_n = b.icmp_unsigned("==", ti_n, i64(tn - 1))
    last_m = b.icmp_unsigned("==", ti_m, i64(tm - 1))

    def m_tiles(nb0: ir.Value | int, nc: int) -> None:
        if MT:
            with for_range(b, m_hi, start=m_lo, name="mt") as mi:
                _emit_tile(f, b.mul(mi, i64(plan.mt)), nb0, plan.mt, nc)
        if rm:
            with b.if_then(last_m):
                _emit_tile(f, MT * plan.mt, nb0, rm, nc)

    if NT:
        with for_range(b, n_hi, start=n_lo, name="nt") as ni:
            m_tiles(b.mul(ni, i64(plan.nc)), plan.nc)
    if rc:
        with b.if_then(last_n):
            m_tiles(NT * plan.nc, rc)
    b.ret_void()
    return fn


def _range(b: ir.IRBuilder, index: ir.Value, total: int, parts: int) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of part `index` when `total` items are cut into `parts` near-equal parts."""
    per = -(-total // parts) if total else 0
    lo = b.mul(index, i64(per))
    hi = b.add(lo, i64(per))
    lo = b.select(b.icmp_unsigned("<", lo, i64(total)), lo, i64(total))
    hi = b.select(b.icmp_unsigned("<", hi, i64(total)), hi, i64(total))
    return lo, hi


def _accumulate_int(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                    kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    if f.isa == "avx512vnni":
        return accumulate_vnni(f, m0, nb0, mt, nc, kb0, nkb, f.plan.masked)
    if f.isa == "avx2":
        return accumulate_avx2(f, m0, nb0, mt, nc, kb0, nkb)
    return accumulate_portable(f, m0, nb0, mt, nc, kb0, nkb)


def _group_partial(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int, g: ir.Value | int) -> list[list[ir.Value]]:
    """f32 partial results of K group g (the whole K when not per_group): sums times the scale."""
    b, spec = f.b, f.spec
    kb0, nkb = mul(b, g, spec.GKB), spec.GKB
    out = []
    if spec.act == "int8":
        raw = _accumulate_int(f, m0, nb0, mt, nc, kb0, nkb)
        for t in range(mt):
            sq = sload(b, f.sumq, add(b, mul(b, add(b, m0, t), spec.G), g), I32)
            out.append([b.sitofp(b.sub(raw[t][c], splat(b, sq, 16)), V16F32) for c in range(nc)])
    else:
        out = accumulate_float(f, m0, nb0, mt, nc, kb0, nkb)
    return [[b.fmul(out[t][c], _scale(f, add(b, nb0, c), g)) for c in range(nc)] for t in range(mt)]


def _scale(f: Frame, nb: ir.Value | int, g: ir.Value | int) -> ir.Value:
    b, spec = f.b, f.spec
    if spec.granularity == "per_tensor":
        return splat(b, sload(b, f.scales, 0, F32), 16)
    return vload(b, f.scales, add(b, mul(b, g, spec.NP), mul(b, nb, 16)), V16F32, align=4)


def _emit_tile(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int) -> None:
    """One register tile: accumulate over K (group by group), then the epilogue for each output vector."""
    b, spec = f.b, f.spec
    if spec.G == 1:
        pre = _group_partial(f, m0, nb0, mt, nc, 0)
    else:
        # sum over groups in order g = 0, 1, ... like numpy's sum(axis=-2): group 0 starts the sum
        fsum = slots(b, V16F32, None, mt, nc)
        for slot, v in zip(_cells(fsum), _cells(_group_partial(f, m0, nb0, mt, nc, 0))):
            b.store(v, slot)
        with for_range(b, spec.G, start=1, name="g") as g:
            part = _group_partial(f, m0, nb0, mt, nc, g)
            for slot, v in zip(_cells(fsum), _cells(part)):
                b.store(b.fadd(b.load(slot, typ=V16F32), v), slot)
        pre = [[b.load(fsum[t][c], typ=V16F32) for c in range(nc)] for t in range(mt)]
    for t in range(mt):
        for c in range(nc):
            _epilogue(f, pre[t][c], add(b, m0, t), add(b, nb0, c))


def _cells(grid: list[list[ir.Value]]) -> list[ir.Value]:
    return [v for row in grid for v in row]


def _epilogue(f: Frame, v: ir.Value, m: ir.Value | int, nb: ir.Value | int) -> None:
    """y[m, 16nb:16nb+16] = act(v / s[m] + bias + residual); the last chunk stores only N % 16 lanes."""
    b, spec = f.b, f.spec
    if spec.act == "int8":
        v = b.fdiv(v, splat(b, sload(b, f.s, m, F32), 16))
    tail = spec.N % 16
    if not tail:
        _finish(f, v, m, nb, 16)
        return
    if isinstance(nb, int):
        _finish(f, v, m, nb, tail if nb == spec.NB - 1 else 16)
        return
    with b.if_else(b.icmp_unsigned("==", nb, i64(spec.NB - 1))) as (partial, whole):
        with partial:
            _finish(f, v, m, nb, tail)
        with whole:
            _finish(f, v, m, nb, 16)


def _finish(f: Frame, v: ir.Value, m: ir.Value | int, nb: ir.Value | int, count: int) -> None:
    b, spec = f.b, f.spec
    n0 = mul(b, nb, 16)
    if f.bias is not None:
        v = b.fadd(v, load_prefix(b, f.bias, n0, V16F32, count))
    if f.residual is not None:
        v = b.fadd(v, load_prefix(b, f.residual, add(b, mul(b, m, spec.N), n0), V16F32, count))
    v = _activate(b, spec, v)
    store_prefix(b, v, f.y, add(b, mul(b, m, spec.N), n0), count)


def _activate(b: ir.IRBuilder, spec: MatmulSpec, v: ir.Value) -> ir.Value:
    """relu / silu on a scalar or a vector (NaN stays NaN, as np.maximum and numpy's exp)."""
    t = v.type
    vector = isinstance(t, ir.VectorType)
    zero = const_vec(t, 0.0) if vector else ir.Constant(F32, 0.0)
    if spec.activation == "relu":
        return b.select(b.fcmp_ordered("<", v, zero), zero, v)
    if spec.activation == "silu":
        e = call(b, "llvm.exp.v16f32" if vector else "llvm.exp.f32", t, b.fneg(v))
        return b.fdiv(v, b.fadd(const_vec(t, 1.0) if vector else ir.Constant(F32, 1.0), e))
    return v

"""The ternary matmul kernel emitter: y[M, N] = epilogue(x[M, K] @ W) for static shapes, W packed by packing.py.

    fn = emit_ternary_matmul(module, target, M=1, K=4096, N=4096, act="int8", granularity="per_channel")
    # i32 fn(ptr x, ptr w, ptr scales, [ptr bias], [ptr residual], ptr y) -> 0, or 1 if its heap scratch
    # (MatmulSpec.heap_bytes) could not be allocated
    # prequantized=True (int8): i32 fn(ptr q, ptr s, ptr sumq, ptr w, ptr scales, ...) with the caller's codes
    # scratch_arg=True (int8): i32 fn(..., ptr y, ptr scratch), the quantisation scratch (scratch_bytes(spec)) given
    # by the caller (a node's arena slot): nothing is allocated and the status is always 0

Matches `ternary_matmul` of tritc/ir/ops/ternary.py: act="int8" bit for bit (quantisation, int32
sums, rescale), act="float" to rounding. The epilogue is y = act(pre + bias + residual), in that
order, where pre is the op's result. docs/KERNELS.md describes the layout, the per-ISA loops and
their measured speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from ....errors import UnsupportedError
from ....ir.ternary import GRANULARITIES
from ..builder import F32, I32, PTR, for_range, i64
from ..packing import padded
from ..target import Target
from .ternary_float import accumulate_float, emit_nonfinite_fixup
from .ternary_int8 import MASKED_MAX_KB, accumulate_avx2, accumulate_portable, accumulate_vnni
from .ternary_quant import emit_quantize, emit_scratch, heap_bytes
from .threads import TASK_FN, default_threads, emit_parallel_call
from .vec import V16F32, activation, add, entry_alloca, free_scratch, load_prefix, mul, sload, slots, splat, store_prefix, vload

ACTIVATIONS = (None, "relu", "silu")
MAX_K = 1 << 22  # sum_k c * q with c <= 2, |q| <= 128 stays inside int32 for KP <= 2^22
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
    def heap_bytes(self) -> int:
        """Bytes one call takes from the heap (0: none); the kernel returns 1 if it cannot have them."""
        return heap_bytes(self) if self.act == "int8" else 0

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
        if isa == "avx512vnni":  # pair tables (ternary_lut.py): 8 chunks share a table, 4 tokens an index
            return TilePlan(1, 8) if spec.M == 1 else TilePlan(min(spec.M, 4), 4)
        return TilePlan(min(spec.M, 4), 1)  # decoded trits (ternary_decode.py), shared by 4 tokens
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
                        act_scale: str = "div", prequantized: bool = False, scratch_arg: bool = False) -> ir.Function:
    """Emit `name` into module; threads != 1 splits output blocks over the pool (threads.ensure_pool).

    prequantized (act="int8" only): the caller passes the int8 codes q [M, KP] (64-byte aligned, zero past K),
    the factors s [M] and the code sums sumq [M, G] instead of x (ternary_conv quantises per image).
    scratch_arg (act="int8", not prequantized): a last parameter `scratch` holds the quantisation scratch
    (ternary_quant.scratch_bytes(spec) bytes, 64-byte aligned), so the kernel allocates nothing."""
    spec = MatmulSpec(M, K, N, act, granularity, group_size if granularity == "per_group" else 0, bias, residual,
                      activation, threads, act_max, act_eps, act_scale)
    spec.check()
    isa = target.isa
    plan = plan_tiles(spec, isa)
    tn, tm = task_grid(spec, plan)
    task = _emit_task(module, spec, isa, plan, tn, tm, f"{name}.task")

    if prequantized and act != "int8":
        raise UnsupportedError("prequantized codes need act='int8'")
    inputs = ["q", "s", "sumq"] if prequantized else ["x"]
    if scratch_arg and (act != "int8" or prequantized):
        raise UnsupportedError("only a kernel that quantises its activations (act='int8') takes a scratch argument")
    params = inputs + ["w", "scales"] + (["bias"] if bias else []) + (["residual"] if residual else []) + ["y"] + \
        (["scratch"] if scratch_arg else [])
    fn = ir.Function(module, ir.FunctionType(I32, [PTR] * len(params)), name)
    for a, pname in zip(fn.args, params):
        a.name = pname
    if scratch_arg:
        fn.args[-1].add_attribute("noalias")  # a slot of its own in the arena
    args = dict(zip(params, fn.args))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ctx = entry_alloca(b, ir.ArrayType(PTR, len(CTX_FIELDS)), "ctx")
    fields = {k: ir.Constant(PTR, None) for k in CTX_FIELDS}
    fields.update(w=args["w"], scales=args["scales"], y=args["y"], act=args["q" if prequantized else "x"])
    if bias:
        fields["bias"] = args["bias"]
    if residual:
        fields["residual"] = args["residual"]
    scratch = None
    if prequantized:
        fields.update(s=args["s"], sumq=args["sumq"])
    elif act == "int8":
        scratch, q, s, sumq = emit_scratch(b, spec, args.get("scratch"))
        emit_quantize(b, spec, args["x"], q, s, sumq)
        fields.update(act=q, s=s, sumq=sumq)
    for i, key in enumerate(CTX_FIELDS):
        b.store(fields[key], b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=ctx.allocated_type))
    if tn * tm == 1:
        b.call(task, [ctx, i64(0)])
    else:
        emit_parallel_call(b, task, ctx, tn * tm)
    if act == "float":
        emit_nonfinite_fixup(b, spec, args)
    free_scratch(b, scratch)
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
    v = activation(b, spec.activation, v)
    store_prefix(b, v, f.y, add(b, mul(b, m, spec.N), n0), count)


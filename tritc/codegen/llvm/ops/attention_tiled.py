"""The online-softmax attention kernel behind fused_attention: working memory independent of the sequence length.

    for each unit (batch, kv head, block of q_block query rows sharing that kv head, split of the keys):
        for each block of kv_block keys the unit's rows may see:
            scores  (q * scale) . K[j] for 16 keys at a time (a shuffle tree sums the 16 dot products), softcap,
                    + the float mask; -inf where the key is not allowed
            update  m' = max(m, block max); alpha = exp(m - m'); p = exp(s - m'); l = l * alpha + sum p
            P V     acc = acc * alpha + sum_j p_j V[j], in register tiles of 4 rows x 16-lane chunks
        Y = acc / l, or (split-K) the partial (m, l, acc) merged afterwards: Y = sum_s acc_s e^(m_s - M) / sum_s ...

Units are spread over `tasks` work items on the thread pool; each item uses its own slot of the scratch buffer (the
node's scratch result, placed by the memory plan). Decoding (few rows per kv head) splits the keys so that every
thread gets work. Keys that are not allowed never reach the sums: a masked key's inf / NaN value changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ....ir.types import DType
from .. import mathfns
from ..builder import F32, I1, I8, I32, I64, PTR, VOID, for_range, gep, i64, intrinsic
from ..context import NodeCtx
from ..kernels.threads import emit_parallel_call, ensure_pool
from ..kernels.vec import const_vec, entry_alloca, splat
from .attention_kernels import lane_sums, masked_load, store_prefix16, vmax
from .reduce_runs import hreduce

if TYPE_CHECKING:
    from .attention_fused import Geometry

L = 16
META = 5  # i64 slots of row data
NEG_INF = float("-inf")
MIN_SPLIT_KEYS = 256  # a split-K part reads at least this many keys: fewer do not pay for the merge
PTRS = ("q", "k", "v", "pk", "pv", "mask", "y", "scratch")
INTS = ("batch", "sq", "past", "total", "kstride", "slots", "ms0", "ms1", "ms2", "mask_keys")
VT = ir.VectorType(F32, L)


def kernel(ctx: NodeCtx, g: Geometry) -> ir.Function:
    """`void attention(ptr q, k, v, pk, pv, mask, y, scratch, i64 batch, sq, past, total, kstride, slots, ms0, ms1,
    ms2, mask_keys)`, emitted once per module and geometry."""
    key = ("fused_attention", g, ctx.m.threads)
    fn = ctx.m.cache.get(key)
    if fn is not None:
        return fn
    n = sum(1 for k in ctx.m.cache if k[0] == "fused_attention")
    fn = ir.Function(ctx.module, ir.FunctionType(VOID, [PTR] * len(PTRS) + [I64] * len(INTS)), f"tritc.fused_attention.{n}")
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for a, name in zip(fn.args, PTRS + INTS):
        a.name = name
    _Driver(ctx, g, fn).emit()
    ctx.m.cache[key] = fn
    return fn


class _Driver:
    """The kernel function: how many splits, then the units and (split-K) the merge, each over the work items."""

    def __init__(self, ctx: NodeCtx, g: Geometry, fn: ir.Function):
        self.ctx, self.g, self.fn = ctx, g, fn
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))

    def emit(self) -> None:
        b, g = self.b, self.g
        args = dict(zip(PTRS + INTS, self.fn.args))
        rows = b.mul(i64(g.group), args["sq"])
        per_unit = _max(b, _min(b, rows, i64(g.q_block)), i64(1))  # decoding: the few rows there are, not q_block
        blocks = b.udiv(b.add(rows, b.sub(per_unit, i64(1))), per_unit)
        base = b.mul(b.mul(args["batch"], i64(g.kv_heads)), blocks)
        # split the keys when there are fewer units than work items, into parts of MIN_SPLIT_KEYS keys or more,
        # as many as the partial slots hold
        splits = b.udiv(b.add(i64(g.tasks), b.sub(base, i64(1))), _max(b, base, i64(1)))
        by_keys = b.udiv(args["total"], i64(MIN_SPLIT_KEYS))
        splits = _min(b, _min(b, splits, by_keys), b.udiv(args["slots"], _max(b, base, i64(1))))
        splits = _max(b, splits, i64(1))
        span = b.udiv(b.add(args["total"], b.sub(splits, i64(1))), splits)  # keys per split, whole kv blocks
        span = b.mul(b.udiv(b.add(span, i64(g.kv_block - 1)), i64(g.kv_block)), i64(g.kv_block))
        env = {**args, "rows": rows, "per_unit": per_unit, "blocks": blocks, "base": base, "splits": splits, "span": span}
        self.parallel("units", env, lambda e, t: _Units(self.ctx, g, e).item(t))
        with b.if_then(b.icmp_unsigned(">", splits, i64(1))):
            self.parallel("merge", env, lambda e, t: _Units(self.ctx, g, e).merge_item(t))
        b.ret_void()

    def parallel(self, name: str, env: dict[str, ir.Value], body) -> None:
        """body(env, item) for item in 0..tasks-1, on the thread pool when the module has threads; env's values
        travel to the task through an array of i64."""
        b, g = self.b, self.g
        names = list(env)
        slots = entry_alloca(b, ir.ArrayType(I64, len(names)), f"{name}.env")
        for j, k in enumerate(names):
            v = env[k]
            b.store(b.ptrtoint(v, I64) if v.type == PTR else v, gep(b, slots, j, I64))
        task = ir.Function(self.ctx.module, ir.FunctionType(VOID, [PTR, I64]), f"{self.fn.name}.{name}")
        task.linkage = "internal"
        tb = ir.IRBuilder(task.append_basic_block("entry"))
        loaded = {}
        for j, k in enumerate(names):
            raw = tb.load(gep(tb, task.args[0], j, I64), typ=I64)
            loaded[k] = tb.inttoptr(raw, PTR) if env[k].type == PTR else raw
        body({**loaded, "builder": tb}, task.args[1])
        tb.ret_void()
        if self.ctx.m.threads > 1:
            ensure_pool(self.ctx.m.threads)
            emit_parallel_call(b, task, slots, g.tasks)
        else:
            with for_range(b, g.tasks, name=f"{name}.item") as t:
                b.call(task, [slots, t])


def _min(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _max(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)


class _Units:
    """One work item: its units (or, for the merge, its groups of partial results)."""

    def __init__(self, ctx: NodeCtx, g: Geometry, env: dict[str, ir.Value]):
        self.ctx, self.g, self.e = ctx, g, env
        self.b: ir.IRBuilder = env["builder"]

    # ---- layout of the scratch ------------------------------------------------------------------------------------

    def slot(self, t: ir.Value) -> None:
        """This item's arrays: in the scratch buffer, or (no scratch result) on this task's stack."""
        b, g, R = self.b, self.g, self.g.q_block
        if g.scratch:
            base = gep(b, self.e["scratch"], b.mul(t, i64(g.task_floats())), F32)
        else:
            base = entry_alloca(b, ir.ArrayType(F32, g.task_floats()), "slot")
        self.qs = base
        self.sc = gep(b, base, i64(R * g.dp), F32)
        self.acc = gep(b, base, i64(R * (g.dp + g.kv_block)), F32)
        self.m = gep(b, base, i64(R * (g.dp + g.kv_block + g.dvp)), F32)
        self.lsum = gep(b, self.m, i64(R), F32)
        # per row: end of its keys, mask row, Y row, alpha bits, whether it falls back to every key (finite mask_value)
        self.meta = entry_alloca(b, ir.ArrayType(I64, META * R), "rowmeta")
        self.hi = entry_alloca(b, I64, "unit_end")

    def partial(self, u: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(acc, m, l) of split-K partial result u, after the items' slots."""
        b, g, R = self.b, self.g, self.g.q_block
        at = b.add(i64(g.tasks * g.task_floats()), b.mul(u, i64(g.partial_floats())))
        acc = gep(b, self.e["scratch"], at, F32)
        m = gep(b, acc, i64(R * g.dvp), F32)
        return acc, m, gep(b, m, i64(R), F32)

    # ---- the units ------------------------------------------------------------------------------------------------

    def item(self, t: ir.Value) -> None:
        b, e = self.b, self.e
        self.slot(t)
        units = b.mul(e["base"], e["splits"])
        lo = b.udiv(b.mul(t, units), i64(self.g.tasks))
        hi = b.udiv(b.mul(b.add(t, i64(1)), units), i64(self.g.tasks))
        with for_range(b, hi, start=lo, name="unit") as u:
            self.unit(u)

    def unit(self, u: ir.Value) -> None:
        b, g, e = self.b, self.g, self.e
        split = b.urem(u, e["splits"])
        rest = b.udiv(u, e["splits"])
        rb = b.urem(rest, e["blocks"])
        bh = b.udiv(rest, e["blocks"])  # batch * kv_heads + kv head
        bi, kvh = b.udiv(bh, i64(g.kv_heads)), b.urem(bh, i64(g.kv_heads))
        b.store(i64(0), self.hi)
        with for_range(b, e["per_unit"], name="row") as r:
            self.setup_row(r, b.add(b.mul(rb, e["per_unit"]), r), bi, kvh)
        ks = b.mul(split, e["span"])
        ke = _min(b, b.add(ks, e["span"]), b.load(self.hi, typ=I64))
        with for_range(b, ke, start=ks, step=g.kv_block, name="kb") as kb:
            self.key_block(bh, kb, _min(b, i64(g.kv_block), b.sub(ke, kb)))
        with b.if_else(b.icmp_unsigned(">", e["splits"], i64(1))) as (split_k, whole):
            with split_k:
                acc, m, lsum = self.partial(u)
                with for_range(b, e["per_unit"], name="keep") as r:
                    b.store(b.load(gep(b, self.m, r, F32), typ=F32), gep(b, m, r, F32))
                    b.store(b.load(gep(b, self.lsum, r, F32), typ=F32), gep(b, lsum, r, F32))
                    for c in range(g.dvp // L):
                        at = b.add(b.mul(r, i64(g.dvp)), i64(c * L))
                        b.store(b.load(gep(b, self.acc, at, F32), typ=VT, align=4), gep(b, acc, at, F32), align=4)
            with whole:
                with for_range(b, e["per_unit"], name="fin") as r:
                    row = b.add(b.mul(r, i64(g.dvp)), i64(0))
                    self.finish_row(b.load(gep(b, self.m, r, F32), typ=F32), b.load(gep(b, self.lsum, r, F32), typ=F32),
                                    lambda c, row=row: b.load(gep(b, self.acc, b.add(row, i64(c * L)), F32), typ=VT, align=4),
                                    b.load(gep(b, self.meta, b.add(b.mul(r, i64(META)), i64(2)), I64), typ=I64))

    def setup_row(self, r: ir.Value, t_row: ir.Value, bi: ir.Value, kvh: ir.Value) -> None:
        """Row r of the unit (query row t_row of this kv head; past the last row, the last row again): Q * scale into
        qs, its allowed key range, mask row and Y row, and an empty running state."""
        b, g, e = self.b, self.g, self.e
        t_row = _min(b, t_row, b.sub(e["rows"], i64(1)))
        h = b.add(b.mul(kvh, i64(g.group)), b.urem(t_row, i64(g.group)))
        i = b.udiv(t_row, i64(g.group))
        q_row = b.add(b.mul(b.add(b.mul(bi, i64(g.heads)), h), e["sq"]), i)
        scale = const_vec(VT, g.scale)
        for c in range(g.dp // L):
            x = _load(b, e["q"], b.add(b.mul(q_row, i64(g.d)), i64(c * L)), min(L, g.d - c * L))
            b.store(b.fmul(x, scale), gep(b, self.qs, b.add(b.mul(r, i64(g.dp)), i64(c * L)), F32), align=4)
        end = e["total"]
        if g.causal:  # query i sits at past + i
            end = _min(b, end, b.add(b.add(e["past"], i), i64(1)))
        if g.mask is not None:
            end = _min(b, end, e["mask_keys"])
        mask_row = b.add(b.add(b.mul(bi, e["ms0"]), b.mul(h, e["ms1"])), b.mul(i, e["ms2"]))
        fallback = i64(0)
        if g.mask is DType.BOOL and g.mask_value != NEG_INF:  # no true key before the end: every covered key
            none = b.icmp_unsigned("==", self.any_true(mask_row, end), ir.Constant(I1, 0))
            end = b.select(none, _min(b, e["total"], e["mask_keys"]), end)
            fallback = b.zext(none, I64)
        for k, v in ((0, end), (1, mask_row), (2, b.mul(q_row, i64(g.dv))), (4, fallback)):
            b.store(v, gep(b, self.meta, b.add(b.mul(r, i64(META)), i64(k)), I64))
        b.store(_max(b, b.load(self.hi, typ=I64), end), self.hi)
        b.store(ir.Constant(F32, NEG_INF), gep(b, self.m, r, F32))
        b.store(ir.Constant(F32, 0.0), gep(b, self.lsum, r, F32))
        for c in range(g.dvp // L):
            b.store(const_vec(VT, 0.0), gep(b, self.acc, b.add(b.mul(r, i64(g.dvp)), i64(c * L)), F32), align=4)

    def any_true(self, mask_row: ir.Value, end: ir.Value) -> ir.Value:
        """Whether the boolean mask row has a true entry among keys [0, end) (16 bytes at a time)."""
        b, vt = self.b, ir.VectorType(I8, L)
        seen = entry_alloca(b, vt, "seen")
        b.store(const_vec(vt, 0), seen)
        iota = ir.Constant(ir.VectorType(I64, L), [ir.Constant(I64, k) for k in range(L)])
        with for_range(b, end, step=L, name="any") as j:
            lanes = b.icmp_signed("<", b.add(splat(b, j, L), iota), splat(b, end, L))
            b.store(b.or_(b.load(seen, typ=vt), masked_load(b, self.e["mask"], b.add(mask_row, j), vt, lanes, 0)), seen)
        return b.icmp_unsigned("!=", hreduce(b, "max", b.load(seen, typ=vt)), ir.Constant(I8, 0))

    # ---- one block of keys ----------------------------------------------------------------------------------------

    def key_row(self, bh: ir.Value, j: ir.Value, which: str) -> ir.Value:
        """Pointer to key (which="k") or value ("v") row j of the unit's kv head."""
        b, g, e = self.b, self.g, self.e
        d = g.d if which == "k" else g.dv
        base = e[which]
        if not g.two_sources:
            return gep(b, base, b.mul(b.add(b.mul(bh, e["kstride"]), j), i64(d)), F32)
        new = gep(b, base, b.mul(b.add(b.mul(bh, e["kstride"]), b.sub(j, e["past"])), i64(d)), F32)
        old = gep(b, e["p" + which], b.mul(b.add(b.mul(bh, e["past"]), j), i64(d)), F32)
        return b.select(b.icmp_signed("<", j, e["past"]), old, new)

    def key_block(self, bh: ir.Value, kb: ir.Value, n: ir.Value) -> None:
        """Keys [kb, kb + n) for every row: scores, the online update, then P V."""
        b, g = self.b, self.g
        if g.two_sources:  # each key's row from the past or the new buffer: addresses key by key
            self.score_rows(bh, kb, n, clamp=True)
        else:  # a whole block reads contiguous rows at constant offsets; the last, partial one clamps its keys
            with b.if_else(b.icmp_signed("==", n, i64(g.kv_block)), likely=True) as (whole, partial):
                with whole:
                    self.score_rows(bh, kb, n, clamp=False)
                with partial:
                    self.score_rows(bh, kb, n, clamp=True)
        finite = self.values_finite(bh, kb, n)
        with b.if_else(finite, likely=True) as (fast, guarded):
            with fast:
                self.weighted_sum(bh, kb, n, guard=False)
            with guarded:
                self.weighted_sum(bh, kb, n, guard=True)

    def score_rows(self, bh: ir.Value, kb: ir.Value, n: ir.Value, clamp: bool) -> None:
        """For every row: the scores of keys [kb, kb + n) and the online update (max, alpha, p = exp, total)."""
        b, g = self.b, self.g
        groups = g.kv_block // L
        last = b.sub(b.add(kb, n), i64(1))  # the block's last key (n >= 1)
        with for_range(b, self.e["per_unit"], name="sr") as r:
            meta = gep(b, self.meta, b.mul(r, i64(META)), I64)
            end = _min(b, b.load(meta, typ=I64), b.add(kb, n))
            q = [b.load(gep(b, self.qs, b.add(b.mul(r, i64(g.dp)), i64(c * L)), F32), typ=VT, align=4) for c in range(g.dp // L)]
            top = const_vec(VT, NEG_INF)
            row_sc = b.mul(r, i64(g.kv_block))
            for grp in range(groups):  # (each group's scores go to memory at once: 16 accumulators need the registers)
                s = self.scores16(bh, q, b.add(kb, i64(grp * L)), end, last if clamp else None,
                                  b.load(gep(b, meta, i64(1), I64), typ=I64), b.load(gep(b, meta, i64(4), I64), typ=I64))
                b.store(s, gep(b, self.sc, b.add(row_sc, i64(grp * L)), F32), align=4)
                top = vmax(b, top, s)
            m_old = b.load(gep(b, self.m, r, F32), typ=F32)
            m_new = intrinsic(b, "llvm.maximum.f32", F32, [m_old, hreduce(b, "max", top)])  # NaN wins, as np.max
            m_safe = b.select(b.fcmp_ordered("==", m_new, ir.Constant(F32, NEG_INF)), ir.Constant(F32, 0.0), m_new)
            alpha = mathfns.exp_f32(b, b.fsub(m_old, m_safe))
            total = const_vec(VT, 0.0)
            for grp in range(groups):
                at = gep(b, self.sc, b.add(row_sc, i64(grp * L)), F32)
                s = b.load(at, typ=VT, align=4)
                p = b.select(b.fcmp_ordered("==", s, const_vec(VT, NEG_INF)), const_vec(VT, -0.0),
                             mathfns.exp_f32(b, b.fsub(s, splat(b, m_safe, L))))
                b.store(p, at, align=4)
                total = b.fadd(total, p)
            lsum = gep(b, self.lsum, r, F32)
            b.store(b.fadd(b.fmul(b.load(lsum, typ=F32), alpha), hreduce(b, "add", total)), lsum)
            b.store(m_new, gep(b, self.m, r, F32))
            b.store(b.bitcast(alpha, I32), b.bitcast(gep(b, meta, i64(3), I64), PTR))

    def scores16(self, bh: ir.Value, q: list[ir.Value], j0: ir.Value, end: ir.Value, last: ir.Value | None,
                 mask_row: ir.Value, fallback: ir.Value) -> ir.Value:
        """Scores of keys j0 .. j0 + 15 for one row: -inf where not allowed (past the row's end, masked); a fallback
        row (finite mask_value, no true key) takes every key before its end, each plus mask_value."""
        b, g, e = self.b, self.g, self.e
        iota = ir.Constant(ir.VectorType(I64, L), [ir.Constant(I64, k) for k in range(L)])
        keys = b.add(splat(b, j0, L), iota)
        allowed = b.icmp_signed("<", keys, splat(b, end, L))
        sums = []
        first = self.key_row(bh, j0, "k") if last is None else None
        for k in range(L):  # (clamped: keys past the block read its last key instead, never outside the buffer)
            row = gep(b, first, i64(k * g.d), F32) if last is None else self.key_row(bh, _min(b, b.add(j0, i64(k)), last), "k")
            acc = None
            for c in range(g.dp // L):
                kx = _load(b, row, i64(c * L), min(L, g.d - c * L))
                acc = b.fmul(q[c], kx) if acc is None else mathfns.fma(b, q[c], kx, acc)
            sums.append(acc)
        s = lane_sums(b, sums)
        if g.softcap:
            cap = const_vec(VT, g.softcap)
            s = b.fmul(mathfns.tanh_f32(b, b.fdiv(s, cap)), cap)
        if g.mask is DType.BOOL:
            raw = masked_load(b, e["mask"], b.add(mask_row, j0), ir.VectorType(I8, L), allowed, 0)
            true = b.icmp_unsigned("!=", raw, const_vec(ir.VectorType(I8, L), 0))
            if g.mask_value != NEG_INF:
                every = b.icmp_unsigned("!=", fallback, i64(0))
                true = b.or_(true, splat(b, every, L))
                s = b.select(every, b.fadd(s, const_vec(VT, g.mask_value)), s)
            allowed = b.and_(allowed, true)
        elif g.mask is DType.F32:
            mv = masked_load(b, e["mask"], b.add(mask_row, j0), VT, allowed, 0.0)
            allowed = b.and_(allowed, b.fcmp_unordered("!=", mv, const_vec(VT, NEG_INF)))
            s = b.fadd(s, mv)
        return b.select(allowed, s, const_vec(VT, NEG_INF))

    def values_finite(self, bh: ir.Value, kb: ir.Value, n: ir.Value) -> ir.Value:
        """Whether every value in rows [kb, kb + n) is finite (else the guarded P V keeps masked keys out)."""
        b, g = self.b, self.g
        worst = entry_alloca(b, ir.VectorType(I32, L), "vworst")
        b.store(const_vec(ir.VectorType(I32, L), 0), worst)
        with for_range(b, b.add(kb, n), start=kb, name="vf") as j:
            row = self.key_row(bh, j, "v")
            m = b.load(worst, typ=ir.VectorType(I32, L))
            for c in range(g.dvp // L):
                bits = b.and_(b.bitcast(_load(b, row, i64(c * L), min(L, g.dv - c * L)), ir.VectorType(I32, L)),
                              const_vec(ir.VectorType(I32, L), 0x7FFFFFFF))
                m = b.select(b.icmp_unsigned(">", bits, m), bits, m)
            b.store(m, worst)
        return b.icmp_unsigned("<", hreduce(b, "max", b.load(worst, typ=ir.VectorType(I32, L))), ir.Constant(I32, 0x7F800000))

    def weighted_sum(self, bh: ir.Value, kb: ir.Value, n: ir.Value, guard: bool) -> None:
        """acc[r] = acc[r] * alpha[r] + sum_j p[r][j] V[kb + j], tiles of 4 rows x up to 4 chunks in registers.
        guard: a key whose p is -0 (not allowed) adds exactly nothing, whatever its value."""
        b, g, count = self.b, self.g, self.e["per_unit"]
        tile = min(4, g.q_block)
        nv = g.dvp // L
        width = max(1, min(nv, 16 // tile))
        last = b.sub(count, i64(1))
        with for_range(b, b.udiv(b.add(count, i64(tile - 1)), i64(tile)), name="pt") as rt:
            rows = [_min(b, b.add(b.mul(rt, i64(tile)), i64(r)), last) for r in range(tile)]
            alphas = [splat(b, b.bitcast(b.load(b.bitcast(gep(b, self.meta, b.add(b.mul(r, i64(META)), i64(3)), I64), PTR),
                                                  typ=I32), F32), L) for r in rows]
            for c0 in range(0, nv, width):
                chunks = range(c0, min(nv, c0 + width))
                slots = [[entry_alloca(b, VT, f"pv{r}.{c - c0}") for c in chunks] for r in range(tile)]
                for r, row in enumerate(rows):
                    for c in chunks:
                        at = gep(b, self.acc, b.add(b.mul(row, i64(g.dvp)), i64(c * L)), F32)
                        b.store(b.fmul(b.load(at, typ=VT, align=4), alphas[r]), slots[r][c - c0])
                with for_range(b, n, name="pj") as j:
                    vrow = self.key_row(bh, b.add(kb, j), "v")
                    vx = [_load(b, vrow, i64(c * L), min(L, g.dv - c * L)) for c in chunks]
                    for r, row in enumerate(rows):
                        p = b.load(gep(b, self.sc, b.add(b.mul(row, i64(g.kv_block)), j), F32), typ=F32)
                        ps = splat(b, p, L)
                        for c, x in zip(chunks, vx):
                            slot = slots[r][c - c0]
                            if guard:
                                masked = b.icmp_unsigned("==", b.bitcast(p, I32), ir.Constant(I32, 0x80000000))
                                add = b.select(masked, const_vec(VT, 0.0), b.fmul(ps, x))
                                b.store(b.fadd(b.load(slot, typ=VT), add), slot)
                            else:
                                b.store(mathfns.fma(b, ps, x, b.load(slot, typ=VT)), slot)
                for r, row in enumerate(rows):
                    for c in chunks:
                        at = gep(b, self.acc, b.add(b.mul(row, i64(g.dvp)), i64(c * L)), F32)
                        b.store(b.load(slots[r][c - c0], typ=VT), at, align=4)

    # ---- results --------------------------------------------------------------------------------------------------

    def finish_row(self, m: ir.Value, lsum: ir.Value, acc_chunk, y_row: ir.Value) -> None:
        """Y row = acc / l; zero when no key was allowed (m = -inf), or, with nan_to_zero, when m is NaN or +inf."""
        b, g = self.b, self.g
        zero_row = b.fcmp_ordered("==", m, ir.Constant(F32, NEG_INF))
        if g.nan_to_zero:
            zero_row = b.or_(zero_row, b.fcmp_unordered(">=", mathfns.fabs(b, m), ir.Constant(F32, float("inf"))))
        denom = splat(b, b.select(b.fcmp_ordered("==", lsum, ir.Constant(F32, 0.0)), ir.Constant(F32, 1.0), lsum), L)
        for c in range(g.dvp // L):
            y = b.select(zero_row, const_vec(VT, 0.0), b.fdiv(acc_chunk(c), denom))
            store_prefix16(b, y, self.e["y"], b.add(y_row, i64(c * L)), min(L, g.dv - c * L))

    def merge_item(self, t: ir.Value) -> None:
        """Split-K: for this item's share of the (batch, kv head, row block) groups, combine the partials."""
        b, g, e = self.b, self.g, self.e
        lo = b.udiv(b.mul(t, e["base"]), i64(g.tasks))
        hi = b.udiv(b.mul(b.add(t, i64(1)), e["base"]), i64(g.tasks))
        total_acc = entry_alloca(b, ir.ArrayType(F32, g.dvp), "macc")
        with for_range(b, hi, start=lo, name="grp") as grp:
            rb, bh = b.urem(grp, e["blocks"]), b.udiv(grp, e["blocks"])
            bi, kvh = b.udiv(bh, i64(g.kv_heads)), b.urem(bh, i64(g.kv_heads))
            with for_range(b, e["per_unit"], name="mr") as r:
                t_row = _min(b, b.add(b.mul(rb, e["per_unit"]), r), b.sub(e["rows"], i64(1)))
                h = b.add(b.mul(kvh, i64(g.group)), b.urem(t_row, i64(g.group)))
                q_row = b.add(b.mul(b.add(b.mul(bi, i64(g.heads)), h), e["sq"]), b.udiv(t_row, i64(g.group)))
                first = b.mul(grp, e["splits"])
                top = entry_alloca(b, F32, "mtop")
                b.store(ir.Constant(F32, NEG_INF), top)
                with for_range(b, b.add(first, e["splits"]), start=first, name="ms") as u:
                    _, m, _ = self.partial(u)
                    b.store(intrinsic(b, "llvm.maximum.f32", F32, [b.load(top, typ=F32), b.load(gep(b, m, r, F32), typ=F32)]), top)
                mt = b.load(top, typ=F32)
                m_safe = b.select(b.fcmp_ordered("==", mt, ir.Constant(F32, NEG_INF)), ir.Constant(F32, 0.0), mt)
                lsum = entry_alloca(b, F32, "mlsum")
                b.store(ir.Constant(F32, 0.0), lsum)
                for c in range(g.dvp // L):
                    b.store(const_vec(VT, 0.0), gep(b, total_acc, i64(c * L), F32), align=4)
                with for_range(b, b.add(first, e["splits"]), start=first, name="mu") as u:
                    acc, m, ls = self.partial(u)
                    w = mathfns.exp_f32(b, b.fsub(b.load(gep(b, m, r, F32), typ=F32), m_safe))
                    b.store(b.fadd(b.load(lsum, typ=F32), b.fmul(b.load(gep(b, ls, r, F32), typ=F32), w)), lsum)
                    ws = splat(b, w, L)
                    for c in range(g.dvp // L):
                        dst = gep(b, total_acc, i64(c * L), F32)
                        src = gep(b, acc, b.add(b.mul(r, i64(g.dvp)), i64(c * L)), F32)
                        b.store(mathfns.fma(b, b.load(src, typ=VT, align=4), ws, b.load(dst, typ=VT, align=4)), dst, align=4)
                self.finish_row(mt, b.load(lsum, typ=F32),
                                lambda c: b.load(gep(b, total_acc, i64(c * L), F32), typ=VT, align=4),
                                b.mul(q_row, i64(g.dv)))


def _load(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, count: int) -> ir.Value:
    """16 f32 from &ptr[index]; only the first `count` are read, the rest are 0."""
    lanes = None if count >= L else const_vec(ir.VectorType(I1, L), [int(k < count) for k in range(L)])
    return masked_load(b, ptr, index, VT, lanes, 0.0)


__all__ = ["MIN_SPLIT_KEYS", "kernel"]

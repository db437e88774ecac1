"""The fast path of the Attention lowering (ops/attention.py): f32, no softcap, no qk output; any mask, causal or
windowed, past cache, valid lengths. Work units are blocks of query rows that share a kv head (query heads of a
group and query positions), split over the thread pool; per unit:

    bias    the mask and the allowed key range per row, 16 keys at a time; which key blocks some row can see
    scores  q . K[j] as vectors over the head dim for 16 keys, the 16 sums by a shuffle tree, * sqrt(scale) + bias
    softmax max, e = exp(s - max) (mathfns' vector exp), sum
    P V     Y = (sum_j e[j] V[j]) / sum, in register tiles of rows x head-dim chunks

Key blocks no row of a unit can see are skipped only where the interpreter's result provably does not depend on
them (finite K and V there, no overflow in q . k): a NaN anywhere in a row's keys still makes the row NaN. Logits
are (q * sqrt(scale)) . K * sqrt(scale) where the interpreter scales K first: equal up to rounding, except where the
products overflow f32.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ....ir.types import DType
from .. import mathfns
from ..builder import F32, I1, I8, I32, I64, PTR, VOID, for_range, gep, i64, intrinsic, linear_index, suffix
from ..context import Buf, NodeCtx
from ..elementwise import parallel_range
from ..kernels.vec import const_vec, entry_alloca, splat
from .reduce_runs import hreduce

if TYPE_CHECKING:
    from .attention import _Attention

L = 16  # f32 lanes of a head-dim chunk
META = 6  # i64 slots of row data
MAX_ROWS = 16  # query rows per work unit
MAX_SCORES_BYTES = 1 << 20  # one unit's rows of scores live on the stack: past this, the general loop nest
NEG_INF = -math.inf


def fits(at: _Attention) -> bool:
    """Whether the node takes the fast path (the general loop nest of ops/attention.py handles the rest)."""
    return (at.dt is DType.F32 and at.sp is DType.F32 and not at.softcap and at.qk_out is None and at.total > 0
            and at.y.numel > 0 and 4 * _pad(at.total, 16) <= MAX_SCORES_BYTES)


def _pad(n: int, m: int) -> int:
    return -(-n // m) * m


def emit(ctx: NodeCtx, at: _Attention) -> None:
    """Call the kernel for this node's shapes and attributes, emitted once per module: a model's identical layers
    share it (it is most of their code, and of its compile time)."""
    # with a cache, keys and values are read from present_key / present_value (written first): one contiguous run
    k, v, past_k, past_v = at.k, at.v, at.past_k, at.past_v
    from_present = past_k is not None and at.present_k is not None and at.present_v is not None
    if from_present:
        k, v, past_k, past_v = at.present_k, at.present_v, None, None
    operands = [at.q, k, v, at.mask, past_k, past_v, at.nonpad]
    # (the past length too: it places the queries, and K may come from present_key of the same type as another's K)
    key = ("attention", tuple(None if x is None else x.type for x in operands), at.y.type, at.past,
           tuple(sorted(ctx.attrs.items())))
    fn = ctx.m.cache.get(key)
    if fn is None:
        fn = ir.Function(ctx.module, ir.FunctionType(VOID, [PTR] * (sum(x is not None for x in operands) + 1)),
                         f"tritc.attention.{sum(1 for k in ctx.m.cache if k[0] == 'attention')}")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        for a in fn.args:
            a.add_attribute("noalias")
        args = iter(fn.args)
        ins = [None if x is None else Buf(next(args), x.type) for x in operands]
        y = Buf(next(args), at.y.type)
        kctx = NodeCtx(ctx.m, ir.IRBuilder(fn.append_basic_block("entry")), ctx.node, ins, [y], [], ctx.index)
        view = copy.copy(at)  # the node's geometry, reading this function's parameters
        view.q, view.k, view.v, view.mask, view.past_k, view.past_v, view.nonpad = ins
        view.y = y
        if from_present:
            view.ks, view.vs = ins[1].strides, ins[2].strides
        _Kernel(kctx, view).emit()
        kctx.b.ret_void()
        ctx.m.cache[key] = fn
    ctx.b.call(fn, [x.ptr for x in operands if x is not None] + [at.y.ptr])


class _Kernel:
    def __init__(self, ctx: NodeCtx, at: _Attention):
        self.ctx, self.at = ctx, at
        a = ctx.attrs
        wide = ctx.target.isa == "avx512vnni"
        self.kb = 16 if wide else 8  # keys per score block: that many vector accumulators, then the tree
        vregs = 16 if wide else 6  # P V accumulators (of 16 lanes) a unit keeps in registers
        self.group = at.hq // at.hkv
        self.nrows = self.group * at.sq  # query rows per kv head: (query head of the group, position)
        self.tpad = _pad(at.total, self.kb)
        self.nblk, self.nfull, self.tail = self.tpad // self.kb, at.total // self.kb, at.total % self.kb
        self.blocks, self.rows = self.row_blocks(at.batch * at.hkv, max(1, min(MAX_ROWS, MAX_SCORES_BYTES // (4 * self.tpad))))
        self.nq, self.nv = -(-at.dk // L), -(-at.dv // L)
        self.tile = min(4, self.rows)  # P V: rows x chunks of 16 accumulators in registers
        self.chunks = max(1, min(self.nv, vregs // self.tile))
        self.vt = ir.VectorType(F32, L)
        self.st = ir.VectorType(F32, self.kb)
        self.vi = ir.VectorType(I32, L)
        self.interval = bool(a["is_causal"]) or a["left_window_size"] >= 0 or a["right_window_size"] >= 0 or at.nonpad is not None
        self.masked = self.interval or at.mask is not None
        # whether a row may see no key of some block (which is then skipped); causal queries that come last never do
        self.may_skip = at.mask is not None or at.nonpad is not None or a["left_window_size"] >= 0 \
            or a["right_window_size"] >= 0 or (bool(a["is_causal"]) and at.sq > 1)
        self.restrict = self.may_skip and (at.mask is None or at.mask.dtype is DType.BOOL)

    def row_blocks(self, heads: int, most: int) -> tuple[int, int]:
        """(blocks per kv head, rows per block): blocks of at most `most` rows (more rows share each K block and V row),
        but enough units for the threads, and sizes that leave little to repeat in the last block."""
        blocks = -(-self.nrows // most)
        while heads * blocks < 4 * self.ctx.m.threads and blocks < self.nrows and -(-self.nrows // blocks) > 4:
            blocks *= 2
        blocks = min(blocks, self.nrows)
        return blocks, -(-self.nrows // blocks)

    def emit(self) -> None:
        at = self.at
        units = at.batch * at.hkv * self.blocks
        work = self.rows * at.total * (at.dk + at.dv + 12)  # about one per multiply-add, a dozen per key for the rest
        parallel_range(self.ctx, units, work, self.part)

    # ---- one task: units [lo, hi) ---------------------------------------------------------------------------------

    def part(self, lo: ir.Value, hi: ir.Value) -> None:
        b, R = self.ctx.b, self.rows
        self.qs = entry_alloca(b, ir.ArrayType(F32, R * self.nq * L), "qs")  # Q rows * sqrt(scale), zero padded
        self.sc = entry_alloca(b, ir.ArrayType(F32, R * self.tpad), "scores")  # bias, then score, then exp(score - max)
        # per row: first and end allowed key, mask row, first and end block with a key whose bias is not -inf, Y row
        self.meta = entry_alloca(b, ir.ArrayType(I64, R * META), "rowmeta")
        self.maxv = entry_alloca(b, ir.ArrayType(self.st, R), "maxv")
        self.total_sum = entry_alloca(b, ir.ArrayType(F32, R), "sum")
        self.qmax = entry_alloca(b, self.vi, "qmax")  # f32 bits of max |q * sqrt(scale)| over the unit's rows
        self.span_slots = [entry_alloca(b, I64, "span_lo"), entry_alloca(b, I64, "span_hi")]
        self.allowed_slots = [entry_alloca(b, I64, "first_min"), entry_alloca(b, I64, "end_max")]  # over the unit's rows
        self.kvmax = [entry_alloca(b, I32, "kmax"), entry_alloca(b, I32, "vmax")]  # f32 bits of max |K|, max |V| skipped
        self.blkmax = entry_alloca(b, ir.ArrayType(I32, 4 * (self.nblk + 1)), "blkmax")  # prefix / suffix ones ...
        self.cached = entry_alloca(b, I64, "cached")  # ... of this batch * kv_heads + kv head
        b.store(i64(-1), self.cached)
        self.esum = entry_alloca(b, self.st, "esum")
        self.accs = [[entry_alloca(b, self.vt, f"acc{r}.{c}") for c in range(self.chunks)] for r in range(self.tile)]
        with for_range(b, hi, start=lo, name="unit") as u:
            self.unit(u)

    def unit(self, u: ir.Value) -> None:
        """Scores of the unit's rows over the key blocks [lo, hi) that some row can see (all of them unless skipping
        the others provably changes nothing, see `span`), softmax, then P V."""
        at, b, R = self.at, self.ctx.b, self.rows
        per_batch = at.hkv * self.blocks
        bi = b.udiv(u, i64(per_batch))
        kvh = b.udiv(b.urem(u, i64(per_batch)), i64(self.blocks))
        row0 = b.mul(b.urem(u, i64(self.blocks)), i64(R))
        # query i sits at absolute position i + offset (after the past cache, or after nonpad - q_len valid keys)
        limit = b.load(gep(b, at.nonpad.ptr, bi, I64), typ=I64) if at.nonpad is not None else None
        offset = b.sub(limit, i64(at.sq)) if limit is not None and at.past == 0 else i64(at.past)
        b.store(const_vec(self.vi, 0), self.qmax)
        b.store(i64(at.total), self.allowed_slots[0])
        b.store(i64(0), self.allowed_slots[1])
        with for_range(b, R, name="row") as r:  # the last block of a kv head repeats its last row (same values, same unit)
            t = b.add(row0, r)
            t = b.select(b.icmp_signed("<", t, i64(self.nrows)), t, i64(self.nrows - 1))
            h = b.add(b.mul(kvh, i64(self.group)), b.udiv(t, i64(at.sq)))
            i = b.urem(t, i64(at.sq))
            self.setup_row(r, bi, h, i, b.add(i, offset), limit)
        lo, hi = self.span(bi, kvh) if self.masked else (i64(0), i64(self.nblk))
        with for_range(b, b.select(b.icmp_signed("<", hi, i64(self.nfull)), hi, i64(self.nfull)), start=lo, name="kb") as jb:
            with for_range(b, R, name="qr") as r:
                self.score_block(r, bi, kvh, b.mul(jb, i64(self.kb)), self.kb)
        if self.tail:
            with b.if_then(b.icmp_signed("==", hi, i64(self.nblk))), for_range(b, R, name="qt") as r:
                self.score_block(r, bi, kvh, i64(self.nfull * self.kb), self.tail)
        with for_range(b, R, name="sr") as r:
            self.softmax_row(r, lo, hi)
        end = b.mul(hi, i64(self.kb))
        self.weighted_sum(bi, kvh, b.mul(lo, i64(self.kb)), b.select(b.icmp_signed("<", end, i64(at.total)), end, i64(at.total)))

    def setup_row(self, r: ir.Value, bi: ir.Value, h: ir.Value, i: ir.Value, pos: ir.Value, limit: ir.Value | None) -> None:
        """Q row * sqrt(scale) into qs[r] (and into the unit's max |q|); the row's allowed keys and mask row; max = -inf."""
        at, b = self.at, self.ctx.b
        qbase = linear_index(b, [bi, h, i], at.qs[:3])
        root = const_vec(self.vt, at.root)
        for c in range(self.nq):
            x = b.fmul(self.load_vec(at.q.ptr, b.add(qbase, i64(c * L)), min(L, at.dk - c * L), 0.0), root)
            b.store(x, gep(b, self.qs, b.add(b.mul(r, i64(self.nq * L)), i64(c * L)), F32), align=4)
            if self.masked:
                b.store(umax(b, b.load(self.qmax, typ=self.vi), abs_bits(b, x)), self.qmax)
        first, end = self.allowed_range(pos, limit)
        for slot, v, keep in ((self.allowed_slots[0], first, "<"), (self.allowed_slots[1], end, ">")):
            cur = b.load(slot, typ=I64)
            b.store(b.select(b.icmp_signed(keep, v, cur), v, cur), slot)
        mask_row = linear_index(b, [bi, h, i], at.mask_strides[:3]) if at.mask is not None else i64(0)
        meta = gep(b, self.meta, b.mul(r, i64(META)), I64)
        for k, v in ((0, first), (1, end), (2, mask_row), (5, linear_index(b, [bi, h, i], at.ys[:3]))):
            b.store(v, gep(b, meta, i64(k), I64))
        b.store(const_vec(self.st, NEG_INF), gep(b, self.maxv, r, self.st))

    def allowed_range(self, pos: ir.Value, limit: ir.Value | None) -> tuple[ir.Value, ir.Value]:
        """[first, end) of the keys causality, the window and the valid length allow, clamped to [0, total] (the
        comparisons avoid overflow for any nonpad value)."""
        a, b, total = self.at.ctx.attrs, self.ctx.b, self.at.total
        first, end = i64(0), i64(total)

        def lower_end(cap_at: int) -> None:  # end = min(end, pos + cap_at)
            nonlocal end
            v = b.select(b.icmp_signed(">=", pos, i64(total - cap_at)), i64(total), b.add(pos, i64(cap_at)))
            end = b.select(b.icmp_signed("<", v, end), v, end)

        if a["is_causal"]:
            lower_end(1)
        if a["right_window_size"] >= 0:
            lower_end(a["right_window_size"] + 1)
        if a["left_window_size"] >= 0:
            left = a["left_window_size"]
            first = b.select(b.icmp_signed("<=", pos, i64(left)), i64(0), b.sub(pos, i64(left)))
            first = b.select(b.icmp_signed(">", first, i64(total)), i64(total), first)
        if limit is not None:
            end = b.select(b.icmp_signed("<", limit, end), limit, end)
        end = b.select(b.icmp_signed("<", end, i64(0)), i64(0), end)
        return first, end

    # ---- which key blocks to visit --------------------------------------------------------------------------------

    def span(self, bi: ir.Value, kvh: ir.Value) -> tuple[ir.Value, ir.Value]:
        """Biases into the score rows, and the key blocks [lo, hi) where some row has a bias other than -inf.

        Outside them every score is -inf and every probability 0 -- provided the logits there are neither NaN nor
        +inf and the values are finite (0 * inf is NaN), as the interpreter sees them. That is checked on the keys
        skipped (max |K|, max |V|, and a bound on |q . k|); if it fails, every block is visited."""
        at, b, R, kb = self.at, self.ctx.b, self.rows, self.kb
        b.store(i64(self.nblk), self.span_slots[0])
        b.store(i64(0), self.span_slots[1])
        # Without a float mask, the bias is -inf outside the allowed keys: only the blocks of the rows' allowed keys
        # get biases (the rest are filled in should every block be visited after all).
        first, end = (b.load(s, typ=I64) for s in self.allowed_slots) if self.restrict else (i64(0), i64(at.total))
        blo, bhi = b.udiv(first, i64(kb)), b.udiv(b.add(end, i64(kb - 1)), i64(kb))
        with for_range(b, R, name="br") as r:
            meta = gep(b, self.meta, b.mul(r, i64(META)), I64)
            b.store(i64(self.nblk), gep(b, meta, i64(3), I64))
            b.store(i64(0), gep(b, meta, i64(4), I64))
            with for_range(b, b.select(b.icmp_signed("<", bhi, i64(self.nfull)), bhi, i64(self.nfull)), start=blo, name="bb") as jb:
                self.bias_block(r, meta, jb, kb)
            if self.tail:
                with b.if_then(b.icmp_signed("==", bhi, i64(self.nblk))):
                    self.bias_block(r, meta, i64(self.nfull), self.tail)
            for k, keep in ((3, "<"), (4, ">")):
                v, cur = b.load(gep(b, meta, i64(k), I64), typ=I64), b.load(self.span_slots[k - 3], typ=I64)
                b.store(b.select(b.icmp_signed(keep, v, cur), v, cur), self.span_slots[k - 3])
        lo, hi = (b.load(s, typ=I64) for s in self.span_slots)
        if not self.may_skip:  # every row sees the last key block, and the first unless it is fully masked
            return i64(0), i64(self.nblk)
        empty = b.icmp_signed(">=", lo, hi)  # every row fully masked: any key may be skipped
        lo, hi = b.select(empty, i64(0), lo), b.select(empty, i64(0), hi)
        skips = b.or_(b.icmp_signed(">", lo, i64(0)), b.icmp_signed("<", hi, i64(self.nblk)))
        for slot in self.kvmax:
            b.store(ir.Constant(I32, 0), slot)
        with b.if_then(skips):
            bkv = b.add(b.mul(bi, i64(at.hkv)), kvh)
            with b.if_then(b.icmp_signed("!=", b.load(self.cached, typ=I64), bkv)):
                self.block_maxima(bi, kvh)
                b.store(bkv, self.cached)
            for k, slot in enumerate(self.kvmax):  # blocks [0, lo) by the prefix maxima, [hi, nblk) by the suffix ones
                before, after = (b.load(gep(b, self.blkmax, b.add(b.mul(blk, i64(4)), i64(2 * k + side)), I32), typ=I32)
                                 for blk, side in ((lo, 0), (hi, 1)))
                b.store(umax(b, before, after), slot)
        kmax, vmax = (b.bitcast(b.load(s, typ=I32), F32) for s in self.kvmax)
        qmax = b.bitcast(hreduce(b, "max", b.load(self.qmax, typ=self.vi)), F32)
        bound = b.fmul(b.fmul(qmax, kmax), ir.Constant(F32, float(at.dk * at.root)))
        safe = b.and_(b.fcmp_ordered("<", vmax, ir.Constant(F32, math.inf)), b.fcmp_ordered("<", bound, ir.Constant(F32, 1e38)))
        safe = b.or_(safe, b.not_(skips))
        if self.restrict:
            with b.if_then(b.not_(safe)), for_range(b, R, name="fr") as r:
                for start, stop in ((i64(0), blo), (bhi, i64(self.nblk))):
                    with for_range(b, stop, start=start, name="fill") as jb:
                        at_block = gep(b, self.sc, b.add(b.mul(r, i64(self.tpad)), b.mul(jb, i64(kb))), F32)
                        b.store(const_vec(self.st, NEG_INF), at_block, align=4)
        return b.select(safe, lo, i64(0)), b.select(safe, hi, i64(self.nblk))

    def block_maxima(self, bi: ir.Value, kvh: ir.Value) -> None:
        """blkmax[blk] = (max |K| over blocks < blk, max |K| over blocks >= blk, the same for V), as f32 bits
        (NaN > inf > any finite); entries blk = 0 .. nblk."""
        at, b = self.at, self.ctx.b
        acc = entry_alloca(b, self.vi, "blkacc")

        def entry(blk: ir.Value, k: int, side: int) -> ir.Value:
            return gep(b, self.blkmax, b.add(b.mul(blk, i64(4)), i64(2 * k + side)), I32)

        for k in range(2):
            b.store(ir.Constant(I32, 0), entry(i64(0), k, 0))
            b.store(ir.Constant(I32, 0), entry(i64(self.nblk), k, 1))
        with for_range(b, self.nblk, name="mblk") as blk:  # each block's maxima into the suffix slots first
            j0 = b.mul(blk, i64(self.kb))
            stop = b.add(j0, i64(self.kb))
            stop = b.select(b.icmp_signed("<", stop, i64(at.total)), stop, i64(at.total))
            for k, (past, src, strides, d) in enumerate(((at.past_k, at.k, at.ks, at.dk), (at.past_v, at.v, at.vs, at.dv))):
                b.store(const_vec(self.vi, 0), acc)
                with for_range(b, stop, start=j0, name="mkey") as j:
                    row = self.kv_row(past, src, strides, d, bi, kvh, j)
                    m = b.load(acc, typ=self.vi)
                    for c in range(-(-d // L)):
                        m = umax(b, m, abs_bits(b, self.load_vec(row, i64(c * L), min(L, d - c * L), 0.0)))
                    b.store(m, acc)
                b.store(hreduce(b, "max", b.load(acc, typ=self.vi)), entry(blk, k, 1))
        with for_range(b, self.nblk, name="pre") as blk:  # scans: prefix maxima forwards, suffix maxima backwards
            back = b.sub(i64(self.nblk - 1), blk)
            for k in range(2):
                own = b.load(entry(blk, k, 1), typ=I32)
                b.store(umax(b, b.load(entry(blk, k, 0), typ=I32), own), entry(b.add(blk, i64(1)), k, 0))
                b.store(umax(b, b.load(entry(back, k, 1), typ=I32), b.load(entry(b.add(back, i64(1)), k, 1), typ=I32)),
                        entry(back, k, 1))

    def bias_block(self, r: ir.Value, meta: ir.Value, jb: ir.Value, count: int) -> None:
        """scores[r][block jb] = the bias: the mask (bool: 0 / -inf; float: its value; -inf past its end) plus -inf
        outside the allowed keys, as attention_bias builds it; widens the row's block range when a bias is not -inf."""
        at, b, kb = self.at, self.ctx.b, self.kb
        j0 = b.mul(jb, i64(kb))
        iota = ir.Constant(ir.VectorType(I32, kb), [ir.Constant(I32, k) for k in range(kb)])
        keys = b.add(splat(b, b.trunc(j0, I32), kb), iota)
        in_row = const_vec(ir.VectorType(I1, kb), [int(k < count) for k in range(kb)])  # keys past the end: never
        allowed = in_row
        if self.interval:
            first, end = (b.trunc(b.load(gep(b, meta, i64(k), I64), typ=I64), I32) for k in (0, 1))
            allowed = b.and_(allowed, b.and_(b.icmp_signed(">=", keys, splat(b, first, kb)), b.icmp_signed("<", keys, splat(b, end, kb))))
        zero, neg_inf = const_vec(self.st, 0.0), const_vec(self.st, NEG_INF)
        if at.mask is None:
            bias, live = b.select(allowed, zero, neg_inf), allowed
        else:
            mask, covered = at.mask, at.mask.shape[-1]
            row = b.load(gep(b, meta, i64(2), I64), typ=I64)
            # whole blocks inside the mask load plainly; others read only the keys it covers (-inf / false past them)
            inside = count == kb and covered >= self.nfull * kb
            lanes = None if inside else b.icmp_signed("<", keys, splat(b, ir.Constant(I32, covered), kb))
            if mask.dtype is DType.BOOL:
                raw = self.load_lanes(mask.ptr, b.add(row, j0), ir.VectorType(I8, kb), lanes, 0)
                live = b.and_(b.icmp_unsigned("!=", raw, const_vec(ir.VectorType(I8, kb), 0)), allowed)
                bias = b.select(live, zero, neg_inf)
            else:
                bias = b.fadd(self.load_lanes(mask.ptr, b.add(row, j0), self.st, lanes, NEG_INF), b.select(allowed, zero, neg_inf))
                live = b.and_(b.fcmp_unordered("!=", bias, neg_inf), in_row)  # NaN counts as not -inf, as in numpy
        b.store(bias, gep(b, self.sc, b.add(b.mul(r, i64(self.tpad)), j0), F32), align=4)
        any_live = intrinsic(b, f"llvm.vector.reduce.or.v{kb}i1", I1, [live])
        first_blk, end_blk = gep(b, meta, i64(3), I64), gep(b, meta, i64(4), I64)
        cur = b.load(first_blk, typ=I64)
        b.store(b.select(b.and_(any_live, b.icmp_signed("<", jb, cur)), jb, cur), first_blk)
        b.store(b.select(any_live, b.add(jb, i64(1)), b.load(end_blk, typ=I64)), end_blk)

    # ---- scores ---------------------------------------------------------------------------------------------------

    def kv_row(self, src_past: Buf | None, src: Buf, strides: list[int], d: int, bi: ir.Value, kh: ir.Value,
               j: ir.Value) -> ir.Value:
        """Pointer to key / value row j of kv head kh: from the past cache, then from the new K / V."""
        b, at = self.ctx.b, self.at
        if src_past is None:  # the new rows, or all of them (present_key / present_value)
            return gep(b, src.ptr, linear_index(b, [bi, kh, b.sub(j, i64(at.total - src.shape[-2]))], strides[:3]), F32)
        new = gep(b, src.ptr, linear_index(b, [bi, kh, b.sub(j, i64(at.past))], strides[:3]), F32)
        row = b.add(b.mul(b.add(b.mul(bi, i64(at.hkv)), kh), i64(at.past)), j)
        return b.select(b.icmp_signed("<", j, i64(at.past)), gep(b, src_past.ptr, b.mul(row, i64(d)), F32), new)

    def score_block(self, r: ir.Value, bi: ir.Value, kvh: ir.Value, j0: ir.Value, count: int) -> None:
        """scores[r][j0 : j0 + kb] = (qs[r] . K[j]) * sqrt(scale) + bias[j]; keys past `count` get -inf."""
        at, b, kb = self.at, self.ctx.b, self.kb
        qrow = b.mul(r, i64(self.nq * L))
        q = [b.load(gep(b, self.qs, b.add(qrow, i64(c * L)), F32), typ=self.vt, align=4) for c in range(self.nq)]
        sums = []
        for k in range(kb):
            if k >= count:
                sums.append(const_vec(self.vt, 0.0))
                continue
            krow = self.kv_row(at.past_k, at.k, at.ks, at.dk, bi, kvh, b.add(j0, i64(k)))
            acc = None
            for c in range(self.nq):
                kx = self.load_vec(krow, i64(c * L), min(L, at.dk - c * L), 0.0)
                acc = b.fmul(q[c], kx) if acc is None else mathfns.fma(b, q[c], kx, acc)
            sums.append(acc)
        score = b.fmul(lane_sums(b, sums), const_vec(self.st, at.root))
        at_scores = gep(b, self.sc, b.add(b.mul(r, i64(self.tpad)), j0), F32)
        if self.masked:  # the bias is -inf past the end too
            score = b.fadd(score, b.load(at_scores, typ=self.st, align=4))
        elif count < kb:  # keys past the end: -inf, so they neither win the max nor add to the sum
            score = b.select(const_vec(ir.VectorType(I1, kb), [int(k < count) for k in range(kb)]), score,
                             const_vec(self.st, NEG_INF))
        b.store(score, at_scores, align=4)
        slot = gep(b, self.maxv, r, self.st)
        b.store(vmax(b, b.load(slot, typ=self.st), score), slot)

    # ---- softmax and P V ------------------------------------------------------------------------------------------

    def softmax_row(self, r: ir.Value, lo: ir.Value, hi: ir.Value) -> None:
        """Blocks [lo, hi) of scores[r] -> exp(score - max) in place (max 0 when it is -inf), and their sum; zeros for
        a row with no allowed key (its probabilities are 0, as the interpreter sets them)."""
        b, st = self.ctx.b, self.st
        m = hreduce(b, "max", b.load(gep(b, self.maxv, r, st), typ=st))  # NaN-propagating, as np.max
        m = b.select(b.fcmp_ordered("==", m, ir.Constant(F32, NEG_INF)), ir.Constant(F32, 0.0), m)
        mv = splat(b, m, self.kb)
        live = b.icmp_signed(">", b.load(gep(b, self.meta, b.add(b.mul(r, i64(META)), i64(4)), I64), typ=I64), i64(0)) \
            if self.masked else None
        b.store(const_vec(st, 0.0), self.esum)
        row = b.mul(r, i64(self.tpad))
        with for_range(b, hi, start=lo, name="ex") as jb:
            p = gep(b, self.sc, b.add(row, b.mul(jb, i64(self.kb))), F32)
            e = mathfns.exp_f32(b, b.fsub(b.load(p, typ=st, align=4), mv))
            if live is not None:
                e = b.select(live, e, const_vec(st, 0.0))
            b.store(e, p, align=4)
            b.store(b.fadd(b.load(self.esum, typ=st), e), self.esum)
        b.store(hreduce(b, "add", b.load(self.esum, typ=st)), gep(b, self.total_sum, r, F32))

    def weighted_sum(self, bi: ir.Value, kvh: ir.Value, start: ir.Value, stop: ir.Value) -> None:
        """Y row r = sum_j e_r[j] V[j] / sum_r over keys [start, stop) (a zero sum divides by 1): tiles of a few rows
        by a few 16-lane chunks of the head dim, whose accumulators stay in registers."""
        at, b, tile = self.at, self.ctx.b, self.tile
        with for_range(b, -(-self.rows // tile), name="tile") as rt:
            r0 = b.mul(rt, i64(tile))  # a last partial tile repeats the unit's last row
            rows = [b.select(b.icmp_signed("<", b.add(r0, i64(r)), i64(self.rows)), b.add(r0, i64(r)), i64(self.rows - 1))
                    for r in range(tile)]
            for c0 in range(0, self.nv, self.chunks):
                chunks = range(c0, min(self.nv, c0 + self.chunks))
                for accs in self.accs:
                    for c in chunks:
                        b.store(const_vec(self.vt, 0.0), accs[c - c0])
                with for_range(b, stop, start=start, name="pv") as j:
                    vrow = self.kv_row(at.past_v, at.v, at.vs, at.dv, bi, kvh, j)
                    vx = [self.load_vec(vrow, i64(c * L), min(L, at.dv - c * L), 0.0) for c in chunks]
                    for r, accs in zip(rows, self.accs):
                        p = splat(b, b.load(gep(b, self.sc, b.add(b.mul(r, i64(self.tpad)), j), F32), typ=F32), L)
                        for c, x in zip(chunks, vx):
                            b.store(mathfns.fma(b, p, x, b.load(accs[c - c0], typ=self.vt)), accs[c - c0])
                for r, accs in zip(rows, self.accs):
                    s = b.load(gep(b, self.total_sum, r, F32), typ=F32)
                    s = splat(b, b.select(b.fcmp_ordered("==", s, ir.Constant(F32, 0.0)), ir.Constant(F32, 1.0), s), L)
                    ybase = b.load(gep(b, self.meta, b.add(b.mul(r, i64(META)), i64(5)), I64), typ=I64)
                    for c in chunks:
                        y = b.fdiv(b.load(accs[c - c0], typ=self.vt), s)
                        self.store_vec(y, at.y.ptr, b.add(ybase, i64(c * L)), min(L, at.dv - c * L))

    # ---- memory -----------------------------------------------------------------------------------------------------

    def load_vec(self, ptr: ir.Value, index: ir.Value, count: int, fill: float) -> ir.Value:
        """16 f32 from &ptr[index]; when count < 16 only the first count are read, the rest are `fill`."""
        lanes = None if count >= L else const_vec(ir.VectorType(I1, L), [int(k < count) for k in range(L)])
        return self.load_lanes(ptr, index, self.vt, lanes, fill)

    def load_lanes(self, ptr: ir.Value, index: ir.Value, vt: ir.VectorType, lanes: ir.Value | None, fill: float | int) -> ir.Value:
        return masked_load(self.ctx.b, ptr, index, vt, lanes, fill)

    def store_vec(self, v: ir.Value, ptr: ir.Value, index: ir.Value, count: int) -> None:
        store_prefix16(self.ctx.b, v, ptr, index, count)


def masked_load(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, vt: ir.VectorType, lanes: ir.Value | None,
                fill: float | int) -> ir.Value:
    """The vector at &ptr[index], only the lanes set in `lanes` read (the rest `fill`); all of them when None."""
    p = gep(b, ptr, index, vt.element)
    align = 1 if vt.element == I8 else 4
    if lanes is None:
        return b.load(p, typ=vt, align=align)
    return intrinsic(b, f"llvm.masked.load.{suffix(vt)}.p0", vt, [p, ir.Constant(I32, align), lanes, const_vec(vt, fill)])


def store_prefix16(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, index: ir.Value, count: int) -> None:
    """Store the first `count` of the 16 f32 lanes of v at &ptr[index] (a masked store below 16)."""
    p = gep(b, ptr, index, F32)
    if count >= L:
        b.store(v, p, align=4)
        return
    lanes = const_vec(ir.VectorType(I1, L), [int(k < count) for k in range(L)])
    intrinsic(b, f"llvm.masked.store.{suffix(v.type)}.p0", VOID, [v, p, ir.Constant(I32, 4), lanes])


def abs_bits(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """The bits of |x| as i32: ordered as the magnitudes, with inf above every finite value and NaN above inf."""
    return b.and_(b.bitcast(x, ir.VectorType(I32, x.type.count)), const_vec(ir.VectorType(I32, x.type.count), 0x7FFFFFFF))


def umax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_unsigned(">", x, y), x, y)


def vmax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """Lanewise max; NaN wins (llvm.maximum, as np.max)."""
    return intrinsic(b, f"llvm.maximum.{suffix(x.type)}", x.type, [x, y])


def lane_sums(b: ir.IRBuilder, vecs: list[ir.Value]) -> ir.Value:
    """A vector whose lane k is the sum of the lanes of vecs[k] (a power of two of them, at most their lane count):
    vectors are paired, each pair's groups halved by two shuffles and an add, until one vector of one lane per
    input is left (a 16x16 block costs 30 shuffles and 15 adds instead of 16 horizontal reductions)."""
    n = vecs[0].type.count
    layer, size = list(vecs), n  # every vector holds groups of `size` lanes, one group per input, in input order

    def halves(groups: int) -> tuple[list[int], list[int]]:
        lo = [g * size + k for g in range(groups) for k in range(size // 2)]
        return lo, [x + size // 2 for x in lo]

    while len(layer) > 1:
        lo, hi = halves(n // size)
        mlo = ir.Constant(ir.VectorType(I32, n), lo + [x + n for x in lo])
        mhi = ir.Constant(ir.VectorType(I32, n), hi + [x + n for x in hi])
        layer = [b.fadd(b.shuffle_vector(x, y, mlo), b.shuffle_vector(x, y, mhi)) for x, y in zip(layer[::2], layer[1::2])]
        size //= 2
    v, width = layer[0], n
    while size > 1:  # fewer inputs than lanes: fold the groups of the one vector left
        lo, hi = halves(width // size)
        v = b.fadd(b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, len(lo)), lo)),
                   b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, len(hi)), hi)))
        width //= 2
        size //= 2
    return v


__all__ = ["emit", "fits", "lane_sums", "masked_load", "store_prefix16"]

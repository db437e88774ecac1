"""fused_attention on the vector unit: scores by MM per KV head (its query heads together, so grouped-query heads
read each key and value once), scale, softcap, masks, softmax, MM with V; the cache appended to the present.

The capacity form (a 7th operand past_len, docs/GENERATE.md "The cache") is lowered for the value the size binding
gives it: the past inputs are buffers of `capacity` rows holding `past`, the present outputs are those buffers (the
same DRAM placement), and only the new rows [past, past + seq) are stored into them; the old rows are never moved.

Per batch and KV head, per block of query rows (whole heads of the group, or a run of positions of one head):
    LOAD Q rows -> VEC
    per tile of keys (as many as half the KV buffer holds, tiles alternating between its halves):
        LOAD K, V rows -> KV (from the past cache and the new rows); STORE them to present_key / present_value
            (in place: STORE only the new rows, at row past of the cache buffer)
        MM scores = Q K^T; * scale; softcap; allowed = bool mask (ACT) x causal (a 0/1 table in DRAM);
        scores of keys not allowed = -inf
        one tile:   m = max; p = exp(s - m); l = sum p; p / l; y = MM p V            (the interpreter's order)
        several:    online softmax: m' = max(m, max s); c = exp(m - m'); l = l c + sum exp(s - m');
                    acc = acc c + MM exp(s - m') V; finally y = acc / l
    STORE y rows
A row with no allowed key is zero. With a boolean mask and a finite mask_value, a row with no allowed key attends
to every key the mask covers, its scores plus mask_value (a first pass over the mask finds such rows). Rows whose
maximum score is NaN or +inf (nan_to_zero) are not special-cased: the device's inputs are finite.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.types import DType
from .config import FpgaConfig
from .isa import Buf, VFunc
from .lower_ctx import DTensor, LowerCtx, LoweringError, View, attrs_of, known_size, lowering, shape_of
from .lower_image import Placement
from .lower_operands import broadcast_strides, row_offsets

NEG_BIG = float(-np.finfo(np.float32).max)   # the running max starts here, not at -inf: exp(-inf - -inf) is NaN
NEG_INF = float("-inf")


def causal_table(ctx: LowerCtx, s: int, past: int, total: int) -> DTensor:
    """A 0/1 table [s, total]: key j is allowed for query i when j <= past + i (a preload, shared by layers)."""
    name = f"fpga.causal.{s}.{past}.{total}"
    if name not in ctx.dram:
        table = (np.arange(total)[None, :] <= past + np.arange(s)[:, None]).astype(np.float32)
        ctx.dram.preload(name, table, DType.F32)
    p = ctx.dram[name]
    return DTensor(p.addr, p.shape, p.dtype, True)


def lower_fused_attention(ctx: LowerCtx, node: Node) -> None:
    a = attrs_of(node)
    ins = list(node.inputs) + [None] * (7 - len(node.inputs))
    q, k, v = (ctx.tensor(x) for x in ins[:3])
    mask = ctx.tensor(ins[3]) if ins[3] is not None else None
    past_k = ctx.tensor(ins[4]) if ins[4] is not None else None
    past_v = ctx.tensor(ins[5]) if ins[5] is not None else None
    y = ctx.output(node.outputs[0])
    if len(node.outputs) > 1:
        ctx.output(node.outputs[1])                  # the scratch: no meaning, nothing written
    batch, heads, seq, d = q.shape
    kvh, new, dv = k.shape[1], k.shape[2], v.shape[3]
    in_place = ins[6] is not None
    past_rows = past_k.shape[2] if past_k is not None else 0     # rows of the past tensors (a buffer's capacity)
    past = _past_len(ctx, node) if in_place else past_rows     # rows that hold keys
    total = past + new
    presents: list[DTensor | None] = [None, None]
    for i in (2, 3):
        if len(node.outputs) > i:
            src = ((k, v) if past_k is None else (past_k, past_v))[i - 2]
            if past_k is None or in_place:
                # no cache: the present is the new keys / values themselves; in place: the past buffer, whose rows
                # [past, total) this node writes
                ctx.dram.add(node.outputs[i].name, Placement(src.addr, shape_of(node.outputs[i]), DType.F32))
                presents[i - 2] = src if in_place else None
            else:
                presents[i - 2] = ctx.output(node.outputs[i])
    if y.numel == 0 or total == 0:
        return
    group = heads // kvh
    plan = _plan(ctx, group, seq, d, dv, total, mask)
    att = _Attention(ctx, a, q, k, v, past_k, past_v, mask, y, presents, batch, heads, seq, d, kvh, new, dv, past,
                     total, group, plan, past_rows, in_place)
    for b in range(batch):
        for g in range(kvh):
            for bi, (h0, nh, i0, ni) in enumerate(plan["blocks"]):
                att.block(b, g, h0, nh, i0, ni, store_present=bi == 0)
    if att.whole is not None:
        ctx.keep(y, att.whole)


def _past_len(ctx: LowerCtx, node: Node) -> int:
    """The capacity form's past_len, from the size binding; checked against the buffers' capacity."""
    past = known_size(ctx.graph, node.inputs[6], ctx.sizes)
    reason = _in_place_reason(node, past)
    if reason is not None:
        raise LoweringError(f"{node.describe()} cannot run on the FPGA: {reason}")
    return past  # type: ignore[return-value]


def _in_place_reason(node: Node, past: int | None) -> str | None:
    """Why the capacity form of `node` cannot be lowered with past_len = `past` (None: it can)."""
    p = node.inputs[6]
    if past is None:
        return (f"an in-place cache whose length %{p.name} the sizes do not give (lower_nodes needs the size binding, "
                f"sizes=)")
    past_k, past_v = node.inputs[4], node.inputs[5]
    if past_k is None or past_v is None:
        return "past_len without past key / value buffers"
    for buf in (past_k, past_v):   # the present is the buffer itself: nothing else may see its old contents
        other = next((u for u in buf.users if u is not node and u.op != "shape"), None)
        if other is not None:
            return f"the cache buffer %{buf.name} is also read by {other.describe()}: the present is written into it"
    cap, new = shape_of(past_k)[2], shape_of(node.inputs[1])[2]
    if not 0 <= past <= cap - new:
        return f"past_len {past} plus the {new} new rows do not fit the cache's {cap} rows"
    for i in (2, 3):
        if len(node.outputs) > i and shape_of(node.outputs[i]) != shape_of(node.inputs[i + 2]):
            return f"present %{node.outputs[i].name} is not typed as its cache buffer %{node.inputs[i + 2].name}"
    return None


def value_stride(dv: int) -> int:
    """The words between V's rows in KV: odd, so that the weighted sum's lanes, which walk V down a column (`dv`
    apart), fall in distinct banks of the `vector_lanes` (a power of two) word banks. With `dv` a multiple of the
    banks (64, 128) every lane would read one bank: `vector_lanes` times the cycles (docs/HW.md, "Calibration")."""
    return dv | 1


def _plan(ctx: LowerCtx, group: int, seq: int, d: int, dv: int, total: int, mask: DTensor | None) -> dict:
    """Key tile rows and query blocks from the KV and VEC halves."""
    kv_half = ctx.half[Buf.KV]
    per_slot = kv_half // ctx.slots()
    dvs = value_stride(dv) if per_slot >= d + value_stride(dv) else dv   # the odd stride where a row of it fits
    kv_t = max(1, min(total, per_slot // (d + dvs)))
    vec = ctx.half[Buf.VEC] - 64

    def words(rows: int, kt: int) -> int:  # Q, scores, allowed, causal rows, acc, product, 6 columns
        return rows * (d + 3 * kt + 2 * dv + 6) + min(rows, seq) * kt

    while True:
        rows_max = vec // max(1, d + 3 * kv_t + 2 * dv + 6 + kv_t)
        if rows_max >= 1 or kv_t == 1:
            break
        kv_t = max(1, kv_t // 2)
    rows_max = max(1, rows_max)
    act_rows = ctx.half[Buf.ACT] // max(1, kv_t) if mask is not None else rows_max
    rows_max = max(1, min(rows_max, act_rows))
    blocks = []
    if seq <= rows_max:
        per = max(1, min(group, rows_max // seq))
        for h0 in range(0, group, per):
            blocks.append((h0, min(per, group - h0), 0, seq))
    else:
        for h0 in range(group):
            for i0 in range(0, seq, rows_max):
                blocks.append((h0, 1, i0, min(rows_max, seq - i0)))
    assert all(words(nh * ni, kv_t) <= vec for _, nh, _, ni in blocks)
    return {"kv_t": kv_t, "blocks": blocks, "rows": max(nh * ni for _, nh, _, ni in blocks), "dvs": dvs}


class _Attention:
    """The state of one fused_attention node's lowering: its tensors, attributes and working areas."""

    def __init__(self, ctx: LowerCtx, a: dict, q, k, v, past_k, past_v, mask, y, presents, batch, heads, seq, d,  # noqa: ANN001
                 kvh, new, dv, past, total, group, plan, past_rows, in_place) -> None:
        self.ctx, self.a = ctx, a
        self.q, self.k, self.v, self.past_k, self.past_v, self.mask, self.y, self.presents = \
            q, k, v, past_k, past_v, mask, y, presents
        self.batch, self.heads, self.seq, self.d, self.kvh, self.new, self.dv = batch, heads, seq, d, kvh, new, dv
        self.past, self.total, self.group = past, total, group
        self.past_rows, self.in_place = past_rows, in_place     # rows of a past tensor; a capacity-form buffer
        self.kv_t, rows = plan["kv_t"], plan["rows"]
        kt = self.kv_t
        vec, kv, act = ctx.arena(Buf.VEC), ctx.arena(Buf.KV), ctx.arena(Buf.ACT)
        self.dvs = plan["dvs"]
        self.tiles = [(kv.alloc(kt * d, "keys"), kv.alloc(kt * self.dvs, "values")) for _ in range(ctx.slots())]
        self.qa = vec.alloc(rows * d, "queries")
        self.sa = vec.alloc(rows * kt, "scores")
        self.ca = vec.alloc(rows * kt, "allowed")
        self.causal_a = vec.alloc(min(rows, seq) * kt, "causal")
        self.acc = vec.alloc(rows * dv, "output")
        self.tmp = vec.alloc(rows * dv, "product")
        self.m, self.l, self.mt, self.corr, self.fb, self.fbv = (vec.alloc(rows, "row") for _ in range(6))
        self.mask_a = act.alloc(rows * kt, "mask") if mask is not None and mask.dtype is DType.BOOL else None
        self.fmask_a = vec.alloc(rows * kt, "mask") if mask is not None and mask.dtype is not DType.BOOL else None
        self.causal = causal_table(ctx, seq, past, total) if a["causal"] and total - 1 > past else None
        self.covered = min(mask.shape[-1], total) if mask is not None else total
        self.fallback = mask is not None and mask.dtype is DType.BOOL and np.isfinite(a["mask_value"])
        if mask is not None:
            self.mask_st = broadcast_strides(mask.shape, (batch, heads, seq, mask.shape[-1]))
        self.turn = 0
        # the whole result in one VEC area when it fits: the next node may read it there
        self.whole = vec.alloc(y.numel, "result") if vec.free >= y.numel + 64 else None

    # ---- one block of query rows ---------------------------------------------------------------------------
    def block(self, b: int, g: int, h0: int, nh: int, i0: int, ni: int, store_present: bool) -> None:
        ctx, d, dv, kt = self.ctx, self.d, self.dv, self.kv_t
        rows = nh * ni
        head0 = g * self.group + h0
        qrow = (b * self.heads + head0) * self.seq + i0          # the block's first row of Q and Y
        qa = ctx.resident_at(self.q, qrow * d * 4)
        if qa is None:
            qa = self.qa
            ctx.load(Buf.VEC, qa, self.q, qrow * d * 4, rows, d, d * 4)
        yv = View(Buf.VEC, self.acc if self.whole is None else self.whole + qrow * dv, dv, 1)
        col = lambda addr: View(Buf.VEC, addr, 1, 0)  # noqa: E731 - a per-row column, broadcast along keys
        tiles = [(j0, min(kt, self.total - j0)) for j0 in range(0, self.total, kt)]
        if self.fallback:
            self._fallback_rows(b, head0, nh, i0, ni, tiles)
        single = len(tiles) == 1
        if not single:
            ctx.vop(VFunc.FILL, rows, 1, col(self.m), None, NEG_BIG)
            ctx.vop(VFunc.FILL, rows, 1, col(self.l), None, 0.0)
            ctx.vop(VFunc.FILL, rows, dv, View(Buf.VEC, self.acc, dv, 1), None, 0.0)
        for j0, jn in tiles:
            ka, va = self.tiles[self.turn % len(self.tiles)]
            self.turn += 1
            self._load_keys(b, g, j0, jn, ka, va, store_present)
            s = View(Buf.VEC, self.sa, jn, 1)
            ctx.vop(VFunc.MM, rows, jn, s, View(Buf.VEC, qa, d, 1), View(Buf.KV, ka, d, 1), depth=d)
            ctx.vop(VFunc.MUL, rows, jn, s, s, float(np.float32(self.a["scale"])))
            if self.a["softcap"] > 0:
                cap = float(np.float32(self.a["softcap"]))
                ctx.vop(VFunc.DIV, rows, jn, s, s, cap)
                ctx.vop(VFunc.TANH, rows, jn, s, s)
                ctx.vop(VFunc.MUL, rows, jn, s, s, cap)
            self._mask(b, head0, nh, i0, ni, j0, jn, s)
            vv = View(Buf.KV, va, 1, self.dvs)           # b(j, k) = V[k, j]
            if single:
                ctx.vop(VFunc.RMAX, rows, jn, col(self.m), s)
                ctx.vop(VFunc.MAX, rows, 1, col(self.m), col(self.m), NEG_BIG)
                ctx.vop(VFunc.SUB, rows, jn, s, s, col(self.m))
                ctx.vop(VFunc.EXP, rows, jn, s, s)
                ctx.vop(VFunc.RSUM, rows, jn, col(self.l), s)
                ctx.vop(VFunc.WHERE, rows, 1, col(self.l), col(self.l), col(self.l), imm=1.0)
                ctx.vop(VFunc.DIV, rows, jn, s, s, col(self.l))
                ctx.vop(VFunc.MM, rows, dv, yv, s, vv, depth=jn)
                continue
            ctx.vop(VFunc.RMAX, rows, jn, col(self.mt), s)
            ctx.vop(VFunc.MAX, rows, 1, col(self.mt), col(self.mt), col(self.m))       # m'
            ctx.vop(VFunc.SUB, rows, 1, col(self.corr), col(self.m), col(self.mt))
            ctx.vop(VFunc.EXP, rows, 1, col(self.corr), col(self.corr))                 # exp(m - m')
            ctx.vop(VFunc.COPY, rows, 1, col(self.m), col(self.mt))
            ctx.vop(VFunc.SUB, rows, jn, s, s, col(self.m))
            ctx.vop(VFunc.EXP, rows, jn, s, s)
            ctx.vop(VFunc.RSUM, rows, jn, col(self.mt), s)
            ctx.vop(VFunc.MUL, rows, 1, col(self.l), col(self.l), col(self.corr))
            ctx.vop(VFunc.ADD, rows, 1, col(self.l), col(self.l), col(self.mt))
            acc = View(Buf.VEC, self.acc, dv, 1)
            tmp = View(Buf.VEC, self.tmp, dv, 1)
            ctx.vop(VFunc.MM, rows, dv, tmp, s, vv, depth=jn)
            ctx.vop(VFunc.MUL, rows, dv, acc, acc, col(self.corr))
            ctx.vop(VFunc.ADD, rows, dv, acc, acc, tmp)
        if not single:
            ctx.vop(VFunc.WHERE, rows, 1, col(self.l), col(self.l), col(self.l), imm=1.0)
            ctx.vop(VFunc.DIV, rows, dv, yv, View(Buf.VEC, self.acc, dv, 1), col(self.l))
        ctx.store(Buf.VEC, yv.addr, self.y, qrow * dv * 4, rows, dv, dv * 4)

    def _load_keys(self, b: int, g: int, j0: int, jn: int, ka: int, va: int, store_present: bool) -> None:
        """Key / value rows j0..j0+jn (past cache rows first, then the new ones) into KV; appended to the present."""
        ctx = self.ctx
        for dst, width, stride, past_t, new_t, present in (
                (ka, self.d, self.d, self.past_k, self.k, self.presents[0]),
                (va, self.dv, self.dvs, self.past_v, self.v, self.presents[1])):
            lo, hi = j0, j0 + jn
            if lo < self.past:
                n = min(hi, self.past) - lo
                ctx.load(Buf.KV, dst, past_t, ((b * self.kvh + g) * self.past_rows + lo) * width * 4, n, width,
                         width * 4, sram_rs=stride)
            if hi > self.past:
                s0 = max(lo, self.past)
                ctx.load(Buf.KV, dst + (s0 - lo) * stride, new_t,
                         ((b * self.kvh + g) * self.new + s0 - self.past) * width * 4, hi - s0, width, width * 4,
                         sram_rs=stride)
            if present is None or not store_present:
                continue
            if self.in_place:   # the new rows only, at their row of the buffer
                if hi > self.past:
                    s0 = max(lo, self.past)
                    ctx.store(Buf.KV, dst + (s0 - lo) * stride, present,
                              ((b * self.kvh + g) * self.past_rows + s0) * width * 4, hi - s0, width, width * 4,
                              sram_rs=stride)
            else:
                ctx.store(Buf.KV, dst, present, ((b * self.kvh + g) * self.total + lo) * width * 4, jn, width, width * 4,
                          sram_rs=stride)

    def _allowed(self, b: int, head0: int, nh: int, i0: int, ni: int, j0: int, jn: int) -> View | None:
        """The 0/1 allowed tile [rows, jn] (None: every key allowed): the boolean mask times the causal table."""
        ctx = self.ctx
        rows = nh * ni
        c = View(Buf.VEC, self.ca, jn, 1)
        have = False
        if self.mask is not None and self.mask.dtype is DType.BOOL:
            width = max(0, min(jn, self.covered - j0))
            if width < jn:
                ctx.vop(VFunc.FILL, rows, jn, c, None, 0.0)
            start = 0
            for r, (off, n) in enumerate(self._mask_rows(b, head0, nh, i0, ni) if width else []):
                area = self.mask_a + r * jn         # one row of the mask per run of rows that share it
                ctx.load(Buf.ACT, area, self.mask, off + j0, 1, width, 0)
                ctx.vop(VFunc.COPY, n, width, c.shift(start), View(Buf.ACT, area, 0, 1))
                start += n
            have = True
        if self.causal is not None and j0 + jn - 1 > self.past + i0:
            cv = View(Buf.VEC, self.causal_a, jn, 1)
            ctx.load(Buf.VEC, self.causal_a, self.causal, (i0 * self.total + j0) * 4, ni, jn, self.total * 4)
            for h in range(nh):
                ch = c.shift(h * ni)
                if have:
                    ctx.vop(VFunc.MUL, ni, jn, ch, ch, cv)
                else:
                    ctx.vop(VFunc.COPY, ni, jn, ch, cv)
            have = True
        return c if have else None

    def _mask_rows(self, b: int, head0: int, nh: int, i0: int, ni: int) -> list[tuple[int, int]]:
        """(element offset of the mask row, rows sharing it) for the block's rows in order."""
        st = self.mask_st
        offs = row_offsets((nh, ni), st[1:3]) + b * st[0] + head0 * st[1] + i0 * st[2]
        out: list[tuple[int, int]] = []
        for o in offs:
            if out and out[-1][0] == int(o):
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((int(o), 1))
        return out

    def _mask(self, b: int, head0: int, nh: int, i0: int, ni: int, j0: int, jn: int, s: View) -> None:
        ctx = self.ctx
        rows = nh * ni
        if self.mask is not None and self.mask.dtype is not DType.BOOL:   # a float mask is added (-inf: excluded)
            fm = View(Buf.VEC, self.fmask_a, jn, 1)
            width = max(0, min(jn, self.covered - j0))
            if width < jn:
                ctx.vop(VFunc.FILL, rows, jn - width, fm.shift(0, width), None, NEG_INF)
            start = 0
            for off, n in self._mask_rows(b, head0, nh, i0, ni):
                if width:
                    ctx.load(Buf.VEC, self.fmask_a + start * jn, self.mask, (off + j0) * 4, 1, width, 0)
                    if n > 1:
                        ctx.vop(VFunc.COPY, n - 1, width, fm.shift(start + 1), fm.shift(start).with_strides(0, 1))
                start += n
            ctx.vop(VFunc.ADD, rows, jn, s, s, fm)
        allowed = self._allowed(b, head0, nh, i0, ni, j0, jn)
        if self.fallback:
            col = View(Buf.VEC, self.fb, 1, 0)
            width = max(0, min(jn, self.covered - j0))
            if allowed is not None and width:
                ctx.vop(VFunc.MAX, rows, width, allowed, allowed, col)
            ctx.vop(VFunc.ADD, rows, jn, s, s, View(Buf.VEC, self.fbv, 1, 0))
        if allowed is not None:
            ctx.vop(VFunc.WHERE, rows, jn, s, s, allowed, imm=NEG_INF)

    def _fallback_rows(self, b: int, head0: int, nh: int, i0: int, ni: int, tiles: list[tuple[int, int]]) -> None:
        """fb = 1 for rows with no allowed key at all, fbv = fb * mask_value."""
        ctx = self.ctx
        rows = nh * ni
        anyv = View(Buf.VEC, self.fb, 1, 0)
        ctx.vop(VFunc.FILL, rows, 1, anyv, None, 0.0)
        for j0, jn in tiles:
            allowed = self._allowed(b, head0, nh, i0, ni, j0, jn)
            if allowed is None:
                ctx.vop(VFunc.FILL, rows, 1, anyv, None, 1.0)
                continue
            ctx.vop(VFunc.RMAX, rows, jn, View(Buf.VEC, self.mt, 1, 0), allowed)
            ctx.vop(VFunc.MAX, rows, 1, anyv, anyv, View(Buf.VEC, self.mt, 1, 0))
        ctx.vop(VFunc.EQ, rows, 1, anyv, anyv, 0.0)
        ctx.vop(VFunc.MUL, rows, 1, View(Buf.VEC, self.fbv, 1, 0), anyv, float(np.float32(self.a["mask_value"])))


def support_fused_attention(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    if len(node.inputs) > 6 and node.inputs[6] is not None:
        reason = _in_place_reason(node, known_size(graph, node.inputs[6], sizes))
        if reason is not None:
            return reason
    q, k, v = (shape_of(x) for x in node.inputs[:3])
    if q[3] > 2047 or v[3] > 2047:
        return "head sizes above 2047"
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        m = node.inputs[3]
        if m.type.dtype not in (DType.BOOL, DType.F32):
            return f"a {m.type.dtype} mask"
    kv = config.cache_buffer_bytes // 4 // 4
    if q[3] + v[3] > kv:
        return "a key and value row do not fit the cache buffer"
    return None


lowering("fused_attention", support=support_fused_attention)(lower_fused_attention)

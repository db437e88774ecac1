"""ternary_matmul with int8 activations on the matrix unit, bit for bit what tritc/ir/ops/ternary.py computes.

Per block of m rows of the activations:
    quantise   LOAD x rows -> VEC; ABS, RMAX (absmax), MAX eps, act_max / it (or 1 / it * act_max): s per row;
               MUL x * s -> ACT (the write rounds half to even and saturates to int8): q
    per tile   of n output columns (and per scale group, and per chunk of K when a block of matrix_rows columns
               does not fit): LOAD the tile's packed words, whole blocks of the image's layout (lower_weights.py),
               -> the WGT ring (the next tile streams in while this one multiplies); GEMM q x trits -> ACC (int32)
    epilogue   MUL ACC * scale (-> fp32, then the scale: per tensor an immediate, per channel / group a vector),
               per group the products summed in group order, DIV by s, + bias, + residual, relu / silu;
               STORE the tile (VEC halves alternate, so the store overlaps the next tile)
Each step is the interpreter's fp32 operation in the interpreter's order, so the results are identical.

The weight tiles are as large as the WGT half allows, but a layer is cut into at least TARGET_TILES tiles when
its weights are large enough that the DRAM latency per transfer stays small next to the transfer: loading tile
i+1 then overlaps the multiply of tile i, and a decode GEMV streams its weights at close to the DRAM bandwidth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...ir.accumulators import TERNARY_INT8_PRODUCTS, check_int32_sum
from ...ir.graph import Graph, Node
from ...ir.ops import OPS
from ...ir.ternary import TernaryWeight
from .config import TRIT_GROUP, FpgaConfig
from .isa import Buf, VFunc, padded_kw
from .lower_ctx import LowerCtx, LoweringError, View, attrs_of, half_units, lowering, prod, shape_of, wgt_half_bytes
from .lower_operands import load_run, row_operand, split_runs
from .lower_weights import load_weight_tile, weight_tiles

TARGET_TILES = 8          # cut a layer's weights into at least this many tiles when they are large enough
MIN_TILE_LATENCIES = 4    # ... but no tile shorter than this many DRAM latencies' worth of bytes
MAX_BLOCK_ROWS = 256      # activation rows quantised and multiplied per block


@dataclass(frozen=True)
class GemmPlan:
    m_t: int     # activation rows per block
    n_t: int     # output columns per weight tile
    kwc: int     # 64-trit words per column chunk (all of a group's column unless it does not fit a WGT half)
    r_q: int     # rows quantised at a time (their fp32 copy in VEC)
    scales_resident: bool


def plan_gemm(cfg: FpgaConfig, m: int, k: int, n: int, groups: int, kw: int, word_bytes: int,
              varying: int, resident: int, temp: bool, slots: int = 2) -> GemmPlan:
    """Tile sizes for an [m, k] x [k, n] ternary matmul from the buffer halves (ctx.half); `varying` operands of
    the epilogue take a tile each, `resident` ones (a bias) a row, `temp`: the epilogue needs a temporary tile."""
    half = {b: half_units(cfg, b) for b in Buf}
    half[Buf.WGT] = wgt_half_bytes(cfg)
    kp = groups * kw * TRIT_GROUP
    col = kw * word_bytes
    rows, per_beat = cfg.matrix_rows, cfg.words_per_beat
    # a K-chunk when a block of rows columns does not fit a WGT half: whole beats of the block (ISA v3 layout)
    kwc = kw if padded_kw(kw, per_beat) * rows * word_bytes <= half[Buf.WGT] else \
        half[Buf.WGT] // cfg.weight_beat_bytes * per_beat
    kwcp = padded_kw(kwc, per_beat)
    max_cols = half[Buf.WGT] // (kwcp * rows * word_bytes) * rows      # whole blocks in a WGT half
    if 2 * k + 1 > half[Buf.VEC] // 2:
        raise LoweringError(f"a row of {k} activations does not fit the vector buffer to be quantised")
    if kp > half[Buf.ACT]:
        raise LoweringError(f"a row of {kp} int8 activations does not fit half of the activation buffer")
    m_t = max(1, min(m, half[Buf.ACT] // kp, MAX_BLOCK_ROWS))
    # weight tile: as large as a WGT half, but at least TARGET_TILES tiles if each is still long next to latency
    total = groups * n * col
    latency_bytes = cfg.dram_latency_ns * 1e-9 * cfg.dram_bandwidth
    tile_bytes = min(half[Buf.WGT], max(total // TARGET_TILES, int(MIN_TILE_LATENCIES * latency_bytes)))
    n_t = max(1, min(n, tile_bytes // (kwcp * word_bytes), max_cols))
    scales_resident = groups * n <= half[Buf.VEC] // 8
    while True:
        if cfg.matrix_rows < n_t < n:
            n_t -= n_t % cfg.matrix_rows
        r_q = max(1, min(m_t, (half[Buf.VEC] // 2 - m_t) // (2 * k)))
        quant = 2 * r_q * k + m_t
        per_slot = m_t * n_t * (1 + temp + varying) + (0 if scales_resident else groups * n_t)
        vec = quant + (groups * n if scales_resident else 0) + slots * per_slot + n * resident
        acc = groups * m_t * n_t * slots
        if vec <= half[Buf.VEC] and acc <= half[Buf.ACC]:
            return GemmPlan(m_t, n_t, kwc, r_q, scales_resident)
        if n_t > cfg.matrix_rows:
            n_t = max(cfg.matrix_rows, n_t // 2)
        elif n_t > 1:
            n_t //= 2
        elif m_t > 1:
            m_t = max(1, m_t // 2)
        else:
            raise LoweringError(f"no tile of [{m}, {k}] x [{k}, {n}] fits the buffers")


def lower_ternary_matmul(ctx: LowerCtx, node: Node) -> None:
    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    x_v, w_v, bias_v, res_v = ins[:4]
    attrs = OPS["ternary_matmul"].with_defaults(node.attrs)
    e = ctx.weights.entries[w_v.name]
    x = ctx.tensor(x_v)
    out = ctx.output(node.output)
    k, n = e.shape
    m = x.numel // k if k else 0
    if out.numel == 0:
        return
    g_count, gs, kw, wb = e.groups, e.group_size, e.kw, e.word_bytes
    kp = g_count * kw * TRIT_GROUP
    # |ACC| <= 128 * kp, and kp <= half of ACT <= 2^21 (its 22-bit address): never past the int32 bound
    check_int32_sum(f"node {node.describe()}", kp, TERNARY_INT8_PRODUCTS, what="int8 x trit products")
    # the epilogue's operands, seen as rows of the output [m, n]
    extra: list[tuple[str, object]] = []
    for v in (bias_v, res_v):
        if v is None:
            continue
        imm = ctx.scalar(v)
        extra.append(("imm", imm) if imm is not None else ("row", row_operand(ctx.tensor(v), out.shape)))
    rows_ops = [op for kind, op in extra if kind == "row"]
    varying = [op for op in rows_ops if not op.invariant]  # type: ignore[union-attr]
    if n * (len(rows_ops) - len(varying)) > half_units(ctx.config, Buf.VEC) // 8:
        varying = rows_ops       # a bias row too long to keep: loaded with each tile instead
    temp = g_count > 1 or attrs["activation"] == "silu"
    plan = plan_gemm(ctx.config, m, k, n, g_count, kw, wb, len(varying), len(rows_ops) - len(varying), temp,
                     ctx.slots())
    vec, act_a, acc_a = ctx.arena(Buf.VEC), ctx.arena(Buf.ACT), ctx.arena(Buf.ACC)

    # resident: the scales (per channel / group) and the operands every row shares (a bias)
    scales: int | None = None
    scales_wanted = e.granularity != "per_tensor" and plan.scales_resident
    if scales_wanted:
        scales = vec.alloc(g_count * n, "scales")
    resident: dict[int, View] = {}
    for op in rows_ops:
        if all(op is not w for w in varying):
            width = n if op.cs else 1  # type: ignore[union-attr]
            area = (ctx.arena(Buf.ACT) if op.buf == Buf.ACT else vec).alloc(width, "bias")  # type: ignore[union-attr]
            resident[id(op)] = load_run(ctx, op, area, 0, 0, 1, 0, n)  # type: ignore[arg-type]

    xq = vec.alloc(plan.r_q * k, "activations")
    tq = vec.alloc(plan.r_q, "act_max")
    s = vec.alloc(plan.m_t, "row factors")
    q = act_a.alloc(plan.m_t * kp, "int8 activations")
    acc_words = g_count * plan.m_t * plan.n_t
    # one accumulator area per slot: the matrix unit fills tile i+1's while the vector unit reads tile i's
    accs = [acc_a.alloc(acc_words, "accumulators") for _ in range(ctx.slots())]
    slot_words = plan.m_t * plan.n_t
    slots = [_Slot(vec, slot_words, temp, len(varying), 0 if plan.scales_resident else g_count * plan.n_t)
             for _ in range(ctx.slots())]
    # the whole result in one VEC area when it fits: tiles write their columns of it (no slot to wait for), and the
    # next node may read it there
    whole = vec.alloc(m * n, "result") if m <= plan.m_t and vec.free >= m * n else None
    tile = 0
    for m0 in range(0, m, plan.m_t):
        mn = min(plan.m_t, m - m0)
        _quantise(ctx, x, m0, mn, k, kp, gs, kw, g_count, plan.r_q, xq, tq, s, q, attrs)
        # Software-pipelined: tile i's GEMMs are issued before tile i-1's epilogue, so that the vector unit works on
        # tile i-1 while the matrix unit multiplies tile i (the compute engine goes on past a GEMM, ISA.md).
        behind = None
        # smaller tiles where the matrix unit, not DRAM, sets the pace (per column it takes at least 3/4 of the
        # time DRAM does: datacenter), and when WGT holds four tiles (the ring never waits for the odd sizes)
        cfg = ctx.config
        matrix_bound = 64 * kw / (cfg.matrix_rows * cfg.matrix_lanes) >= 0.75 * kw * wb / cfg.bytes_per_cycle
        ramp = ctx.double_buffer and matrix_bound and 4 * plan.n_t * kw * wb * g_count <= ctx.units[Buf.WGT]
        for n0, nn in _column_tiles(n, plan.n_t, cfg.matrix_rows, ramp):
            slot, acc = slots[tile % len(slots)], accs[tile % len(accs)]
            tile += 1
            for g in range(g_count):
                for k0 in range(0, kw, plan.kwc):
                    kn = min(plan.kwc, kw - k0)
                    wgt = load_weight_tile(ctx, e, g, n0, nn, k0, kn)
                    ctx.gemm(acc + g * plan.m_t * plan.n_t, q + g * kw * TRIT_GROUP + k0 * TRIT_GROUP, wgt, mn, kn,
                             nn, kp, plan.n_t, k0 == 0)
            if behind is not None:
                _epilogue(*behind)
            if scales_wanted:
                # loaded after the first weight tile: the activations and that tile come first from DRAM
                scales_wanted = False
                ctx.load(Buf.VEC, scales, ctx.image(e), e.scale_addr - e.addr, 1, g_count * n, 0)
            behind = (ctx, e, plan, out, slot, acc, s, scales, extra, resident, m0, mn, n0, nn, n,
                      attrs["activation"], whole)
            if len(accs) == 1:      # one accumulator area: the next GEMM waits for this epilogue anyway
                _epilogue(*behind)
                behind = None
        if behind is not None:      # before the next block's quantisation overwrites the row factors
            _epilogue(*behind)
    if whole is not None:
        ctx.keep(out, whole)


def _column_tiles(n: int, n_t: int, rows: int, ramp: bool) -> list[tuple[int, int]]:
    """The (first column, columns) of each weight tile: tiles of n_t columns (weight_tiles: each starts at a block of
    `rows` columns or stays inside one); or, with `ramp` (when WGT holds several tiles and the matrix unit takes GEMMs
    back to back, so that a tile costs little more than its work), tiles of half that (and at least six) in whole
    blocks, the last one the last two blocks: the matrix unit starts as soon as the activations are quantised and
    the first half tile is in, and what is left after the last weights arrive (their multiply, epilogue and store)
    is short."""
    blocks = -(-n // rows)
    if not ramp or blocks < 8 or n_t < 2 * rows:
        return weight_tiles(0, n, n_t, rows)
    tail = (blocks - 2) * rows                   # the last tile: the last two blocks (the very last may be partial)
    size = max(rows, min(n_t // 2, -(-n // 6)))    # at least six tiles
    count = -(-tail // size)
    q, r = divmod(blocks - 2, count)             # adder-tree blocks of columns, spread evenly over the tiles
    out, n0 = [], 0
    for t in range(count):
        cols = min((q + (t >= count - r)) * rows, tail - n0)
        out.append((n0, cols))
        n0 += cols
    return out + [(tail, n - tail)]


class _Slot:
    """One tile's working areas in VEC: the result, a temporary, the row operands, the scales of the tile."""

    def __init__(self, vec, words: int, temp: bool, operands: int, scale_words: int):  # noqa: ANN001
        self.y = vec.alloc(words, "results")
        self.t = vec.alloc(words, "results") if temp else None
        self.ops = [vec.alloc(words, "operands") for _ in range(operands)]
        self.scales = vec.alloc(scale_words, "scales") if scale_words else None


def _quantise(ctx: LowerCtx, x, m0: int, mn: int, k: int, kp: int, gs: int, kw: int, groups: int, r_q: int,  # noqa: ANN001
              xq: int, tq: int, s: int, q: int, attrs: dict) -> None:
    """Rows m0..m0+mn of x -> int8 rows of q (ACT, kp bytes apart; group g at byte g*kw*64), their factors in s."""
    eps, act_max = float(np.float32(attrs["act_eps"])), float(np.float32(attrs["act_max"]))
    for r0 in range(0, mn, r_q):
        rn = min(r_q, mn - r0)
        on_chip = ctx.resident_at(x, (m0 + r0) * k * 4)
        if r0 == 0 and attrs["act_scale"] != "mul_reciprocal":
            # act_max for the division, filled while the rows are still on their way (it depends on nothing)
            ctx.vop(VFunc.FILL, rn, 1, View(Buf.VEC, tq, 1, 0), None, act_max)
        if on_chip is None:
            ctx.load(Buf.VEC, xq, x, (m0 + r0) * k * 4, rn, k, k * 4)
        xv = View(Buf.VEC, xq if on_chip is None else on_chip, k, 1)
        sv = View(Buf.VEC, s + r0, 1, 0)
        ctx.vop(VFunc.AMAX, rn, k, sv, xv, eps)          # max(absmax, eps) in one pass
        if attrs["act_scale"] == "mul_reciprocal":
            ctx.vop(VFunc.RECIP, rn, 1, sv, sv)
            ctx.vop(VFunc.MUL, rn, 1, sv, sv, act_max)
        else:
            ctx.vop(VFunc.DIV, rn, 1, sv, View(Buf.VEC, tq, 1, 0), sv)
        for g in range(groups):
            ctx.vop(VFunc.MUL, rn, gs, View(Buf.ACT, q + r0 * kp + g * kw * TRIT_GROUP, kp, 1), xv.shift(0, g * gs), sv)


def _epilogue(ctx: LowerCtx, e, plan: GemmPlan, out, slot: _Slot, acc: int, s: int, scales: int | None,  # noqa: ANN001
              extra: list, resident: dict, m0: int, mn: int, n0: int, nn: int, n: int, activation: str,
              whole: int | None) -> None:
    """acc * scale / s (+ bias) (+ residual), the activation, then the STORE of rows m0.., columns n0.. ."""
    groups = e.groups
    scale_at = scales
    if e.granularity != "per_tensor" and scales is None:
        scale_at = slot.scales
        for g in range(groups):
            ctx.load(Buf.VEC, scale_at + g * nn, ctx.image(e), e.scale_addr - e.addr + (g * n + n0) * 4, 1, nn, 0)

    def scale_of(g: int) -> View | float:
        if e.granularity == "per_tensor":
            return float(e.scale)
        if scales is not None:
            return View(Buf.VEC, scales + g * n + n0, 0, 1)
        return View(Buf.VEC, slot.scales + g * nn, 0, 1)

    y = View(Buf.VEC, slot.y, nn, 1) if whole is None else View(Buf.VEC, whole + n0, n, 1)
    for g in range(groups):
        a = View(Buf.ACC, acc + g * plan.m_t * plan.n_t, plan.n_t, 1)
        if g == 0:
            ctx.vop(VFunc.MUL, mn, nn, y, a, scale_of(g))
        else:
            t = View(Buf.VEC, slot.t, nn, 1)
            ctx.vop(VFunc.MUL, mn, nn, t, a, scale_of(g))
            ctx.vop(VFunc.ADD, mn, nn, y, y, t)
    ctx.vop(VFunc.DIV, mn, nn, y, y, View(Buf.VEC, s, 1, 0))
    k_op = 0
    for kind, op in extra:
        if kind == "imm":
            ctx.vop(VFunc.ADD, mn, nn, y, y, op)
            continue
        if id(op) in resident:
            ctx.vop(VFunc.ADD, mn, nn, y, y, resident[id(op)].shift(0, n0))
            continue
        area = slot.ops[k_op]
        k_op += 1
        for a, cnt in split_runs([op], m0, mn):
            v = load_run(ctx, op, area, a - m0, a, cnt, n0, nn)  # type: ignore[arg-type]
            yr = y.shift(a - m0)
            ctx.vop(VFunc.ADD, cnt, nn, yr, yr, v)
    if activation == "relu":
        ctx.vop(VFunc.RELU, mn, nn, y, y)
    elif activation == "silu":
        t = View(Buf.VEC, slot.t, nn, 1)
        ctx.vop(VFunc.NEG, mn, nn, t, y)
        ctx.vop(VFunc.EXP, mn, nn, t, t)
        ctx.vop(VFunc.ADD, mn, nn, t, t, 1.0)
        ctx.vop(VFunc.DIV, mn, nn, y, y, t)
    ctx.store(Buf.VEC, y.addr, out, (m0 * n + n0) * 4, mn, nn, n * 4, 4, y.rs)



def support_ternary_matmul(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int]) -> str | None:
    attrs = attrs_of(node)
    w = graph.const_value(node.inputs[1])
    if not isinstance(w, TernaryWeight):
        return "the weight is not a constant ternary weight"
    if attrs["act"] != "int8":
        return "float activations: the matrix unit takes int8 (the quantize-activations pass makes them int8)"
    x, out = shape_of(node.inputs[0]), shape_of(node.output)
    k, n = (int(d) for d in w.shape)
    m = prod(x[:-1])
    if prod(out) != m * n:
        return "the bias or residual broadcasts the result beyond the product's shape"
    gs = w.group_size or k
    try:
        plan_gemm(config, m, k, n, k // gs if gs else 1, -(-gs // TRIT_GROUP), config.word_bytes, 2, 0, True)
    except LoweringError as e:
        return str(e)
    return None


lowering("ternary_matmul", support=support_ternary_matmul)(lower_ternary_matmul)

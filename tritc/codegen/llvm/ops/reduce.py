"""Lowerings of the reductions: the Reduce* family and arg_max/arg_min (softmax and friends live in
reduce_softmax.py, cumulative ops and top_k in reduce_scan.py).

Dims are grouped into runs of reduced and kept dims. When the innermost run is reduced, each result
reduces contiguous runs of the input (vectorised by hand, see reduce_runs.py). When it is kept, a
tile of up to TILE neighbouring results accumulates in a stack array while the reduced dims are
walked outside it, so the innermost loop is contiguous in input and accumulator (LLVM vectorises it).
Accumulation follows the interpreter: 16-bit floats in f32, integer means and log-sum-exps in f64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir.types import DType
from ..builder import I64, contiguous_strides, for_nest, for_range, gep, i64, intrinsic, linear_index, suffix
from ..context import NodeCtx
from ..elementwise import compute_type, parallel_range, store_compute
from . import lowering
from .elementwise_cast import convert
from .reduce_runs import acc_dtype, combine, const_like, entry_alloca, exp, identity, load_wide, log, reduce_run, vsplat

TILE = 256  # results accumulated together when the innermost dim is kept


@dataclass(frozen=True)
class Spec:
    how: str  # add | mul | max | min: how mapped elements combine
    pre: str = ""  # abs | square: applied to each element first
    final: str = ""  # mean | sqrt | log: applied to the combined value
    float_acc: bool = False  # integers accumulate in f64 (then convert back)


SPECS = {
    "reduce_sum": Spec("add"), "reduce_mean": Spec("add", final="mean", float_acc=True),
    "reduce_max": Spec("max"), "reduce_min": Spec("min"), "reduce_prod": Spec("mul"),
    "reduce_l1": Spec("add", pre="abs"), "reduce_l2": Spec("add", pre="square", final="sqrt"),
    "reduce_log_sum": Spec("add", final="log"), "reduce_sum_square": Spec("add", pre="square"),
    "reduce_log_sum_exp": Spec("max", float_acc=True),  # a max pass, then a sum of exp (see _Reduction)
}


@dataclass(frozen=True)
class Group:
    size: int
    stride: int
    reduced: bool


def dim_groups(shape: tuple[int, ...], reduced: set[int]) -> list[Group]:
    """Maximal runs of neighbouring dims that are all reduced or all kept (size-1 dims dropped)."""
    strides = contiguous_strides(shape)
    groups: list[Group] = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        r = d in reduced
        if groups and groups[-1].reduced == r:
            groups[-1] = Group(groups[-1].size * n, strides[d], r)
        else:
            groups.append(Group(n, strides[d], r))
    return groups


def reduced_axes(ctx: NodeCtx, rank: int) -> set[int]:
    axes = ctx.const(1) if len(ctx.ins) > 1 and ctx.ins[1] is not None else None
    if axes is None or axes.size == 0:
        return set() if ctx.attrs["noop_with_empty_axes"] else set(range(rank))
    return {int(a) + rank if a < 0 else int(a) for a in axes.reshape(-1)}


class _Reduction:
    """One Reduce* node: how elements are mapped, combined and finished, in which dtypes."""

    def __init__(self, ctx: NodeCtx, spec: Spec, count: int):
        self.ctx, self.spec, self.count = ctx, spec, count
        self.x, self.out = ctx.ins[0], ctx.outs[0]
        assert self.x is not None
        xd = self.x.dtype
        self.acc = DType.F64 if spec.float_acc and not xd.is_float else acc_dtype(xd)
        self.acc_t = compute_type(self.acc)
        self.signed = xd.is_signed
        self.lse = ctx.node.op == "reduce_log_sum_exp"

    @property
    def b(self) -> ir.IRBuilder:
        return self.ctx.b  # a task's builder while the node's work is split over threads

    @property
    def vectorize(self) -> bool:
        return self.x.dtype.is_float  # integer inputs are converted per element; LLVM vectorises int loops itself

    def pre(self, b: ir.IRBuilder, v: ir.Value) -> ir.Value:
        """A loaded element (wide compute value) in the accumulation type, abs'd or squared."""
        if not self.x.dtype.is_float:
            v = convert(b, v, self.x.dtype, self.acc)
        if self.spec.pre == "abs":
            if isinstance(self.acc_t, ir.IntType):
                return b.select(b.icmp_signed("<", v, const_like(v.type, 0)), b.sub(const_like(v.type, 0), v), v) \
                    if self.signed else v
            return intrinsic(b, f"llvm.fabs.{suffix(v.type)}", v.type, [v])
        if self.spec.pre == "square":
            return b.fmul(v, v) if self.acc.is_float else b.mul(v, v)
        return v

    def shift(self, b: ir.IRBuilder, m: ir.Value) -> ir.Value:
        """log-sum-exp's shift: the largest value if it is finite, else 0 (so exp does not overflow)."""
        finite = b.fcmp_ordered("<", intrinsic(b, f"llvm.fabs.{suffix(m.type)}", m.type, [m]), const_like(m.type, math.inf))
        return b.select(finite, m, const_like(m.type, 0.0))

    def shifted_exp(self, m: ir.Value) -> Callable[[ir.IRBuilder, ir.Value], ir.Value]:
        def pre(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
            v = self.pre(b, v)
            return exp(b, b.fsub(v, vsplat(b, m, v)))

        return pre

    def final(self, b: ir.IRBuilder, acc: ir.Value, shift: ir.Value | None = None) -> ir.Value:
        """The combined value as the result's compute value."""
        spec, acc_d, out_d = self.spec, self.acc, self.out.dtype
        if self.lse:
            return convert(b, b.fadd(log(b, acc), shift), acc_d, out_d)
        if spec.final == "mean":
            return convert(b, b.fdiv(acc, const_like(acc.type, self.count)), acc_d, out_d)
        if spec.final in ("sqrt", "log"):
            f, fd = (acc, acc_d) if acc_d.is_float else (convert(b, acc, acc_d, DType.F64), DType.F64)
            f = intrinsic(b, f"llvm.sqrt.{suffix(f.type)}", f.type, [f]) if spec.final == "sqrt" else log(b, f)
            return convert(b, f, fd, out_d)
        return convert(b, acc, acc_d, out_d)


@lowering(*SPECS, const_operands=(1,), symbolic=True)
def reduce(ctx: NodeCtx) -> None:
    x, out = ctx.ins[0], ctx.outs[0]
    assert x is not None
    if out.numel == 0:
        return
    axes = reduced_axes(ctx, x.rank)
    groups = dim_groups(x.shape, axes)
    r = _Reduction(ctx, SPECS[ctx.node.op], math.prod(x.shape[a] for a in axes))
    if groups and not groups[-1].reduced:
        _tiled(r, groups)
    else:
        _inner(r, groups)


def over_kept(r: _Reduction, kept: list[Group], work_per_unit: float, emit: Callable[[ir.Value, ir.Value], None]) -> None:
    """emit(input offset, k) for every point k (linear, row-major) of the kept groups' index space,
    split over the node's threads when there is enough work."""
    sizes = [g.size for g in kept]

    def part(lo: ir.Value, hi: ir.Value) -> None:
        b = r.b
        with for_range(b, hi, start=lo, name="k") as k:
            base: ir.Value = i64(0)
            inner = 1
            for d in range(len(kept) - 1, -1, -1):  # k's index along each group, innermost first
                q = k if inner == 1 else b.udiv(k, i64(inner))
                idx = q if d == 0 else b.urem(q, i64(sizes[d]))
                base = b.add(base, b.mul(idx, i64(kept[d].stride)))
                inner *= sizes[d]
            emit(base, k)

    parallel_range(r.ctx, math.prod(sizes), work_per_unit, part)


def _inner(r: _Reduction, groups: list[Group]) -> None:
    """Each result reduces contiguous runs: the innermost group is reduced (stride 1)."""
    x = r.x
    kept = [g for g in groups if not g.reduced]
    red = [g for g in groups if g.reduced] or [Group(1, 1, True)]

    def run(slot: ir.Value, base: ir.Value, how: str, pre: Callable[[ir.IRBuilder, ir.Value], ir.Value],
            vectorize: bool) -> ir.Value:
        b = r.b
        b.store(identity(how, r.acc), slot)
        with for_nest(b, [g.size for g in red[:-1]], name="r") as ro:
            rb = b.add(base, linear_index(b, ro, [g.stride for g in red[:-1]]))
            reduce_run(b, slot, x.ptr, x.dtype, rb, red[-1].size, how, pre, vectorize=vectorize, signed=r.signed, acc=r.acc)
        return b.load(slot, typ=r.acc_t)

    def one(base: ir.Value, k: ir.Value) -> None:  # emitted once, in the node function or in its task
        b = r.b
        slot = entry_alloca(b, r.acc_t)
        acc = run(slot, base, r.spec.how, r.pre, r.vectorize)
        shift = None
        if r.lse:
            shift = r.shift(b, acc)
            acc = run(slot, base, "add", r.shifted_exp(shift), r.vectorize and r.acc is DType.F32)  # f64 exp is libm
        store_compute(b, r.final(b, acc, shift), r.out.ptr, k, r.out.dtype)

    over_kept(r, kept, r.count * (10 if r.lse else 1), one)


def tiles(b: ir.IRBuilder, length: int, tile: int, body: Callable[[ir.Value, ir.Value], None]) -> None:
    """body(start, count) over [0, length) in tiles of `tile` (the last may be shorter)."""
    if length <= tile:
        body(i64(0), i64(length))
        return
    with for_range(b, length, step=tile, name="tile") as t:
        left = b.sub(i64(length), t)
        body(t, b.select(b.icmp_signed("<", left, i64(tile)), left, i64(tile)))


def _tiled(r: _Reduction, groups: list[Group]) -> None:
    """The innermost group is kept: accumulate a tile of results in a stack array."""
    x = r.x
    kept = [g for g in groups if not g.reduced]
    red = [g for g in groups if g.reduced]
    length = kept[-1].size
    tile = min(length, TILE)

    def one(base: ir.Value, k: ir.Value) -> None:
        b = r.b
        arr = entry_alloca(b, ir.ArrayType(r.acc_t, tile))
        shifts = entry_alloca(b, ir.ArrayType(r.acc_t, tile)) if r.lse else None
        obase = b.mul(k, i64(length))

        def acc_at(j: ir.Value, a: ir.Value = arr) -> ir.Value:
            return gep(b, a, j, r.acc_t)

        def one_tile(t: ir.Value, n: ir.Value) -> None:
            def accumulate(how: str, pre: Callable[[ir.Value, ir.Value], ir.Value]) -> None:
                with for_range(b, n, name="j") as j:
                    b.store(identity(how, r.acc), acc_at(j))
                with for_nest(b, [g.size for g in red], name="r") as ro:
                    rb = b.add(b.add(base, t), linear_index(b, ro, [g.stride for g in red]))
                    with for_range(b, n, name="j") as j:
                        v = pre(j, load_wide(b, x.ptr, b.add(rb, j), x.dtype))
                        b.store(combine(b, how, b.load(acc_at(j), typ=r.acc_t), v, r.signed), acc_at(j))

            accumulate(r.spec.how, lambda j, v: r.pre(b, v))
            if shifts is not None:
                with for_range(b, n, name="j") as j:
                    b.store(r.shift(b, b.load(acc_at(j), typ=r.acc_t)), acc_at(j, shifts))
                accumulate("add", lambda j, v: r.shifted_exp(b.load(acc_at(j, shifts), typ=r.acc_t))(b, v))
            with for_range(b, n, name="j") as j:
                shift = b.load(acc_at(j, shifts), typ=r.acc_t) if shifts is not None else None
                value = r.final(b, b.load(acc_at(j), typ=r.acc_t), shift)
                store_compute(b, value, r.out.ptr, b.add(b.add(obase, t), j), r.out.dtype)

        tiles(b, length, tile, one_tile)

    over_kept(r, kept[:-1], r.count * length * (10 if r.lse else 1), one)


# ---- arg_max / arg_min --------------------------------------------------------------------------------


def axis_split(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """(outer, n, inner): the shape seen as [outer, n, inner] around `axis`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def better(b: ir.IRBuilder, v: ir.Value, best: ir.Value, largest: bool, signed: bool) -> ir.Value:
    """v beats best strictly (ties keep the earlier); nan beats every number (np.argmax/argmin)."""
    if isinstance(v.type, (ir.FloatType, ir.DoubleType)):
        nan_wins = b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", best, best))
        return b.or_(b.fcmp_ordered(">" if largest else "<", v, best), nan_wins)
    cmp = b.icmp_signed if signed else b.icmp_unsigned
    return cmp(">" if largest else "<", v, best)


@lowering("arg_max", "arg_min")
def arg(ctx: NodeCtx) -> None:
    b, x, out = ctx.b, ctx.ins[0], ctx.outs[0]
    assert x is not None
    if out.numel == 0:
        return
    attrs = ctx.attrs
    axis = attrs["axis"] + x.rank if attrs["axis"] < 0 else attrs["axis"]
    outer, n, inner = axis_split(x.shape, axis)
    if n == 0:  # no values to choose from (the interpreter refuses this): index 0
        with for_range(b, out.numel) as i:
            b.store(i64(0), gep(b, out.ptr, i, I64))
        return
    largest, last = ctx.node.op == "arg_max", bool(attrs["select_last_index"])
    wide_t = compute_type(acc_dtype(x.dtype))
    best, index = entry_alloca(b, wide_t), entry_alloca(b, I64)
    signed = x.dtype.is_signed
    with for_range(b, outer, name="o") as o, for_range(b, inner, name="j") as j:
        base = b.add(b.mul(o, i64(n * inner)), j)
        first = n - 1 if last else 0
        b.store(load_wide(b, x.ptr, b.add(base, i64(first * inner)), x.dtype), best)
        b.store(i64(first), index)
        # the last index of the best value is the first one met walking backwards
        with for_range(b, -1 if last else n, start=n - 2 if last else 1, step=-1 if last else 1, name="k") as k:
            v = load_wide(b, x.ptr, b.add(base, b.mul(k, i64(inner))), x.dtype)
            cur = b.load(best, typ=wide_t)
            win = better(b, v, cur, largest, signed)
            b.store(b.select(win, v, cur), best)
            b.store(b.select(win, k, b.load(index, typ=I64)), index)
        b.store(b.load(index, typ=I64), gep(b, out.ptr, b.add(b.mul(o, i64(inner)), j), I64))


from . import reduce_scan, reduce_softmax  # noqa: E402, F401 - register the other reduction lowerings

__all__ = ["axis_split", "better", "dim_groups", "reduced_axes", "tiles"]

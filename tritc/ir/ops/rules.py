"""Type-rule building blocks shared by the op families: broadcasting, axes, common rules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import dims
from ..types import Dim, DType, Shape, TensorType
from . import InferContext, TypeRule, TypeRuleError


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """A possibly negative axis as an index in [0, rank), or TypeRuleError."""
    if not -rank <= axis < rank:
        raise TypeRuleError(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    out = [norm_axis(int(a), rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise TypeRuleError(f"{what} {list(axes)} repeat an axis")
    return out


def broadcast_dim(a: Dim, b: Dim) -> Dim:
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        if a != b:
            raise TypeRuleError(f"dims {a} and {b} do not broadcast")
        return a
    # An unknown dim broadcast with a static n > 1 must be 1 or n, so the result is n; with a
    # symbol the result depends on run-time sizes and stays unknown.
    if a is None:
        return b if isinstance(b, int) else None
    if b is None:
        return a if isinstance(a, int) else None
    if dims.equal(a, b):
        return a
    # Two different symbols (or a symbol and an int): valid only if one of them is 1 at run
    # time; the static one wins when it is not 1, otherwise the result is unknown.
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(*shapes: Shape | None) -> Shape | None:
    """Multidirectional (numpy) broadcasting of possibly symbolic shapes."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = [1] * (rank - len(s)) + list(s)  # type: ignore[arg-type]
        try:
            out = [broadcast_dim(a, b) for a, b in zip(out, padded)]
        except TypeRuleError:
            raise TypeRuleError(f"shapes {_fmt_shapes(shapes)} do not broadcast") from None
    return tuple(out)


def _fmt_shapes(shapes: Sequence[Shape | None]) -> str:
    return " and ".join(str(TensorType(DType.F32, s)).removeprefix("f32") for s in shapes)


def same_dtype(ctx: InferContext, indices: Sequence[int]) -> DType:
    present = [i for i in indices if ctx.has(i)]
    dtypes = {ctx.type(i).dtype for i in present}
    if len(dtypes) > 1:
        listed = ", ".join(str(ctx.type(i).dtype) for i in present)
        raise TypeRuleError(f"operands must share one dtype, got {listed}")
    return ctx.type(present[0]).dtype


def same_as(i: int = 0) -> TypeRule:
    """Every result has the type of input i."""

    def rule(ctx: InferContext) -> list[TensorType]:
        return [ctx.type(i)] * ctx.num_outputs

    return rule


def elementwise(dtype: DType | None = None, operands: Sequence[int] | None = None,
                check_same_dtype: bool = True) -> TypeRule:
    """Broadcast the operands; the result dtype is `dtype` or the operands' common dtype."""

    def rule(ctx: InferContext) -> list[TensorType]:
        idx = list(operands) if operands is not None else [i for i in range(len(ctx.input_types)) if ctx.has(i)]
        base = same_dtype(ctx, idx) if check_same_dtype else ctx.type(idx[0]).dtype
        shape = broadcast_shapes(*(ctx.type(i).shape for i in idx))
        return [TensorType(dtype or base, shape)] * ctx.num_outputs

    return rule


def require_dtype(t: TensorType, allowed: Sequence[DType] | str, what: str) -> None:
    """Check a dtype against a list, or a class: "float", "int", "numeric" (the 4- and 2-bit integers are storage
    types, in neither class: ops that take them list them)."""
    if isinstance(allowed, str):
        arithmetic_int = t.dtype.is_int and not t.dtype.is_sub_byte
        ok = {"float": t.dtype.is_float, "int": arithmetic_int, "numeric": t.dtype.is_float or arithmetic_int}[allowed]
        if not ok:
            raise TypeRuleError(f"{what} must be {allowed}, got {t.dtype}")
    elif t.dtype not in allowed:
        raise TypeRuleError(f"{what} must be one of {', '.join(map(str, allowed))}, got {t.dtype}")


def const_ints(ctx: InferContext, i: int) -> list[int] | None:
    """The values of a constant integer input as a list, or None if not constant."""
    c = ctx.const(i)
    if c is None:
        return None
    return [int(x) for x in np.asarray(c).reshape(-1)]


def sym_ints(ctx: InferContext, i: int) -> list[Dim] | None:
    """Input i's elements as dims: constant ints, or symbolic ones from shape arithmetic."""
    return ctx.sym_ints(i)


def unknown_dims(rank: int | None) -> Shape | None:
    return None if rank is None else tuple([None] * rank)

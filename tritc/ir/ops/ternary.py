"""Ternary ops: `ternary_matmul`, a matmul with a ternary weight, in float or int8 activation mode.

    y = ternary_matmul(x: f32[..., K], w: t2[K, N], bias?: f32[N], residual?: f32[..., N])
            {act = "float" | "int8", activation = "none" | "relu" | "silu"} : f32[..., N]

act = "float": y = x @ trits, scaled per tensor / channel / group: only adds and subtracts
before the scale. act = "int8" (BitNet b1.58): each row of x (a token) is quantised to int8 by
its absolute maximum, the products are accumulated exactly in int32, and one rescale per output
gives float32. The integer semantics below, rounding included, are what compiled code must
match bit for bit. The epilogue (fuse-epilogue puts the graph's following ops here) is
y = activation((y + bias) + residual).
"""

from __future__ import annotations

import numpy as np

from ..ternary import TernaryWeight
from ..types import DType, TensorType
from . import Float, InferContext, Str, TypeRuleError, defop
from .rules import broadcast_shapes

ACT_MODES = ("float", "int8")
ACTIVATIONS = ("none", "relu", "silu")


ACT_SCALE_FORMS = ("div", "mul_reciprocal")


def quantize_activations(x: np.ndarray, act_max: float, act_eps: float,
                         act_scale: str = "div") -> tuple[np.ndarray, np.ndarray]:
    """Per-row absmax quantisation: int8 codes q and the float32 factor s with x ~ q / s.

    s = act_max / max(max|x|, act_eps) in float32 (act_scale "div"), or act_max * (1 / max(...))
    ("mul_reciprocal", as transformers' BitNet computes it: the two differ in the last bit);
    q = clip(round_half_even(x * s), -128, 127).
    """
    x = x.astype(np.float32, copy=False)
    absmax = np.max(np.abs(x), axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,), np.float32)
    clamped = np.maximum(absmax, np.float32(act_eps))
    if act_scale == "mul_reciprocal":
        s = ((np.float32(1) / clamped).astype(np.float32) * np.float32(act_max)).astype(np.float32)
    else:
        s = (np.float32(act_max) / clamped).astype(np.float32)
    q = np.clip(np.rint(x * s), -128, 127).astype(np.int8)
    return q, s


def ternary_accumulate(q: np.ndarray, trits: np.ndarray, group_size: int = 0) -> np.ndarray:
    """Exact int32 sums of q[..., k] * trits[k, n]; per K-group when group_size is set: [..., G, N]."""
    q32 = q.astype(np.int32)
    t32 = trits.astype(np.int32)
    if not group_size:
        return np.matmul(q32, t32)
    k, n = trits.shape
    qg = q32.reshape(q.shape[:-1] + (k // group_size, group_size))
    tg = t32.reshape(k // group_size, group_size, n)
    return np.einsum("...gk,gkn->...gn", qg, tg).astype(np.int32)


def _infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    if w.dtype is not DType.T2:
        raise TypeRuleError(f"weight must be t2, got {w.dtype}")
    if not x.dtype.is_float:
        raise TypeRuleError(f"activations must be float, got {x.dtype}")
    if ctx.attrs["act"] not in ACT_MODES:
        raise TypeRuleError(f"act must be one of {', '.join(ACT_MODES)}, got '{ctx.attrs['act']}'")
    if ctx.attrs["act_scale"] not in ACT_SCALE_FORMS:
        raise TypeRuleError(f"act_scale must be one of {', '.join(ACT_SCALE_FORMS)}, got '{ctx.attrs['act_scale']}'")
    if w.shape is None or len(w.shape) != 2:
        raise TypeRuleError(f"weight must be 2-D, got {w}")
    k, n = w.shape
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if not x.shape:
        raise TypeRuleError("activations must have at least one dim")
    xk = x.shape[-1]
    if isinstance(xk, int) and isinstance(k, int) and xk != k:
        raise TypeRuleError(f"activations {x} and weight {w} disagree on K")
    if ctx.attrs["activation"] not in ACTIVATIONS:
        raise TypeRuleError(f"activation must be one of {', '.join(ACTIVATIONS)}, got '{ctx.attrs['activation']}'")
    out = tuple(x.shape[:-1]) + (n,)
    if ctx.has(2):
        out = broadcast_shapes(out, ctx.type(2).shape) or out
    if ctx.has(3):
        r = ctx.type(3)
        if r.dtype != x.dtype:
            raise TypeRuleError(f"residual must be {x.dtype}, got {r.dtype}")
        out = broadcast_shapes(out, r.shape) or out
    return [TensorType(x.dtype, out)]


@defop("ternary_matmul", inputs=["X", "W", "bias?", "residual?"],
       attrs={"act": Str("float"), "act_max": Float(127.0), "act_eps": Float(1e-5), "act_scale": Str("div"),
              "activation": Str("none")},
       infer=_infer)
def ternary_matmul(x: np.ndarray, w: TernaryWeight, bias: np.ndarray | None = None,
                   residual: np.ndarray | None = None, *, act: str = "float", act_max: float = 127.0,
                   act_eps: float = 1e-5, act_scale: str = "div", activation: str = "none") -> np.ndarray:
    if act == "int8":
        q, s = quantize_activations(x, act_max, act_eps, act_scale)
        y = int8_product(q, s, w)
    else:
        y = float_product(x, w)
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    y = y.astype(np.float32, copy=False)
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    elif activation == "silu":
        with np.errstate(over="ignore"):
            y = y / (np.float32(1) + np.exp(-y))
    return y.astype(x.dtype, copy=False)


def int8_product(q: np.ndarray, s: np.ndarray, w: TernaryWeight) -> np.ndarray:
    """(q @ trits) * scale / s for int8 codes q[..., K] with x ~ q / s: exact int32 sums, then one float32 rescale."""
    acc = ternary_accumulate(q, w.trits, w.group_size)
    if w.granularity == "per_group":
        # One rescale per group and output, then the groups are summed in float32.
        return (acc.astype(np.float32) * w.scale).sum(axis=-2, dtype=np.float32) / s
    return acc.astype(np.float32) * w.scale / s


def float_product(x: np.ndarray, w: TernaryWeight) -> np.ndarray:
    """(x @ trits) * scale in float32 (per group: each group's partial sum scaled, then summed)."""
    xf = x.astype(np.float32, copy=False)
    if w.granularity == "per_group":
        k, n = w.trits.shape
        g = w.group_size
        xg = xf.reshape(x.shape[:-1] + (k // g, g))
        partial = np.einsum("...gk,gkn->...gn", xg, w.trits.reshape(k // g, g, n).astype(np.float32))
        return (partial * w.scale).sum(axis=-2, dtype=np.float32)
    return np.matmul(xf, w.trits.astype(np.float32)) * w.scale

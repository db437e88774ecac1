"""fused_attention: softmax(Q K^T * scale + mask) V over the allowed keys, multi-head or grouped-query, with causal and
padding masks, an optional past cache (concatenated, or a capacity buffer appended in place) and present results.

The op fuse-attention makes from the exported attention subgraphs and from the ONNX Attention op; docs/ATTENTION.md
defines it in full. Masked keys do not take part at all (their K and V are never read), so a row with no allowed key
is zero; the tiling attributes (q_block, kv_block, tasks) are set by tile-attention and do not change the result.
"""

from __future__ import annotations

import numpy as np

from .. import dims
from ..types import DType, TensorType
from . import Float, InferContext, Int, TypeRuleError, defop
from .attention import _same  # (the dim check of the ONNX Attention op's rule: same family)
from .rules import broadcast_shapes, require_dtype


def _fused_attention_type(ctx: InferContext) -> list[TensorType]:
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    a = ctx.attrs
    heads, kv_heads = a["heads"], a["kv_heads"]
    for t, name in ((q, "Q"), (k, "K"), (v, "V")):
        require_dtype(t, (DType.F32,), name)
        if t.rank not in (None, 4):
            raise TypeRuleError(f"{name} must be 4-D (batch, heads, seq, head size), got {t}")
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise TypeRuleError(f"heads {heads} must be a positive multiple of kv_heads {kv_heads}")
    if a["causal"] not in (0, 1) or a["nan_to_zero"] not in (0, 1):
        raise TypeRuleError("causal and nan_to_zero must be 0 or 1")
    if a["softcap"] < 0 or min(a["q_block"], a["kv_block"], a["tasks"], a["scratch_size"]) < 0:
        raise TypeRuleError("softcap, q_block, kv_block, tasks and scratch_size must not be negative")
    if ctx.has(4) != ctx.has(5):
        raise TypeRuleError("past_key and past_value must be given together")
    if ctx.has(6) and not ctx.has(4):
        raise TypeRuleError("past_len needs past_key and past_value (the cache buffers it counts rows of)")
    if ctx.has(6):
        p = ctx.type(6)
        require_dtype(p, (DType.I64,), "past_len")
        if p.shape is not None and p.numel() != 1:
            raise TypeRuleError(f"past_len must hold one value, got {p}")
    if ctx.has(3):
        require_dtype(ctx.type(3), (DType.BOOL, DType.F32), "mask")
    finite_value = a["mask_value"] != float("-inf")
    if finite_value and (not np.isfinite(a["mask_value"]) or not ctx.has(3) or ctx.type(3).dtype is not DType.BOOL):
        raise TypeRuleError("a finite mask_value goes with a boolean mask (and must be finite or -inf)")
    batch = seq = head = v_head = total = None
    if q.shape is not None and k.shape is not None and v.shape is not None:
        batch = _same(_same(q.shape[0], k.shape[0], "Q and K batch"), v.shape[0], "Q and V batch")
        _same(q.shape[1], heads, "Q heads and the heads attribute")
        _same(k.shape[1], kv_heads, "K heads and the kv_heads attribute")
        _same(v.shape[1], kv_heads, "V heads and the kv_heads attribute")
        seq = _same(k.shape[2], v.shape[2], "K and V lengths")
        head = _same(q.shape[3], k.shape[3], "Q and K head sizes")
        v_head = v.shape[3]
        total = seq
    present_k = TensorType(DType.F32, None if k.shape is None else (batch, kv_heads, total, head))
    present_v = TensorType(DType.F32, None if v.shape is None else (batch, kv_heads, total, v_head))
    if ctx.has(4):
        pk, pv = ctx.type(4), ctx.type(5)
        require_dtype(pk, (DType.F32,), "past_key")
        require_dtype(pv, (DType.F32,), "past_value")
        if pk.shape is not None and pv.shape is not None and k.shape is not None and v.shape is not None:
            if len(pk.shape) != 4 or len(pv.shape) != 4:
                raise TypeRuleError(f"past_key {pk} and past_value {pv} must be 4-D")
            for want, got, name in ((batch, pk.shape[0], "past_key batch"), (kv_heads, pk.shape[1], "past_key heads"),
                                    (head, pk.shape[3], "past_key head size"), (batch, pv.shape[0], "past_value batch"),
                                    (kv_heads, pv.shape[1], "past_value heads"), (v_head, pv.shape[3], "past_value head size")):
                _same(want, got, f"{name} does not match K / V")
            rows = _same(pk.shape[2], pv.shape[2], "past_key and past_value lengths")
            if ctx.has(6):  # cache buffers of capacity `rows`: the results are the buffers, appended in place
                present_k, present_v = TensorType(DType.F32, tuple(pk.shape)), TensorType(DType.F32, tuple(pv.shape))
            else:
                total = dims.add(rows, seq)
                present_k = TensorType(DType.F32, (batch, kv_heads, total, head))
                present_v = TensorType(DType.F32, (batch, kv_heads, total, v_head))
        else:
            present_k, present_v, total = TensorType(DType.F32, None), TensorType(DType.F32, None), None
    if ctx.has(3) and ctx.type(3).shape is not None:
        mask = ctx.type(3).shape
        if not 1 <= len(mask) <= 4:
            raise TypeRuleError(f"mask must have rank 1 to 4, got {ctx.type(3)}")
        if isinstance(mask[-1], int) and isinstance(total, int) and not ctx.has(6) and mask[-1] > total:
            raise TypeRuleError(f"mask covers {mask[-1]} keys but there are only {total}")
        if q.shape is not None:
            broadcast_shapes(mask[:-1], (batch, heads, q.shape[2]))
    y = TensorType(DType.F32, None if q.shape is None else (batch, heads, q.shape[2], v_head))
    scratch = TensorType(DType.F32, (a["scratch_size"],))
    return [y, scratch, present_k, present_v][: ctx.num_outputs]


def allowed_keys(mask: np.ndarray | None, *, batch: int, heads: int, q_len: int, total: int, past: int,
                 causal: bool, mask_value: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """(allowed, bias), broadcast to (batch, heads, q_len, total): which keys each query row attends to, and the value
    added to their scores. A key is allowed when the mask covers it and is true (bool) or not -inf (float), and, with
    causal, when it is not after the query's position (query i sits at past + i). With a finite mask_value (bool
    masks), a row with no allowed key attends to every key the mask covers, each score plus mask_value."""
    allowed = np.ones((batch, heads, q_len, total), dtype=bool)
    bias = np.zeros((batch, heads, q_len, total), np.float32)
    if mask is not None:
        covered = min(mask.shape[-1], total)
        part = np.broadcast_to(mask[..., :covered], (batch, heads, q_len, covered))
        allowed[..., covered:] = False
        if mask.dtype == np.bool_:
            allowed[..., :covered] &= part
        else:
            allowed[..., :covered] &= ~np.isneginf(part)
            bias[..., :covered] = np.where(allowed[..., :covered], part, np.float32(0))
    if causal:
        allowed &= np.arange(total) <= (np.arange(q_len) + past)[:, None]
    if mask is not None and mask.dtype == np.bool_ and np.isfinite(mask_value):
        fallback = ~allowed.any(axis=-1, keepdims=True)
        covered = np.arange(total) < min(mask.shape[-1], total)
        allowed = np.where(fallback, covered, allowed)
        bias = np.where(fallback & covered, np.float32(mask_value), bias)
    return allowed, bias


def _present(past: np.ndarray | None, new: np.ndarray, past_len: int | None) -> np.ndarray:
    if past is None:
        return new
    if past_len is None:
        return np.concatenate([past, new], axis=2)
    present = past.copy()
    present[:, :, past_len:past_len + new.shape[2]] = new
    return present


@defop("fused_attention",
       inputs=["Q", "K", "V", "mask?", "past_key?", "past_value?", "past_len?"],
       outputs=["Y", "scratch", "present_key?", "present_value?"],
       attrs={"heads": Int(), "kv_heads": Int(), "scale": Float(), "causal": Int(0), "softcap": Float(0.0),
              "nan_to_zero": Int(0), "mask_value": Float(float("-inf")),
              "q_block": Int(0), "kv_block": Int(0), "tasks": Int(0), "scratch_size": Int(0)},
       infer=_fused_attention_type)
def fused_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                    past_key: np.ndarray | None = None, past_value: np.ndarray | None = None,
                    past_len: np.ndarray | None = None, *, heads: int, kv_heads: int, scale: float, causal: int,
                    softcap: float, nan_to_zero: int, mask_value: float, q_block: int, kv_block: int, tasks: int,
                    scratch_size: int) -> tuple[np.ndarray, ...]:
    """Y = softmax over the allowed keys of (Q K^T * scale, softcapped, + the float mask) times V, per head; query head
    h reads kv head h // (heads / kv_heads). A row with no allowed key is zero; so is a row whose maximum score is NaN
    or +inf when nan_to_zero (the sdpa export's where(isnan(p), 0, p)); otherwise such a row is NaN. Keys that take
    no part (not allowed, or scored -inf) add nothing, whatever their value. A finite mask_value (a boolean mask's
    false entries add it, as where(mask, 0, -1e9) would) only changes rows with no allowed key: they attend to every
    key the mask covers, scores plus mask_value. The scratch result has no meaning."""
    if (past_key is None) != (past_value is None):
        raise ValueError("past_key and past_value must be given together")
    if q.shape[1] != heads or k.shape[1] != kv_heads or heads % kv_heads:
        raise ValueError(f"Q / K head counts {q.shape[1]} / {k.shape[1]} do not match heads {heads}, kv_heads {kv_heads}")
    n_new = k.shape[2]
    plen = None if past_len is None else int(np.asarray(past_len).reshape(-1)[0])
    if plen is not None and past_key is not None and not 0 <= plen <= past_key.shape[2] - n_new:
        raise ValueError(f"past_len {plen} + {n_new} new rows do not fit the cache's {past_key.shape[2]} rows")
    present_key, present_value = _present(past_key, k, plen), _present(past_value, v, plen)
    past = (past_key.shape[2] if past_key is not None else 0) if plen is None else plen
    total = past + n_new
    keys, values = present_key[:, :, :total], present_value[:, :, :total]
    batch, _, q_len, _ = q.shape
    allowed, bias = allowed_keys(mask, batch=batch, heads=heads, q_len=q_len, total=total, past=past, causal=bool(causal),
                                 mask_value=mask_value)
    group = heads // kv_heads
    keys, values = np.repeat(keys, group, axis=1), np.repeat(values, group, axis=1)
    f32 = np.float32
    with np.errstate(all="ignore"):
        logits = np.matmul(q, np.swapaxes(keys, -1, -2)) * f32(scale)
        if softcap > 0:
            logits = np.tanh(logits / f32(softcap)) * f32(softcap)
        scores = np.where(allowed, logits + bias, f32(-np.inf))
        top = np.max(scores, axis=-1, keepdims=True)
        e = np.where(allowed, np.exp(scores - np.where(np.isneginf(top), f32(0), top)), f32(0))
        total_e = np.sum(e, axis=-1, keepdims=True)
        probs = e / np.where(total_e == 0, f32(1), total_e)
        zero_rows = np.isneginf(top) | (np.isnan(top) | np.isposinf(top) if nan_to_zero else False)
        probs = np.where(zero_rows, f32(0), probs).astype(f32)
        if np.isfinite(values).all():
            y = np.matmul(probs, values)
        else:  # a key that takes no part (not allowed, or a score of -inf) must not reach the row through 0 * inf
            part = allowed & ~np.isneginf(scores)
            y = np.sum(np.where(part[..., None], probs[..., None] * values[:, :, None], f32(0)), axis=3)
        y = np.where(zero_rows, f32(0), y).astype(f32)
    scratch = np.zeros(scratch_size, f32)  # the kernel's working memory (tile-attention sizes it): no meaning here
    return y, scratch, present_key, present_value


# ---- tiling: the scratch a tiled node needs (tile-attention sizes the scratch result; the lowering lays it out) ----

LANES = 16  # head sizes are padded to whole 16-lane vectors in the kernel's working rows


def _pad(n: int) -> int:
    return -(-n // LANES) * LANES


def task_floats(q_block: int, kv_block: int, d: int, dv: int) -> int:
    """Scratch floats per work item: its q_block rows of Q * scale, a block of scores, the running sums, max, total."""
    return q_block * (_pad(d) + kv_block + _pad(dv) + 2)


def partial_floats(q_block: int, dv: int) -> int:
    """Scratch floats per split-K partial result: per row its sums, max and total."""
    return q_block * (_pad(dv) + 2)


def scratch_floats(q_block: int, kv_block: int, d: int, dv: int, tasks: int, split_k: bool) -> int:
    """The whole scratch: a slot per work item, and (split-K) room for 2 * tasks partial results."""
    return tasks * task_floats(q_block, kv_block, d, dv) + (2 * tasks * partial_floats(q_block, dv) if split_k else 0)

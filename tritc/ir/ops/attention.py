"""Transformer ops: Attention (ONNX 23-25: MHA, GQA, MQA; 3-D and 4-D layouts; KV cache; boolean and float masks;
causal and sliding-window masks; softcap), RotaryEmbedding, SwiGLU and LinearAttention.

Each step runs in the dtype ONNX's reference runs it in, so float32 results match it bit for bit: sqrt(scale)
multiplies Q and K, softcap comes before the mask, a fully-masked query row gives zeros (not NaN).
"""

from __future__ import annotations

import numpy as np

from .. import dims
from ..types import Dim, DType, TensorType
from . import Float, InferContext, Int, Str, Type, TypeRuleError, defop
from .rules import broadcast_shapes, require_dtype

FLOATS = (DType.F32, DType.F16, DType.BF16, DType.F64)


# ---- helpers ------------------------------------------------------------------------------------


def _same(a: Dim, b: Dim, what: str) -> Dim:
    """Two dims that must agree: an error if provably different, else the more precise one."""
    if not dims.assume_equal(a, b):
        raise TypeRuleError(f"{what}: {a} != {b}")
    return a if isinstance(a, int) or b is None else b


def _heads_of(hidden: Dim, heads: int, what: str) -> Dim:
    if isinstance(hidden, int) and hidden % heads:
        raise TypeRuleError(f"{what} hidden size {hidden} is not a multiple of {heads} heads")
    return dims.div_exact(hidden, heads)


def _split_heads(x: np.ndarray, heads: int, what: str) -> np.ndarray:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, hidden = x.shape
    if heads <= 0 or hidden % heads:
        raise ValueError(f"{what} hidden size {hidden} is not a multiple of {heads} heads")
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # numpy computes bfloat16 products in float32; the result keeps a's dtype, as ONNX's MatMul does.
    return np.matmul(a, b).astype(a.dtype, copy=False)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; an all -inf row gives zeros instead of NaN."""
    zero, one = np.zeros((), x.dtype), np.ones((), x.dtype)
    x_max = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isneginf(x_max), zero, x_max))
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total == zero, one, total)


# ---- Attention ----------------------------------------------------------------------------------


def _attention_type(ctx: InferContext) -> list[TensorType]:
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    a = ctx.attrs
    require_dtype(q, FLOATS, "Q")
    require_dtype(v, FLOATS, "V")
    if k.dtype != q.dtype:
        raise TypeRuleError(f"K dtype {k.dtype} differs from Q's {q.dtype}")
    ranks = {t.rank for t in (q, k, v)} - {None}
    if len(ranks) > 1 or not ranks <= {3, 4}:
        raise TypeRuleError(f"Q, K and V must all be 3-D or all 4-D, got {q}, {k}, {v}")
    if not 0 <= a["qk_matmul_output_mode"] <= 3:
        raise TypeRuleError(f"qk_matmul_output_mode must be 0..3, got {a['qk_matmul_output_mode']}")
    if min(a["left_window_size"], a["right_window_size"]) < -1:
        raise TypeRuleError("left_window_size and right_window_size must be -1 (unbounded) or >= 0")
    if a["softmax_precision"] is not None:
        require_dtype(TensorType(a["softmax_precision"], ()), FLOATS, "softmax_precision")
    if ctx.has(4) != ctx.has(5):
        raise TypeRuleError("past_key and past_value must be given together")
    if ctx.has(6):
        require_dtype(ctx.type(6), (DType.I64,), "nonpad_kv_seqlen")
        if ctx.has(4):
            raise TypeRuleError("nonpad_kv_seqlen cannot be combined with past_key / past_value")
    if ctx.has(3) and ctx.type(3).dtype not in (DType.BOOL, q.dtype):
        raise TypeRuleError(f"attn_mask must be bool or {q.dtype} (Q's dtype), got {ctx.type(3).dtype}")
    rank = ranks.pop() if ranks else None
    if rank is None or q.shape is None or k.shape is None or v.shape is None:
        if rank == 3 and (a["q_num_heads"] is None or a["kv_num_heads"] is None):
            raise TypeRuleError("3-D Q, K, V need the q_num_heads and kv_num_heads attributes")
        outs = [TensorType(q.dtype, None), TensorType(q.dtype, None), TensorType(v.dtype, None), TensorType(q.dtype, None)]
        return outs[: ctx.num_outputs]
    if rank == 3:
        qh, kvh = a["q_num_heads"], a["kv_num_heads"]
        if qh is None or kvh is None or qh <= 0 or kvh <= 0:
            raise TypeRuleError("3-D Q, K, V need positive q_num_heads and kv_num_heads attributes")
        batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
        head = _heads_of(q.shape[2], qh, "Q")
        k_head, v_head = _heads_of(k.shape[2], kvh, "K"), _heads_of(v.shape[2], kvh, "V")
        _same(k.shape[1], v.shape[1], "K and V sequence lengths differ")
    else:
        batch, qh, q_len, head = q.shape
        _, kvh, kv_len, k_head = k.shape
        v_head = v.shape[3]
        _same(k.shape[1], v.shape[1], "K and V head counts differ")
        _same(k.shape[2], v.shape[2], "K and V sequence lengths differ")
        for attr, dim in (("q_num_heads", qh), ("kv_num_heads", kvh)):
            if a[attr] is not None:
                _same(a[attr], dim, f"{attr} disagrees with the 4-D input")
    head = _same(head, k_head, "Q and K head sizes differ")
    batch = _same(_same(batch, k.shape[0], "Q and K batch sizes differ"), v.shape[0], "Q and V batch sizes differ")
    if isinstance(qh, int) and isinstance(kvh, int) and (kvh == 0 or qh % kvh):
        raise TypeRuleError(f"{qh} query heads are not a multiple of {kvh} key/value heads")
    total = kv_len
    if ctx.has(4):
        pk, pv = ctx.type(4), ctx.type(5)
        if pk.dtype != q.dtype or pv.dtype != v.dtype:
            raise TypeRuleError(f"past_key / past_value dtypes {pk.dtype} / {pv.dtype} differ from K / V's")
        if pk.shape is not None and pv.shape is not None:
            if len(pk.shape) != 4 or len(pv.shape) != 4:
                raise TypeRuleError(f"past_key {pk} and past_value {pv} must be 4-D")
            for want, got, name in ((batch, pk.shape[0], "past_key batch"), (kvh, pk.shape[1], "past_key heads"),
                                    (head, pk.shape[3], "past_key head size"), (batch, pv.shape[0], "past_value batch"),
                                    (kvh, pv.shape[1], "past_value heads"), (v_head, pv.shape[3], "past_value head size")):
                _same(want, got, f"{name} does not match K / V")
            total = dims.add(_same(pk.shape[2], pv.shape[2], "past_key and past_value lengths differ"), kv_len)
        else:
            total = None
    if ctx.has(3) and ctx.type(3).shape is not None:
        mask = ctx.type(3).shape
        if not 1 <= len(mask) <= 4:
            raise TypeRuleError(f"attn_mask must have rank 1 to 4, got {ctx.type(3)}")
        if isinstance(mask[-1], int) and isinstance(total, int) and mask[-1] > total:
            raise TypeRuleError(f"attn_mask covers {mask[-1]} keys but there are only {total}")
        broadcast_shapes(mask[:-1], (batch, qh, q_len))
    y = (batch, qh, q_len, v_head) if rank == 4 else (batch, q_len, dims.mul(qh, v_head))
    outs = [TensorType(q.dtype, y), TensorType(q.dtype, (batch, kvh, total, head)),
            TensorType(v.dtype, (batch, kvh, total, v_head)), TensorType(q.dtype, (batch, qh, q_len, total))]
    return outs[: ctx.num_outputs]


def attention_bias(attn_mask: np.ndarray | None, dtype: np.dtype, *, batch: int, q_len: int, total: int, past: int,
                   nonpad_kv_seqlen: np.ndarray | None, is_causal: bool, left: int, right: int) -> np.ndarray:
    """The additive bias (0 or -inf, plus a float mask) broadcastable to (batch, heads, q_len, total)."""
    zero, neg_inf = dtype.type(0), dtype.type(-np.inf)
    bias = np.zeros((q_len, total), dtype)
    if attn_mask is not None:
        short = total - attn_mask.shape[-1]
        if short < 0:
            raise ValueError(f"attn_mask covers {attn_mask.shape[-1]} keys but there are only {total}")
        # A mask shorter than the keys is padded with "not allowed" (ONNX 24).
        pad = [(0, 0)] * (attn_mask.ndim - 1) + [(0, short)]
        if attn_mask.dtype == np.bool_:
            bias = bias + np.where(np.pad(attn_mask, pad, constant_values=False), zero, neg_inf)
        else:
            bias = bias + np.pad(attn_mask, pad, constant_values=neg_inf)
    # Query i sits at absolute position i + offset: after the past cache, or (external cache) after
    # nonpad - q_len valid keys of its batch entry.
    if nonpad_kv_seqlen is not None and past == 0:
        offset: np.ndarray | int = (nonpad_kv_seqlen.reshape(-1) - q_len).reshape(-1, 1, 1, 1)
    else:
        offset = past
    position = np.arange(q_len).reshape(q_len, 1) + offset  # (q, 1) or (batch, 1, q, 1)
    key = np.arange(total)
    allowed = np.ones((1, 1, q_len, total), dtype=bool)
    if is_causal:
        allowed = allowed & (key <= position)
    if left >= 0:
        allowed = allowed & (position - key <= left)
    if right >= 0:
        allowed = allowed & (key - position <= right)
    if nonpad_kv_seqlen is not None:
        allowed = allowed & (key < nonpad_kv_seqlen.reshape(-1, 1, 1, 1))
    return bias + np.where(allowed, zero, neg_inf)


@defop("attention", onnx="Attention", since=(23, 24, 25),
       inputs=["Q", "K", "V", "attn_mask?", "past_key?", "past_value?", "nonpad_kv_seqlen?"],
       outputs=["Y", "present_key?", "present_value?", "qk_matmul_output?"],
       attrs={"is_causal": Int(0), "kv_num_heads": Int(None), "q_num_heads": Int(None), "qk_matmul_output_mode": Int(0),
              "scale": Float(None), "softcap": Float(0.0), "softmax_precision": Type(None),
              "left_window_size": Int(-1), "right_window_size": Int(-1)},
       infer=_attention_type)
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, attn_mask: np.ndarray | None = None,
              past_key: np.ndarray | None = None, past_value: np.ndarray | None = None,
              nonpad_kv_seqlen: np.ndarray | None = None, *, is_causal: int, kv_num_heads: int | None,
              q_num_heads: int | None, qk_matmul_output_mode: int, scale: float | None, softcap: float,
              softmax_precision: DType | None, left_window_size: int, right_window_size: int) -> tuple[np.ndarray, ...]:
    """softmax(softcap(Q K^T * scale) + mask) V per head; K/V heads repeat for grouped queries [h0, h0, h1, h1, ...]."""
    if (past_key is None) != (past_value is None):
        raise ValueError("past_key and past_value must be given together")
    three_d = q.ndim == 3
    if three_d:
        if q_num_heads is None or kv_num_heads is None:
            raise ValueError("3-D Q, K, V need the q_num_heads and kv_num_heads attributes")
        q, k, v = _split_heads(q, q_num_heads, "Q"), _split_heads(k, kv_num_heads, "K"), _split_heads(v, kv_num_heads, "V")
    dt = q.dtype
    present_key = k if past_key is None else np.concatenate([past_key, k], axis=2)
    present_value = v if past_value is None else np.concatenate([past_value, v], axis=2)
    batch, heads, q_len, head_size = q.shape
    kv_heads, total = present_key.shape[1], present_key.shape[2]
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} key/value heads")
    bias = attention_bias(attn_mask, dt, batch=batch, q_len=q_len, total=total,
                          past=0 if past_key is None else past_key.shape[2], nonpad_kv_seqlen=nonpad_kv_seqlen,
                          is_causal=bool(is_causal), left=left_window_size, right=right_window_size)
    keys = np.repeat(present_key, heads // kv_heads, axis=1)
    values = np.repeat(present_value, heads // kv_heads, axis=1)
    # sqrt(scale) on both operands keeps Q K^T from overflowing in low precision (as the spec says).
    root = dt.type(np.sqrt(scale if scale is not None else 1 / np.sqrt(head_size)))
    logits = _matmul(q * root, np.swapaxes(keys, -1, -2) * root)
    capped = np.tanh(logits / dt.type(softcap)) * dt.type(softcap) if softcap > 0 else logits
    scores = capped + bias
    probs = _softmax(scores.astype(softmax_precision.np_dtype if softmax_precision is not None else dt))
    # A query row with no allowed key (decided on the bias, not on possibly-NaN logits) outputs zeros.
    fully_masked = np.isneginf(np.max(bias, axis=-1, keepdims=True))
    probs = np.where(fully_masked, np.zeros((), probs.dtype), probs)
    y = _matmul(probs.astype(dt), values)
    if three_d:
        y = y.transpose(0, 2, 1, 3).reshape(batch, q_len, -1)
    qk_output = (logits, capped, scores, probs)[qk_matmul_output_mode].astype(dt)
    return y, present_key, present_value, qk_output


# ---- RotaryEmbedding --------------------------------------------------------------------------


def _rotary_type(ctx: InferContext) -> list[TensorType]:
    x, cos, sin = ctx.type(0), ctx.type(1), ctx.type(2)
    require_dtype(x, (DType.F32, DType.F16, DType.BF16), "X")
    if cos.dtype != x.dtype or sin.dtype != x.dtype:
        raise TypeRuleError(f"cos_cache / sin_cache dtypes {cos.dtype} / {sin.dtype} differ from X's {x.dtype}")
    heads, rot = ctx.attrs["num_heads"], ctx.attrs["rotary_embedding_dim"]
    if x.shape is not None:
        if len(x.shape) not in (3, 4):
            raise TypeRuleError(f"X must be 3-D or 4-D, got {x}")
        if len(x.shape) == 3 and not heads:
            raise TypeRuleError("3-D X needs the num_heads attribute")
        head = x.shape[3] if len(x.shape) == 4 else _heads_of(x.shape[2], heads, "X")
        rot = rot or head
        if isinstance(rot, int) and (rot % 2 or (isinstance(head, int) and rot > head)):
            raise TypeRuleError(f"rotary_embedding_dim {rot} must be even and at most the head size {head}")
        for t, name in ((cos, "cos_cache"), (sin, "sin_cache")):
            if t.shape is not None and isinstance(rot, int):
                _same(t.shape[-1], rot // 2, f"{name} last dim must be half the rotary dim")
    if ctx.has(3):
        require_dtype(ctx.type(3), (DType.I64,), "position_ids")
    want = 2 if ctx.has(3) else 3
    for t, name in ((cos, "cos_cache"), (sin, "sin_cache")):
        if t.rank is not None and t.rank != want:
            raise TypeRuleError(f"{name} must be {want}-D {'with' if ctx.has(3) else 'without'} position_ids, got {t}")
    return [x]


@defop("rotary_embedding", onnx="RotaryEmbedding", since=(23,), inputs=["X", "cos_cache", "sin_cache", "position_ids?"],
       attrs={"interleaved": Int(0), "num_heads": Int(None), "rotary_embedding_dim": Int(0)}, infer=_rotary_type)
def rotary_embedding(x: np.ndarray, cos_cache: np.ndarray, sin_cache: np.ndarray, position_ids: np.ndarray | None = None,
                     *, interleaved: int, num_heads: int | None, rotary_embedding_dim: int) -> np.ndarray:
    """Rotate the first rotary_embedding_dim features of each head, as halves or as interleaved pairs."""
    if x.ndim == 4:
        xs = x.transpose(0, 2, 1, 3)  # (batch, seq, heads, head_size)
    else:
        b, s, hidden = x.shape
        if not num_heads or hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of num_heads {num_heads}")
        xs = x.reshape(b, s, num_heads, hidden // num_heads)
    rot = rotary_embedding_dim or xs.shape[3]
    if position_ids is not None:
        limit = cos_cache.shape[0]
        if position_ids.size and (position_ids.min() < 0 or position_ids.max() >= limit):
            raise ValueError(f"position_ids must lie in [0, {limit}) (the caches' length)")
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    cos, sin = cos_cache[:, :, None, :], sin_cache[:, :, None, :]  # (batch, seq, 1, rot / 2)
    x_rot, x_pass = xs[..., :rot], xs[..., rot:]
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    else:
        x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    rotated = np.stack([real, imag], axis=-1).reshape(x_rot.shape) if interleaved else np.concatenate([real, imag], axis=-1)
    out = np.concatenate([rotated, x_pass], axis=-1)
    return out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(x.shape)


# ---- SwiGLU -------------------------------------------------------------------------------------


def _swiglu_type(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.type(0), ctx.type(1)
    require_dtype(a, FLOATS, "A")
    if b.dtype != a.dtype:
        raise TypeRuleError(f"B dtype {b.dtype} differs from A's {a.dtype}")
    if a.shape is not None and b.shape is not None:
        if len(a.shape) != len(b.shape):
            raise TypeRuleError(f"A {a} and B {b} must have identical shapes (SwiGLU does not broadcast)")
        return [TensorType(a.dtype, tuple(_same(x, y, "A and B shapes differ") for x, y in zip(a.shape, b.shape)))]
    return [TensorType(a.dtype, a.shape if a.shape is not None else b.shape)]


@defop("swiglu", onnx="SwiGLU", since=(28,), inputs=["A", "B"], attrs={"alpha": Float(1.0)}, infer=_swiglu_type)
def swiglu(a: np.ndarray, b: np.ndarray, *, alpha: float) -> np.ndarray:
    """Y = A * sigmoid(alpha * A) * B, elementwise on identical shapes."""
    if a.shape != b.shape:
        raise ValueError(f"A {list(a.shape)} and B {list(b.shape)} must have identical shapes")
    one = a.dtype.type(1)
    gate = (one / (one + np.exp(a.dtype.type(-alpha) * a))).astype(a.dtype)
    return (a * gate * b).astype(a.dtype)


# ---- LinearAttention ----------------------------------------------------------------------------

_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _linear_attention_type(ctx: InferContext) -> list[TensorType]:
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    a = ctx.attrs
    rule, qh, kvh = a["update_rule"], a["q_num_heads"], a["kv_num_heads"]
    if rule not in _UPDATE_RULES:
        raise TypeRuleError(f"update_rule must be one of {', '.join(_UPDATE_RULES)}, got {rule!r}")
    if qh <= 0 or kvh <= 0 or qh % kvh:
        raise TypeRuleError(f"q_num_heads {qh} must be a positive multiple of kv_num_heads {kvh}")
    require_dtype(q, (DType.F32, DType.F16, DType.BF16), "query")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeRuleError(f"query, key and value must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if ctx.has(4) != gated or ctx.has(5) != delta:
        raise TypeRuleError(f"update_rule {rule!r} needs {'a' if gated else 'no'} decay and {'a' if delta else 'no'} beta input")
    for t, name in ((q, "query"), (k, "key"), (v, "value")):
        if t.rank not in (None, 3):
            raise TypeRuleError(f"{name} must be 3-D (batch, seq, heads * size), got {t}")
    batch = seq = d_k = d_v = None
    if q.shape is not None and k.shape is not None and v.shape is not None:
        batch = _same(_same(q.shape[0], k.shape[0], "query and key batch"), v.shape[0], "query and value batch")
        seq = _same(_same(q.shape[1], k.shape[1], "query and key lengths"), v.shape[1], "query and value lengths")
        d_k = _same(_heads_of(q.shape[2], qh, "query"), _heads_of(k.shape[2], kvh, "key"), "query and key head sizes")
        d_v = _heads_of(v.shape[2], kvh, "value")
    for i, name, allowed in ((4, "decay", (kvh, dims.mul(kvh, d_k))), (5, "beta", (kvh, 1))):
        shape = ctx.type(i).shape if ctx.has(i) else None
        if shape is not None:
            if len(shape) != 3:
                raise TypeRuleError(f"{name} must be 3-D, got {ctx.type(i)}")
            if isinstance(shape[2], int) and all(isinstance(d, int) and d != shape[2] for d in allowed):
                raise TypeRuleError(f"{name}'s last dim {shape[2]} must be one of {', '.join(map(str, allowed))}")
    state_dtype = q.dtype
    if ctx.has(3):
        s = ctx.type(3)
        require_dtype(s, (DType.F32, DType.F16, DType.BF16), "past_state")
        state_dtype = s.dtype
        if s.shape is not None:
            want = (batch, kvh, d_k, d_v)
            if len(s.shape) != 4:
                raise TypeRuleError(f"past_state must be 4-D (batch, kv_heads, d_k, d_v), got {s}")
            batch, _, d_k, d_v = (_same(w, g, "past_state shape") for w, g in zip(want, s.shape))
    return [TensorType(q.dtype, (batch, seq, dims.mul(qh, d_v))), TensorType(state_dtype, (batch, kvh, d_k, d_v))][: ctx.num_outputs]


@defop("linear_attention", onnx="LinearAttention", since=(27,),
       inputs=["query", "key", "value", "past_state?", "decay?", "beta?"], outputs=["output", "present_state?"],
       attrs={"chunk_size": Int(64), "kv_num_heads": Int(), "q_num_heads": Int(), "scale": Float(0.0),
              "update_rule": Str("gated_delta")}, infer=_linear_attention_type)
def linear_attention(query: np.ndarray, key: np.ndarray, value: np.ndarray, past_state: np.ndarray | None = None,
                     decay: np.ndarray | None = None, beta: np.ndarray | None = None, *, chunk_size: int,
                     kv_num_heads: int, q_num_heads: int, scale: float, update_rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The recurrence S_t = exp(g_t) S_{t-1} + k_t (x) (beta_t (v_t - exp(g_t) S_{t-1}^T k_t)), o_t = scale q_t^T S_t,
    in float32, token by token (gating and the delta correction per update_rule; chunk_size is only a hint)."""
    f32 = np.float32
    b, t, _ = query.shape
    q4, k4, v4 = (_split_heads(x, h, n).astype(f32) for x, h, n in
                  ((query, q_num_heads, "query"), (key, kv_num_heads, "key"), (value, kv_num_heads, "value")))
    d_k, d_v = q4.shape[3], v4.shape[3]
    if decay is not None:  # per head (B, T, H) or per key feature (B, T, H * d_k) -> (B, H, T, 1 or d_k)
        per_head = decay.shape[-1] == kv_num_heads
        if not per_head and decay.shape[-1] != kv_num_heads * d_k:
            raise ValueError(f"decay's last dim {decay.shape[-1]} is neither kv_num_heads nor kv_num_heads * d_k")
        decay4 = decay.reshape(b, t, kv_num_heads, 1 if per_head else -1).transpose(0, 2, 1, 3).astype(f32)
    if beta is not None:  # (B, T, H or 1) -> (B, H or 1, T, 1)
        if beta.shape[-1] not in (kv_num_heads, 1):
            raise ValueError(f"beta's last dim {beta.shape[-1]} is neither kv_num_heads nor 1")
        beta4 = beta.reshape(b, t, beta.shape[-1], 1).transpose(0, 2, 1, 3).astype(f32)
    if past_state is not None and past_state.shape != (b, kv_num_heads, d_k, d_v):
        raise ValueError(f"past_state shape {list(past_state.shape)} is not {[b, kv_num_heads, d_k, d_v]}")
    state = np.zeros((b, kv_num_heads, d_k, d_v), f32) if past_state is None else past_state.astype(f32)
    scale_value = f32(scale if scale != 0.0 else 1.0 / np.sqrt(d_k))
    group = q_num_heads // kv_num_heads
    outputs = np.zeros((b, q_num_heads, t, d_v), f32)
    for i in range(t):
        k_t, v_t = k4[:, :, i, :], v4[:, :, i, :]
        if decay is not None:
            state = state * np.exp(decay4[:, :, i, :])[..., None]
        if beta is not None:
            v_t = beta4[:, :, i, :] * (v_t - np.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t[..., :, None] * v_t[..., None, :]
        outputs[:, :, i, :] = scale_value * np.einsum("bhd,bhdm->bhm", q4[:, :, i, :], np.repeat(state, group, axis=1))
    output = outputs.transpose(0, 2, 1, 3).reshape(b, t, q_num_heads * d_v).astype(query.dtype)
    return output, state.astype(past_state.dtype if past_state is not None else query.dtype)

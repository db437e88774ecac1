"""The attention op family: Attention against a plain numpy softmax(Q K^T * scale + mask) V, grouped-query
heads, KV cache with causal masks, boolean masks, 3-D layouts, symbolic type rules, RotaryEmbedding,
SwiGLU, ONNX version coverage, and agreement with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx.defs
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh

from tritc.frontend.onnx import import_model
from tritc.ir.interpreter import run
from tritc.ir.ops import OPS, TypeRuleError
from tritc.ir.types import DType

from .helpers import infer, tt

RNG = np.random.default_rng(7)


def attention(*arrays, **attrs):
    opdef = OPS["attention"]
    return opdef.compute(*arrays, **opdef.with_defaults(attrs))


def randn(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def plain_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | float, scale: float) -> np.ndarray:
    """softmax(Q K^T * scale + mask) V in float64, one (batch, head) at a time, K/V heads already matched to Q's."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    mask = np.broadcast_to(np.asarray(mask, np.float64), q.shape[:2] + (q.shape[2], k.shape[2]))
    out = np.zeros(q.shape[:3] + (v.shape[3],))
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            logits = q[b, h] @ k[b, h].T * scale + mask[b, h]
            weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
            out[b, h] = weights / weights.sum(axis=-1, keepdims=True) @ v[b, h]
    return out


# ---- Attention semantics ------------------------------------------------------------------------


def test_attention_matches_plain_softmax_with_float_mask():
    q, k, v = randn(2, 3, 4, 8), randn(2, 3, 6, 8), randn(2, 3, 6, 5)
    mask = randn(4, 6)
    y, present_key, present_value, qk = attention(q, k, v, mask, qk_matmul_output_mode=2)
    np.testing.assert_allclose(y, plain_attention(q, k, v, mask, 1 / np.sqrt(8)), rtol=1e-5, atol=1e-6)
    assert y.dtype == np.float32 and y.shape == (2, 3, 4, 5)
    assert present_key is k and present_value is v
    np.testing.assert_allclose(qk, np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(8) + mask, rtol=1e-5, atol=1e-6)


def test_attention_explicit_scale_and_softcap():
    q, k, v = randn(1, 2, 3, 4) * 4, randn(1, 2, 5, 4) * 4, randn(1, 2, 5, 4)
    y, _, _, raw = attention(q, k, v, scale=0.3)
    np.testing.assert_allclose(y, plain_attention(q, k, v, 0.0, 0.3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw, np.einsum("bhqd,bhkd->bhqk", q, k) * 0.3, rtol=1e-5)
    y, _, _, capped = attention(q, k, v, scale=0.3, softcap=2.0, qk_matmul_output_mode=1)
    logits = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) * 0.3
    np.testing.assert_allclose(capped, 2 * np.tanh(logits / 2), rtol=1e-5, atol=1e-6)
    # softcap(x) / scale are the logits whose plain softmax gives the same weights.
    np.testing.assert_allclose(y, plain_attention(q, k, v, 2 * np.tanh(logits / 2) - logits, 0.3), rtol=1e-5, atol=1e-6)


def test_grouped_query_attention_shares_each_kv_head_with_consecutive_query_heads():
    q, k, v = randn(2, 6, 3, 4), randn(2, 2, 5, 4), randn(2, 2, 5, 4)
    y, *_ = attention(q, k, v, is_causal=1)
    kv_of = [h // 3 for h in range(6)]  # heads 0-2 use kv head 0, heads 3-5 kv head 1
    causal = np.where(np.arange(5)[None, :] <= np.arange(3)[:, None], 0.0, -np.inf)
    expected = plain_attention(q, k[:, kv_of], v[:, kv_of], causal, 0.5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_kv_cache_with_causal_mask_is_offset_by_the_past_length():
    past, new = 4, 3
    q, k, v = randn(1, 2, new, 8), randn(1, 2, new, 8), randn(1, 2, new, 8)
    past_key, past_value = randn(1, 2, past, 8), randn(1, 2, past, 8)
    y, present_key, present_value, _ = attention(q, k, v, None, past_key, past_value, is_causal=1)
    np.testing.assert_array_equal(present_key, np.concatenate([past_key, k], axis=2))
    np.testing.assert_array_equal(present_value, np.concatenate([past_value, v], axis=2))
    # Query i is token past + i: it sees keys 0 .. past + i.
    causal = np.where(np.arange(past + new)[None, :] <= past + np.arange(new)[:, None], 0.0, -np.inf)
    np.testing.assert_allclose(y, plain_attention(q, present_key, present_value, causal, 1 / np.sqrt(8)), rtol=1e-5, atol=1e-6)


def test_boolean_mask_equals_minus_infinity_float_mask_and_full_masking_gives_zeros():
    q, k, v = randn(1, 2, 3, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4)
    allowed = RNG.random((3, 5)) > 0.4
    allowed[0] = False  # a query row that may see nothing
    allowed[1, 2] = True
    y_bool, *_ = attention(q, k, v, allowed)
    y_float, *_ = attention(q, k, v, np.where(allowed, 0, -np.inf).astype(np.float32))
    np.testing.assert_array_equal(y_bool, y_float)
    assert not np.isnan(y_bool).any()
    np.testing.assert_array_equal(y_bool[:, :, 0], 0)
    with np.errstate(invalid="ignore"):  # the plain formula gives NaN for the fully-masked row
        expected = plain_attention(q, k, v, np.where(allowed, 0, -np.inf), 0.5)
    np.testing.assert_allclose(y_bool[:, :, 1:], expected[:, :, 1:], rtol=1e-5, atol=1e-6)


def test_short_mask_is_padded_and_nonpad_lengths_hide_padding_keys():
    q, k, v = randn(2, 1, 2, 4), randn(2, 1, 6, 4), randn(2, 1, 6, 4)
    y_short_mask, *_ = attention(q, k, v, np.ones((2, 4), bool))  # keys 4 and 5 are padded as "not allowed"
    y_nonpad, *_ = attention(q, k, v, None, None, None, np.array([4, 6], np.int64))
    for b, (by_mask, by_nonpad) in enumerate([(4, 4), (4, 6)]):
        for y, n in ((y_short_mask, by_mask), (y_nonpad, by_nonpad)):
            expected = plain_attention(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], 0.0, 0.5)
            np.testing.assert_allclose(y[b:b + 1], expected, rtol=1e-5, atol=1e-6)


def test_three_d_layout_is_the_four_d_one_with_heads_packed():
    q, k, v = randn(2, 4, 3, 8), randn(2, 2, 5, 8), randn(2, 2, 5, 6)

    def pack(x: np.ndarray) -> np.ndarray:
        return x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)

    y4, *_ = attention(q, k, v, is_causal=1)
    y3, pk, pv, _ = attention(pack(q), pack(k), pack(v), is_causal=1, q_num_heads=4, kv_num_heads=2)
    np.testing.assert_array_equal(y3, pack(y4))
    np.testing.assert_array_equal(pk, k)
    assert pv.shape == (2, 2, 5, 6)


def test_attention_keeps_half_precision_dtypes():
    q, k, v = (randn(1, 2, 3, 4).astype(np.float16) for _ in range(3))
    outputs = attention(q, k, v, softmax_precision=DType.F32, qk_matmul_output_mode=3)
    assert [o.dtype for o in outputs] == [np.float16] * 4
    np.testing.assert_allclose(outputs[3].astype(np.float32).sum(axis=-1), 1, rtol=2e-3)


# ---- type rules ---------------------------------------------------------------------------------


def test_attention_type_rule_carries_symbolic_dims_through_the_cache():
    outs = infer("attention", tt("f32", "batch", "seq", 2048), tt("f32", "batch", "seq", 512), tt("f32", "batch", "seq", 512),
                 tt("bool", "seq", "past+seq"), tt("f32", "batch", 8, "past", 64), tt("f32", "batch", 8, "past", 64),
                 n_out=4, q_num_heads=32, kv_num_heads=8)
    assert outs == [tt("f32", "batch", "seq", 2048), tt("f32", "batch", 8, "past+seq", 64),
                    tt("f32", "batch", 8, "past+seq", 64), tt("f32", "batch", 32, "seq", "past+seq")]
    (y,) = infer("attention", tt("f16", "b", 9, "s", 8), tt("f16", "b", 3, "t", 8), tt("f16", "b", 3, "t", 10))
    assert y == tt("f16", "b", 9, "s", 10)


@pytest.mark.parametrize("inputs, attrs, message", [
    ([tt("f32", 1, 4, 24), tt("f32", 1, 4, 24), tt("f32", 1, 4, 24)], {}, "need positive q_num_heads"),
    ([tt("f32", 1, 4, 24), tt("f32", 1, 4, 24), tt("f32", 1, 4, 24)], {"q_num_heads": 5, "kv_num_heads": 3}, "not a multiple of 5"),
    ([tt("f32", 1, 4, 3, 8), tt("f32", 1, 3, 5, 8), tt("f32", 1, 3, 5, 8)], {}, "not a multiple of 3"),
    ([tt("f32", 1, 2, 3, 8), tt("f32", 1, 2, 5, 4), tt("f32", 1, 2, 5, 8)], {}, "head sizes differ"),
    ([tt("f32", 1, 2, 3, 8), tt("f16", 1, 2, 5, 8), tt("f32", 1, 2, 5, 8)], {}, "K dtype"),
    ([tt("f32", 1, 2, 3, 8), tt("f32", 1, 2, 5, 8), tt("f32", 1, 2, 5, 8), tt("i32", 3, 5)], {}, "attn_mask must be bool"),
    ([tt("f32", 1, 2, 3, 8), tt("f32", 1, 2, 5, 8), tt("f32", 1, 2, 5, 8), tt("bool", 3, 7)], {}, "only 5"),
    ([tt("f32", 1, 2, 3, 8), tt("f32", 1, 2, 5, 8), tt("f32", 1, 2, 5, 8), None, tt("f32", 1, 2, 4, 8)], {}, "together"),
    ([tt("f32", 1, 2, 3, 8), tt("f32", 1, 2, 5, 8), tt("f32", 1, 2, 5, 8)], {"qk_matmul_output_mode": 4}, "0..3"),
    ([tt("f32", 1, 2, 3, 8), tt("f32", 1, 2, 5, 8), tt("f32", 1, 2, 5, 8)], {"q_num_heads": 4}, "disagrees"),
])
def test_invalid_attention_inputs_are_type_errors(inputs, attrs, message):
    with pytest.raises(TypeRuleError, match=message):
        infer("attention", *inputs, **attrs)


# ---- RotaryEmbedding and SwiGLU -----------------------------------------------------------------


def rope_reference(x: np.ndarray, angles: np.ndarray, rot: int, interleaved: bool) -> np.ndarray:
    """Rotate feature pairs of x (batch, heads, seq, head) by angles (batch, seq, rot / 2) as complex numbers."""
    out = x.astype(np.float64).copy()
    part = out[..., :rot]
    if interleaved:
        pairs = part[..., 0::2] + 1j * part[..., 1::2]
    else:
        pairs = part[..., : rot // 2] + 1j * part[..., rot // 2:]
    turned = pairs * np.exp(1j * angles[:, None, :, :])
    if interleaved:
        out[..., 0:rot:2], out[..., 1:rot:2] = turned.real, turned.imag
    else:
        out[..., : rot // 2], out[..., rot // 2:rot] = turned.real, turned.imag
    return out


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot", [0, 4])
def test_rotary_embedding_is_a_complex_rotation(interleaved, rot):
    x = randn(2, 3, 5, 8)
    table = RNG.uniform(-3, 3, size=(16, (rot or 8) // 2))
    position_ids = RNG.integers(0, 16, size=(2, 5))
    opdef = OPS["rotary_embedding"]
    y = opdef.compute(x, np.cos(table).astype(np.float32), np.sin(table).astype(np.float32), position_ids,
                      **opdef.with_defaults({"interleaved": interleaved, "rotary_embedding_dim": rot}))
    np.testing.assert_allclose(y, rope_reference(x, table[position_ids], rot or 8, bool(interleaved)), rtol=1e-5, atol=1e-6)
    # The 3-D layout packs heads into the last axis: (batch, seq, heads * head).
    packed = x.transpose(0, 2, 1, 3).reshape(2, 5, 24)
    y3 = opdef.compute(packed, np.cos(table).astype(np.float32), np.sin(table).astype(np.float32), position_ids,
                       **opdef.with_defaults({"interleaved": interleaved, "rotary_embedding_dim": rot, "num_heads": 3}))
    np.testing.assert_array_equal(y3, y.transpose(0, 2, 1, 3).reshape(2, 5, 24))


def test_rotary_type_rule_and_errors():
    assert infer("rotary_embedding", tt("f32", "b", "s", 64), tt("f32", 128, 16), tt("f32", 128, 16), tt("i64", "b", "s"),
                 num_heads=2) == [tt("f32", "b", "s", 64)]
    with pytest.raises(TypeRuleError, match="half the rotary dim"):
        infer("rotary_embedding", tt("f32", 1, 2, 3, 8), tt("f32", 10, 3), tt("f32", 10, 3), tt("i64", 1, 3))
    with pytest.raises(TypeRuleError, match="needs the num_heads"):
        infer("rotary_embedding", tt("f32", 1, 3, 8), tt("f32", 10, 4), tt("f32", 10, 4), tt("i64", 1, 3))
    opdef = OPS["rotary_embedding"]
    with pytest.raises(ValueError, match="position_ids"):
        opdef.compute(randn(1, 1, 2, 4), randn(3, 2), randn(3, 2), np.array([[0, 3]]),
                      **opdef.with_defaults({}))


def test_swiglu():
    a, b = randn(3, 4), randn(3, 4)
    opdef = OPS["swiglu"]
    y = opdef.compute(a, b, alpha=0.5)
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(y, a64 / (1 + np.exp(-0.5 * a64)) * b, rtol=1e-6)
    assert infer("swiglu", tt("f16", "n", 8), tt("f16", "n", 8)) == [tt("f16", "n", 8)]
    with pytest.raises(TypeRuleError, match="shapes differ"):
        infer("swiglu", tt("f32", 2, 8), tt("f32", 2, 4))


# ---- onnxruntime and version coverage -------------------------------------------------------------


def model_of(op_type: str, inputs: dict[str, np.ndarray | None], outputs: list[str], opset: int, **attrs) -> onnx.ModelProto:
    """One float32-output node; None inputs are left empty."""
    node = oh.make_node(op_type, [n if a is not None else "" for n, a in inputs.items()], outputs, **attrs)
    graph = oh.make_graph([node], "g",
                          [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                           for n, a in inputs.items() if a is not None],
                          [oh.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=10)


def check_against_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5) -> None:
    ours = list(run(import_model(model), feeds).values())
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6)


def test_gqa_causal_decode_with_cache_and_bool_mask_matches_onnxruntime():
    inputs = {"Q": randn(2, 1, 4 * 8), "K": randn(2, 1, 2 * 8), "V": randn(2, 1, 2 * 8),
              "mask": RNG.random((2, 1, 1, 6)) > 0.2, "past_key": randn(2, 2, 5, 8), "past_value": randn(2, 2, 5, 8)}
    inputs["mask"][..., -1] = True
    model = model_of("Attention", inputs, ["Y", "present_key", "present_value"], 23, is_causal=1, q_num_heads=4,
                     kv_num_heads=2)
    check_against_onnxruntime(model, {k: v for k, v in inputs.items() if v is not None})


def test_rotary_embedding_matches_onnxruntime():
    inputs = {"x": randn(2, 5, 3 * 8), "cos": randn(20, 4), "sin": randn(20, 4),
              "pos": RNG.integers(0, 20, size=(2, 5)).astype(np.int64)}
    for interleaved in (0, 1):
        model = model_of("RotaryEmbedding", inputs, ["y"], 23, num_heads=3, interleaved=interleaved)
        check_against_onnxruntime(model, inputs)


@pytest.mark.parametrize("op_name", ["Attention", "RotaryEmbedding", "SwiGLU", "LinearAttention"])
def test_every_version_imports_as_is(op_name):
    opdef = next(o for o in OPS.values() if o.onnx == op_name)
    versions = {s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == op_name and s.domain == ""}
    assert versions and versions <= set(opdef.since)

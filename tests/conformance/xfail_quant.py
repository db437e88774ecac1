"""Expected failures of the quantization and attention op families (see expected_failures.py)."""

_FLOAT8 = "float8 dtypes are not tritc dtypes"
# The expected values come from ONNX's reference Attention, whose softmax runs step by step in f16 / bf16;
# the expanded graph runs tritc's Softmax, which computes in float32 and rounds once. The two differ by an
# ulp of f16 / bf16 (~1e-3 / 4e-3 relative), above these tests' rtol of 1e-3. (The unexpanded tests pass.)
_LOW_PRECISION_SOFTMAX = "f16/bf16 softmax rounding: tritc's Softmax rounds once from float32, the reference rounds every step"

XFAIL: dict[str, str] = {
    "test_dequantizelinear_e4m3fn": _FLOAT8,
    "test_dequantizelinear_e4m3fn_float16": _FLOAT8,
    "test_dequantizelinear_e4m3fn_zero_point": _FLOAT8,
    "test_dequantizelinear_e5m2": _FLOAT8,
    "test_dequantizelinear_float4e2m1": "float4e2m1 is not a tritc dtype",
    "test_quantizelinear_e4m3fn": _FLOAT8,
    "test_quantizelinear_e5m2": _FLOAT8,
    "test_quantizelinear_float4e2m1": "float4e2m1 is not a tritc dtype",
    "test_attention_3d_causal_bf16_expanded": _LOW_PRECISION_SOFTMAX,
    "test_attention_4d_attn_mask_causal_bf16_expanded": _LOW_PRECISION_SOFTMAX,
    "test_attention_4d_causal_bf16_expanded": _LOW_PRECISION_SOFTMAX,
    "test_attention_4d_causal_fp16_expanded": _LOW_PRECISION_SOFTMAX,
    "test_attention_4d_causal_padded_kv_bf16_expanded": _LOW_PRECISION_SOFTMAX,
    "test_attention_4d_padded_kv_bf16_expanded": _LOW_PRECISION_SOFTMAX,
}

"""Expected failures of the quantization and attention op families (see expected_failures.py)."""

_FLOAT8 = "float8 dtypes are not tritc dtypes"
_SUB_BYTE = "4-bit and 2-bit integer dtypes are not tritc dtypes"

XFAIL: dict[str, str] = {
    "test_dequantizelinear_e4m3fn": _FLOAT8,
    "test_dequantizelinear_e4m3fn_float16": _FLOAT8,
    "test_dequantizelinear_e4m3fn_zero_point": _FLOAT8,
    "test_dequantizelinear_e5m2": _FLOAT8,
    "test_dequantizelinear_float4e2m1": "float4e2m1 is not a tritc dtype",
    "test_dequantizelinear_int2": _SUB_BYTE,
    "test_dequantizelinear_int4": _SUB_BYTE,
    "test_dequantizelinear_uint2": _SUB_BYTE,
    "test_dequantizelinear_uint4": _SUB_BYTE,
    "test_quantizelinear_e4m3fn": _FLOAT8,
    "test_quantizelinear_e5m2": _FLOAT8,
    "test_quantizelinear_float4e2m1": "float4e2m1 is not a tritc dtype",
    "test_quantizelinear_int2": _SUB_BYTE,
    "test_quantizelinear_int4": _SUB_BYTE,
    "test_quantizelinear_uint2": _SUB_BYTE,
    "test_quantizelinear_uint4": _SUB_BYTE,
}

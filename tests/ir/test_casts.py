"""tritc's cast rules (tritc/ir/casts.py, docs/OPS.md "Casts") at their edges, against hand-written expectations,
so that no numpy or ml_dtypes version can move them: NaN, +-inf, -0.0, ties, saturation bounds, double-rounding traps.
EDGES is shared with the compiled test (tests/codegen/test_lower_elementwise.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tritc.ir.casts import convert, int_range
from tritc.ir.types import DType

nan, inf = math.nan, math.inf
I32_MAX, I32_MIN, I64_MAX, I64_MIN, U64_MAX = 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 2**64 - 1
_F64_TO_INT = [nan, inf, -inf, 2.0**31, -(2.0**31) - 1, 0.5, -0.5, 2.5, -2.5, -0.0, 2.0**63, -(2.0**63), -(2.0**63) - 2048,
               2.0**64 - 2048, 2.0**64, 1e300]

# (source dtype, source values, target dtype, expected values). Sources are exact in their dtype.
EDGES: list[tuple[str, list, str, list]] = [
    # float -> int: truncate toward zero, saturate, NaN -> 0 (tritc's choice where ONNX says undefined)
    ("f64", _F64_TO_INT, "i32", [0, I32_MAX, I32_MIN, I32_MAX, I32_MIN, 0, 0, 2, -2, 0, I32_MAX, I32_MIN, I32_MIN, I32_MAX,
                                 I32_MAX, I32_MAX]),
    ("f64", _F64_TO_INT, "u32", [0, 2**32 - 1, 0, 2**31, 0, 0, 0, 2, 0, 0, 2**32 - 1, 0, 0, 2**32 - 1, 2**32 - 1, 2**32 - 1]),
    ("f64", _F64_TO_INT, "i64", [0, I64_MAX, I64_MIN, 2**31, -(2**31) - 1, 0, 0, 2, -2, 0, I64_MAX, I64_MIN, I64_MIN, I64_MAX,
                                 I64_MAX, I64_MAX]),
    ("f64", _F64_TO_INT, "u64", [0, U64_MAX, 0, 2**31, 0, 0, 0, 2, 0, 0, 2**63, 0, 0, 2**64 - 2048, U64_MAX, U64_MAX]),
    ("f64", _F64_TO_INT, "i8", [0, 127, -128, 127, -128, 0, 0, 2, -2, 0, 127, -128, -128, 127, 127, 127]),
    ("f32", [nan, 32767.5, -32768.75, 40000.0, 2.0**40, -0.75], "i16", [0, 32767, -32768, 32767, 32767, 0]),
    ("f16", [nan, 255.875, 256.0, -1.0, -0.875, inf], "u8", [0, 255, 255, 0, 0, 255]),
    ("bf16", [nan, 127.5, 128.0, -129.0, -200.0, -inf], "i8", [0, 127, 127, -128, -128, -128]),
    ("f32", [2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0], "i32", [2147483520, I32_MAX, I32_MIN, I32_MIN]),
    # float -> bool: +-0.0 is False, everything else (NaN included) True
    ("f32", [0.0, -0.0, nan, 2.0**-149, -inf], "bool", [False, False, True, True, True]),
    ("bf16", [0.0, -0.0, nan, 2.0**-133], "bool", [False, False, True, True]),
    # float -> float: one rounding to nearest even, +-inf out of range, NaN stays NaN, -0.0 stays -0.0
    ("f64", [1 + 2**-8, 1 + 2**-8 + 2**-40, 1 + 3 * 2**-8, 3.4e38, -3.4e38, 2.0**-133, 2.0**-134, 2.0**-134 + 2.0**-160,
             nan, -0.0, inf],
     "bf16", [1.0, 1 + 2**-7, 1 + 2**-6, inf, -inf, 2.0**-133, 0.0, 2.0**-133, nan, -0.0, inf]),
    ("f64", [65519.99, 65520.0, 1 + 2**-11 + 2**-40, 2.0**-25, 2.0**-25 + 2.0**-50, -(2.0**-26), nan, -inf],
     "f16", [65504.0, inf, 1 + 2**-10, 0.0, 2.0**-24, -0.0, nan, -inf]),
    ("f64", [1 + 2**-24, 1 + 2**-24 + 2**-45, 3.5e38, 1e-46], "f32", [1.0, 1 + 2**-23, inf, 0.0]),
    ("f32", [1 + 2**-8, 1 + 3 * 2**-8, 65520.0, -65519.0], "bf16", [1.0, 1 + 2**-6, 65536.0, -65536.0]),
    ("f32", [65520.0, -65519.0, 2.0**-25], "f16", [inf, -65504.0, 0.0]),
    ("f16", [65504.0, -0.0, nan], "bf16", [65536.0, -0.0, nan]),
    ("bf16", [2.0**17, 2.0**-30, -3.0], "f16", [inf, 0.0, -3.0]),
    # int -> float: one correct rounding to nearest even (+-inf out of range)
    ("i32", [16843009, 16842753, -16842753, 2**24 + 1], "bf16", [16908288.0, 16908288.0, -16908288.0, 2.0**24]),
    ("i64", [I64_MAX, I64_MIN, 2**55 + 2**47, 2**55 + 2**47 + 1, 2**55 + 3 * 2**47, 2**53 + 1], "bf16",
     [2.0**63, -(2.0**63), 2.0**55, 2.0**55 + 2**48, 2.0**55 + 2**49, 2.0**53]),
    ("i64", [65519, 65520, -65520, 2**62, 2049, 2051, I64_MIN], "f16", [65504.0, inf, -inf, inf, 2048.0, 2052.0, -inf]),
    ("u64", [U64_MAX, 2**63 + 2**55 + 1], "bf16", [2.0**64, 2.0**63 + 2**56]),
    ("u64", [U64_MAX, 2**24 + 1, 2**24 + 3], "f32", [2.0**64, 2.0**24, 2.0**24 + 4]),
    ("u64", [2**53 + 1, 2**53 + 3, U64_MAX], "f64", [2.0**53, 2.0**53 + 4, 2.0**64]),
    ("i64", [2**62 + 2**38 + 1, -(2**62) - 2**38], "f32", [2.0**62 + 2**39, -(2.0**62)]),
    ("u32", [2**32 - 1, 2**31 + 2**23 + 1], "bf16", [2.0**32, 2.0**31 + 2**24]),
    ("i16", [2049, -32768, 32767], "f16", [2048.0, -32768.0, 32768.0]),
    # int -> int: the low bits, two's complement
    ("i16", [200, -200, 32767, -32768], "i8", [-56, 56, -1, 0]),
    ("i64", [2**40 + 5, -1, I64_MIN], "u16", [5, 65535, 0]),
    ("i8", [-1, -128], "u64", [U64_MAX, 2**64 - 128]),
    ("u64", [U64_MAX, 2**63], "i64", [-1, I64_MIN]),
    ("u64", [U64_MAX, 2**32 + 7], "i32", [-1, 7]),
    ("u8", [255, 128], "i8", [-1, -128]),
    ("i32", [0, -5, 256], "bool", [False, True, True]),
    # 4- and 2-bit integers: the same rules at their widths
    ("f32", [-9.0, -8.5, 7.875, 8.0, nan, inf, -inf, -0.5], "i4", [-8, -8, 7, 7, 0, 7, -8, 0]),
    ("f32", [-1.0, 15.5, 16.0, nan], "u4", [0, 15, 15, 0]),
    ("f16", [-3.0, -2.5, 1.875, 2.0, nan], "i2", [-2, -2, 1, 1, 0]),
    ("bf16", [3.75, 4.0, -0.125], "u2", [3, 3, 0]),
    ("i8", [8, -9, 15, -1], "i4", [-8, 7, -1, -1]),
    ("i16", [200, 3, -1], "u2", [0, 3, 3]),
    ("i4", [-8, 7, -1], "u8", [248, 7, 255]),
    ("i4", [-8, 7, -1], "bf16", [-8.0, 7.0, -1.0]),
    ("u4", [15, 8], "i4", [-1, -8]),
    ("i2", [-2, 1], "i64", [-2, 1]),
    ("u2", [3, 2], "i2", [-1, -2]),
    ("i4", [0, -8], "bool", [False, True]),
    ("bool", [True, False], "i2", [1, 0]),
    # bool -> number: 0 / 1
    ("bool", [True, False], "f32", [1.0, 0.0]),
    ("bool", [True, False], "bf16", [1.0, 0.0]),
    ("bool", [True, False], "i64", [1, 0]),
    ("bool", [True, False], "u8", [1, 0]),
]


def make(dtype: str, values: list) -> np.ndarray:
    """An array of an IR dtype holding exactly `values` (built from bits, not by a library's rounding)."""
    dt = DType.from_name(dtype)
    if dt is DType.BF16:
        f32 = np.array(values, np.float64).astype(np.float32)
        bits = f32.view(np.uint32)
        assert not (bits & 0xFFFF)[~np.isnan(f32)].any(), f"{values} are not all bf16 values"
        return (bits >> 16).astype(np.uint16).view(dt.np_dtype)
    if dt.is_float:
        a = np.array(values, np.float64)
        out = a.astype(dt.np_dtype)
        assert np.array_equal(out.astype(np.float64), a, equal_nan=True), f"{values} are not all {dtype} values"
        return out
    return np.array(values, dtype=dt.np_dtype)


def as_python(a: np.ndarray) -> list:
    """Array elements as Python values, read without a library conversion (bf16 from its bits)."""
    if a.dtype == DType.BF16.np_dtype:
        return (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64).tolist()
    return a.tolist()


def assert_values(got: np.ndarray, dtype: str, expected: list, what: str) -> None:
    assert got.dtype == DType.from_name(dtype).np_dtype, what
    values = as_python(got)
    for i, (g, e) in enumerate(zip(values, expected, strict=True)):
        if isinstance(e, float):
            same = (math.isnan(g) and math.isnan(e)) or (g == e and math.copysign(1, g) == math.copysign(1, e))
        else:
            same = g == e and type(g) is type(e)
        assert same, f"{what}: element {i} is {g!r}, expected {e!r}"


@pytest.mark.parametrize("src, values, dst, expected", EDGES, ids=[f"{s}-{d}-{i}" for i, (s, _, d, _) in enumerate(EDGES)])
def test_cast_edges(src, values, dst, expected):
    assert_values(convert(make(src, values), DType.from_name(dst)), dst, expected, f"{src} -> {dst}")


def test_int_range_of_every_integer_dtype():
    for dt in DType:
        if dt.is_int:
            lo, hi = int_range(dt)
            assert hi - lo == 2**dt.bits - 1 and (lo < 0) == dt.is_signed


def test_float_to_int_saturates_at_every_width():
    """Every integer dtype: just inside, at and beyond both ends, and NaN."""
    for dt in DType:
        if not dt.is_int:
            continue
        lo, hi = int_range(dt)
        x = np.array([lo - 0.5, lo - 1e30, float(hi) + 1, 1e30, nan, -0.0], np.float64)
        want = [lo, lo, hi, hi, 0, 0]
        assert convert(x, dt).tolist() == want, dt


def test_sub_byte_types_are_storage_only():
    """i4 / u4 / i2 / u2 are storage types (as in ONNX): casts and quantization take them, arithmetic refuses them."""
    from tritc.ir.ops import OPS, InferContext, TypeRuleError
    from tritc.ir.types import TensorType

    t = TensorType(DType.I4, (4,))
    for op in ("add", "relu", "matmul"):
        with pytest.raises(TypeRuleError, match="i4"):
            OPS[op].infer(InferContext(op, [t, t][:len(OPS[op].inputs)], OPS[op].with_defaults({}), [None, None], 1))
    cast = OPS["cast"]
    assert cast.infer(InferContext("cast", [t], cast.with_defaults({"to": DType.F32}), [None], 1)) == [TensorType(DType.F32, (4,))]

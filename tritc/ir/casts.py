"""tritc's conversions between element types: what `cast`, `cast_like` and every other conversion in the
interpreter mean. Written once here in integer and exact float arithmetic, so no library's conversion
(numpy's astype, ml_dtypes' bf16) decides a result. RULES is docs/OPS.md's "Casts" section.
"""

from __future__ import annotations

import numpy as np

from .types import DType

# Significand bits (with the implicit one), smallest normal exponent, largest finite value per float dtype.
_FORMATS: dict[DType, tuple[int, int, float]] = {
    DType.F16: (11, -14, 65504.0),
    DType.BF16: (8, -126, float.fromhex("0x1.fep127")),
    DType.F32: (24, -126, float.fromhex("0x1.fffffep127")),
    DType.F64: (53, -1022, float.fromhex("0x1.fffffffffffffp1023")),
}
_U64 = np.uint64

# (from, to, rule, who decides): rendered into docs/OPS.md by opdoc.py.
RULES: tuple[tuple[str, str, str, str], ...] = (
    ("float", "float", "rounded once to nearest even (f64 -> f16 / bf16 too: no double rounding through f32); +-inf "
                       "beyond the range; NaN stays NaN; -0.0 stays -0.0", "ONNX"),
    ("int", "float", "rounded once to nearest even (64-bit ints to bf16 / f16 included); +-inf beyond the range", "ONNX"),
    ("int", "int", "the low bits of the two's complement value (200 i16 -> -56 i8, -1 i8 -> 255 u8)", "ONNX"),
    ("float", "int", "truncated toward zero, then saturated to the target's range (3e9 -> 2147483647 i32, -1.5 -> 0 u8, "
                     "+-inf -> max / min); NaN -> 0. Every integer width, unsigned too. The semantics of LLVM's "
                     "llvm.fptosi.sat / fptoui.sat, Rust's `as` and WebAssembly's trunc_sat",
     "tritc (ONNX: undefined out of range)"),
    ("float", "bool", "+-0.0 -> false; everything else, NaN included -> true", "ONNX"),
    ("int", "bool", "0 -> false, anything else -> true", "ONNX"),
    ("bool", "number", "false -> 0, true -> 1", "ONNX"),
)


def int_range(dtype: DType) -> tuple[int, int]:
    """The smallest and largest value of an integer dtype (bool: 0, 1)."""
    if dtype is DType.BOOL:
        return 0, 1
    if not dtype.is_int:
        raise ValueError(f"{dtype} is not an integer dtype")
    if dtype.is_signed:
        return -(1 << (dtype.bits - 1)), (1 << (dtype.bits - 1)) - 1
    return 0, (1 << dtype.bits) - 1


def convert(x: np.ndarray, to: DType) -> np.ndarray:
    """x (an array of any IR dtype's numpy container) as an array of dtype `to`, by tritc's cast rules."""
    x = np.asarray(x)
    src = DType.from_numpy(x.dtype)
    if src is to:
        return x
    if to is DType.BOOL:
        return np.asarray((float_values(x) if src.is_float else int_values(x)) != 0)
    if src.is_float:
        v = float_values(x)
        return round_float(v, to) if to.is_float else float_to_int(v, to)
    v = int_values(x)
    return int_to_float(v, to) if to.is_float else wrap_int(v, to)


def as_dtype(result: object, dtype: np.dtype) -> np.ndarray:
    """A numpy result (which numpy may have promoted, or made a scalar) as an ndarray of exactly `dtype`."""
    a = np.asarray(result)
    return a if a.dtype == dtype else convert(a, DType.from_numpy(dtype))


# ---- reading values exactly -------------------------------------------------------------------


def float_values(x: np.ndarray) -> np.ndarray:
    """The values of a float array as float64 (exact for every float dtype)."""
    if x.dtype == DType.BF16.np_dtype:  # bf16 bits are the high half of a float32
        return (x.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    return x.astype(np.float64)


def int_values(x: np.ndarray) -> np.ndarray:
    """The values of an integer or bool array, as int64 (signed and narrow dtypes) or uint64 (u64)."""
    if x.dtype == np.bool_:
        return (x.view(np.uint8) != 0).astype(np.int64)
    dtype = DType.from_numpy(x.dtype)
    if dtype.is_sub_byte:  # the value is the byte's low bits (ml_dtypes ignores the others too)
        low = (x.view(np.uint8) & np.uint8((1 << dtype.bits) - 1)).astype(np.int64)
        return low - (low >= (1 << (dtype.bits - 1))) * (1 << dtype.bits) if dtype.is_signed else low
    return x.astype(np.uint64 if x.dtype == np.uint64 else np.int64)


# ---- to floats --------------------------------------------------------------------------------


def round_float(v: np.ndarray, to: DType) -> np.ndarray:
    """float64 values rounded once, to nearest even, to the float dtype `to` (+-inf beyond its range)."""
    v = np.asarray(v, np.float64)
    if to is DType.F64:
        return v.copy()
    precision, emin, largest = _FORMATS[to]
    drop = 53 - precision  # low significand bits of a float64 that `to` has no room for (in its normal range)
    bits = v.view(_U64)
    # Nearest even on the bit pattern: add just under half an ulp plus the lowest kept bit, cut; a carry moves into
    # the exponent, as it should. Sign, infinities and the exponent are untouched.
    rounded = (bits + _U64((1 << (drop - 1)) - 1) + ((bits >> _U64(drop)) & _U64(1))) & _U64(2**64 - (1 << drop))
    out = rounded.view(np.float64)
    out = np.where(np.abs(out) > largest, np.copysign(np.inf, v), out)
    subnormal = (np.abs(v) < 2.0**emin) & (v != 0)
    if subnormal.any():  # below `to`'s smallest normal the ulp is fixed: scale it to 1 (exactly), rint, scale back
        scale = 2.0 ** (precision - 1 - emin)
        out[subnormal] = np.rint(v[subnormal] * scale) / scale
    return _store_float(np.where(np.isfinite(v), out, v), to)


def int_to_float(v: np.ndarray, to: DType) -> np.ndarray:
    """Integers (int64 or uint64 array) correctly rounded once, to nearest even, to the float dtype `to`."""
    precision = _FORMATS[to][0]
    negative = v < 0
    magnitude = v.view(_U64) if v.dtype == np.int64 else v
    magnitude = np.where(negative, ~magnitude + _U64(1), magnitude)  # |INT64_MIN| = 2^63 fits
    value = magnitude.astype(np.float64)  # exact up to 2^53; round_float then rounds once
    big = magnitude > _U64(2**53)
    if big.any():  # rounded here instead, exactly, to `to`'s precision (round_float leaves them as they are)
        value[big] = _round_magnitude(magnitude[big], precision)
    return round_float(np.where(negative, -value, value), to)


def _round_magnitude(m: np.ndarray, precision: int) -> np.ndarray:
    """uint64 values rounded to nearest even at `precision` significant bits, as exact float64 values."""
    shift = np.maximum(_bit_length(m) - precision, 0).astype(_U64)
    kept = m >> shift
    dropped = m & ((_U64(1) << shift) - _U64(1))
    half = np.where(shift > 0, _U64(1) << np.maximum(shift, _U64(1)) - _U64(1), _U64(0))
    up = (shift > 0) & ((dropped > half) | ((dropped == half) & (kept & _U64(1) == 1)))
    return np.ldexp((kept + up.astype(_U64)).astype(np.float64), shift.astype(np.int64))  # <= 2^precision: exact


def _bit_length(m: np.ndarray) -> np.ndarray:
    """Bits needed to write each uint64 (0 for 0)."""
    n = np.zeros(m.shape, np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = m >= (_U64(1) << _U64(step))
        n += np.where(big, step, 0)
        m = np.where(big, m >> _U64(step), m)
    return n + (m > 0)


def _store_float(v: np.ndarray, to: DType) -> np.ndarray:
    """float64 values already representable in `to` (or +-inf, NaN) as an array of `to`: exact."""
    if to is not DType.BF16:
        return np.asarray(v.astype(to.np_dtype))  # (numpy makes 0-d results scalars)
    bits = v.astype(np.float32).view(np.uint32)
    bits = np.where(np.isnan(v), bits | np.uint32(0x00400000), bits)  # a NaN stays a (quiet) NaN, sign and payload kept
    return np.asarray((bits >> np.uint32(16)).astype(np.uint16)).view(DType.BF16.np_dtype)


# ---- to integers ------------------------------------------------------------------------------


def float_to_int(v: np.ndarray, to: DType) -> np.ndarray:
    """float64 values truncated toward zero and saturated to the integer dtype `to`; NaN -> 0."""
    lo, hi = int_range(to)
    t = np.trunc(v)
    below, above = t < float(lo), t >= float(hi + 1)  # lo and hi + 1 are 0 or powers of two: exact in float64
    inside = np.where(below | above | np.isnan(t), 0.0, t)
    # Exact from here on: values of 2^63 and more (u64 only) are converted as t - 2^63 and added back as integers.
    high = inside >= 2.0**63
    out = np.where(high, inside - 2.0**63, inside).astype(np.int64).view(_U64) + np.where(high, _U64(1 << 63), _U64(0))
    out = np.where(below, _U64(lo & (2**64 - 1)), np.where(above, _U64(hi), out))
    return _store_int(out if to is DType.U64 else out.view(np.int64), to)


def wrap_int(v: np.ndarray, to: DType) -> np.ndarray:
    """Integers (int64 or uint64) reduced to their low `to.bits` bits, read back as `to` (two's complement)."""
    bits = v.view(_U64) if v.dtype == np.int64 else v.astype(_U64)
    if to.bits < 64:
        low = (bits & _U64((1 << to.bits) - 1)).astype(np.int64)
        if to.is_signed:
            low = low - np.where(low >= (1 << (to.bits - 1)), 1 << to.bits, 0)
        return _store_int(low, to)
    return _store_int(bits.view(np.int64) if to.is_signed else bits, to)


def _store_int(v: np.ndarray, to: DType) -> np.ndarray:
    """int64 / uint64 values within `to`'s range as an array of `to`."""
    if to.is_sub_byte:  # the value's low bits, the rest of the byte zero (as ml_dtypes and ONNX's unpacking store it)
        return np.asarray((v & ((1 << to.bits) - 1)).astype(np.uint8)).view(to.np_dtype)
    return np.asarray(v.astype(to.np_dtype))


__all__ = ["as_dtype", "convert", "float_to_int", "float_values", "int_range", "int_to_float", "int_values", "round_float",
           "wrap_int"]

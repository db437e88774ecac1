"""Element types, dimensions and tensor types of the IR.

A `TensorType` is a `DType` and a shape. A shape is a tuple of dims, each an `int` (static), a
`str` (a named symbol such as ``batch``, or an expression such as ``past+seq``) or `None`
(unknown); the shape itself is `None` when even the rank is unknown.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Union

import ml_dtypes
import numpy as np

Dim = Union[int, str, None]
Shape = tuple[Dim, ...]


class DType(enum.Enum):
    """An element type: its IR name, numpy dtype, ONNX TensorProto code and bit width."""

    # name    numpy                  onnx  bits
    F32 = ("f32", np.dtype(np.float32), 1, 32)
    F16 = ("f16", np.dtype(np.float16), 10, 16)
    BF16 = ("bf16", np.dtype(ml_dtypes.bfloat16), 16, 16)
    F64 = ("f64", np.dtype(np.float64), 11, 64)
    I8 = ("i8", np.dtype(np.int8), 3, 8)
    U8 = ("u8", np.dtype(np.uint8), 2, 8)
    I16 = ("i16", np.dtype(np.int16), 5, 16)
    U16 = ("u16", np.dtype(np.uint16), 4, 16)
    I32 = ("i32", np.dtype(np.int32), 6, 32)
    U32 = ("u32", np.dtype(np.uint32), 12, 32)
    I64 = ("i64", np.dtype(np.int64), 7, 64)
    U64 = ("u64", np.dtype(np.uint64), 13, 64)
    BOOL = ("bool", np.dtype(np.bool_), 9, 8)
    # ONNX's 4- and 2-bit integers: one value per byte in numpy (ml_dtypes' containers hold the value's low bits,
    # the rest of the byte zero) and in compiled code; packed only in ONNX tensors.
    I4 = ("i4", np.dtype(ml_dtypes.int4), 22, 4)
    U4 = ("u4", np.dtype(ml_dtypes.uint4), 21, 4)
    I2 = ("i2", np.dtype(ml_dtypes.int2), 26, 2)
    U2 = ("u2", np.dtype(ml_dtypes.uint2), 25, 2)
    # Trits {-1, 0, +1}; held as int8 in numpy, packed by codegen. No ONNX equivalent.
    T2 = ("t2", np.dtype(np.int8), None, 2)

    def __init__(self, ir_name: str, np_dtype: np.dtype, onnx_code: int | None, bits: int):
        self.ir_name = ir_name
        self.np_dtype = np_dtype
        self.onnx_code = onnx_code
        self.bits = bits

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    def __str__(self) -> str:
        return self.ir_name

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in _INTS

    @property
    def is_signed(self) -> bool:
        return self.is_float or self in _SIGNED_INTS or self is DType.T2

    @property
    def is_sub_byte(self) -> bool:
        """An integer narrower than a byte (i4, u4, i2, u2): a storage type, which only casts, quantization and
        data movement take (as in ONNX); arithmetic refuses it."""
        return self in _SUB_BYTE_INTS

    @property
    def itemsize(self) -> int:
        """Bytes per element in the unpacked (numpy) form."""
        return self.np_dtype.itemsize

    @staticmethod
    def from_name(name: str) -> DType:
        try:
            return _BY_NAME[name]
        except KeyError:
            raise ValueError(f"unknown dtype '{name}'") from None

    @staticmethod
    def from_numpy(dt: np.dtype | type) -> DType:
        dt = np.dtype(dt)
        for d in DType:
            if d is not DType.T2 and d.np_dtype == dt:
                return d
        raise ValueError(f"numpy dtype {dt} has no IR dtype")

    @staticmethod
    def from_onnx(code: int) -> DType | None:
        """The IR dtype of an ONNX TensorProto element type, or None if tritc has none."""
        return _BY_ONNX.get(code)


_FLOATS = frozenset({DType.F32, DType.F16, DType.BF16, DType.F64})
_SIGNED_INTS = frozenset({DType.I8, DType.I16, DType.I32, DType.I64, DType.I4, DType.I2})
_SUB_BYTE_INTS = frozenset({DType.I4, DType.U4, DType.I2, DType.U2})
_INTS = _SIGNED_INTS | _SUB_BYTE_INTS | frozenset({DType.U8, DType.U16, DType.U32, DType.U64})
_BY_NAME = {d.ir_name: d for d in DType}
_BY_ONNX = {d.onnx_code: d for d in DType if d.onnx_code is not None}

_SYMBOL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPR_RE = re.compile(r"[A-Za-z0-9_+\-*/()]+")


def is_plain_dim_text(text: str) -> bool:
    """Whether a symbolic dim prints without quotes: a name, or a polynomial such as 2*seq+past."""
    if not _EXPR_RE.fullmatch(text) or text[0] in "+-*/" or text.isdigit():
        return False
    if _SYMBOL_RE.fullmatch(text):
        return True
    from . import dims  # a polynomial must parse as one, so '1e3' or '3.5' never pass as names

    return dims.is_polynomial(text)


def is_symbol(text: str) -> bool:
    return bool(_SYMBOL_RE.fullmatch(text))


@dataclass(frozen=True)
class TensorType:
    """The type of a value: element type and shape (None shape = unknown rank)."""

    dtype: DType
    shape: Shape | None

    def __post_init__(self) -> None:
        if self.shape is not None:
            for d in self.shape:
                if d is None or isinstance(d, str):
                    continue
                if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
                    raise TypeError(f"dim {d!r} is not an int, str or None")
                if d < 0:
                    raise ValueError(f"negative dim {d} in shape {self.shape}")
            object.__setattr__(self, "shape", tuple(d if d is None or isinstance(d, str) else int(d) for d in self.shape))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int | None:
        """Number of elements if every dim is static, else None."""
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:  # type: ignore[union-attr]
            n *= d  # type: ignore[operator]
        return n

    def with_shape(self, shape: Shape | None) -> TensorType:
        return TensorType(self.dtype, None if shape is None else tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return format_type(self)


def format_dim(d: Dim) -> str:
    if d is None:
        return "?"
    if isinstance(d, int):
        return str(d)
    if is_plain_dim_text(d):
        return d
    return _quote(d)


def format_type(t: TensorType) -> str:
    if t.shape is None:
        return f"{t.dtype.ir_name}[*]"
    return f"{t.dtype.ir_name}[{','.join(format_dim(d) for d in t.shape)}]"


def _quote(s: str) -> str:
    # JSON-style escapes; kept local so types.py does not depend on text.py.
    import json

    return json.dumps(s, ensure_ascii=True)


def tensor_type_of(array: np.ndarray, dtype: DType | None = None) -> TensorType:
    """The static TensorType of a numpy array (dtype inferred unless given, e.g. for trits)."""
    return TensorType(dtype or DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))


def refine_type(declared: TensorType, inferred: TensorType) -> TensorType:
    """The more precise of two compatible types, dim by dim: static beats symbolic beats unknown.

    The dtype is the declared one (callers check dtypes agree). A symbolic dim that is a
    polynomial of named symbols beats an opaque one, so canonical forms win."""
    if declared.shape is None:
        return TensorType(declared.dtype, inferred.shape)
    if inferred.shape is None or len(inferred.shape) != len(declared.shape):
        return declared
    out: list[Dim] = []
    for a, b in zip(declared.shape, inferred.shape):
        if isinstance(a, int) or b is None:
            out.append(a)
        elif isinstance(b, int) or a is None:
            out.append(b)
        else:
            out.append(a if is_plain_dim_text(a) or not is_plain_dim_text(b) else b)
    return TensorType(declared.dtype, tuple(out))

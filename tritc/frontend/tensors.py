"""TensorProto and SparseTensorProto to numpy, for the ONNX frontend, with every size checked first.

Nothing proportional to a tensor's declared size is allocated before its shape, type, data length
and budget have been checked. Weight data is copied once: out of the protobuf (raw_data) or
straight from the external file into the array, never again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import ModelValidationError, UnsupportedError
from ..ir.types import DType
from .external_data import read_external
from .limits import Limits

T = onnx.TensorProto
# Which typed field holds the values of each element type when raw_data is not used (onnx.proto).
_FIELD = {
    DType.F32: "float_data", DType.F64: "double_data", DType.I64: "int64_data",
    DType.U32: "uint64_data", DType.U64: "uint64_data",
    DType.I32: "int32_data", DType.I16: "int32_data", DType.I8: "int32_data", DType.U16: "int32_data",
    DType.U8: "int32_data", DType.BOOL: "int32_data", DType.F16: "int32_data", DType.BF16: "int32_data",
    DType.I4: "int32_data", DType.U4: "int32_data", DType.I2: "int32_data", DType.U2: "int32_data",
}
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
_MAX_ELEMENTS = 2**63 - 1


def onnx_type_name(code: int) -> str:
    try:
        return T.DataType.Name(code)
    except ValueError:
        return f"unknown type {code}"


@dataclass
class TensorReader:
    """Converts the tensors of one model, keeping the running total of weight bytes within the limits."""

    source: str
    base_dir: Path | None
    limits: Limits
    warnings: list[str] = field(default_factory=list)
    total_bytes: int = 0

    def fail(self, cls: type[Exception], msg: str) -> Exception:
        return cls(f"{self.source}: {msg}")

    def fail_limit(self, name: str, value: int, what: str, unit: str = "bytes") -> Exception:
        return self.limits.exceeded(name, value, f"{self.source}: {what}", unit)

    def _budget(self, what: str, dtype: DType, shape: list[int]) -> tuple[int, int]:
        """(elements, bytes) of a tensor, refusing bad or oversized shapes before anything is allocated."""
        if any(d < 0 for d in shape):
            raise self.fail(ModelValidationError, f"{what} has a negative dim in {shape}")
        if len(shape) > self.limits.max_rank:
            raise self.fail_limit("max_rank", len(shape), f"{what} has rank", "")
        numel = 1
        for d in shape:
            numel *= d
        if numel > _MAX_ELEMENTS:
            raise self.fail(ModelValidationError, f"{what} of shape {shape} has more elements than int64 can count")
        nbytes = numel * dtype.itemsize
        if nbytes > self.limits.max_tensor_bytes:
            raise self.fail_limit("max_tensor_bytes", nbytes, f"{what} of shape {shape} ({dtype}) needs")
        self.total_bytes += nbytes
        if self.total_bytes > self.limits.max_total_weight_bytes:
            raise self.fail_limit("max_total_weight_bytes", self.total_bytes, f"the weights up to {what} need")
        return numel, nbytes

    def dtype_of(self, code: int, what: str) -> DType:
        dtype = DType.from_onnx(code)
        if dtype is None:
            raise self.fail(UnsupportedError, f"{what} has element type {onnx_type_name(code)}, which tritc does not support")
        return dtype

    def read(self, t: onnx.TensorProto, what: str) -> np.ndarray:
        """A TensorProto as a numpy array of its IR dtype."""
        dtype = self.dtype_of(t.data_type, what)
        shape = [int(d) for d in t.dims]
        numel, nbytes = self._budget(what, dtype, shape)
        if t.HasField("segment"):
            raise self.fail(UnsupportedError, f"{what} is a segment of a tensor, which tritc does not support")
        typed = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
        if t.data_location == T.EXTERNAL:
            if typed or t.HasField("raw_data"):
                raise self.fail(ModelValidationError, f"{what} is stored externally but also holds data inline")
            stored = packed_bytes(numel, dtype) if dtype.is_sub_byte else nbytes
            array = np.empty(0, dtype=np.uint8 if dtype.is_sub_byte else dtype.np_dtype)

            def allocate() -> memoryview:
                nonlocal array
                array = np.empty(stored if dtype.is_sub_byte else shape, dtype=array.dtype)
                return memoryview(array.reshape(-1).view(np.uint8))

            read_external(t, self.base_dir, what, self.source, stored, allocate, self.warnings)
            if dtype.is_sub_byte:
                return unpack_sub_byte(array, numel, dtype).reshape(shape)
            return _from_little_endian(array.reshape(shape), dtype)
        if t.HasField("raw_data"):
            if typed:
                raise self.fail(ModelValidationError, f"{what} sets both raw_data and {typed[0]}")
            raw = t.raw_data  # one copy out of the protobuf; the array below is a view of it
            stored = packed_bytes(numel, dtype) if dtype.is_sub_byte else nbytes
            if len(raw) != stored:
                raise self.fail(ModelValidationError, f"{what} of shape {shape} ({dtype}) needs {stored} bytes "
                                                      f"of raw_data, it has {len(raw)}")
            if dtype.is_sub_byte:
                return unpack_sub_byte(np.frombuffer(raw, dtype=np.uint8), numel, dtype).reshape(shape)
            array = np.frombuffer(raw, dtype=dtype.np_dtype).reshape(shape)
            return _from_little_endian(array, dtype)
        return self._typed(t, what, dtype, shape, numel, typed)

    def _typed(self, t: onnx.TensorProto, what: str, dtype: DType, shape: list[int], numel: int,
               typed: list[str]) -> np.ndarray:
        want = _FIELD[dtype]
        if typed and typed != [want]:
            raise self.fail(ModelValidationError, f"{what} ({dtype}) holds its values in {', '.join(typed)}; "
                                                  f"a {onnx_type_name(t.data_type)} tensor uses {want}")
        values = getattr(t, want)
        stored = packed_bytes(numel, dtype) if dtype.is_sub_byte else numel
        if len(values) != stored:
            packing = f" ({8 // dtype.bits} to a value)" if dtype.is_sub_byte else ""
            raise self.fail(ModelValidationError, f"{what} of shape {shape} needs {stored} values{packing}, "
                                                  f"it holds {len(values)}")
        if dtype.is_sub_byte:  # each int32 holds one packed byte
            wide = np.array(values, dtype=np.int64)
            if wide.size and (wide.min() < 0 or wide.max() > 255):
                raise self.fail(ModelValidationError, f"{what} ({dtype}) holds values outside [0, 255] in int32_data "
                                                      f"(each is a byte of packed {dtype.bits}-bit values)")
            array = unpack_sub_byte(wide.astype(np.uint8), numel, dtype)
        elif want == "int32_data" and dtype is not DType.I32:
            # Narrow types are stored one per int32; half floats as their 16-bit patterns.
            wide = np.array(values, dtype=np.int64)
            store = np.uint16 if dtype in (DType.F16, DType.BF16) else np.uint8 if dtype is DType.BOOL else dtype.np_dtype
            lo, hi = (0, 1) if dtype is DType.BOOL else (np.iinfo(store).min, np.iinfo(store).max)
            if wide.size and (wide.min() < lo or wide.max() > hi):
                raise self.fail(ModelValidationError, f"{what} ({dtype}) holds values outside [{lo}, {hi}] in int32_data")
            narrow = wide.astype(store)
            array = narrow.view(dtype.np_dtype) if dtype in (DType.F16, DType.BF16) else narrow.astype(dtype.np_dtype)
        else:
            array = np.array(values, dtype=dtype.np_dtype)
        return array.reshape(shape)

    def read_sparse(self, sp: onnx.SparseTensorProto, what: str) -> np.ndarray:
        """A SparseTensorProto as a dense array (the IR has no sparse tensors)."""
        dtype = self.dtype_of(sp.values.data_type, what)
        shape = [int(d) for d in sp.dims]
        numel, _ = self._budget(what, dtype, shape)
        values = self.read(sp.values, f"{what} (values)")
        indices = self.read(sp.indices, f"{what} (indices)")
        if values.ndim != 1:
            raise self.fail(ModelValidationError, f"{what}: sparse values must be 1-D, got shape {list(values.shape)}")
        nnz = values.shape[0]
        if indices.dtype != np.int64:
            raise self.fail(ModelValidationError, f"{what}: sparse indices must be int64, got {indices.dtype}")
        if indices.shape == (nnz,):
            flat = indices
        elif indices.shape == (nnz, len(shape)):
            if nnz and ((indices < 0).any() or (indices >= np.array(shape, dtype=np.int64)).any()):
                raise self.fail(ModelValidationError, f"{what}: a sparse index is outside the shape {shape}")
            flat = np.ravel_multi_index(tuple(indices.T), shape) if nnz else np.zeros(0, np.int64)
        else:
            raise self.fail(ModelValidationError, f"{what}: sparse indices of shape {list(indices.shape)} do not fit "
                                                  f"{nnz} values of a rank-{len(shape)} tensor")
        if nnz and (flat.min() < 0 or flat.max() >= numel):
            raise self.fail(ModelValidationError, f"{what}: a sparse index is outside the {numel} elements of {shape}")
        if nnz > 1 and (np.diff(flat) <= 0).any():
            raise self.fail(ModelValidationError, f"{what}: sparse indices are not strictly increasing")
        dense = np.zeros(numel, dtype=dtype.np_dtype)
        dense[flat] = values
        return dense.reshape(shape)


def packed_bytes(numel: int, dtype: DType) -> int:
    """Bytes that `numel` values of a 4- or 2-bit dtype take packed (ONNX: low bits first, the last byte padded)."""
    return -(-numel * dtype.bits // 8)


def unpack_sub_byte(packed: np.ndarray, numel: int, dtype: DType) -> np.ndarray:
    """Packed 4- or 2-bit values (uint8, first value in the lowest bits) as a flat array of dtype, one value per
    byte. Every bit pattern is a valid value; `packed` holds exactly packed_bytes(numel) bytes (checked by callers)."""
    per_byte, mask = 8 // dtype.bits, np.uint8((1 << dtype.bits) - 1)
    values = np.empty(packed.size * per_byte, dtype=np.uint8)
    for j in range(per_byte):
        values[j::per_byte] = (packed >> np.uint8(j * dtype.bits)) & mask
    return values[:numel].view(dtype.np_dtype)


def _from_little_endian(array: np.ndarray, dtype: DType) -> np.ndarray:
    """ONNX stores raw data little-endian; normalize bools to 0/1 (any non-zero byte is true)."""
    if dtype is DType.BOOL:
        as_bytes = array.view(np.uint8)
        return array if not (as_bytes > 1).any() else (as_bytes != 0)
    if sys.byteorder == "big" and dtype.itemsize > 1:
        return array.byteswap()
    return array

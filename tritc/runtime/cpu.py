"""Run compiled CPU code on numpy arrays: one call into tritc_main per run, no Python per op.

A CpuExecutable wraps one code's object (loaded with MCJIT). The caller hands it the outputs' shapes,
an arena (scratch of the code's arena size, reused across calls: the model keeps one per thread) and the
sizes of the call's symbols (the dims array of the entry, docs/CODEGEN.md). A non-zero status from the
code (a scratch allocation failed) becomes a RunError naming the node.
"""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Sequence

import numpy as np

from ..codegen.llvm.jit import LoadedObject
from ..codegen.llvm.kernels.threads import ensure_pool
from ..codegen.llvm.lower import ABI_VERSION, FAILURES
from ..codegen.llvm.target import Target
from ..errors import ArtifactVersionError, CompilerError, RunError, RunOutOfMemoryError
from ..ir.types import TensorType
from .feeds import data_pointer

ALIGN = 64
_POINTERS = {4: "I", 8: "Q"}[ctypes.sizeof(ctypes.c_void_p)]  # array typecode of a pointer-sized unsigned integer


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """An uninitialised uint8 buffer of `nbytes` whose data pointer is `align`-aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


class CpuExecutable:
    """Object code for one code of a model, ready to call."""

    def __init__(self, obj: bytes, target: Target, entry: str, output_types: Sequence[TensorType], weights: np.ndarray,
                 threads: int = 1):
        if b"tritc_parallel_for" in obj:
            # Multi-threaded kernels call into the process-wide pool: it must exist before linking.
            ensure_pool(threads)
        self.lib = LoadedObject(obj, target)
        abi = ctypes.c_int32.from_address(self.lib.address("tritc_abi_version")).value
        if abi != ABI_VERSION:
            raise ArtifactVersionError(f"compiled code of ABI {abi}, this tritc runs ABI {ABI_VERSION}: recompile the model")
        self.entry = self.lib.function(entry, ctypes.c_int32, [ctypes.c_void_p] * 5)
        self.output_types = list(output_types)
        self.output_dtypes = [t.dtype.np_dtype for t in self.output_types]
        self.weights = weights  # keep the blob alive as long as the code that reads it
        self.weights_pointer = weights.ctypes.data

    def __call__(self, inputs: Sequence[np.ndarray], output_shapes: Sequence[Sequence[int]], arena: np.ndarray,
                 dims: Sequence[int], outputs: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Run on arrays already checked against the code's input types (contiguous, right dtype); `arena` holds at
        least the code's arena size for these dims (one per symbol of the model, as the entry's int64 dims array).
        `outputs`: arrays the caller bound (checked: dtype, shape, contiguous, writable), None for those to allocate
        here."""
        if outputs is None:
            outs = [np.empty(s, t) for s, t in zip(output_shapes, self.output_dtypes)]
        else:
            outs = [a if a is not None else np.empty(s, t) for a, s, t in zip(outputs, output_shapes, self.output_dtypes)]
        # The pointer tables and the dims as flat machine arrays (array.array: cheaper to fill than ctypes arrays).
        in_ptrs = array(_POINTERS, [data_pointer(a) for a in inputs] or [0])
        out_ptrs = array(_POINTERS, [data_pointer(a) for a in outs] or [0])
        dims_array = array("q", dims or [0])
        status = self.entry(in_ptrs.buffer_info()[0], out_ptrs.buffer_info()[0], self.weights_pointer,
                            data_pointer(arena), dims_array.buffer_info()[0])
        if status != 0:
            raise self.failure(status)
        return outs

    def failure(self, status: int) -> RunError:
        """The exception for a status, described by the object's failure table (docs/CODEGEN.md)."""
        try:
            lines = ctypes.string_at(self.lib.address(FAILURES)).decode("utf-8", "replace").split("\n")
        except CompilerError:
            lines = []
        if not 1 <= status <= len(lines) or "\t" not in lines[status - 1]:
            return RunError(f"compiled model returned status {status}")
        kind, message = lines[status - 1].split("\t", 1)
        return (RunOutOfMemoryError if kind == "memory" else RunError)(message)

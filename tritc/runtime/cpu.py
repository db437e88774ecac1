"""Run compiled CPU code on numpy arrays: one call into tritc_main per run, no Python per op.

A CpuExecutable wraps one specialisation's object code (loaded with MCJIT). It allocates the
outputs and a fresh arena per call, so concurrent calls from several Python threads are safe
(the thread pool inside serialises parallel regions and runs them inline when busy). A non-zero
status from the code (a scratch allocation failed) becomes a RunError naming the node.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from ..codegen.llvm.jit import LoadedObject
from ..codegen.llvm.kernels.threads import ensure_pool
from ..codegen.llvm.lower import FAILURES
from ..codegen.llvm.target import Target
from ..errors import CompilerError, RunError, RunOutOfMemoryError
from ..ir.types import TensorType

ALIGN = 64


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """An uninitialised uint8 buffer of `nbytes` whose data pointer is `align`-aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


class CpuExecutable:
    """Object code for one specialisation, ready to call."""

    def __init__(self, obj: bytes, target: Target, entry: str, input_types: Sequence[TensorType],
                 output_types: Sequence[TensorType], arena_bytes: int, weights: np.ndarray, threads: int = 1):
        if b"tritc_parallel_for" in obj:
            # Multi-threaded kernels call into the process-wide pool: it must exist before linking.
            ensure_pool(threads)
        self.lib = LoadedObject(obj, target)
        self.entry = self.lib.function(entry, ctypes.c_int32, [ctypes.c_void_p] * 4)
        self.input_types = list(input_types)
        self.output_types = list(output_types)
        self.arena_bytes = arena_bytes
        self.weights = weights  # keep the blob alive as long as the code that reads it

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays already checked against input_types (contiguous, right dtype)."""
        outs = [np.empty(t.shape, dtype=t.dtype.np_dtype) for t in self.output_types]  # type: ignore[arg-type]
        in_ptrs = (ctypes.c_void_p * max(len(inputs), 1))(*[a.ctypes.data for a in inputs])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs])
        arena = aligned_empty(self.arena_bytes)
        status = self.entry(ctypes.addressof(in_ptrs), ctypes.addressof(out_ptrs), self.weights.ctypes.data,
                            arena.ctypes.data)
        if status != 0:
            raise self.failure(status)
        return outs

    def failure(self, status: int) -> RunError:
        """The exception for a status, described by the object's failure table (docs/CODEGEN.md)."""
        try:
            lines = ctypes.string_at(self.lib.address(FAILURES)).decode("utf-8", "replace").split("\n")
        except CompilerError:  # code compiled before the table existed (ABI 1 trapped instead)
            lines = []
        if not 1 <= status <= len(lines) or "\t" not in lines[status - 1]:
            return RunError(f"compiled model returned status {status}")
        kind, message = lines[status - 1].split("\t", 1)
        return (RunOutOfMemoryError if kind == "memory" else RunError)(message)

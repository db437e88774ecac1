"""What a lowering sees: buffers for its operands and results, the builder, and helpers.

Each node becomes one internal LLVM function ``i32 @node.<i>(ptr in0, ..., ptr out0, ..., ptr dims)``;
the lowering registered for its op (codegen/llvm/ops/) fills that function's body from a NodeCtx.
It returns 0, or the status of a failure site (`NodeCtx.fail_if`) that tritc_main passes on.

A dim is an int when static and a symbolic.Sym (an i64 known at run time, computed from `dims`) when
not: `buf.shape`, `buf.numel`, `buf.strides` mix both, and the builder helpers take either, so a
lowering written for ints runs with symbolic dims as long as it never asks Python about a Sym's value
(ordering and truth raise SymbolicDimError; branch in the generated code instead). docs/CODEGEN.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llvmlite.ir as ir
import numpy as np

from ...ir.graph import Graph, Node
from ...ir.ops import OPS
from ...ir.types import DType, TensorType
from .builder import I8, I32, contiguous_strides, elem_type, gep
from .symbolic import Size, align, size
from .target import Target
from .weights import WeightEntry

ALIGN = 64  # bytes: every scratch part starts on this boundary (arena slots do too)


@dataclass
class Buf:
    """A tensor in memory: pointer to element 0, row-major contiguous. Dims are ints, or Syms when symbolic.
    noalias=False: another operand or result of the node shares these bytes (in place), so helper functions the
    lowering passes the pointer to must not mark it noalias."""

    ptr: ir.Value
    type: TensorType
    noalias: bool = True

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[Size, ...]:
        return tuple(size(d) for d in self.type.shape)  # type: ignore[union-attr]

    def dim(self, i: int) -> Size:
        return self.shape[i]

    @property
    def rank(self) -> int:
        return len(self.type.shape)  # type: ignore[arg-type]

    @property
    def is_static(self) -> bool:
        return self.type.is_static

    @property
    def numel(self) -> Size:
        n: Size = 1
        for d in self.shape:
            n = n * d
        return n

    @property
    def nbytes(self) -> Size:
        return self.numel * self.dtype.itemsize

    @property
    def elem(self) -> ir.Type:
        return elem_type(self.dtype)

    @property
    def strides(self) -> list[Size]:
        return contiguous_strides(self.shape)


@dataclass
class ModuleCtx:
    """State shared by every node of one module."""

    module: ir.Module
    target: Target
    graph: Graph
    threads: int
    globals_count: int = 0
    cache: dict[Any, Any] = field(default_factory=dict)  # lowerings may memoise helper functions here
    failures: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) of status k + 1
    dims_of: dict[str, ir.Value] = field(default_factory=dict)  # function name -> its `ptr dims` (symbolic.materialize)

    def failure_site(self, kind: str, message: str) -> int:
        """The non-zero status tritc_main returns for this failure; the runtime raises `message` for it."""
        self.failures.append((kind, message))
        return len(self.failures)

    def global_array(self, array: np.ndarray, name: str = "const") -> ir.GlobalVariable:
        """A read-only global holding `array` (row-major, raw bytes)."""
        raw = np.ascontiguousarray(array)
        if raw.dtype == np.bool_:
            raw = raw.astype(np.uint8)
        data = bytearray(raw.tobytes())
        ty = ir.ArrayType(I8, len(data))
        self.globals_count += 1
        g = ir.GlobalVariable(self.module, ty, name=f"{name}.{self.globals_count}")
        g.global_constant = True
        g.linkage = "internal"
        g.align = 64
        g.initializer = ir.Constant(ty, data)
        return g


@dataclass
class NodeCtx:
    """One node being lowered: `b` is positioned in its function's entry block."""

    m: ModuleCtx
    b: ir.IRBuilder
    node: Node
    ins: list[Buf | None]
    outs: list[Buf]
    weights: list[WeightEntry | None]  # the blob entry behind each operand that is a weight
    index: int  # the node's position in the graph
    dims: ir.Value | None = None  # the node function's `ptr dims` (None in code without symbolic dims)
    can_fail: bool = False  # a failure site returns from this node's function (tritc_main then checks it)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) of local status k + 1
    consts_read: set[int] = field(default_factory=set)  # operands whose compile-time value the lowering read
    scratch_ptr: ir.Value | None = None  # the node function's `ptr scratch`: its slot of the arena
    scratch_bytes: Size = 0  # what `scratch` handed out (the slot's size)

    @property
    def attrs(self) -> dict[str, Any]:
        return OPS[self.node.op].with_defaults(self.node.attrs)

    @property
    def module(self) -> ir.Module:
        return self.m.module

    @property
    def target(self) -> Target:
        return self.m.target

    def const(self, i: int) -> np.ndarray | None:
        """The compile-time value of operand i, if it is a constant or weight (None otherwise)."""
        if i >= len(self.node.inputs) or self.node.inputs[i] is None:
            return None
        c = self.m.graph.const_value(self.node.inputs[i])
        if isinstance(c, np.ndarray):
            self.consts_read.add(i)  # the node's code depends on this value: functions are shared only if it agrees
            return c
        return None

    @property
    def is_static(self) -> bool:
        """Every operand and result has a static shape (no symbolic dim reaches the code)."""
        return all(buf is None or buf.is_static for buf in [*self.ins, *self.outs])

    def register_dims(self, fn: ir.Function, dims: ir.Value) -> None:
        """Symbolic dims used in `fn` (a helper of this node, e.g. a parallel task) are computed from `dims`."""
        self.m.dims_of[fn.name] = dims

    def global_array(self, array: np.ndarray, name: str = "table") -> ir.GlobalVariable:
        return self.m.global_array(array, f"{name}.n{self.index}")

    def fail_if(self, failed: ir.Value, kind: str, message: str,
                cleanup: Callable[[ir.IRBuilder], None] | None = None) -> None:
        """When `failed` (i1) holds at run time, run `cleanup` and return this failure's status from the node's
        function (so `b` must be in that function, not in a helper). kind "memory" raises a MemoryError.
        Statuses are local to the function (1, 2, ...): nodes that share it map them to their own sites."""
        self.failures.append((kind, message))
        status = len(self.failures)
        self.can_fail = True
        with self.b.if_then(failed, likely=False):
            if cleanup is not None:
                cleanup(self.b)
            self.b.ret(ir.Constant(I32, status))

    def scratch(self, nbytes: Size, name: str = "scratch") -> ir.Value:
        """A pointer to `nbytes` (an int, or a Sym that is a polynomial, sum, max or align of them) of 64-byte aligned
        working memory for this node's call: a part of the node's scratch slot, which the memory plan places in the
        arena for the node's step only, so getting it cannot fail and costs nothing at run time. Each call hands out
        a new part. Call it in the node's function (not a helper's) and pass the pointer on."""
        if self.scratch_ptr is None or self.b.function is not self.scratch_ptr.parent:
            raise RuntimeError(f"node {self.node.describe()}: NodeCtx.scratch is called in the node's own function")
        offset = self.scratch_bytes
        self.scratch_bytes = offset + align(nbytes, ALIGN)
        return gep(self.b, self.scratch_ptr, offset, I8, name=name)

    def new_function(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        """A private helper function for this node (e.g. the body of a parallel-for task)."""
        fn = ir.Function(self.module, ir.FunctionType(ret, args), f"node.{self.index}.{name}")
        fn.linkage = "internal"
        return fn

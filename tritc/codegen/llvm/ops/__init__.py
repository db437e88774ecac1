"""Lowerings: one function per IR op that emits LLVM IR for a node, registered with @lowering.

    @lowering("relu", symbolic=True)
    def relu(ctx: NodeCtx) -> None: ...

`symbolic=True` says the lowering takes symbolic dims (docs/CODEGEN.md, "Symbolic dims"); a node of
any other op must have static shapes, so a model that has one is compiled per binding of its symbols.

Files mirror tritc/ir/ops/ (elementwise, shape, reduce, nn, cnn, quant, attention, ternary, ...),
so an op's four places (OpDef, interpreter semantics, LLVM lowering, FPGA lowering) sit side by
side across the two trees. tests/codegen checks that every op in the table has a lowering.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..context import NodeCtx

Lowering = Callable[[NodeCtx], None]
LOWERINGS: dict[str, Lowering] = {}
# Operands a lowering needs as compile-time constants (shapes, axes, pads, ...). A graph input
# feeding one of them is specialised on its value, like a symbolic dim is on its size.
CONST_OPERANDS: dict[str, tuple[int, ...]] = {}
# Ops whose lowering takes symbolic dims, and which of their CONST_OPERANDS it then reads at run time instead
# (a Slice's starts computed from a Shape): with symbolic dims only the others must be constants.
SYMBOLIC: set[str] = set()
RUNTIME_OPERANDS: dict[str, tuple[int, ...]] = {}


def lowering(*ops: str, const_operands: tuple[int, ...] = (), symbolic: bool = False,
             runtime_operands: tuple[int, ...] = ()) -> Callable[[Lowering], Lowering]:
    """Register `fn` as the lowering of `ops`; `const_operands` lists the operand positions that
    must be constants (the compiler checks, and specialises graph inputs that feed them); `symbolic`
    that it takes symbolic dims, and `runtime_operands` which const operands it can read at run time."""

    def register(fn: Lowering) -> Lowering:
        for op in ops:
            if op in LOWERINGS:
                raise ValueError(f"two lowerings for op '{op}'")
            LOWERINGS[op] = fn
            if const_operands:
                CONST_OPERANDS[op] = tuple(const_operands)
            if symbolic:
                SYMBOLIC.add(op)
            if runtime_operands:
                RUNTIME_OPERANDS[op] = tuple(runtime_operands)
        return fn

    return register


FAMILIES = ("core", "elementwise", "shape", "shape_index", "reduce", "nn", "cnn", "quant", "attention", "attention_fused", "ternary",
            "ternary_conv", "qonnx", "fused")
for _family in FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_family}")
    except ModuleNotFoundError as e:  # a family whose lowerings are not written yet
        if e.name != f"{__name__}.{_family}":
            raise

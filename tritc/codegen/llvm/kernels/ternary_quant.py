"""Activation quantisation of the int8 ternary matmul, emitted in LLVM IR: per-row absmax to int8 codes.

Reproduces tritc.ir.ops.ternary.quantize_activations bit for bit (same f32 operations, round half
to even, NaN-propagating absmax) and also keeps the sums of the codes that the kernels subtract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir
import numpy as np

from ..builder import F32, I32, PTR, for_range, gep, i64
from .vec import (
    V16F32,
    V16I32,
    alloc_scratch,
    call,
    const_vec,
    heap_scratch_bytes,
    ival,
    load_prefix,
    loop,
    mul,
    slots,
    splat,
    vec,
    vload,
    vstore,
)

if TYPE_CHECKING:
    from .ternary import MatmulSpec


def scratch_bytes(spec: MatmulSpec) -> int:
    """Bytes of quantisation scratch: q [M, KP] i8, s [M] f32, sumq [M, G] i32, and alignment slack."""
    return spec.M * spec.KP + 4 * spec.M + 4 * spec.M * spec.G + 64


def heap_bytes(spec: MatmulSpec) -> int:
    """What emit_scratch takes from the heap (0 when the scratch fits on the stack)."""
    return heap_scratch_bytes(scratch_bytes(spec))


def emit_scratch(b: ir.IRBuilder, spec: MatmulSpec, given: ir.Value | None = None) -> tuple[ir.Value | None, ir.Value, ir.Value, ir.Value]:
    """q [M, KP] i8 (64-byte aligned), s [M] f32, sumq [M, G] i32: in `given` (scratch_bytes(spec), 64-byte aligned:
    the node's arena slot), else on the stack if small, else from the heap (a kernel emitted on its own, for tests
    and benchmarks). Returns (what to free, q, s, sumq).

    A failed allocation makes the kernel return 1."""
    qbytes = spec.M * spec.KP
    if given is not None:
        base, owned = given, None
    else:
        base, owned = alloc_scratch(b, scratch_bytes(spec), "scratch")
    if owned is not None:
        with b.if_then(b.icmp_unsigned("==", owned, ir.Constant(PTR, None)), likely=False):
            b.ret(ir.Constant(I32, 1))
    s = gep(b, base, qbytes, ir.IntType(8))
    sumq = gep(b, base, qbytes + 4 * spec.M, ir.IntType(8))
    return owned, base, s, sumq


def emit_quantize(b: ir.IRBuilder, spec: MatmulSpec, x: ir.Value, q: ir.Value, s: ir.Value, sumq: ir.Value) -> None:
    """Per row: s = act_max / max(max|x|, eps) (f32; or act_max * (1 / ...)), q = clip(roundeven(x * s), -128, 127) -> int8, sums of q.

    Exactly quantize_activations: the same f32 operations; max is order-independent. Padding
    columns K..KP-1 get q = 0."""
    K, KP = spec.K, spec.KP
    full, tail = divmod(K, 16)
    act_max = ir.Constant(F32, float(np.float32(spec.act_max)))
    eps = ir.Constant(F32, float(np.float32(spec.act_eps)))
    with for_range(b, spec.M, name="qm") as m:
        row = b.mul(m, i64(K))
        amax = slots(b, V16F32, const_vec(V16F32, 0.0), 1)[0]
        with loop(b, 0, full, "qa") as v:
            xv = vload(b, x, b.add(row, b.mul(v, i64(16))), V16F32)
            b.store(call(b, "llvm.maximum.v16f32", V16F32, b.load(amax, typ=V16F32), call(b, "llvm.fabs.v16f32", V16F32, xv)), amax)
        cur = b.load(amax, typ=V16F32)
        if tail:
            xv = load_prefix(b, x, b.add(row, i64(full * 16)), V16F32, tail, 0.0)
            cur = call(b, "llvm.maximum.v16f32", V16F32, cur, call(b, "llvm.fabs.v16f32", V16F32, xv))
        # NaN-propagating maxima, as numpy's: a row holding a NaN gets s = NaN, so its outputs are NaN
        absmax = call(b, "llvm.vector.reduce.fmaximum.v16f32", F32, cur)
        clamped = call(b, "llvm.maximum.f32", F32, absmax, eps)
        if spec.act_scale == "mul_reciprocal":
            sm = b.fmul(b.fdiv(ir.Constant(F32, 1.0), clamped), act_max)
        else:
            sm = b.fdiv(act_max, clamped)
        b.store(sm, gep(b, s, m, F32))
        ssplat = splat(b, sm, 16)

        def quant(xv: ir.Value) -> ir.Value:
            r = call(b, "llvm.roundeven.v16f32", V16F32, b.fmul(xv, ssplat))
            # maxnum maps NaN to -128, so fptosi never sees a NaN (the row's outputs are NaN anyway)
            r = call(b, "llvm.minnum.v16f32", V16F32, call(b, "llvm.maxnum.v16f32", V16F32, r, const_vec(V16F32, -128.0)),
                     const_vec(V16F32, 127.0))
            return b.fptosi(r, vec(ir.IntType(8), 16))

        qrow = b.mul(m, i64(KP))
        vecs_per_group = spec.group_size // 16 if spec.G > 1 else full
        with loop(b, 0, spec.G, "qg") as g:
            total = slots(b, V16I32, const_vec(V16I32, 0), 1)[0]
            with loop(b, 0, vecs_per_group, "qv") as v:
                kv = b.add(mul(b, g, spec.group_size) if spec.G > 1 else i64(0), b.mul(v, i64(16)))
                qv = quant(vload(b, x, b.add(row, kv), V16F32))
                vstore(b, qv, q, b.add(qrow, kv), align=16)
                b.store(b.add(b.load(total, typ=V16I32), b.sext(qv, V16I32)), total)
            acc = b.load(total, typ=V16I32)
            if tail:  # only when G == 1 (per-group needs K % 16 == 0)
                qv = quant(load_prefix(b, x, b.add(row, i64(full * 16)), V16F32, tail, 0.0))
                vstore(b, qv, q, b.add(qrow, i64(full * 16)), align=16)
                acc = b.add(acc, b.sext(qv, V16I32))
            b.store(call(b, "llvm.vector.reduce.add.v16i32", I32, acc), gep(b, sumq, b.add(b.mul(m, i64(spec.G)), ival(g)), I32))

"""Float-activation ternary matmul: the inner loop per ISA, and numpy's answer for rows of x holding NaN or Inf.

No activation quantisation: y = (x @ trits) * scale in f32, as the interpreter's act="float". The
sums run in another order than numpy's (pairs of k on AVX-512, one FMA per k elsewhere), so results
match to rounding; both loops skip zeros and never multiply a non-finite x by 0, hence the fixup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ..builder import F32, for_range, gep, i64
from .ternary_decode import accumulate_decode
from .ternary_lut import accumulate_lut
from .vec import activation, entry_alloca, sload

if TYPE_CHECKING:
    from .ternary import Frame, MatmulSpec


def accumulate_float(f: Frame, m0: ir.Value | int, nb0: ir.Value | int, mt: int, nc: int,
                     kb0: ir.Value | int, nkb: int) -> list[list[ir.Value]]:
    """sum_k x[m, k] * trit(k, n) for the tile, as acc[t][c] <16 x f32>, over K blocks [kb0, kb0 + nkb):
    pair tables and vpermps on AVX-512 (ternary_lut.py), decoded trits and FMA otherwise (ternary_decode.py)."""
    if f.isa == "avx512vnni":
        return accumulate_lut(f, m0, nb0, mt, nc, kb0, nkb)
    return accumulate_decode(f, m0, nb0, mt, nc, kb0, nkb)


def emit_nonfinite_fixup(b: ir.IRBuilder, spec: MatmulSpec, args: dict[str, ir.Value]) -> None:
    """Float path, rows of x holding NaN or +-Inf: recompute those rows' outputs as numpy does.

    In numpy every output of such a row is NaN or +-Inf (0 * Inf = NaN, Inf - Inf = NaN), and which
    one depends only on the non-finite terms. The loops form every product too (trit 0 included),
    but they group the terms differently (pair sums, partial sums), so a finite part can overflow
    where numpy's does not; here pre[n] = sum over the non-finite x[k] of x[k] * trit(k, n) *
    scale(k, n), then the usual epilogue, pins the class to numpy's. A scan of x costs well under
    1% of the matmul; the recomputation only runs for rows that need it."""
    x, w, y = args["x"], args["w"], args["y"]
    I8T = ir.IntType(8)
    bad = entry_alloca(b, I8T, "bad")
    with for_range(b, spec.M, name="fm") as m:
        row = b.mul(m, i64(spec.K))
        b.store(ir.Constant(I8T, 0), bad)
        with for_range(b, spec.K, name="fk") as k:
            v = sload(b, x, b.add(row, k), F32)
            nonfinite = b.fcmp_unordered("uno", b.fsub(v, v), b.fsub(v, v))
            b.store(b.or_(b.load(bad, typ=I8T), b.zext(nonfinite, I8T)), bad)
        with b.if_then(b.icmp_unsigned("!=", b.load(bad, typ=I8T), ir.Constant(I8T, 0)), likely=False):
            with for_range(b, spec.N, name="fn") as n:
                pre = entry_alloca(b, F32, "pre")
                b.store(ir.Constant(F32, 0.0), pre)
                nb, lane = b.udiv(n, i64(16)), b.urem(n, i64(16))
                with for_range(b, spec.K, name="fk2") as k:
                    v = sload(b, x, b.add(row, k), F32)
                    with b.if_then(b.fcmp_unordered("uno", b.fsub(v, v), b.fsub(v, v))):
                        kb, kr = b.udiv(k, i64(16)), b.urem(k, i64(16))
                        byte = b.add(b.mul(b.add(b.mul(nb, i64(spec.KB)), kb), i64(64)),
                                     b.add(b.mul(lane, i64(4)), b.urem(kr, i64(4))))
                        shift = b.trunc(b.mul(b.udiv(kr, i64(4)), i64(2)), I8T)
                        code = b.and_(b.lshr(sload(b, w, byte, I8T, align=1), shift), ir.Constant(I8T, 3))
                        trit = b.sitofp(b.sub(b.zext(code, ir.IntType(32)), ir.Constant(ir.IntType(32), 1)), F32)
                        if spec.granularity == "per_tensor":
                            scale = sload(b, args["scales"], 0, F32)
                        elif spec.granularity == "per_channel":
                            scale = sload(b, args["scales"], n, F32)
                        else:
                            g = b.udiv(k, i64(spec.group_size))
                            scale = sload(b, args["scales"], b.add(b.mul(g, i64(spec.NP)), n), F32)
                        b.store(b.fadd(b.load(pre, typ=F32), b.fmul(b.fmul(v, trit), scale)), pre)
                out = b.load(pre, typ=F32)
                if spec.bias:
                    out = b.fadd(out, sload(b, args["bias"], n, F32))
                if spec.residual:
                    out = b.fadd(out, sload(b, args["residual"], b.add(b.mul(m, i64(spec.N)), n), F32))
                b.store(activation(b, spec.activation, out), gep(b, y, b.add(b.mul(m, i64(spec.N)), n), F32))

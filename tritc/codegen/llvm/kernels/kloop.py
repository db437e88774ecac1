"""K-block loops shared by the ternary inner loops: chunk addresses, accumulators carried through a loop
over K blocks (stack slots that mem2reg turns into registers), and the ragged last block of the float loops."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import llvmlite.ir as ir

from ..builder import I8, I32
from .vec import add, call, const_vec, ival, loop, mul, slots

if TYPE_CHECKING:
    from .ternary import Frame


def chunk_byte(f: Frame, nb: ir.Value | int, kb: ir.Value | int) -> ir.Value | int:
    """Byte offset of chunk (nb, kb) in the packed weights."""
    return mul(f.b, add(f.b, mul(f.b, nb, f.spec.KB), kb), 64)


def prefetch_chunks(f: Frame, nb0: ir.Value | int, nc: int, kb: ir.Value | int, ahead: int) -> None:
    """Software prefetch of the tile's chunks `ahead` K blocks on (one line per output block), for GEMV weights
    that are not in the caches (a model larger than the L3); it changes nothing when they are (docs/KERNELS.md).

    Past the end of a block's column it touches the next one's or nothing: a prefetch never faults, and the
    address is computed without `inbounds`, so it is not undefined behaviour either."""
    b = f.b
    for c in range(nc):
        byte = add(b, chunk_byte(f, add(b, nb0, c), kb), 64 * ahead)
        call(b, "llvm.prefetch.p0", ir.VoidType(), b.gep(f.w, [ival(byte)], source_etype=I8),
             ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1))


def accumulate_loop(f: Frame, shape: tuple[int, ...], vtype: ir.VectorType, kb0: ir.Value | int, nkb: int,
                    step: Callable[[list, ir.Value], list[ir.Value]], result: Callable[[list], Any]) -> Any:
    """Zeroed accumulators of `shape`, a loop over K blocks [kb0, kb0 + nkb) calling step(accs, kb) -> the
    new accs flattened, then result(accs)."""
    b = f.b
    acc = slots(b, vtype, const_vec(vtype, 0), *shape)
    flat = flatten(acc)
    with loop(b, kb0, add(b, kb0, nkb), "kb") as kb:
        cur = [b.load(s, typ=vtype) for s in flat]
        for s, v in zip(flat, step(unflatten(cur, shape), kb)):
            b.store(v, s)
    return result(unflatten([b.load(s, typ=vtype) for s in flat], shape))


def accumulate_blocks(f: Frame, shape: tuple[int, ...], vtype: ir.VectorType, kb0: ir.Value | int, nkb: int,
                      step: Callable[[list, ir.Value | int, int], list[ir.Value]]) -> list:
    """accumulate_loop over K blocks [kb0, kb0 + nkb) with step(accs, kb, kcount) (kcount = the block's valid k);
    returns the accumulators nested as `shape`.

    A block that runs past K (the last one when K % 16) is emitted after the loop with kcount = K % 16, so a
    step that reads only its valid k never reads x past its row."""
    spec, b = f.spec, f.b
    full, tail = nkb, 0
    if isinstance(kb0, int) and kb0 + nkb == spec.KB and spec.K % 16:
        full, tail = nkb - 1, spec.K % 16
    if not tail:
        return accumulate_loop(f, shape, vtype, kb0, full, lambda acc, kb: step(acc, kb, 16), lambda acc: acc)
    start = (accumulate_loop(f, shape, vtype, kb0, full, lambda acc, kb: step(acc, kb, 16), lambda acc: acc) if full
             else unflatten([const_vec(vtype, 0)] * _size(shape), shape))
    return unflatten(step(start, add(b, kb0, full), tail), shape)


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def flatten(x: list) -> list:
    return [y for item in x for y in flatten(item)] if isinstance(x, list) else [x]


def unflatten(flat: list, shape: tuple[int, ...]) -> list:
    if len(shape) == 1:
        return list(flat)
    size = len(flat) // shape[0]
    return [unflatten(flat[i * size:(i + 1) * size], shape[1:]) for i in range(shape[0])]

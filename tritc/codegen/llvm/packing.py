"""Packed ternary weights for the CPU kernels: 2-bit codes in 64-byte chunks, one layout for every ISA.

W[K, N] is padded to KP x NP (multiples of 16, padding trit 0). Code c = trit + 1 in {0, 1, 2}.
Chunk (nb, kb) is 64 bytes at byte offset (nb * KP/16 + kb) * 64; its byte b = 4*L + i (lane
L = output n = 16*nb + L, i in 0..3) holds sum_{j=0..3} c(k = 16*kb + 4*j + i, n) << 2*j.

So a chunk is 16 dword lanes, one per output, and the 4 bytes of a lane are 4 consecutive k
(the operand shape of vpdpbusd); masking a chunk with 0x03 << 2j leaves 4^j * c in each byte.
Chunks of one output block are contiguous along K, so a kernel streams one block per pointer.
docs/KERNELS.md explains how each ISA reads it.
"""

from __future__ import annotations

import numpy as np

from ...errors import CompilerError
from ...ir.ternary import TernaryWeight

BLOCK = 16  # K and N are padded to multiples of this
CHUNK_BYTES = 64


def padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def packed_size(K: int, N: int) -> int:
    """Bytes of the packed weight blob for a K x N ternary matrix."""
    return padded(K) * padded(N) // 4


def pack_trits(trits: np.ndarray) -> np.ndarray:
    """Pack int8 trits [K, N] in {-1, 0, 1} into the chunked 2-bit layout (a flat uint8 array)."""
    t = np.asarray(trits)
    if t.ndim != 2:
        raise CompilerError(f"trits must be 2-D [K, N], got shape {list(t.shape)}")
    if t.size and (t.min() < -1 or t.max() > 1):
        raise CompilerError("trits must be in {-1, 0, 1}")
    K, N = t.shape
    KP, NP = padded(K), padded(N)
    codes = np.ones((KP, NP), np.uint8)  # padding is trit 0, code 1
    codes[:K, :N] = (t.astype(np.int16) + 1).astype(np.uint8)
    # [kb, j, i, nb, L] -> [nb, kb, L, i, j]: k = 16*kb + 4*j + i, n = 16*nb + L
    c = codes.reshape(KP // 16, 4, 4, NP // 16, 16).transpose(3, 0, 4, 2, 1)
    packed = c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)
    return np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)


def unpack_trits(packed: np.ndarray, K: int, N: int) -> np.ndarray:
    """The exact inverse of pack_trits: int8 trits [K, N]."""
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    KP, NP = padded(K), padded(N)
    if p.size != KP * NP // 4:
        raise CompilerError(f"packed weights have {p.size} bytes, a {K}x{N} matrix needs {KP * NP // 4}")
    chunks = p.reshape(NP // 16, KP // 16, 16, 4)  # [nb, kb, L, i]
    c = np.stack([(chunks >> (2 * j)) & 3 for j in range(4)], axis=-1)  # [nb, kb, L, i, j]
    codes = c.transpose(1, 4, 3, 0, 2).reshape(KP, NP)  # [kb, j, i, nb, L]
    if codes.max(initial=0) > 2:
        raise CompilerError("packed weights hold code 3, which is not a trit")
    return (codes[:K, :N].astype(np.int8) - 1).astype(np.int8)


def pack_scales(scale: np.ndarray | TernaryWeight, K: int | None = None, N: int | None = None,
                group_size: int = 0) -> np.ndarray:
    """Scales as the kernels read them (float32): [1] per tensor, [NP] per channel, [K/g * NP] per group.

    Takes a TernaryWeight, or its scale array with K, N and group_size. Padded outputs get scale 0."""
    if isinstance(scale, TernaryWeight):
        K, N = scale.shape
        scale, group_size = scale.scale, scale.group_size
    assert K is not None and N is not None, "pack_scales needs K and N with a bare scale array"
    s = np.asarray(scale, dtype=np.float32)
    NP = padded(N)
    if s.ndim == 0:
        return s.reshape(1).copy()
    if s.ndim == 1:
        if s.shape != (N,):
            raise CompilerError(f"per-channel scale has shape {list(s.shape)}, expected [{N}]")
        out = np.zeros(NP, np.float32)
        out[:N] = s
        return out
    if not group_size or K % group_size or s.shape != (K // group_size, N):
        raise CompilerError(f"per-group scale has shape {list(s.shape)}, expected [{K}/{group_size}, {N}]")
    out = np.zeros((K // group_size, NP), np.float32)
    out[:, :N] = s
    return out.reshape(-1)


def scales_size(scale_shape: tuple[int, ...], N: int) -> int:
    """Floats pack_scales writes for a scale of this shape."""
    if len(scale_shape) < 2:
        return 1 if not scale_shape else padded(N)
    return scale_shape[0] * padded(N)


def unpack_scales(packed: np.ndarray, scale_shape: tuple[int, ...], N: int) -> np.ndarray:
    """The inverse of pack_scales: the scale array of `scale_shape` () / (N,) / (G, N).

    `packed` may be float32 or raw bytes, and may run past the scales (a blob from their offset)."""
    p = np.asarray(packed)
    count = scales_size(tuple(scale_shape), N)
    if p.dtype != np.float32:
        p = np.frombuffer(np.ascontiguousarray(p.reshape(-1)[:4 * count], dtype=np.uint8).tobytes(), dtype="<f4")
    p = p.reshape(-1)[:count].astype(np.float32)
    if p.size != count:
        raise CompilerError(f"packed scales have {p.size} floats, shape {list(scale_shape)} needs {count}")
    if len(scale_shape) == 0:
        return p.reshape(())
    if len(scale_shape) == 1:
        return p[:N].copy()
    return p.reshape(scale_shape[0], padded(N))[:, :N].copy()

"""Packed ternary layout: pack/unpack are exact inverses, and the byte layout is the documented one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.codegen.llvm.packing import pack_scales, pack_trits, packed_size, padded, unpack_scales, unpack_trits
from tritc.errors import CompilerError
from tritc.ir.ternary import TernaryWeight

from ..properties import budget


@st.composite
def trit_matrices(draw):
    k = draw(st.integers(1, 70))
    n = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(-1, 2, size=(k, n)).astype(np.int8)


@settings(max_examples=budget(60))
@given(trit_matrices())
def test_pack_unpack_roundtrip(t):
    p = pack_trits(t)
    assert p.dtype == np.uint8 and p.size == packed_size(*t.shape)
    np.testing.assert_array_equal(unpack_trits(p, *t.shape), t)


def test_documented_byte_layout():
    rng = np.random.default_rng(0)
    K, N = 37, 21
    t = rng.integers(-1, 2, size=(K, N)).astype(np.int8)
    p = pack_trits(t)
    KP = padded(K)
    for k, n in [(0, 0), (5, 3), (16, 17), (36, 20), (33, 0)]:
        nb, L, kb = n // 16, n % 16, k // 16
        j, i = (k % 16) // 4, k % 4
        byte = p[(nb * (KP // 16) + kb) * 64 + 4 * L + i]
        assert (byte >> (2 * j)) & 3 == t[k, n] + 1
    # padding is trit 0 (code 1) in every padded position
    full = unpack_trits(p, KP, padded(N))
    assert (full[K:, :] == 0).all() and (full[:, N:] == 0).all()


def test_pack_rejects_non_trits_and_bad_blobs():
    with pytest.raises(CompilerError, match="trits"):
        pack_trits(np.array([[2]], np.int8))
    with pytest.raises(CompilerError, match="bytes"):
        unpack_trits(np.zeros(10, np.uint8), 16, 16)
    with pytest.raises(CompilerError, match="code 3"):
        unpack_trits(np.full(64, 0xFF, np.uint8), 16, 16)


@pytest.mark.parametrize("K,N,g,shape", [(64, 20, 0, ()), (64, 20, 0, (20,)), (64, 20, 32, (2, 20))])
def test_scales_roundtrip_and_padding(K, N, g, shape):
    s = np.random.default_rng(1).random(shape).astype(np.float32)
    p = pack_scales(s, K, N, g)
    gran = {0: "per_tensor", 1: "per_channel", 2: "per_group"}[len(shape)]
    np.testing.assert_array_equal(unpack_scales(p, shape, N), s)
    # from raw bytes that run on past the scales, as the weight blob reader passes them
    np.testing.assert_array_equal(unpack_scales(np.frombuffer(p.tobytes() + b"junk", np.uint8), shape, N), s)
    if g:
        w = TernaryWeight(np.zeros((K, N), np.int8), s, g)
        np.testing.assert_array_equal(pack_scales(w), p)
    if gran == "per_channel":
        assert p.size == 32 and (p[N:] == 0).all()
    if gran == "per_group":
        assert p.size == 2 * 32

"""The sampler (tritc/runtime/sampling.py) against its documented rule, and the KV cache buffers (kv_cache.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tritc.errors import OptionError, RunError
from tritc.runtime.decoder_layout import CacheSlot
from tritc.runtime.kv_cache import KVCache
from tritc.runtime.sampling import Sampler, Sampling

LOGITS = np.array([2.0, 1.0, 0.5, 3.0, -1.0, 3.0, 0.0, 1.5], np.float32)


def documented_choice(logits: np.ndarray, u: float, temperature: float, top_k: int | None, top_p: float) -> int:
    """docs/GENERATE.md's rule written out again: softmax(logits / T) over the top_k largest (ties kept), then the
    smallest set of most likely tokens reaching top_p, renormalised; the token is the first whose cumulative
    probability, in ascending id, exceeds u times the total."""
    x = logits.astype(np.float64) / temperature
    allowed = [i for i in range(len(x)) if top_k is None or x[i] >= sorted(x, reverse=True)[top_k - 1]]
    p = {i: np.exp(x[i] - max(x[j] for j in allowed)) for i in allowed}
    total = sum(p.values())
    p = {i: v / total for i, v in p.items()}
    if top_p < 1:
        kept, acc = [], 0.0
        for i in sorted(p, key=lambda i: (-p[i], i)):
            kept.append(i)
            acc += p[i]
            if acc >= top_p:
                break
        p = {i: p[i] for i in kept}
    total = sum(p.values())
    acc = 0.0
    for i in sorted(p):
        acc += p[i]
        if acc > u * total:
            return i
    return max(p)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, 1.0), (0.7, 3, 1.0), (1.3, None, 0.8), (2.0, 4, 0.6),
                                                     (0.5, 2, 1.0)])
def test_sampling_follows_the_documented_rule(temperature, top_k, top_p):
    seed = 11
    sampler = Sampler(Sampling(temperature, top_k, top_p, seed))
    uniforms = np.random.default_rng(seed).random(200)  # one uniform double per token, in order
    got = [sampler(LOGITS, step) for step in range(200)]
    assert got == [documented_choice(LOGITS, u, temperature, top_k, top_p) for u in uniforms]
    assert len(set(got)) > 1


def test_sampling_frequencies_match_the_distribution():
    sampler = Sampler(Sampling(temperature=1.0, seed=0))
    counts = np.bincount([sampler(LOGITS, i) for i in range(20000)], minlength=LOGITS.size) / 20000
    p = np.exp(LOGITS - LOGITS.max())
    np.testing.assert_allclose(counts, p / p.sum(), atol=0.015)


def test_top_k_and_top_p_restrict_the_support():
    top2 = {Sampler(Sampling(5.0, top_k=2, seed=s))(LOGITS, 0) for s in range(200)}
    assert top2 == {3, 5}  # the two largest logits (equal): both kept
    ties = {Sampler(Sampling(5.0, top_k=1, seed=s))(LOGITS, 0) for s in range(200)}
    assert ties == {3, 5}  # a tie at the k-th largest keeps every tied token
    nucleus = {Sampler(Sampling(1.0, top_p=0.5, seed=s))(LOGITS, 0) for s in range(300)}
    assert nucleus == {3, 5}  # 3 and 5 hold 0.35 each: one is not enough for 0.5, two are


def test_greedy_takes_the_lowest_id_among_equal_maxima():
    assert Sampler(Sampling())(LOGITS, 0) == 3


def test_non_finite_logits_are_a_run_error():
    with pytest.raises(RunError, match="generated token 4 hold NaN"):
        Sampler(Sampling())(np.array([0.0, np.nan]), 4)
    with pytest.raises(RunError, match="infinite"):
        Sampler(Sampling(1.0, seed=0))(np.array([0.0, np.inf]), 0)


@pytest.mark.parametrize("kwargs,message", [
    ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"temperature": "hot"}, "temperature must be"),
    ({"temperature": 1.0, "top_k": 0}, "top_k must be an integer >= 1"),
    ({"temperature": 1.0, "top_k": 2.5}, "top_k must be an integer >= 1"),
    ({"temperature": 1.0, "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"temperature": 1.0, "top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"temperature": 1.0, "seed": -1}, "seed must be an integer >= 0"),
    ({"top_k": 5}, "top_k 5 has no effect with greedy decoding"),
    ({"top_p": 0.9}, "top_p 0.9 has no effect with greedy decoding"),
])
def test_bad_sampling_parameters(kwargs, message):
    with pytest.raises(OptionError, match=message):
        Sampler(Sampling(**kwargs))


# ---- the cache ---------------------------------------------------------------------------------------------------


def test_cache_grows_by_doubling_and_keeps_what_it_holds():
    slot = CacheSlot("past.k", "present.k", np.dtype(np.float32), (1, 2, None, 3), 2)
    cache = KVCache([slot], capacity=4, limit=20)
    rng = np.random.default_rng(0)
    full = rng.standard_normal((1, 2, 20, 3)).astype(np.float32)
    for length, new in ((0, 3), (3, 1), (4, 5), (9, 8), (17, 3)):
        assert cache.length == length
        assert np.array_equal(cache.feeds()["past.k"], full[:, :, :length])
        cache.append({"present.k": full[:, :, :length + new]}, new)
    assert cache.capacity == 20 and cache.grows == 2  # 4 -> 16 (9 needed) -> 20 (the limit, not 32)
    assert np.array_equal(cache.feeds()["past.k"], full)
    with pytest.raises(RunError, match="holds at most 20 tokens"):
        cache.append({"present.k": np.zeros((1, 2, 21, 3), np.float32)}, 1)


def test_a_present_output_of_the_wrong_length_is_named():
    slot = CacheSlot("past_0", "present_0", np.dtype(np.float32), (2, 1, 4, None, 8), 3)
    cache = KVCache([slot], capacity=8)
    with pytest.raises(RunError, match=r"output 'present_0' has shape \[2, 1, 4, 2, 8\], expected \[2, 1, 4, 3, 8\]"):
        cache.append({"present_0": np.zeros((2, 1, 4, 2, 8), np.float32)}, 3)

"""Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k and top-p.

Deterministic for a seed: numpy's PCG64 Generator (`numpy.random.default_rng(seed)`) draws exactly one uniform
double per sampled token, and the token is found by inverting the cumulative distribution over the kept tokens in
ascending token id. docs/GENERATE.md states the rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError, RunError


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy (argmax; the lowest id among equal logits); > 0 samples from
    softmax(logits / temperature), restricted to the top_k largest logits and then to the top_p nucleus."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def check(self, names: Mapping[str, str] | None = None) -> None:
        """OptionError naming the parameter that is out of range (as `names` spells it: the CLI's flags)."""
        n = names or {}
        temperature, top_k, top_p, seed = (n.get(x, x) for x in ("temperature", "top_k", "top_p", "seed"))
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise OptionError(f"{temperature} must be a finite number >= 0 (0 is greedy), not {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise OptionError(f"{top_k} must be an integer >= 1 (or None: no limit), not {k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise OptionError(f"{top_p} must be in (0, 1] (1: no limit), not {p!r}")
        s = self.seed
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0):
            raise OptionError(f"{seed} must be an integer >= 0 (or None: a fresh one), not {s!r}")
        if self.greedy and (k is not None or p != 1):
            given = f"{top_k} {k}" if k is not None else f"{top_p} {p}"
            raise OptionError(f"{given} has no effect with greedy decoding ({temperature} 0): give a {temperature} > 0 "
                              f"to sample")


class Sampler:
    """Picks tokens for one generation; holds its random generator, so a seed fixes the whole sequence."""

    def __init__(self, sampling: Sampling):
        sampling.check()
        self.sampling = sampling
        self.rng = None if sampling.greedy else np.random.default_rng(sampling.seed)

    def __call__(self, logits: np.ndarray, step: int) -> int:
        row = np.asarray(logits).reshape(-1)
        if row.dtype.kind != "f":
            row = row.astype(np.float64)
        if not np.isfinite(row).all():
            bad = "NaN" if np.isnan(row).any() else "infinite"
            raise RunError(f"the logits of generated token {step} hold {bad} values: no token can be chosen")
        if self.rng is None:
            return int(np.argmax(row))  # (float32 as it came: widening is exact, so the same token, without a copy)
        return self._sample(row.astype(np.float64, copy=False))

    def _sample(self, row: np.ndarray) -> int:
        s = self.sampling
        scaled = row / s.temperature
        keep = np.ones(row.shape, bool)
        if s.top_k is not None and s.top_k < row.size:
            kth = np.partition(scaled, row.size - s.top_k)[row.size - s.top_k]
            keep &= scaled >= kth  # ties with the k-th largest stay in
        probs = np.where(keep, np.exp(scaled - scaled[keep].max()), 0.0)
        probs /= probs.sum()
        if s.top_p < 1:
            order = np.argsort(-probs, kind="stable")  # most likely first; equal ones by ascending id
            cum = np.cumsum(probs[order])
            n = int(np.searchsorted(cum, s.top_p, side="left")) + 1  # the smallest prefix reaching top_p
            nucleus = np.zeros(row.shape, bool)
            nucleus[order[:n]] = True
            probs = np.where(nucleus, probs, 0.0)
        cdf = np.cumsum(probs)
        u = self.rng.random() * cdf[-1]  # type: ignore[union-attr]
        return int(min(np.searchsorted(cdf, u, side="right"), row.size - 1))


__all__ = ["Sampler", "Sampling"]

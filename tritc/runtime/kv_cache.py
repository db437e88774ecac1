"""The KV cache of a generation: one buffer per past input, allocated once for a maximum context or grown by
doubling, holding the keys and values of every token fed so far.

Two ways to use it, one per form of the model (docs/GENERATE.md, "The cache"):

- concatenated (the ONNX form, any session): `feeds` gives the filled part of every buffer as the past inputs, and
  `append` copies the positions a step added out of the present outputs (which repeat the whole cache);
- in place (a tritc model's capacity form, CompiledModel.with_cache_in_place): `reserve` room first, `buffer_feeds`
  gives the whole buffers and the number of rows they hold, `bindings` binds each present output to its buffer,
  the compiled code writes the step's rows there, and `advance` only counts them: nothing is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import RunError
from .decoder_layout import CacheSlot

MIN_CAPACITY = 16  # tokens: the first allocation when the cache grows by doubling


class KVCache:
    """Buffers of `capacity` positions along each slot's sequence axis, of which the first `length` are filled.

    `limit` caps the capacity (the maximum context); `reserve` grows to at least the tokens asked for, doubling
    (within the limit), and copies what is filled into the new buffers."""

    def __init__(self, slots: Sequence[CacheSlot], capacity: int, limit: int | None = None):
        self.slots = tuple(slots)
        self.limit = limit
        self.length = 0
        self.grows = 0  # how many times the buffers were reallocated after the first allocation
        self.capacity = self._clip(max(capacity, 1))
        self.buffers = {s.input: np.zeros(s.shape_for(self.capacity), s.dtype) for s in self.slots}

    def _clip(self, n: int) -> int:
        return n if self.limit is None else min(n, self.limit)

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())

    def reserve(self, tokens: int) -> None:
        """Room for `tokens` positions in all; RunError past the limit (the caller checks the limit first)."""
        if tokens <= self.capacity:
            return
        if self.limit is not None and tokens > self.limit:
            raise RunError(f"the KV cache holds at most {self.limit} tokens; {tokens} asked for")
        capacity = self.capacity
        while capacity < tokens:
            capacity *= 2
        capacity = self._clip(capacity)
        for s in self.slots:
            new = np.zeros(s.shape_for(capacity), s.dtype)
            new[self._part(s, 0, self.length)] = self.buffers[s.input][self._part(s, 0, self.length)]
            self.buffers[s.input] = new
        self.capacity = capacity
        self.grows += 1

    @staticmethod
    def _part(slot: CacheSlot, start: int, stop: int) -> tuple[slice, ...]:
        index = [slice(None)] * len(slot.shape)
        index[slot.seq_axis] = slice(start, stop)
        return tuple(index)

    def feeds(self) -> dict[str, np.ndarray]:
        """The past inputs of the next step: the filled part of each buffer (a view)."""
        return {s.input: self.buffers[s.input][self._part(s, 0, self.length)] for s in self.slots}

    # ---- in place: the capacity form ----------------------------------------------------------------------------

    def buffer_feeds(self, length_input: str) -> dict[str, np.ndarray]:
        """The past inputs of a capacity-form step: the buffers themselves, and `length_input` (past_len) saying how
        many positions they hold."""
        feeds = {s.input: self.buffers[s.input] for s in self.slots}
        feeds[length_input] = np.array([self.length], np.int64)
        return feeds

    def bindings(self) -> dict[str, np.ndarray]:
        """Each present output bound to its past input's buffer: the step writes its positions there."""
        return {s.output: self.buffers[s.input] for s in self.slots}

    def advance(self, new: int) -> None:
        """Count the `new` positions a capacity-form step wrote into the buffers (room was reserved before)."""
        if self.length + new > self.capacity:
            raise RunError(f"the KV cache has room for {self.capacity} positions; {self.length} + {new} written")
        self.length += new

    # ---- concatenated: the ONNX form -----------------------------------------------------------------------------

    def append(self, outputs: Mapping[str, np.ndarray], new: int) -> None:
        """Take the `new` positions the step added from each present output (past + new positions long)."""
        self.reserve(self.length + new)
        want = self.length + new
        for s in self.slots:
            present = outputs[s.output]
            expected = s.shape_for(want)
            if present.shape != expected:
                raise RunError(f"output '{s.output}' has shape {list(present.shape)}, expected {list(expected)}: the past "
                               f"{self.length} positions of '{s.input}' and the {new} new ones along dim {s.seq_axis}")
            part = self._part(s, self.length, want)
            self.buffers[s.input][part] = present[part]
        self.length = want


__all__ = ["MIN_CAPACITY", "KVCache"]

"""Ternary weights: trits {-1, 0, +1} and float32 scales, the data behind a `t2` weight.

A TernaryWeight has the logical shape of the matrix it replaces, [K, N] for ``x[..., K] @ W``,
and one scale per tensor, per output channel (N) or per group of `group_size` rows along K.
How trits are packed (2 bits each, 5 per byte) is a codegen and artifact concern, not this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRANULARITIES = ("per_tensor", "per_channel", "per_group")


@dataclass(frozen=True, eq=False)
class TernaryWeight:
    trits: np.ndarray  # int8 in {-1, 0, 1}, shape [K, N]
    scale: np.ndarray  # float32: () per tensor, (N,) per channel, (K // group_size, N) per group
    group_size: int = 0  # rows per scale group along K (per_group only)

    def __post_init__(self) -> None:
        t, s = self.trits, self.scale
        if t.dtype != np.int8 or t.ndim != 2:
            raise ValueError(f"trits must be a 2-D int8 array, got {t.dtype}{list(t.shape)}")
        if s.dtype != np.float32:
            raise ValueError(f"scales must be float32, got {s.dtype}")
        if t.size and (t.min() < -1 or t.max() > 1):
            raise ValueError("trits must be in {-1, 0, 1}")
        k, n = t.shape
        expect = {"per_tensor": (), "per_channel": (n,),
                  "per_group": (k // self.group_size if self.group_size else -1, n)}[self.granularity]
        if s.shape != expect or (self.group_size and k % self.group_size):
            raise ValueError(f"scale shape {list(s.shape)} does not fit {self.granularity} trits {list(t.shape)}"
                             + (f" with group size {self.group_size}" if self.group_size else ""))

    @property
    def granularity(self) -> str:
        if self.group_size:
            return "per_group"
        return "per_tensor" if self.scale.ndim == 0 else "per_channel"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.trits.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.trits.dtype

    def row_scales(self) -> np.ndarray:
        """The scale of every element, broadcast to [K, N] (float32)."""
        k, n = self.trits.shape
        if self.granularity == "per_group":
            return np.repeat(self.scale, self.group_size, axis=0)
        return np.broadcast_to(self.scale, (k, n)) if self.scale.ndim else np.full((k, n), self.scale, np.float32)

    def dequantize(self) -> np.ndarray:
        """The float32 matrix this weight stands for: trits times scales."""
        return (self.trits.astype(np.float32) * self.row_scales()).astype(np.float32)

    def packed_bytes(self) -> int:
        """Bytes in the artifact: 2 bits per trit plus float32 scales."""
        return (self.trits.size + 3) // 4 + 4 * self.scale.size


class PackedTernaryWeight(TernaryWeight):
    """A TernaryWeight whose trits stay packed until something reads them (`unpack(packed)` gives the int8 [K, N]
    trits, once): weights read back from an artifact, where compiled code reads the packed blob and only an
    interpreter or a new fold needs the trits (a 0.7B model's would take 730 MB at load)."""

    def __init__(self, shape: tuple[int, int], scale: np.ndarray, group_size: int, unpack):  # noqa: ANN001
        object.__setattr__(self, "_shape", (int(shape[0]), int(shape[1])))
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "group_size", group_size)
        object.__setattr__(self, "_unpack", unpack)
        object.__setattr__(self, "_trits", None)

    @property  # type: ignore[override]
    def trits(self) -> np.ndarray:
        if self._trits is None:
            trits = self._unpack()
            TernaryWeight(trits, self.scale, self.group_size)  # the checks a TernaryWeight makes
            object.__setattr__(self, "_trits", trits)
        return self._trits

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int8)

    @property
    def granularity(self) -> str:
        if self.group_size:
            return "per_group"
        return "per_tensor" if self.scale.ndim == 0 else "per_channel"

    def packed_bytes(self) -> int:
        return (self._shape[0] * self._shape[1] + 3) // 4 + 4 * self.scale.size

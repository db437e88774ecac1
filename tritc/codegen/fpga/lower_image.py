"""Where values live in the accelerator's DRAM: the activation map (DramMap) and the weight image (WeightImage).

Activations are fp32, row-major and contiguous, 64-byte aligned (one DRAM burst), bump-allocated by DramMap. The
weight image holds every ternary weight as packed 64-trit words in the layout a GEMM reads from WGT (docs/ISA.md,
"Weight layout": blocks of matrix_rows columns, interleaved by beats), and its fp32 scales; and the float (and
boolean) constants device ops read, as they are. A per-group weight is one such matrix per group, each padded to
whole blocks (group g at addr + g * group_bytes), so that a tile of whole blocks of one group is one contiguous
transfer and a K-chunk of a block one contiguous run; with no groups, G = 1 and the group is all of K.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import ResourceLimitError
from ...ir.ternary import TernaryWeight
from ...ir.types import DType
from .config import TRIT_GROUP, FpgaConfig
from .isa import interleave_words, pack_words, padded_kw

ALIGN = 64
PACK_COLUMNS = 4096  # columns packed at a time: bounds the int8 trit copy of a large weight


def align(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def nbytes_of(shape: tuple[int, ...], dtype: DType) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


@dataclass(frozen=True)
class Placement:
    """Where a value lives in DRAM: byte address, concrete shape, dtype (fp32 activations: row-major, contiguous)."""

    addr: int
    shape: tuple[int, ...]
    dtype: DType

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.shape, self.dtype)


class DramMap:
    """The DRAM of activations: a bump allocator (64-byte alignment) from `base` up to `limit`, values by name.

    `alias` gives a value the bytes of another (a reshape); `preload` places a constant the weight image does not
    hold (one that specialising for these sizes folded) and keeps its bytes in `preloads`: the runtime writes them
    before it runs a stream that reads them. `reserve` records a value placed by the caller at a fixed address (a
    device-resident cache buffer): what is placed afterwards goes around it."""

    def __init__(self, base: int, limit: int):
        self.base = base
        self.limit = limit
        self._next = align(base)
        self._values: dict[str, Placement] = {}
        self._reserved: list[tuple[int, int]] = []   # [start, end) byte ranges `place` must not hand out
        self.preloads: dict[str, bytes] = {}

    def place(self, name: str, shape, dtype: DType) -> Placement:  # noqa: ANN001 - any sequence of ints
        shape = tuple(int(d) for d in shape)
        old = self._values.get(name)
        if old is not None:
            if old.shape != shape or old.dtype != dtype:
                raise ValueError(f"'{name}' is already placed as {old.dtype}{list(old.shape)}")
            return old
        addr = self._next
        end = addr + nbytes_of(shape, dtype)
        for lo, hi in sorted(self._reserved):
            if addr < hi and lo < end:
                addr = align(hi)
                end = addr + nbytes_of(shape, dtype)
        if end > self.limit:
            raise ResourceLimitError(f"the activations need more DRAM than the FPGA has: placing '{name}' "
                                     f"({nbytes_of(shape, dtype)} bytes) reaches byte {end}, DRAM ends at {self.limit}")
        self._next = align(end)
        p = self._values[name] = Placement(addr, shape, dtype)
        return p

    def alias(self, name: str, source: str, shape) -> Placement:  # noqa: ANN001
        """`name` is `source`'s bytes seen with another shape (same element count)."""
        src = self._values[source]
        shape = tuple(int(d) for d in shape)
        if nbytes_of(shape, src.dtype) != src.nbytes:
            raise ValueError(f"alias '{name}' {list(shape)} does not have the size of '{source}' {list(src.shape)}")
        p = self._values[name] = Placement(src.addr, shape, src.dtype)
        return p

    def reserve(self, name: str, placement: Placement) -> None:
        """`name` lives at `placement`, chosen by the caller (the same address in every size's code): recorded, and
        nothing placed later overlaps it."""
        end = placement.addr + placement.nbytes
        if placement.addr < self.base or end > self.limit:
            raise ResourceLimitError(f"'{name}' is reserved at bytes [{placement.addr}, {end}), outside the DRAM "
                                     f"of activations [{self.base}, {self.limit})")
        for other, p in self._values.items():
            if p.addr < end and placement.addr < p.addr + p.nbytes and p.nbytes and placement.nbytes:
                raise ValueError(f"'{name}' reserved at bytes [{placement.addr}, {end}) overlaps '{other}' "
                                 f"[{p.addr}, {p.addr + p.nbytes})")
        self._values[name] = placement
        self._reserved.append((placement.addr, end))

    def add(self, name: str, placement: Placement) -> None:
        """Record a placement made elsewhere (a weight image entry seen as an activation)."""
        self._values[name] = placement

    def preload(self, name: str, array: np.ndarray, dtype: DType) -> Placement:
        a = np.ascontiguousarray(np.asarray(array).astype(dtype.np_dtype))
        p = self.place(name, a.shape, dtype)
        self.preloads[name] = a.tobytes()
        return p

    def __getitem__(self, name: str) -> Placement:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def items(self):  # noqa: ANN201
        return self._values.items()

    @property
    def end(self) -> int:
        return self._next

    def ranges(self) -> list[tuple[int, int]]:
        """The [start, end) byte ranges of DRAM this map hands out: the activations and every reserved buffer."""
        return [(self.base, self._next), *self._reserved]


@dataclass(frozen=True)
class WeightEntry:
    """A weight or constant in the image. Ternary: packed words at `addr`, per group the ISA v3 layout (blocks of
    `rows` columns, beat by beat), fp32 scales at `scale_addr` ([1] per tensor, [N] per channel, [G, N] per group)."""

    name: str
    kind: str                       # "ternary" | "dense"
    addr: int
    shape: tuple[int, ...]          # logical: [K, N] for a ternary weight
    dtype: DType                    # T2, F32 or BOOL
    nbytes: int
    scale_addr: int = 0
    scale_shape: tuple[int, ...] = ()
    granularity: str = ""           # per_tensor | per_channel | per_group
    group_size: int = 0             # rows of K per group (K itself when not per group)
    groups: int = 1
    kw: int = 0                     # 64-trit words per column of one group
    word_bytes: int = 0
    scale: np.ndarray | None = field(default=None, compare=False, repr=False)  # per tensor: the value (an immediate)
    rows: int = 1                   # columns per block: the config's matrix_rows
    per_beat: int = 1               # words per column per beat: the config's words_per_beat

    @property
    def kwp(self) -> int:
        """Words per column of one group in the image: kw padded to whole beats."""
        return padded_kw(self.kw, self.per_beat)

    @property
    def block_bytes(self) -> int:
        """One block of `rows` columns of one group: kwp / per_beat beats."""
        return self.kwp * self.rows * self.word_bytes

    @property
    def beat_bytes(self) -> int:
        return self.rows * self.per_beat * self.word_bytes

    @property
    def blocks(self) -> int:
        return -(-self.shape[1] // self.rows)

    def group_addr(self, g: int) -> int:
        return self.addr + g * self.blocks * self.block_bytes

    @property
    def placement(self) -> Placement:
        return Placement(self.addr, self.shape, self.dtype)


@dataclass
class WeightImage:
    """Packed weights and constants as one DRAM image, to be written at `base`; entries by value name."""

    data: bytes
    base: int
    entries: dict[str, WeightEntry]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> WeightEntry:
        return self.entries[name]


class ImageWriter:
    """Appends 64-byte aligned blobs; `image()` is the result."""

    def __init__(self, base: int):
        self.base = base
        self.parts: list[bytes] = []
        self.size = 0

    def append(self, blob: bytes) -> int:
        addr = self.base + self.size
        self.parts.append(blob)
        pad = align(len(blob)) - len(blob)
        if pad:
            self.parts.append(bytes(pad))
        self.size += len(blob) + pad
        return addr

    def image(self, entries: dict[str, WeightEntry]) -> WeightImage:
        return WeightImage(b"".join(self.parts), self.base, entries)


def ternary_entry(name: str, w: TernaryWeight, config: FpgaConfig, out: ImageWriter) -> WeightEntry:
    """Pack `w` [K, N]: per group, each column's trits padded to whole 64-trit words, in the ISA v3 layout (N padded
    to whole blocks of matrix_rows columns, each column to whole beats, with words of zero trits)."""
    k, n = (int(d) for d in w.shape)
    gs = w.group_size or k
    groups = k // gs if gs else 1
    kw = -(-gs // TRIT_GROUP)
    wb, rows, per_beat = config.word_bytes, config.matrix_rows, config.words_per_beat
    chunk = max(1, PACK_COLUMNS // rows) * rows    # whole blocks: the chunks' images follow each other
    blobs = []
    trits = w.trits
    for g in range(groups):
        for c0 in range(0, n, chunk):
            cols = trits[g * gs:(g + 1) * gs, c0:c0 + chunk]
            padded = np.zeros((cols.shape[1], kw * TRIT_GROUP), np.int8)
            padded[:, :gs] = cols.T
            blobs.append(interleave_words(pack_words(padded, config.weight_packing), rows, per_beat, wb))
    words = b"".join(blobs)
    assert len(words) == groups * -(-n // rows) * rows * padded_kw(kw, per_beat) * wb if kw else not words
    addr = out.append(words)
    scale = np.asarray(w.scale, dtype=np.float32)
    scale_addr = out.append(scale.reshape(-1).tobytes() if scale.ndim else scale.reshape(1).tobytes())
    return WeightEntry(name, "ternary", addr, (k, n), DType.T2, len(words), scale_addr,
                       tuple(scale.shape) or (1,), w.granularity, gs, groups, kw, wb,
                       scale.reshape(()) if scale.ndim == 0 else None, rows, per_beat)


def dense_entry(name: str, a: np.ndarray, dtype: DType, out: ImageWriter) -> WeightEntry:
    data = np.ascontiguousarray(np.asarray(a).astype(dtype.np_dtype))
    addr = out.append(data.tobytes())
    return WeightEntry(name, "dense", addr, tuple(int(d) for d in data.shape), dtype, data.nbytes)

"""The weight blob: every weight of the final IR, laid out once, independent of target and shapes.

Float weights are stored as their raw little-endian bytes; ternary weights as 2-bit packed trits
(the layout of packing.py, the same for every ISA) followed by their float32 scales. Each entry
is 64-byte aligned. The blob goes into the artifact as one section; compiled code reads weights
at fixed offsets from the blob's base pointer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...ir.graph import Graph
from ...ir.ternary import PackedTernaryWeight, TernaryWeight
from ...ir.types import DType

ALIGN = 64


@dataclass(frozen=True)
class WeightEntry:
    key: str
    kind: str  # "dense" | "ternary"
    dtype: str  # IR dtype name of the values ("t2" for ternary)
    shape: tuple[int, ...]
    offset: int  # bytes from the blob start (packed trits for ternary)
    nbytes: int
    scale_offset: int = 0  # ternary: where the float32 scales start
    scale_shape: tuple[int, ...] = ()
    group_size: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> WeightEntry:
        return WeightEntry(**{**d, "shape": tuple(d["shape"]), "scale_shape": tuple(d["scale_shape"])})


@dataclass
class WeightLayout:
    entries: dict[str, WeightEntry]
    size: int

    def offset(self, key: str) -> int:
        return self.entries[key].offset


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layout_weights(graph: Graph) -> tuple[WeightLayout, bytes]:
    """Lay out and serialise every weight the graph references."""
    from .packing import pack_scales, pack_trits

    parts: list[tuple[int, bytes]] = []
    entries: dict[str, WeightEntry] = {}
    pos = 0
    for key in sorted(graph.weights):
        data = graph.weights[key]
        if isinstance(data, TernaryWeight):
            packed = pack_trits(data.trits).tobytes()
            scales = pack_scales(data).tobytes()
            off = pos
            scale_off = _align(off + len(packed))
            parts += [(off, packed), (scale_off, scales)]
            entries[key] = WeightEntry(key, "ternary", "t2", data.shape, off, len(packed), scale_off,
                                       tuple(data.scale.shape), data.group_size)
            pos = _align(scale_off + len(scales))
        else:
            arr = np.ascontiguousarray(data)
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entries[key] = WeightEntry(key, "dense", DType.from_numpy(arr.dtype).ir_name, tuple(arr.shape), pos, len(raw))
            parts.append((pos, raw))
            pos = _align(pos + len(raw))
    blob = bytearray(pos)
    for off, raw in parts:
        blob[off:off + len(raw)] = raw
    return WeightLayout(entries, pos), bytes(blob)


def read_weights(layout: WeightLayout, blob: bytes | memoryview) -> dict[str, object]:
    """The graph weights back from a blob (numpy views for dense weights, unpacked ternary ones)."""
    from .packing import unpack_scales, unpack_trits

    out: dict[str, object] = {}
    buf = np.frombuffer(blob, dtype=np.uint8)
    for key, e in layout.entries.items():
        if e.kind == "dense":
            dt = DType.from_name(e.dtype).np_dtype
            out[key] = buf[e.offset:e.offset + e.nbytes].view(dt).reshape(e.shape)
        else:
            k, n = e.shape
            scale = unpack_scales(buf[e.scale_offset:], e.scale_shape, n)
            packed = buf[e.offset:e.offset + e.nbytes]
            # unpacked on first use (an interpreter, a new fold): compiled code reads the packed blob
            out[key] = PackedTernaryWeight((k, n), scale, e.group_size,
                                           lambda packed=packed, k=k, n=n: unpack_trits(packed, k, n))
    return out

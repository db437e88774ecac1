"""A model's metadata_props, and the input sizes exporters record there, read without parsing the graph again.

Ultralytics (YOLOv5/v8/11 `export(format="onnx")`) writes `imgsz` ("[640, 640]", height and width), `batch` and
`stride` beside its `images[batch,3,height,width]` input; those sizes are what the model was exported for, so
`tritc verify`, `bench` and the compile driver use them for symbolic dims nobody gave a size for. paddle2onnx and
torch.onnx record no sizes.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from ..ir import dims as dimlib
from ..ir.types import TensorType

_METADATA_FIELD = 14  # ModelProto.metadata_props
_MAX_RECORDED = 1 << 16  # a recorded size past this is not a plausible input size


def metadata_of(model: Any) -> dict[str, str]:
    """metadata_props of a model given as a path, bytes or ModelProto ({} for anything else or unreadable data)."""
    if isinstance(model, onnx.ModelProto):
        return {p.key: p.value for p in model.metadata_props}
    if isinstance(model, (bytes, bytearray)):
        return _scan(model)
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return _scan(m)  # mapped, not read: only the bytes of the top-level tags are touched
        except (OSError, ValueError):
            return {}
    return {}


def _scan(data: bytes | bytearray | mmap.mmap) -> dict[str, str]:
    """The metadata_props entries of a serialized ModelProto: its top-level fields are walked and skipped (the graph
    is never decoded). Malformed data gives what was read before it; the frontend reports malformed models."""
    out: dict[str, str] = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag, pos = _varint(data, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                if field == _METADATA_FIELD and pos + length <= end:
                    entry = onnx.StringStringEntryProto.FromString(bytes(data[pos:pos + length]))
                    out[entry.key] = entry.value
                pos += length
            else:
                break  # groups (wire types 3, 4) are not in ModelProto
    except Exception:  # noqa: BLE001 - a truncated varint or an undecodable entry ends the scan
        pass
    return out


def _varint(data: bytes | bytearray | mmap.mmap, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def recorded_sizes(metadata: Mapping[str, str], inputs: Sequence[tuple[str, TensorType]]) -> dict[str, tuple[int, str]]:
    """Sizes the exporter recorded for symbolic input dims: symbol -> (size, where it comes from). Ultralytics'
    `imgsz` sizes the height and width of every image input (rank 4, NCHW) whose dims 2 and 3 are symbols, and
    its `batch` their dim 0."""
    hw = _ints(metadata.get("imgsz", ""))
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2:
        return {}
    batch = _ints(metadata.get("batch", ""))
    out: dict[str, tuple[int, str]] = {}
    for _, t in inputs:
        if t.shape is None or len(t.shape) != 4:
            continue
        n, _, h, w = t.shape
        for dim, size, key in ((h, hw[0], "imgsz"), (w, hw[1], "imgsz"), (n, batch[0] if len(batch) == 1 else None, "batch")):
            if isinstance(dim, str) and dimlib.symbols(dim) == {dim} and size is not None and dim not in out:
                out[dim] = (size, f"{key} in the model's metadata")
    return out


def _ints(text: str) -> list[int]:
    """The sizes in '[640, 640]', '(480, 640)' or '640'; [] for anything else."""
    if not re.fullmatch(r"[\s\[\]()0-9,]*", text):
        return []
    values = [int(x) for x in re.findall(r"\d+", text)]
    return values if all(0 < v <= _MAX_RECORDED for v in values) else []

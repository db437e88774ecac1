"""The artifact file: one file, a verified manifest and hashed sections, written atomically.

    [64-byte header][manifest JSON][section][section]...

Header: magic ``TRITCART``, format version (u32), flags (u32), manifest length (u64), SHA-256 of
the manifest, 8 reserved bytes. The manifest lists every section (name, offset, length, SHA-256)
and everything a loader needs before touching code: tritc version, target triple, CPU features,
input and output signatures, arena sizes, the weight layout. No pickle anywhere: JSON and raw
bytes only. See docs/ARTIFACT.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ArtifactIntegrityError, ArtifactVersionError, OptionError

MAGIC = b"TRITCART"
FORMAT_VERSION = 2  # 2: code for every size (entry ABI 3, symbolic arena sizes); 1: code per shape binding
HEADER = struct.Struct("<8sIIQ32s8s")  # 64 bytes
MAX_MANIFEST_BYTES = 16 * 2**20
ALIGN = 64
_SECTION_NAME = re.compile(r"[a-z][a-z0-9_.]*")


@dataclass
class Artifact:
    manifest: dict[str, Any]
    sections: dict[str, bytes]  # verified contents, by name


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artifact(path: str | os.PathLike[str], manifest: Mapping[str, Any], sections: Mapping[str, bytes], *,
                   _fault: Callable[[str], None] | None = None) -> None:
    """Write atomically: a temporary file in the destination folder, fsync, rename, fsync the folder.

    A failure at any point leaves the destination as it was and removes the temporary file.
    `_fault(stage)` is a test hook called at each stage ("weights", "object", "manifest")."""
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise OptionError(f"{dest}: the folder {folder} does not exist")
    if dest.is_dir():
        raise OptionError(f"{dest}: is a directory")
    for name in sections:
        if not _SECTION_NAME.fullmatch(name):
            raise ValueError(f"bad section name {name!r}")
    layout = []
    manifest_sections = []
    # Offsets are relative to the end of the manifest, so they do not depend on its length.
    pos = 0
    for name, data in sections.items():
        pos = (pos + ALIGN - 1) // ALIGN * ALIGN
        layout.append((pos, name, data))
        manifest_sections.append({"name": name, "offset": pos, "length": len(data), "sha256": _sha(data)})
        pos += len(data)
    full = dict(manifest)
    full["format_version"] = FORMAT_VERSION
    full["sections"] = manifest_sections
    mbytes = json.dumps(full, indent=1, sort_keys=True).encode()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(mbytes), hashlib.sha256(mbytes).digest(), b"\0" * 8)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(mbytes)
            base = f.tell()
            for off, name, data in layout:
                f.seek(base + off)
                if _fault is not None:
                    _fault(name.split(".")[0])
                f.write(data)
            f.truncate(base + pos)  # an empty last section still ends the file at its offset
            if _fault is not None:
                _fault("manifest")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)  # replaces a symlink itself, never writes through it
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is atomic


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and verify everything: header, manifest hash, every section's hash. Nothing is
    executed or loaded before all of it checks out."""
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise ArtifactError(f"{where}: no such file")
    if p.is_dir():
        raise ArtifactError(f"{where}: is a directory, not a tritc artifact")
    data = p.read_bytes()
    if len(data) < HEADER.size:
        raise ArtifactIntegrityError(f"{where}: truncated ({len(data)} bytes; a tritc artifact starts with a "
                                     f"{HEADER.size}-byte header)")
    magic, version, flags, mlen, mhash, reserved = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactIntegrityError(f"{where}: not a tritc artifact (bad magic)")
    if flags != 0 or reserved != b"\0" * 8:
        raise ArtifactIntegrityError(f"{where}: header has unknown flags set (corrupted or tampered)")
    if version > FORMAT_VERSION:
        raise ArtifactVersionError(f"{where}: artifact format {version} > supported {FORMAT_VERSION}; "
                                   f"use a newer tritc")
    if version < 1:
        raise ArtifactVersionError(f"{where}: unknown artifact format {version}")
    if mlen > MAX_MANIFEST_BYTES:
        raise ArtifactIntegrityError(f"{where}: manifest of {mlen} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    mstart, mend = HEADER.size, HEADER.size + mlen
    if mend > len(data):
        raise ArtifactIntegrityError(f"{where}: truncated (manifest needs {mend} bytes, file has {len(data)})")
    mbytes = data[mstart:mend]
    if hashlib.sha256(mbytes).digest() != mhash:
        raise ArtifactIntegrityError(f"{where}: manifest hash mismatch (corrupted or tampered)")
    try:
        manifest = json.loads(mbytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactIntegrityError(f"{where}: manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != version:
        raise ArtifactIntegrityError(f"{where}: manifest does not match the header's format version")
    sections: dict[str, bytes] = {}
    entries = manifest.get("sections")
    if not isinstance(entries, list):
        raise ArtifactIntegrityError(f"{where}: manifest lists no sections")
    spans: list[tuple[int, int]] = []  # the bytes after the manifest each section accounts for
    for e in entries:
        try:
            name, off, length, digest = e["name"], int(e["offset"]), int(e["length"]), str(e["sha256"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactIntegrityError(f"{where}: malformed section entry {e!r}") from None
        if not isinstance(name, str) or not _SECTION_NAME.fullmatch(name) or name in sections:
            raise ArtifactIntegrityError(f"{where}: bad or repeated section name {name!r}")
        start = mend + off
        if off < 0 or length < 0 or start + length > len(data):
            raise ArtifactIntegrityError(f"{where}: truncated (section '{name}' needs bytes up to {start + length}, "
                                         f"file has {len(data)})")
        view = memoryview(data)[start:start + length]  # hashed in place: a section is copied once, below
        if _sha(view) != digest:
            raise ArtifactIntegrityError(f"{where}: section '{name}' hash mismatch (corrupted or tampered)")
        sections[name] = data[start:start + length]
        spans.append((off, off + length))
    # Alignment padding must be zeros and nothing may trail the last section: every byte is accounted for. The gaps
    # between sections are checked with bytes.count (no per-byte Python loop, no copy of the file).
    size = len(data) - mend
    last = max((end for _, end in spans), default=0)
    pos = 0
    for a, b in sorted(spans) + [(min(last, size), min(last, size))]:
        if a > pos:
            zeros = data.count(0, mend + pos, mend + a)
            if zeros != a - pos:
                stray = next(i for i in range(pos, a) if data[mend + i] != 0)
                raise ArtifactIntegrityError(f"{where}: byte {mend + stray} lies outside every section (corrupted or "
                                             f"tampered)")
        pos = max(pos, b)
    if size > last:
        raise ArtifactIntegrityError(f"{where}: {size - last} unexpected bytes after the last section")
    return Artifact(manifest, sections)

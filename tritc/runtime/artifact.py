"""The artifact file: one file, a verified manifest and hashed sections, written atomically.

    [64-byte header][32-byte signature, if signed][manifest JSON][section][section]...

Header: magic ``TRITCART``, format version (u32), flags (u32: bit 0 = signed), manifest length (u64), SHA-256 of
the manifest, 8 reserved bytes. The manifest lists every section (name, offset, length, SHA-256)
and everything a loader needs before touching code: tritc version, code ABI, target triple, CPU features,
input and output signatures, arena sizes, the weight layout. No pickle anywhere: JSON and raw
bytes only. The hashes detect corruption; only the optional keyed signature (HMAC-SHA256 over the header and the
manifest, which holds every section's hash) says who wrote the file. See docs/ARTIFACT.md.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ArtifactIntegrityError, ArtifactVersionError, ArtifactWriteError, OptionError
from .atomic import atomic_file

MAGIC = b"TRITCART"
# 3: the optional signature (flag SIGNED), `abi_version` in the manifest; 2: code for every size (entry ABI 3, symbolic
# arena sizes); 1: code per shape binding. Format 2 files are read as they are (the same layout, never signed).
FORMAT_VERSION = 3
HEADER = struct.Struct("<8sIIQ32s8s")  # 64 bytes
MAX_MANIFEST_BYTES = 16 * 2**20
SIGNED = 1  # header flag: an HMAC-SHA256 of SIGNATURE_BYTES follows the header
KNOWN_FLAGS = SIGNED
SIGNATURE_BYTES = 32
SIGNATURE_CONTEXT = b"tritc artifact signature v1\0"  # what the MAC covers starts with this (domain separation)
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
ALIGN = 64
_SECTION_NAME = re.compile(r"[a-z][a-z0-9_.]*")


@dataclass
class Artifact:
    manifest: dict[str, Any]
    sections: dict[str, bytes]  # verified contents, by name
    signed: bool = False              # the file carries a signature
    signature_checked: bool = False   # ... and it matched the key the reader was given
    data_start: int = 0               # the file offset section offsets count from (the manifest's end)


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: object, what: str = "key") -> bytes:
    """The key as bytes: at least MIN_KEY_BYTES of them (an HMAC key should be random; 32 bytes is plenty)."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise OptionError(f"{what}: a signing key is bytes (read the key file in binary: tritc.read_key(path)), "
                          f"not a {type(key).__name__}")
    key = bytes(key)
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise OptionError(f"{what}: a signing key has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, this one {len(key)} "
                          f"(make one with: head -c 32 /dev/urandom > tritc.key)")
    return key


def read_key(path: str | os.PathLike[str]) -> bytes:
    """The signing key in a file: its bytes, without one trailing newline (a key made with `openssl rand -hex 32`
    is a line of text). The key itself is never printed."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_BYTES + 3)
    except OSError as e:
        raise OptionError(f"key file {path}: cannot read it ({e.strerror or e})") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return check_key(data, f"key file {path}")


def signature(key: bytes, header: bytes, manifest: bytes) -> bytes:
    """HMAC-SHA256 of the header (with the SIGNED flag set) and the manifest. The manifest holds every section's
    SHA-256 and the reader accounts for every byte after it, so the MAC covers the whole file."""
    return hmac.new(key, SIGNATURE_CONTEXT + header + manifest, hashlib.sha256).digest()


def write_artifact(path: str | os.PathLike[str], manifest: Mapping[str, Any], sections: Mapping[str, bytes], *,
                   key: bytes | None = None, _fault: Callable[[str], None] | None = None) -> None:
    """Write atomically: a temporary file in the destination folder, fsync, rename, fsync the folder.

    A failure at any point leaves the destination as it was and removes the temporary file; a failure of the file
    system (disk full, a read-only folder) is an ArtifactWriteError naming the file and the cause. With `key` the
    file is signed (HMAC-SHA256). `_fault(stage)` is a test hook called at each stage ("weights", "object",
    "manifest")."""
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
    flags = SIGNED if key is not None else 0
    header = HEADER.pack(MAGIC, FORMAT_VERSION, flags, len(mbytes), hashlib.sha256(mbytes).digest(), b"\0" * 8)
    sig = signature(check_key(key), header, mbytes) if key is not None else b""
    with atomic_file(dest, _write_error) as f:
        f.write(header)
        f.write(sig)
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


def _write_error(dest: Path, e: OSError) -> ArtifactWriteError:
    cause = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        cause = "no space left on the device"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = f"the folder {dest.parent} is not writable ({e.strerror})"
    return ArtifactWriteError(f"{dest}: cannot write the artifact: {cause}; nothing was written (an artifact already "
                              f"there is left as it was)")


def read_artifact(path: str | os.PathLike[str], *, key: bytes | None = None) -> Artifact:
    """Read and verify everything: header, signature (when a key is given), manifest hash, every section's hash.
    Nothing is executed or loaded before all of it checks out. With `key`, an unsigned file or a signature that does
    not match is an ArtifactIntegrityError; without one, a signature is left unchecked (`signature_checked`)."""
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
    if version > FORMAT_VERSION:
        raise ArtifactVersionError(f"{where}: artifact format {version} > supported {FORMAT_VERSION}; "
                                   f"use a newer tritc")
    if version < 1:
        raise ArtifactVersionError(f"{where}: unknown artifact format {version}")
    if flags & ~KNOWN_FLAGS or reserved != b"\0" * 8 or (flags & SIGNED and version < 3):
        raise ArtifactIntegrityError(f"{where}: header has unknown flags set (corrupted or tampered)")
    signed = bool(flags & SIGNED)
    if mlen > MAX_MANIFEST_BYTES:
        raise ArtifactIntegrityError(f"{where}: manifest of {mlen} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    mstart = HEADER.size + (SIGNATURE_BYTES if signed else 0)
    mend = mstart + mlen
    if mend > len(data):
        raise ArtifactIntegrityError(f"{where}: truncated (manifest needs {mend} bytes, file has {len(data)})")
    mbytes = data[mstart:mend]
    if key is not None:
        key = check_key(key)
        if not signed:
            raise ArtifactIntegrityError(f"{where}: not signed, but a key was given: refused (an unsigned artifact "
                                         f"cannot be checked; sign it with tritc compile --sign-key)")
        expected = signature(key, bytes(data[:HEADER.size]), mbytes)
        if not hmac.compare_digest(expected, data[HEADER.size:mstart]):
            raise ArtifactIntegrityError(f"{where}: signature does not match the key (tampered with, or signed with "
                                         f"another key)")
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
    return Artifact(manifest, sections, signed=signed, signature_checked=key is not None, data_start=mend)

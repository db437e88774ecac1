"""Reading ONNX external data safely: the file must stay inside the model's folder.

A tensor stored outside the model names a `location` relative to the model file. Untrusted
models can point that anywhere, so the path is checked lexically (no absolute paths, drive
letters, URLs or `..` that climbs out), then opened without following symlinks at any level,
checked to be a regular file with one link, and read through that one descriptor, so swapping
the file after the check cannot redirect the read.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

import onnx

from ..errors import ModelFormatError, ModelValidationError, UnsafePathError

_KNOWN_KEYS = {"location", "offset", "length", "checksum", "basepath"}


def external_info(t: onnx.TensorProto, what: str, source: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for entry in t.external_data:
        if entry.key in info:
            raise ModelFormatError(f"{source}: {what}: external_data lists '{entry.key}' twice")
        if entry.key in _KNOWN_KEYS:
            info[entry.key] = entry.value
    if "location" not in info:
        raise ModelFormatError(f"{source}: {what}: external data without a location")
    return info


def check_location(location: str, what: str, source: str) -> PurePosixPath:
    """A location as a relative path that stays inside the model folder, or UnsafePathError."""
    bad = UnsafePathError(f"{source}: {what}: external data path '{location}' is outside the model's folder")
    if not location or "\x00" in location:
        raise UnsafePathError(f"{source}: {what}: external data path '{location}' is empty or invalid")
    if location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location) or "://" in location:
        raise bad
    parts = PurePosixPath(location.replace("\\", "/")).parts
    depth = 0
    for part in parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                raise bad
        elif part not in (".", ""):
            depth += 1
    if depth <= 0:
        raise bad
    return PurePosixPath(*[p for p in parts if p not in (".", "")])


def _open_beneath(base: Path, rel: PurePosixPath, what: str, source: str) -> int:
    """Open base/rel for reading, refusing symlinks in every component."""
    flags_dir = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    flags_file = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    parts = [p for p in rel.parts]
    # Resolve '..' lexically first (check_location has shown it never climbs out).
    stack: list[str] = []
    for p in parts:
        if p == "..":
            stack.pop()
        else:
            stack.append(p)
    try:
        fd = os.open(base, flags_dir)
    except OSError as e:
        raise ModelFormatError(f"{source}: {what}: cannot open the model folder: {e.strerror}") from None
    try:
        for p in stack[:-1]:
            try:
                nfd = os.open(p, flags_dir, dir_fd=fd)
            except OSError as e:
                if e.errno in (40, 20):  # ELOOP (a symlink), ENOTDIR
                    raise UnsafePathError(f"{source}: {what}: external data path '{rel}' goes through a symlink "
                                          f"or non-folder") from None
                raise ModelFormatError(f"{source}: {what}: external data file '{rel}' not found") from None
            os.close(fd)
            fd = nfd
        try:
            ffd = os.open(stack[-1], flags_file, dir_fd=fd)
        except OSError as e:
            if e.errno == 40:
                raise UnsafePathError(f"{source}: {what}: external data file '{rel}' is a symlink") from None
            if e.errno == 2:
                raise ModelFormatError(f"{source}: {what}: external data file '{rel}' not found") from None
            raise ModelFormatError(f"{source}: {what}: cannot open external data '{rel}': {e.strerror}") from None
        return ffd
    finally:
        os.close(fd)


def read_external(t: onnx.TensorProto, base_dir: Path | None, what: str, source: str, nbytes: int) -> bytes:
    """The bytes of an externally stored tensor (exactly `nbytes` of them)."""
    info = external_info(t, what, source)
    if base_dir is None:
        raise UnsafePathError(f"{source}: {what}: external data needs the model's folder; load the model from a file "
                              f"or pass base_dir")
    rel = check_location(info["location"], what, source)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelFormatError(f"{source}: {what}: external data offset or length is not a number") from None
    if offset < 0 or (length is not None and length < 0):
        raise ModelFormatError(f"{source}: {what}: external data offset {offset} / length {length} is negative")
    if length is not None and length != nbytes:
        raise ModelValidationError(f"{source}: {what}: external data length {length} does not match the "
                                   f"{nbytes} bytes its shape and type need")
    fd = _open_beneath(base_dir, rel, what, source)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{source}: {what}: external data '{rel}' is not a regular file")
        if st.st_nlink > 1:
            raise UnsafePathError(f"{source}: {what}: external data '{rel}' has several hard links")
        if offset + nbytes > st.st_size:
            raise ModelFormatError(f"{source}: {what}: external data '{rel}' has {st.st_size} bytes, "
                                   f"the tensor needs {nbytes} from offset {offset}")
        data = os.pread(fd, nbytes, offset) if nbytes else b""
        if len(data) != nbytes:
            raise ModelFormatError(f"{source}: {what}: short read from external data '{rel}'")
        return data
    finally:
        os.close(fd)

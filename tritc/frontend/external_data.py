"""Reading ONNX external data safely: the file must stay inside the model's folder.

A tensor stored outside the model names a `location` relative to the model file. Untrusted
models can point that anywhere, so the path is checked lexically (no absolute paths, drive
letters, URLs or `..` that climbs out), then opened one component at a time without following
symlinks, checked to be a regular file with one link, and read through that one descriptor, so
swapping the file after the check cannot redirect the read. Sizes are checked before any read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import onnx

from ..errors import ModelFormatError, ModelValidationError, UnsafePathError

# The keys ONNX defines (onnx/external_data_helper.py). `checksum` and `basepath` are accepted
# and ignored: the folder is always the model's own, never one the model names.
KNOWN_KEYS = ("location", "offset", "length", "checksum", "basepath")
_DIGITS = re.compile(r"[0-9]+")
# Largest single read; Linux returns at most about 2 GiB per read call anyway.
_CHUNK = 1 << 30


def external_info(t: onnx.TensorProto, what: str, source: str, warnings: list[str]) -> dict[str, str]:
    """The tensor's external_data entries as a dict; duplicate keys are an error, unknown ones a warning."""
    info: dict[str, str] = {}
    seen: set[str] = set()
    for entry in t.external_data:
        key, value = entry.key, entry.value
        if not isinstance(key, str) or not isinstance(value, str):
            raise ModelFormatError(f"{source}: {what}: external_data has a key or value that is not UTF-8 text")
        if key in seen:
            raise ModelFormatError(f"{source}: {what}: external_data lists '{key}' twice")
        seen.add(key)
        if key in KNOWN_KEYS:
            info[key] = value
        else:
            warnings.append(f"{what}: ignored unknown external_data key {key[:40]!r}")
    if "location" not in info:
        raise ModelFormatError(f"{source}: {what}: external data without a location")
    return info


def check_location(location: str, what: str, source: str) -> PurePosixPath:
    """A location as a normalized relative path that stays inside the model folder, or UnsafePathError."""
    shown = location if len(location) <= 200 else location[:200] + "..."
    bad = UnsafePathError(f"{source}: {what}: external data path {shown!r} is outside the model's folder")
    if not location or "\x00" in location:
        raise UnsafePathError(f"{source}: {what}: external data path {shown!r} is empty or contains NUL")
    if location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location) or "://" in location:
        raise bad
    stack: list[str] = []
    for part in PurePosixPath(location.replace("\\", "/")).parts:
        if part == "..":
            if not stack:
                raise bad
            stack.pop()
        elif part not in (".", ""):
            stack.append(part)
    if not stack:
        raise bad
    return PurePosixPath(*stack)


def _parse_count(text: str | None, key: str, what: str, source: str) -> int | None:
    if text is None:
        return None
    # Only plain decimal digits: int() would also take "+5", " 7 ", "1_000" and very long inputs.
    if len(text) > 20 or not _DIGITS.fullmatch(text):
        raise ModelFormatError(f"{source}: {what}: external data {key} {text[:40]!r} is not a non-negative integer")
    return int(text)


def _open_beneath(base: Path, rel: PurePosixPath, what: str, source: str) -> int:
    """Open base/rel for reading, refusing a symlink or a non-regular file in any component the model names."""
    flags_dir = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    flags_file = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        # The base folder is the caller's (trusted) choice, so it may itself be reached through a symlink.
        fd = os.open(base, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise ModelFormatError(f"{source}: {what}: cannot open the model's folder: {e.strerror}") from None
    try:
        for part in rel.parts[:-1]:
            try:
                nfd = os.open(part, flags_dir, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(f"{source}: {what}: external data path '{rel}' goes through a symlink "
                                          f"or a non-folder ('{part}')") from None
                if e.errno == errno.ENOENT:
                    raise ModelFormatError(f"{source}: {what}: external data file '{rel}' not found") from None
                raise ModelFormatError(f"{source}: {what}: cannot open external data '{rel}': {e.strerror}") from None
            os.close(fd)
            fd = nfd
        name = rel.parts[-1]
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise ModelFormatError(f"{source}: {what}: external data file '{rel}' not found") from None
            raise ModelFormatError(f"{source}: {what}: cannot stat external data '{rel}': {e.strerror}") from None
        # Checked before opening so a FIFO or a device is never opened at all; fstat re-checks after.
        _check_regular(st, rel, what, source)
        try:
            return os.open(name, flags_file, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePathError(f"{source}: {what}: external data file '{rel}' is a symlink") from None
            if e.errno == errno.ENOENT:
                raise ModelFormatError(f"{source}: {what}: external data file '{rel}' not found") from None
            raise ModelFormatError(f"{source}: {what}: cannot open external data '{rel}': {e.strerror}") from None
    finally:
        os.close(fd)


def _check_regular(st: os.stat_result, rel: PurePosixPath, what: str, source: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{source}: {what}: external data file '{rel}' is a symlink")
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise UnsafePathError(f"{source}: {what}: external data '{rel}' is {kind}")
    if st.st_nlink > 1:
        # A hard link could make a file from anywhere on the same filesystem appear inside the folder.
        raise UnsafePathError(f"{source}: {what}: external data '{rel}' has {st.st_nlink} hard links")


def read_external(t: onnx.TensorProto, base_dir: Path | None, what: str, source: str, nbytes: int,
                  allocate: Callable[[], memoryview], warnings: list[str]) -> None:
    """Read the tensor's `nbytes` bytes from its external file into the buffer `allocate()` returns.

    Every check (path, keys, offset, length against the tensor's size, the file's size) happens
    before `allocate` is called, so a lying header never costs memory."""
    info = external_info(t, what, source, warnings)
    rel = check_location(info["location"], what, source)
    offset = _parse_count(info.get("offset"), "offset", what, source) or 0
    length = _parse_count(info.get("length"), "length", what, source)
    if length is not None and length != nbytes:
        raise ModelValidationError(f"{source}: {what}: external data length {length} does not match the "
                                   f"{nbytes} bytes its shape and type need")
    if base_dir is None:
        raise UnsafePathError(f"{source}: {what}: external data needs the model's folder; load the model from a file "
                              f"or pass base_dir")
    fd = _open_beneath(base_dir, rel, what, source)
    try:
        st = os.fstat(fd)
        _check_regular(st, rel, what, source)
        if offset + nbytes > st.st_size:
            raise ModelFormatError(f"{source}: {what}: external data '{rel}' has {st.st_size} bytes, "
                                   f"the tensor needs {nbytes} from offset {offset}")
        buffer = allocate()
        if buffer.nbytes != nbytes:
            raise ValueError(f"buffer of {buffer.nbytes} bytes for {nbytes}")
        done = 0
        while done < nbytes:
            n = os.preadv(fd, [buffer[done:done + _CHUNK]], offset + done)
            if n <= 0:
                raise ModelFormatError(f"{source}: {what}: short read from external data '{rel}'")
            done += n
    finally:
        os.close(fd)

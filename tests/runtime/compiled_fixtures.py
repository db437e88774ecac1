"""The exported cache fixtures compiled once per test process (threads=1), shared by the tests that run them: each
compile takes seconds, and a model with generic code serves every test's sizes."""

from __future__ import annotations

import functools
from pathlib import Path

import tritc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cache"


@functools.cache
def compiled(path: Path):
    return tritc.compile(str(path), threads=1)

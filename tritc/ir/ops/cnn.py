"""Ops of the cnn family (registered with @defop; see tritc/ir/ops/__init__.py)."""

from __future__ import annotations

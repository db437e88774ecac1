"""Adapters for older versions of the reduce ops (see tritc/frontend/adapters/__init__.py)."""

from __future__ import annotations

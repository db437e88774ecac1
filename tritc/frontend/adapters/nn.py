"""Adapters for older versions of the nn ops (see tritc/frontend/adapters/__init__.py)."""

from __future__ import annotations

"""The frontend's budgets: `tritc.limits.Limits`, re-exported where the frontend has always had it."""

from __future__ import annotations

from ..limits import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_LIMITS", "Limits"]

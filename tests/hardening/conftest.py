"""The sandbox fixture of the hardening suite (see harness.py for the contract every case is held to)."""

from .harness import sb  # noqa: F401  (the fixture)

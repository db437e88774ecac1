"""Hypothesis profiles: `make test` is deterministic, `make test-random` explores.

`ci` (the default): derandomised (the same examples on every run and machine), no example database,
no deadline, each test's fixed example budget. `random` (HYPOTHESIS_PROFILE=random): fresh random
examples, RANDOM_FACTOR times each budget. Property tests write `max_examples=budget(n)`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
RANDOM_FACTOR = 20

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("random", derandomize=False, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
if PROFILE not in ("ci", "random"):
    raise RuntimeError(f"HYPOTHESIS_PROFILE must be ci or random, not {PROFILE!r}")
settings.load_profile(PROFILE)


def budget(n: int) -> int:
    """The example budget of a property test: n in `make test`, RANDOM_FACTOR * n in the random profile."""
    return n * RANDOM_FACTOR if PROFILE == "random" else n

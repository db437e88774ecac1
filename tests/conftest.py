"""Shared pytest options: --update-golden rewrites the expected IR of golden pass tests. Importing
tests.properties loads the hypothesis profile (deterministic unless HYPOTHESIS_PROFILE=random)."""

from __future__ import annotations

from . import properties  # noqa: F401  (registers and loads the hypothesis profile)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the expected output of golden IR tests instead of checking it")


def pytest_report_header(config):
    return f"hypothesis profile: {properties.PROFILE}"

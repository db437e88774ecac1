"""Shared pytest options: --update-golden rewrites the expected IR of golden pass tests."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the expected output of golden IR tests instead of checking it")

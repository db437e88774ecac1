"""The subcommands of `tritc`, one module each; every module has `add_parser(subparsers)` and `run(args)`."""

from __future__ import annotations

import importlib
from types import ModuleType

# In the order `tritc --help` lists them: the life of a model.
COMMANDS = ("dump", "compile", "run", "generate", "inspect", "verify", "bench", "hw")


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in COMMANDS]

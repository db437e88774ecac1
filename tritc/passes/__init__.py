"""Graph-to-graph passes, one file per pass, and the pipelines that order them (pipelines.py)."""

from __future__ import annotations

import importlib

from .pass_manager import PASSES, Pass, PassManager, make_pass, parse_pass_list, register

# Every pass module; importing one registers its pass.
PASS_MODULES = (
    "infer_shapes",
    "fold_constants",
    "eliminate_dead_code",
    "eliminate_common_subexpressions",
    "canonicalize",
    "fuse_elementwise",
    "fold_ternary",
    "fuse_bitlinear",
    "fuse_epilogue",
    "fuse_attention",
    "tile_attention",
    "schedule_memory",
    "kv_cache_in_place",
    "quantize_activations",
    "fold_radix3",
)

_loaded = False


def load_all() -> None:
    global _loaded
    if not _loaded:
        for m in PASS_MODULES:
            importlib.import_module(f"{__name__}.{m}")
        _loaded = True


__all__ = ["PASSES", "Pass", "PassManager", "load_all", "make_pass", "parse_pass_list", "register"]

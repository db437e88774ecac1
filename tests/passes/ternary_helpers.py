"""Shared by the fold-ternary tests: run a named pipeline and keep the fold-ternary step's report."""

from __future__ import annotations

from tritc.ir.graph import Graph
from tritc.passes import PassManager
from tritc.passes.fold_ternary import FoldTernary, fold_report
from tritc.passes.pipelines import pipeline
from tritc.passes.ternary_report import TernaryReport

FOLD_OPTIONS = ("mode", "act", "include", "exclude", "granularity")


def run_pipeline(g: Graph, name: str = "cpu", **options) -> TernaryReport:
    """Run pipeline `name` on g in place; `options` are fold-ternary's fields (mode, include, granularity, ...)."""
    passes = pipeline(name)
    i = next(i for i, p in enumerate(passes) if isinstance(p, FoldTernary))
    PassManager(passes[:i]).run(g)
    report = fold_report(g, **{f: options.get(f, getattr(passes[i], f)) for f in FOLD_OPTIONS})
    PassManager(passes[i + 1:]).run(g)
    return report

"""Shared by the fold-ternary tests: run a named pipeline and keep the fold-ternary step's report."""

from __future__ import annotations

import dataclasses

from tritc.ir.graph import Graph
from tritc.passes import PassManager
from tritc.passes.fold_ternary import FoldTernary
from tritc.passes.pipelines import pipeline
from tritc.passes.ternary_report import TernaryReport


def run_pipeline(g: Graph, name: str = "cpu", **options) -> TernaryReport:
    """Run pipeline `name` on g in place; `options` are fold-ternary's fields (mode, include, granularity, ...).
    The report is the one the PassManager keeps for the fold-ternary step."""
    passes = [dataclasses.replace(p, **options) if isinstance(p, FoldTernary) else p for p in pipeline(name)]
    pm = PassManager(passes)
    pm.run(g)
    report = pm.result_of("fold-ternary")
    assert isinstance(report, TernaryReport)
    return report

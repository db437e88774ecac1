"""docs/OPS.md is the op table as it is now."""

from pathlib import Path

from tritc.ir.opdoc import render


def test_ops_md_is_current():
    doc = Path(__file__).parents[2] / "docs" / "OPS.md"
    assert doc.read_text() == render(), "docs/OPS.md is stale: run `python -m tritc.ir.opdoc > docs/OPS.md`"

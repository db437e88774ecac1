"""Every IR text in tests/ round-trips through the text format: print(parse(text)) == text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritc.ir import parse_graph, print_graph

ROOT = Path(__file__).parent
FILES = sorted(ROOT.rglob("*.ir"))


def graphs_in(text: str) -> list[str]:
    """The graph texts of a file (golden files hold an input and an expected graph)."""
    out, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("graph "):
            cur = [line]
        elif cur:
            cur.append(line)
            if line.rstrip() == "}":
                out.append("".join(cur))
                cur = []
    return out


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_ir_file_round_trips(path):
    texts = graphs_in(path.read_text())
    assert texts, f"{path} holds no graph"
    for text in texts:
        g = parse_graph(text, _AnyWeights())
        assert print_graph(g) == text


class _AnyWeights(dict):
    """Weights are printed by reference: any key resolves (the data does not affect the text)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> object:
        return None

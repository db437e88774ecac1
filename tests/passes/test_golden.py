"""Golden IR tests: each file in golden/ holds an input graph, a pass list and the exact expected IR.

    // passes: canonicalize
    graph @g(...) { ... }          <- input
    // expected:
    graph @g(...) { ... }          <- what the passes must print

The input and the output are also both run through the interpreter on seeded random inputs and
must agree, and the output is compiled for the CPU (symbolic dims bound to SYMBOL_SIZE) and must
agree with the interpreter, running some compiled code: a pass cannot produce IR the backend
refuses. `pytest --update-golden` rewrites the expected part (review the diff before committing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.codegen.llvm.compiler import lowered_nodes, symbols_of
from tritc.ir import parse_graph, print_graph, run, verify
from tritc.passes import PassManager, parse_pass_list

GOLDEN = Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.glob("*.ir"))
SYMBOL_SIZE = 3  # every symbolic dim, in the random inputs and the compiled code


def split(text: str) -> tuple[str, str, str]:
    head, _, rest = text.partition("\n")
    assert head.startswith("// passes:"), "a golden file starts with '// passes: <pass list>'"
    source, sep, expected = rest.partition("// expected:\n")
    assert sep, "a golden file has an '// expected:' line"
    return head.removeprefix("// passes:").strip(), source, expected


def random_feeds(graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        shape = [d if isinstance(d, int) else SYMBOL_SIZE for d in v.type.shape]
        if v.type.dtype.is_float:
            feeds[v.name] = rng.standard_normal(shape).astype(v.type.dtype.np_dtype)
        else:
            feeds[v.name] = rng.integers(0, 3, shape).astype(v.type.dtype.np_dtype)
    return feeds


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden(path: Path, request):
    passes, source, expected = split(path.read_text())
    g = parse_graph(source)
    verify(g)
    before = print_graph(g)
    feeds = random_feeds(g)
    want = run(g.copy(), feeds)
    PassManager(parse_pass_list(passes)).run(g)
    got = print_graph(g)
    if request.config.getoption("--update-golden"):
        path.write_text(f"// passes: {passes}\n{before}// expected:\n{got}")
    else:
        assert got == expected, f"{path.name}: the passes printed\n{got}"
        # The expected text itself parses back to the same graph.
        assert print_graph(parse_graph(expected, g.weights)) == expected
    have = run(g, feeds)
    assert list(have) == list(want)
    for k in want:
        np.testing.assert_allclose(have[k], want[k], rtol=1e-6, atol=1e-6, err_msg=f"{path.name}: output {k}")
    check_compiled(g, feeds, have, path.name)


def check_compiled(g, feeds: dict[str, np.ndarray], want: dict[str, np.ndarray], name: str) -> None:
    """The passes' output compiled as it is (no further passes) runs some compiled code and matches the interpreter."""
    sizes = {d: SYMBOL_SIZE for d in symbols_of(g)}
    model = tritc.compile(g, pipeline="none", shapes=sizes, threads=1)
    got = dict(zip([o.name for o in model.outputs], model.run(None, feeds)))
    # the code for these sizes, and the generic code when every op of the graph takes symbolic dims
    assert model.specializations and all(spec.graph is not None and lowered_nodes(spec.graph)
                                         for spec in model.specializations), f"{name}: the specialiser folded every node"
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, f"{name}: output {k}"
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{name}: output {k} compiled")


def test_there_are_golden_files():
    assert len(FILES) >= 8

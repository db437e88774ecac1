"""A real-size compile (issue 8): the 0.7B-class BitNet-shaped decoder (24 layers, hidden 1536, FFN 4096, vocabulary
32000) compiles in under 30 s and 4 GB; benchmarks/compile_real_size.py measures the full model (results in
benchmarks/results/compile_real_size.md). The suite runs the reduced form: the same layer shapes with 4 layers (about
0.8 GB of float weights), held to the same limits, and checks that layers of one shape share their code (the
compiled functions do not grow with the depth)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.compile_real_size import MEMORY_LIMIT_BYTES, TIME_LIMIT_S, measure, model_path  # noqa: E402

pytestmark = pytest.mark.slow


def test_reduced_real_size_compiles_within_the_limits(tmp_path):
    model = model_path(tmp_path / "model", 4)
    row = measure(model, tmp_path / "m.tritc", threads=1)
    assert row["seconds"] < TIME_LIMIT_S, row
    assert row["peak_bytes"] < MEMORY_LIMIT_BYTES, row
    assert row["shapes"].startswith("every size (batch, seq, total, past at run time)"), row
    assert row["ternary"].startswith("29 of 29 linear layers (29 exact)"), row


def test_layers_of_one_shape_share_code():
    """3 and 5 layers at a small width (first, middle and last layers exist in both): the same number of node
    functions, one per distinct signature."""
    import dataclasses

    import tritc
    from benchmarks.bench_generate import MODELS
    from benchmarks.bitnet_models import decoder

    counts = []
    for layers in (3, 5):
        spec = dataclasses.replace(MODELS["0.7b"], layers=layers, hidden=128, ffn=256, heads=4, kv_heads=2, vocab=512)
        m = tritc.compile(decoder(spec), threads=1)
        code = m.program.codes[((), ())]
        counts.append((code.stats["node_functions"], code.stats["nodes_lowered"]))
    assert counts[0][0] == counts[1][0], counts
    assert counts[1][1] > counts[0][1], counts  # more nodes, the same functions

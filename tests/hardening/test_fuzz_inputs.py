"""Hypothesis fuzzing of tritc's readers of untrusted bytes (tritc/fuzz/inputs.py): the IR text parser, the artifact
reader and the FPGA stream decoder, on arbitrary bytes and on mutations of valid inputs. Only CompilerErrors may come
out; a graph that parses prints back to itself; a word that decodes encodes back to itself. The long run is
`make fuzz` (docs/FUZZING.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritc.fuzz import inputs

from ..properties import budget

TARGETS = sorted(inputs.TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_the_seeds_are_valid(target):
    for data in inputs.seeds(target):
        assert inputs.run_target(target, data) is None


def test_an_unmutated_artifact_loads_after_reseal(tmp_path):
    import tritc

    for data in inputs.seeds("artifact"):
        path = tmp_path / "resealed.tritc"
        path.write_bytes(inputs.reseal(data))
        tritc.load(path)


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=budget(60))
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(target, data):
    assert inputs.run_target(target, data) is None


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=budget(150))
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 100))
def test_mutated_valid_inputs(target, seed, which):
    corpus = inputs.seeds(target)
    data = inputs.mutate(corpus[which % len(corpus)], np.random.default_rng(seed))
    assert inputs.run_target(target, data) is None


@settings(max_examples=budget(100))
@given(text=st.text(alphabet=st.sampled_from(list("%@(){}[],:=->\"\\ \n0123456789.-abcdefgiklmnorstuwxyz_*?")),
                    max_size=200))
def test_ir_text_from_its_own_alphabet(text):
    assert inputs.run_target("ir-text", b"graph @g(%x: f32[4]) -> (%x: f32[4]) {\n" + text.encode()) is None

"""One compile serves every size (issue 8, item 1): each exported KV-cache fixture (tests/fixtures/cache/: Llama, Qwen2,
GPT-2, BitNet and BERT, legacy and dynamo exporters, opsets 17/18/23, the native Attention op) compiles once, with
generic code, and runs at several batch / sequence / past sizes without compiling again; every result equals the
interpreter's on the same graph. The sizes differ from each other and from 1 in every symbol, so a lowering that
took one size for another (a structural comparison of symbolic dims) would read or write the wrong elements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritc.ir import dims as dimlib
from tritc.ir.interpreter import run as interpret

from .compiled_fixtures import compiled

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cache"
MODELS = sorted(FIXTURES.glob("*.onnx"))
# (batch, seq, past): decode, prefill, both with a batch of 2 and a cache
SIZES = [(1, 1, 0), (2, 3, 5), (1, 7, 2), (2, 1, 9)]
RTOL, ATOL = 1e-4, 1e-5


def feeds(model, batch: int, seq: int, past: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs of the sizes given: token ids in the vocabulary, a mask of ones (a padded first position when batch
    > 1), positions after the cache, random cache entries."""
    sizes = {"batch": batch, "seq": seq, "past": past, "total": past + seq}
    out = {}
    for spec in model.get_inputs():
        shape = []
        for d in spec.shape:
            v = dimlib.evaluate(d, sizes) if isinstance(d, str) else d
            assert v is not None, f"{spec.name}: dim {d} is not one of {sorted(sizes)}"
            shape.append(v)
        name = spec.name
        if name == "input_ids":
            out[name] = rng.integers(0, 200, size=shape).astype(np.int64)
        elif name == "attention_mask":
            mask = np.ones(shape, np.int64)
            if batch > 1 and past + seq > 2:
                mask[1, 0] = 0  # left padding in the second sequence
            out[name] = mask
        elif name == "position_ids":
            out[name] = np.broadcast_to(np.arange(past, past + seq, dtype=np.int64), shape).copy()
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_one_compile_runs_every_size(path):
    model = compiled(path)
    assert model.program.generic_error is None, model.program.generic_error
    before = model.stats["compilations"]
    rng = np.random.default_rng(0)
    for batch, seq, past in SIZES:
        feed = feeds(model, batch, seq, past, rng)
        got = model.run(None, feed)
        want = interpret(model.graph, feed)
        names = [o.name for o in model.get_outputs()]
        for name, g in zip(names, got):
            w = want[name]
            assert g.shape == w.shape, f"{name} at batch={batch} seq={seq} past={past}: {g.shape} != {w.shape}"
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{path.stem}: {name} at batch={batch} seq={seq} past={past}")
    assert model.stats["compilations"] == before, "running at new sizes compiled code"


def test_a_violated_relation_is_one_clear_error():
    """A legacy export names the mask's length `total` on its own; the model needs total = past+seq (found before
    fuse-attention absorbed the mask), and a call that breaks it is one InputShapeError naming both sides."""
    from tritc.errors import InputShapeError

    model = compiled(FIXTURES / "llama_legacy17.onnx")
    feed = feeds(model, 1, 2, 3, np.random.default_rng(0))
    feed["attention_mask"] = np.ones((1, 6), np.int64)
    with pytest.raises(InputShapeError) as e:
        model.run(None, feed)
    assert str(e.value) == ("input 'attention_mask' dim 1 ('total') is 6, but the model needs total = past+seq = 5 "
                            "(past=3 from input 'past_key_values.0.key' dim 2, seq=2 from input 'input_ids' dim 1)")


# decode with a long cache, prompts without one, batches: the one arena formula of the generic code at each
ARENA_SIZES = [(b, s, p) for b in (1, 4) for s, p in ((1, 0), (1, 100), (1, 1000), (16, 0), (64, 64), (512, 0))]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_arena_is_near_the_lower_bound(path):
    """The arena the generic code asks for (schedule-memory's placement of the compiled graph, kernel scratch
    included) is at most 1.15x the most bytes live at one step, at every size; and a valid placement there."""
    from tritc.codegen.llvm.symbolic import evaluate
    from tritc.ir.memory import check_schedule, numbers, unordered_pairs

    model = compiled(path)
    (spec,) = model.specializations
    assert not unordered_pairs(spec.graph, spec.schedule)
    for batch, seq, past in ARENA_SIZES:
        sizes = {"batch": batch, "seq": seq, "past": past, "total": past + seq}
        bindings = {k: v for k, v in sizes.items() if k in model.symbols}
        n = numbers(spec.graph, spec.schedule, bindings)
        assert check_schedule(spec.graph, spec.schedule, bindings) == []
        assert evaluate(spec.arena_bytes, bindings) == n.arena <= 1.15 * n.lower_bound, (batch, seq, past)

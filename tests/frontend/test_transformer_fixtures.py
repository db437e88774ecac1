"""The committed transformer fixtures (tests/fixtures/transformers/) through the frontend and the interpreter,
checked against onnxruntime; onnxruntime is itself checked against the logits torch computed when they were made.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tritc.frontend.onnx import load_model
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transformers"
MODELS = sorted(FIXTURES.glob("*.onnx"))
SEQ_LENS = (5, 11)  # the lengths stored in <model>.expected.npz (batch 2, row 1 right-padded by 2)
# Interpreter vs onnxruntime: both compute in float32 on the same graph; logits are O(1) (|x| <= ~6).
INTERP_ATOL = 1e-4
# onnxruntime vs torch: a different implementation of each op (fused attention, other accumulation orders),
# so looser; measured <= 3e-6 when the fixtures were made.
TORCH_ATOL = 1e-3


def _ids(path: Path) -> str:
    return path.stem


def _expected(model: Path) -> np.lib.npyio.NpzFile:
    # llama_legacy17.onnx -> llama.expected.npz; bitnet_actquant_dynamo23.onnx -> bitnet_actquant.expected.npz
    return np.load(FIXTURES / f"{model.stem.rsplit('_', 1)[0]}.expected.npz")


def _feeds(model: Path, seq: int) -> dict[str, np.ndarray]:
    npz = _expected(model)
    return {k: npz[f"s{seq}_{k}"] for k in ("input_ids", "attention_mask")}


@functools.cache
def _session(model: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


@functools.cache
def _graph(model: Path) -> Graph:
    return load_model(model)


def _ort(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = _session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def test_fixture_set_is_complete() -> None:
    # The generator writes llama / bitnet / bitnet_actquant x {legacy17, dynamo18, dynamo23}.
    assert [p.stem for p in MODELS] == sorted(f"{m}_{e}" for m in ("llama", "bitnet", "bitnet_actquant")
                                               for e in ("legacy17", "dynamo18", "dynamo23"))
    for p in MODELS:
        proto = onnx.load(str(p), load_external_data=False)
        assert proto.ir_version <= 10, f"{p.name}: IR version {proto.ir_version} is newer than onnxruntime reads"
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer), f"{p.name}: external data"
        assert {i.name for i in proto.graph.input} == {"input_ids", "attention_mask"}
        for seq in SEQ_LENS:
            assert _expected(p)[f"s{seq}_logits"].shape == (2, seq, 256)


@pytest.mark.parametrize("model", [p for p in MODELS if p.stem.startswith("bitnet")], ids=_ids)
def test_bitnet_weights_are_trits_times_scale(model: Path) -> None:
    # What a ternary-folding pass relies on: every MatMul weight holds, per row or per column, one magnitude
    # besides zero (the generator uses per-tensor scales in attention and per-output-channel scales elsewhere).
    proto = onnx.load(str(model))
    matmul_inputs = {i for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input}
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer
               if t.name in matmul_inputs and len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT]
    assert len(weights) == 15  # 2 layers x (q, k, v, o, gate, up, down) + lm_head
    for w in weights:
        a = np.abs(w)
        assert any(np.all((a == 0) | (a == a.max(axis=axis, keepdims=True))) for axis in (0, 1))
        assert 0.2 < np.mean(a == 0) < 0.6


@pytest.mark.parametrize("seq", SEQ_LENS)
@pytest.mark.parametrize("model", MODELS, ids=_ids)
def test_onnxruntime_matches_torch(model: Path, seq: int) -> None:
    got = _ort(model, _feeds(model, seq))["logits"]
    want = _expected(model)[f"s{seq}_logits"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TORCH_ATOL


@pytest.mark.parametrize("seq", SEQ_LENS)
@pytest.mark.parametrize("model", MODELS, ids=_ids)
def test_interpreter_matches_onnxruntime(model: Path, seq: int) -> None:
    feeds = _feeds(model, seq)
    want = _ort(model, feeds)
    got = run(_graph(model), feeds)
    assert set(got) == set(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{name}: {g.dtype}{list(g.shape)} vs onnxruntime {w.dtype}{list(w.shape)}"
        diff = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max())
        assert diff <= INTERP_ATOL, f"{name}: max |interpreter - onnxruntime| = {diff:.3g} at seq {seq}"

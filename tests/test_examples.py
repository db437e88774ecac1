"""The bundled example: examples/build_bitnet_example.py builds a valid ONNX model whose linear
layers are exactly ternary, and the reference interpreter agrees with onnxruntime on it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOLERANCE = 1e-4
SHAPES = ((2, 5), (1, 17))  # two sequence lengths (and batch sizes) through the same symbolic dims


def _load_script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


builder = _load_script("build_bitnet_example")


def _build(tmp_path: Path, *args: str) -> Path:
    path = tmp_path / ("bitnet" + "".join(a.strip("-") for a in args) + ".onnx")
    assert builder.main(["-o", str(path), *args]) == 0
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("example"))


def _ort(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids})[0]


def _ids(batch: int, seq: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, batch, seq]).integers(0, 256, size=(batch, seq), dtype=np.int64)


# ---- the ONNX file --------------------------------------------------------------------------


def test_model_is_valid_onnx_with_symbolic_io(model_path: Path) -> None:
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10 and model.opset_import[0].version == 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("input_ids", onnx.TensorProto.INT64)
    assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "seq"]
    assert out.name == "logits"
    dims = out.type.tensor_type.shape.dim
    assert [dims[0].dim_param, dims[1].dim_param, dims[2].dim_value] == ["batch", "seq", 256]
    ops = {n.op_type for n in model.graph.node}
    # The BitNet pieces are all there: embedding, decomposed RMSNorm, GQA attention, SwiGLU, act quant.
    assert {"Gather", "Pow", "ReduceMean", "Sqrt", "Softmax", "Expand", "Sigmoid", "Round", "Clip", "ReduceMax"} <= ops
    for batch, seq in SHAPES:
        assert _ort(model_path, _ids(batch, seq)).shape == (batch, seq, 256)


def test_build_is_deterministic(tmp_path: Path, model_path: Path) -> None:
    again = _build(tmp_path)
    assert again.read_bytes() == model_path.read_bytes()
    other = _build(tmp_path, "--seed", "1")
    assert other.read_bytes() != model_path.read_bytes()


def _is_trits_times_column_scale(w: np.ndarray) -> bool:
    scale = np.max(np.abs(w), axis=0)  # one scale per output channel (a column of the [in, out] weight)
    if np.any(scale == 0):
        return False
    trits = np.round(w / scale)
    return bool(np.isin(trits, (-1.0, 0.0, 1.0)).all() and np.array_equal(trits.astype(np.float32) * scale, w))


def test_every_linear_weight_is_exactly_ternary(model_path: Path) -> None:
    model = onnx.load(model_path)
    weights = builder.linear_weights(model)
    assert len(weights) == 7 * 2  # q, k, v, o, gate, up, down in each of the 2 layers
    for name, w in weights.items():
        assert w.dtype == np.float32 and _is_trits_times_column_scale(w), name
        trits = np.round(w / np.max(np.abs(w), axis=0))
        assert 0.2 < np.mean(trits == 0) < 0.45, f"{name}: a ternary weight should be about a third zeros"
    # Every MatMul against an initializer is one of those, or the float output head (BitNet keeps it float).
    inits = {t.name: t for t in model.graph.initializer}
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}
    assert matmul_weights == set(weights) | {"lm_head.weight"}
    head = onnx.numpy_helper.to_array(inits["lm_head.weight"])
    assert not _is_trits_times_column_scale(head)


def test_ternary_head_flag(tmp_path: Path) -> None:
    model = onnx.load(_build(tmp_path, "--ternary-head"))
    head = builder.linear_weights(model, include_head=True)["lm_head.weight"]
    assert _is_trits_times_column_scale(head)


def test_logits_are_causal(model_path: Path) -> None:
    ids = _ids(1, 9)
    changed = ids.copy()
    changed[0, 6:] = (changed[0, 6:] + 1) % 256
    a, b = _ort(model_path, ids), _ort(model_path, changed)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])  # earlier positions never see later tokens
    assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-3


@pytest.mark.parametrize("variant", [
    ("--mask", "trilu"),
    ("--gqa", "broadcast"),
    ("--opset", "18"),
    ("--opset", "23", "--rms-op"),
])
def test_export_variants_compute_the_same_function(tmp_path: Path, model_path: Path, variant: tuple[str, ...]) -> None:
    """The export switches change the graph, not the model: same seed, same logits."""
    path = _build(tmp_path, *variant)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    for batch, seq in SHAPES:
        ids = _ids(batch, seq)
        np.testing.assert_allclose(_ort(path, ids), _ort(model_path, ids), atol=1e-5, rtol=0)


def test_bad_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert builder.main(["-o", str(tmp_path / "x.onnx"), "--heads", "4", "--kv-heads", "3"]) == 2
    assert "kv_heads" in capsys.readouterr().err
    assert builder.main(["-o", str(tmp_path / "y.onnx"), "--rms-op"]) == 2
    assert not (tmp_path / "x.onnx").exists()


# ---- the interpreter against onnxruntime ----------------------------------------------------


def _compare(path: Path, batch: int, seq: int):  # -> demo.Comparison
    demo = _load_script("demo")
    from tritc.frontend.onnx import load_model

    graph = load_model(path)
    feeds = {"input_ids": _ids(batch, seq)}
    return demo.compare(graph, feeds, demo.run_onnxruntime(path, feeds))


@pytest.mark.parametrize("batch,seq", SHAPES)
def test_interpreter_matches_onnxruntime_node_by_node(model_path: Path, batch: int, seq: int) -> None:
    """Each node, given onnxruntime's inputs, gives onnxruntime's result (the act-quant model)."""
    c = _compare(model_path, batch, seq)
    assert c.per_node <= TOLERANCE, f"worst node {c.worst_node}: {c.per_node}"
    # End to end, an int8 activation may round the other way at a .5 tie (float noise); nothing else differs.
    assert c.end_to_end <= TOLERANCE or c.rounding_flips > 0, c


@pytest.mark.parametrize("batch,seq", SHAPES)
def test_interpreter_matches_onnxruntime_end_to_end(tmp_path: Path, batch: int, seq: int) -> None:
    """Without activation quantization there are no rounding ties: the whole run must agree."""
    c = _compare(_build(tmp_path, "--no-act-quant"), batch, seq)
    assert c.end_to_end <= TOLERANCE, c
    assert c.per_node <= TOLERANCE, f"worst node {c.worst_node}: {c.per_node}"


@pytest.mark.parametrize("variant", [
    ("--mask", "trilu", "--gqa", "broadcast"),
    ("--opset", "23", "--rms-op"),
    ("--opset", "18", "--heads", "4", "--kv-heads", "4", "--ternary-head"),
])
def test_interpreter_matches_onnxruntime_on_export_variants(tmp_path: Path, variant: tuple[str, ...]) -> None:
    path = _build(tmp_path, *variant)
    for batch, seq in SHAPES:
        c = _compare(path, batch, seq)
        assert c.per_node <= TOLERANCE, f"worst node {c.worst_node}: {c.per_node}"
        assert c.end_to_end <= TOLERANCE or c.rounding_flips > 0, c


def test_demo_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _load_script("demo")
    assert demo.main(["--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "graph @" in out and "OK: the interpreter matches onnxruntime" in out

"""The ternary report and fold-ternary's layer policy and weight sources, on small hand-built graphs.

Fields of a report line (checked against values computed here), JSON and table output, include/exclude, and the
quantised sources fold-ternary sees through: QONNX Quant / BipolarQuant and DequantizeLinear of a constant weight.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritc.errors import OptionError
from tritc.ir.graph import Graph, Value
from tritc.ir.interpreter import run
from tritc.ir.types import DType, TensorType
from tritc.ir.verify import verify
from tritc.passes import PassManager, parse_pass_list
from tritc.passes.fold_ternary import FoldTernary, fold_report
from tritc.passes.ternary_report import PROBE_ROWS, PROBE_SEED, LayerReport, TernaryReport

RNG = np.random.default_rng(7)


def f32(*shape) -> TensorType:
    return TensorType(DType.F32, tuple(shape))


def trits(k: int, n: int, p_zero: float = 0.3) -> np.ndarray:
    return RNG.choice(np.array([-1, 0, 1], np.int8), size=(k, n), p=[(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2])


def weight(g: Graph, key: str, data: np.ndarray) -> Value:
    return g.add_weight(key, data, TensorType(DType.from_numpy(data.dtype), data.shape))


def mlp(*weights: np.ndarray | tuple[str, np.ndarray]) -> Graph:
    """x -> matmul -> relu -> ... -> matmul (the head) -> y; layers named fc1, fc2, ... and the last one `head`.
    A weight given as (op, payload[, options]) is built by `source` (a quantiser of a constant)."""
    g = Graph("g")
    first = weights[0][1] if isinstance(weights[0], tuple) else weights[0]
    h = g.add_input("x", f32("b", first.shape[0]))
    for i, w in enumerate(weights):
        name = "head" if i == len(weights) - 1 else f"fc{i + 1}"
        if isinstance(w, tuple):
            wv = source(g, name, w[0], w[1], **(w[2] if len(w) > 2 else {}))
        else:
            wv = weight(g, f"{name}.weight", w)
        k, n = wv.type.shape
        h = g.add("matmul", [h, wv], [f32("b", n)], {}, name).output
        if i < len(weights) - 1:
            h = g.add("relu", [h], [f32("b", n)], {}, f"{name}.act").output
    g.outputs = [h]
    verify(g)
    return g


def source(g: Graph, name: str, op: str, w: np.ndarray, **kw) -> Value:
    """A [K, N] weight seen through a quantiser: quant / bipolar_quant of a float constant, or dequantize_linear."""
    shape = w.shape
    if op == "dequantize_linear":
        scale = np.asarray(kw.get("scale", 0.25), np.float32)
        args = [weight(g, f"{name}.q", w), weight(g, f"{name}.scale", scale), weight(g, f"{name}.zp", np.zeros_like(scale, w.dtype))]
        return g.add(op, args, [f32(*shape)], {"axis": kw.get("axis", 1)}, f"{name}.dq").output
    args = [weight(g, f"{name}.weight", w), weight(g, f"{name}.scale", np.asarray(kw.get("scale", 0.5), np.float32))]
    if op == "quant":
        args += [weight(g, f"{name}.zeropt", np.zeros((), np.float32)),
                 weight(g, f"{name}.bitwidth", np.asarray(kw.get("bits", 2), np.float32))]
        attrs = {"signed": 1, "narrow": kw.get("narrow", 1), "rounding_mode": "ROUND"}
        return g.add(op, args, [f32(*shape)], attrs, f"{name}.quant").output
    return g.add(op, args, [f32(*shape)], {}, f"{name}.quant").output


def fold(g: Graph, **options) -> TernaryReport:
    return fold_report(g, **options)


def fold_checked(g: Graph, **options) -> TernaryReport:
    """Fold, and check that the exact folds left the graph's results unchanged (up to float32 summation order)."""
    x = RNG.standard_normal((5, g.inputs[0].type.shape[1])).astype(np.float32)
    want = run(g.copy(), {"x": x})
    rep = fold(g, **options)
    got = run(g, {"x": x})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    return rep


def by_name(rep: TernaryReport) -> dict[str, LayerReport]:
    return {lay.name: lay for lay in rep.layers}


def ops(g: Graph) -> list[str]:
    return [n.op for n in g]


def dense(k: int, n: int) -> np.ndarray:
    """A float weight that is not ternary (so an output layer made of it never folds in exact mode)."""
    return RNG.standard_normal((k, n)).astype(np.float32)


def folded_node(g: Graph, name: str):
    (node,) = [n for n in g if n.op == "ternary_matmul" and n.name == name]
    return node


# ---- fields -----------------------------------------------------------------------------------------


def test_fields_of_an_exact_per_channel_layer():
    t = trits(8, 6)
    scale = RNG.uniform(0.1, 2.0, 6).astype(np.float32)
    rep = fold_checked(mlp(t * scale, RNG.standard_normal((6, 3)).astype(np.float32)))
    lay = by_name(rep)["fc1.weight"]
    assert (lay.shape, lay.mode, lay.exact, lay.granularity, lay.source) == ((8, 6), "exact", True, "per_channel", "float")
    assert lay.zero_fraction == pytest.approx(np.mean(t == 0))
    assert lay.weight_rel_error == 0.0 and lay.output_rel_error == 0.0
    assert lay.bytes_before == 8 * 6 * 4 and lay.bytes_after == 48 // 4 + 4 * 6  # 2 bits a trit, one f32 scale a channel


def test_fields_of_a_per_tensor_layer_with_a_trit_count_not_a_multiple_of_four():
    t = trits(3, 3)
    t[0, 0] = 1  # at least one non-zero
    rep = fold_checked(mlp(t * np.float32(0.75), np.ones((3, 2), np.float32)))
    lay = by_name(rep)["fc1.weight"]
    assert (lay.granularity, lay.exact) == ("per_tensor", True)
    assert lay.bytes_after == 3 + 4  # 9 trits round up to 3 bytes, plus one scale


def test_fields_of_a_per_group_layer():
    k, n, group = 64, 4, 16
    t = trits(k, n)
    t[::group] = 1  # every group has a non-zero in every column, so every scale shows
    scales = RNG.uniform(0.5, 1.5, (k // group, n)).astype(np.float32)
    rep = fold_checked(mlp(t * np.repeat(scales, group, axis=0), np.ones((n, 2), np.float32)))
    lay = by_name(rep)["fc1.weight"]
    assert (lay.mode, lay.exact, lay.granularity) == ("exact", True, f"per_group/{group}")
    assert lay.bytes_before == k * n * 4 and lay.bytes_after == k * n // 4 + 4 * scales.size
    assert lay.weight_rel_error == 0.0


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_fields_of_an_absmean_layer(granularity):
    w = RNG.standard_normal((16, 8)).astype(np.float32) * np.linspace(0.5, 2, 8, dtype=np.float32)
    g = mlp(w, np.ones((8, 2), np.float32))
    lay = by_name(fold(g, mode="absmean", granularity=granularity))["fc1.weight"]
    # BitNet b1.58, computed here independently of the pass.
    scale = np.abs(w).mean(axis=0) if granularity == "per_channel" else np.abs(w).mean()
    t = np.clip(np.rint(w / scale), -1, 1)
    wq = (t * scale).astype(np.float32)
    x = np.random.default_rng(PROBE_SEED).standard_normal((PROBE_ROWS, 16)).astype(np.float32)
    assert (lay.mode, lay.exact, lay.granularity) == ("absmean", False, granularity)
    assert lay.zero_fraction == pytest.approx(np.mean(t == 0))
    assert lay.weight_rel_error == pytest.approx(rel(w, wq), rel=1e-5)
    assert lay.output_rel_error == pytest.approx(rel(x @ w, x @ wq), rel=1e-4)
    assert 0.1 < lay.weight_rel_error < 1
    assert lay.bytes_after == 16 * 8 // 4 + 4 * np.size(scale)
    (tm,) = [nd for nd in g if nd.op == "ternary_matmul"]
    np.testing.assert_array_equal(g.const_value(tm.inputs[1]).dequantize(), wq)


# ---- output --------------------------------------------------------------------------------------


def three_layers() -> Graph:
    return mlp(trits(8, 8) * np.float32(0.5), RNG.standard_normal((8, 8)).astype(np.float32),
               trits(8, 4) * np.float32(2.0))


def test_json_round_trips():
    rep = fold(three_layers(), mode="absmean")
    data = json.loads(rep.to_json())
    assert data["mode"] == "absmean"
    assert [LayerReport(**{**d, "shape": tuple(d["shape"])}) for d in data["layers"]] == rep.layers
    assert data["summary"] == rep.summary() == {"layers": 3, "folded": 2, "exact": 1,
                                                "bytes_before": (8 * 8 * 2 + 8 * 4) * 4,
                                                "bytes_after": (64 // 4 + 4) * 2 + 8 * 4 * 4}  # the head stays f32
    head = data["layers"][2]
    assert head["mode"] == "float" and head["zero_fraction"] is None and "output head" in head["note"]


def test_table_prints_every_layer():
    rep = fold(three_layers())
    lines = rep.table().splitlines()
    assert len(lines) == 1 + 3 + 1  # header, one line per layer, summary
    assert lines[0].split()[:3] == ["layer", "shape", "mode"]
    for lay, line in zip(rep.layers, lines[1:4]):
        assert line.startswith(lay.name) and f"{lay.shape[0]}x{lay.shape[1]}" in line and lay.note in line
    assert lines[1].split()[2:5] == ["exact", "yes", "per_tensor"]
    assert "not exactly ternary" in lines[2] and "exact: per-tensor scale" in lines[3]  # exact mode folds the head
    assert lines[4].startswith("2 of 3 linear layers ternary (2 exact)")
    lines = fold(three_layers(), mode="absmean").table().splitlines()
    assert "absmean: per-tensor scale" in lines[2] and "output head: kept in float in absmean mode" in lines[3]


# ---- layer policy -----------------------------------------------------------------------------------


def test_exact_mode_folds_the_head_and_absmean_keeps_it_unless_included():
    g = three_layers()
    rep = fold_checked(g)  # exact: nothing is lost, so nothing is protected
    assert by_name(rep)["head.weight"].exact and by_name(rep)["head.weight"].note == "exact: per-tensor scale"
    assert ops(g).count("ternary_matmul") == 2  # fc2 is not ternary
    g = three_layers()
    rep = fold(g, mode="absmean")
    head = by_name(rep)["head.weight"]
    assert not head.folded and head.note == "output head: kept in float in absmean mode (--ternary-include to fold)"
    assert by_name(rep)["fc2.weight"].note == "absmean: per-tensor scale"
    g = three_layers()
    rep = fold(g, mode="absmean", include=("head*",))
    assert by_name(rep)["head.weight"].exact
    assert by_name(rep)["head.weight"].note == "exact: per-tensor scale (output head, included by pattern 'head*')"


def test_a_hidden_layer_that_also_feeds_an_output_is_a_head_in_absmean():
    g = three_layers()
    fc1 = next(n for n in g if n.name == "fc1")
    g.outputs = [*g.outputs, fc1.outputs[0]]
    rep = fold(g, mode="absmean")
    assert "output head" in by_name(rep)["fc1.weight"].note and [lay.name for lay in rep.folded()] == ["fc2.weight"]


def test_exclude_keeps_a_layer_float_and_off_folds_nothing():
    g = three_layers()
    rep = fold(g, exclude=("fc1",))  # patterns match the weight key or the node's location
    assert by_name(rep)["fc1.weight"].note == "excluded by pattern 'fc1'"
    assert next(n for n in g if n.name == "fc1").op == "matmul" and "ternary_matmul" in ops(g)
    g = three_layers()
    rep = fold(g, mode="off", include=("head*",))
    assert not rep.folded() and all(lay.note == "mode off" for lay in rep.layers) and "ternary_matmul" not in ops(g)


def test_a_weight_shared_with_an_embedding_folds_in_exact_and_stays_float_in_absmean():
    def graph() -> Graph:
        g = mlp(trits(8, 8) * np.float32(0.5), trits(8, 4) * np.float32(0.5))
        ids = g.add_input("ids", TensorType(DType.I64, ("b",)))
        emb = g.add("gather", [g.value("fc1.weight"), ids], [f32("b", 8)], {"axis": 0}, "embed").output
        g.outputs = [*g.outputs, emb]
        verify(g)
        return g

    g = graph()
    rep = fold(g)
    assert by_name(rep)["fc1.weight"].exact and by_name(rep)["head.weight"].exact
    gather = next(n for n in g if n.op == "gather")
    assert gather.inputs[0].type.dtype is DType.F32 and "fc1.weight" in g.weights  # the gather keeps the float table
    assert folded_node(g, "fc1").inputs[1].type.dtype is DType.T2  # the matmul reads its own ternary copy
    rep = fold(graph(), mode="absmean")
    assert by_name(rep)["fc1.weight"].note.startswith("embedding table shared with a gather: kept in float")


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_a_pattern_that_matches_nothing_is_an_option_error(option):
    with pytest.raises(OptionError, match=r"pattern 'nope\*' matches no linear layer.*fc1\.weight"):
        FoldTernary(**{option: ("fc1", "nope*")}).run(three_layers())
    # Through the pass manager, from the command-line syntax: still an OptionError, naming the pass too.
    with pytest.raises(OptionError, match=r"fold-ternary.*pattern 'lm_head' matches no linear layer"):
        PassManager(parse_pass_list(f"fold-ternary{{{option}=[lm_head]}}")).run(three_layers())


# ---- quantised sources ------------------------------------------------------------------------------


def test_qonnx_quant_2bit_narrow_folds_exactly():
    w = RNG.standard_normal((8, 6)).astype(np.float32)
    g = mlp(("quant", w), np.ones((6, 2), np.float32))
    rep = fold_checked(g)
    lay = by_name(rep)["fc1.weight"]
    assert (lay.source, lay.mode, lay.exact, lay.granularity) == ("quant", "exact", True, "per_tensor")
    tern = g.const_value(folded_node(g, "fc1").inputs[1])
    np.testing.assert_array_equal(tern.trits, np.clip(np.rint(w / 0.5), -1, 1))
    assert float(tern.scale) == 0.5


def test_qonnx_quant_per_channel_scale_folds_per_channel():
    w = RNG.standard_normal((8, 6)).astype(np.float32)
    scale = np.linspace(0.25, 1.5, 6, dtype=np.float32)
    rep = fold_checked(mlp(("quant", w, {"scale": scale}), np.ones((6, 2), np.float32)))
    assert by_name(rep)["fc1.weight"].granularity == "per_channel"


@pytest.mark.parametrize("narrow, bits, note", [(0, 2, "-2 is a code"), (1, 3, "[-3, 3]")])
def test_qonnx_quant_that_is_not_ternary_is_left_alone(narrow, bits, note):
    w = RNG.standard_normal((8, 6)).astype(np.float32) * 2
    for mode in ("exact", "absmean"):  # absmean does not re-quantise a model's own quantiser either
        g = mlp(("quant", w, {"narrow": narrow, "bits": bits}), dense(6, 2))
        lay = by_name(fold(g, mode=mode))["fc1.weight"]
        assert not lay.folded and lay.source == "quant" and note in lay.note and "not ternary" in lay.note
        assert "ternary_matmul" not in ops(g) and "quant" in ops(g)


def test_qonnx_bipolar_quant_folds():
    w = RNG.standard_normal((8, 6)).astype(np.float32)
    g = mlp(("bipolar_quant", w), np.ones((6, 2), np.float32))
    lay = by_name(fold_checked(g))["fc1.weight"]
    assert (lay.source, lay.exact, lay.zero_fraction) == ("bipolar_quant", True, 0.0)


def test_dequantize_linear_of_int8_trits_folds_exactly():
    codes = trits(8, 6)
    scale = RNG.uniform(0.1, 1, 6).astype(np.float32)
    g = mlp(("dequantize_linear", codes, {"scale": scale}), np.ones((6, 2), np.float32))
    lay = by_name(fold_checked(g))["fc1.q"]
    assert (lay.source, lay.exact, lay.granularity) == ("dequantize_linear", True, "per_channel")
    assert lay.zero_fraction == pytest.approx(np.mean(codes == 0))


def test_dequantize_linear_with_a_per_row_zero_point_is_read_along_its_axis():
    # axis 0: one zero point per row of W[K, N] (K != N, so numpy's trailing-axis broadcast would fail).
    codes = trits(8, 6)
    zp = np.arange(-4, 4, dtype=np.int8)
    g = Graph("g")
    x = g.add_input("x", f32("b", 8))
    args = [weight(g, "w.q", (codes + zp[:, None]).astype(np.int8)), weight(g, "w.scale", np.full(8, 0.5, np.float32)),
            weight(g, "w.zp", zp)]
    w = g.add("dequantize_linear", args, [f32(8, 6)], {"axis": 0}, "dq").output
    g.outputs = [g.add("relu", [g.add("matmul", [x, w], [f32("b", 6)], {}, "fc").output], [f32("b", 6)]).output]
    lay = by_name(fold_checked(g, include=("fc",)))["w.q"]
    assert lay.exact and lay.granularity == "per_tensor"


def test_dequantize_linear_that_uses_minus_two_is_left_alone():
    codes = trits(8, 6)
    codes[3, 2] = -2
    for mode in ("exact", "absmean"):
        g = mlp(("dequantize_linear", codes), dense(6, 2))
        lay = by_name(fold(g, mode=mode))["fc1.q"]
        assert not lay.folded and lay.source == "dequantize_linear" and "[-2]" in lay.note and "not ternary" in lay.note
        assert "ternary_matmul" not in ops(g)


def test_a_weight_with_nan_or_inf_is_never_folded():
    for bad in (np.nan, np.inf):
        w = trits(4, 3) * np.float32(0.5)
        w[1, 1] = bad
        for mode in ("exact", "absmean"):
            g = mlp(w, np.ones((3, 2), np.float32))
            lay = by_name(fold(g, mode=mode))["fc1.weight"]
            assert not lay.folded and "non-finite" in lay.note

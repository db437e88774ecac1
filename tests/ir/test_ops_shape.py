"""The shape op family: symbolic type rules, invalid-input errors, output budgets, ONNX version
coverage, and old-version adapters checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.defs
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper as oh

from tritc.errors import ModelValidationError, ResourceLimitError
from tritc.frontend.adapters import find_adapter
from tritc.frontend.onnx import import_model
from tritc.ir import dims
from tritc.ir.interpreter import run
from tritc.ir.ops import OPS, TypeRuleError
from tritc.ir.ops import shape as shape_ops
from tritc.ir.ops.shape import slice_dim
from tritc.ir.text import parse_graph, print_graph
from tritc.ir.types import DType, TensorType

from ..properties import budget
from .helpers import infer, shape_of, tt

I64 = DType.I64


def vec(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ---- symbolic type rules ------------------------------------------------------------------------


def test_reshape_zero_copies_symbolic_dims():
    assert infer("reshape", tt("f32", "batch", "seq", 128), vec(0, 0, 4, 32)) == [tt("f32", "batch", "seq", 4, 32)]


def test_reshape_minus_one_divides_symbolically():
    assert shape_of("reshape", tt("f32", "batch", "seq", 128), vec(0, -1, 64)) == ("batch", "2*seq", 64)
    assert shape_of("reshape", tt("f32", "batch", "heads", "seq", 64), vec(0, 0, -1)) == ("batch", "heads", "64*seq")
    assert shape_of("reshape", tt("f32", "batch", "seq", 128), vec(-1, 128)) == ("batch*seq", 128)


def test_reshape_with_runtime_shape_has_the_shape_length_as_rank():
    assert shape_of("reshape", tt("f32", "batch", "seq", 128), tt("i64", 4)) == (None, None, None, None)
    assert shape_of("reshape", tt("f32", "batch", "seq", 128), tt("i64", None)) is None


def test_reshape_allowzero_keeps_literal_zero():
    assert shape_of("reshape", tt("f32", 0, 3), vec(3, 0), allowzero=1) == (3, 0)


def test_concat_adds_symbolic_dims():
    assert infer("concat", tt("f32", "batch", "past", 64), tt("f32", "batch", "seq", 64), axis=1) == \
        [tt("f32", "batch", "past+seq", 64)]
    assert shape_of("concat", tt("f32", 2, "seq"), tt("f32", 2, 3), tt("f32", None, "seq"), axis=-1) == (2, "2*seq+3")


def test_concat_with_an_unknown_dim_on_the_axis_is_unknown():
    assert shape_of("concat", tt("f32", "b", None), tt("f32", "b", 4), axis=1) == ("b", None)
    assert shape_of("concat", tt("f32", None, 4), tt("f32", "b", 4), axis=0) == (None, 4)


def test_shape_and_size_types():
    assert infer("shape", tt("f32", "batch", "seq", 128)) == [tt("i64", 3)]
    assert infer("shape", tt("f32", 1, 2, 3, 4), start=1, end=-1) == [tt("i64", 2)]
    assert infer("shape", tt("f32", 1, 2), start=5) == [tt("i64", 0)]
    assert infer("shape", TensorType(DType.F32, None)) == [tt("i64", None)]
    assert infer("size", tt("f32", "batch", 3)) == [tt("i64")]


def test_layout_rules_keep_symbols():
    x = tt("f32", "batch", "seq", 4, 32)
    assert shape_of("transpose", x, perm=[0, 2, 1, 3]) == ("batch", 4, "seq", 32)
    assert shape_of("transpose", x) == (32, 4, "seq", "batch")
    assert shape_of("flatten", x, axis=2) == ("batch*seq", 128)
    assert shape_of("flatten", x, axis=0) == (1, "128*batch*seq")
    assert shape_of("unsqueeze", tt("f32", "batch", "seq"), vec(1, -1)) == ("batch", 1, "seq", 1)
    assert shape_of("squeeze", tt("f32", "batch", 1, "seq"), vec(1)) == ("batch", "seq")
    assert shape_of("squeeze", tt("f32", 1, 3, 1)) == (3,)
    assert shape_of("squeeze", tt("f32", 1, "seq")) is None  # is seq 1? only the run time knows
    assert shape_of("tile", tt("f32", "seq", 2), vec(2, 3)) == ("2*seq", 6)
    assert shape_of("expand", tt("f32", "batch", 1, 64), vec(1, 8, 1)) == ("batch", 8, 64)
    # an unknown target dim against 'batch' could be 1 or 7 at run time: unknown, not 'batch'
    assert shape_of("expand", tt("f32", "batch", 1), tt("i64", 3)) == (None, None, None)
    assert shape_of("depth_to_space", tt("f32", "n", 8, "h", 3), blocksize=2) == ("n", 2, "2*h", 6)
    assert shape_of("space_to_depth", tt("f32", "n", 2, "2*h", 6), blocksize=2) == ("n", 8, "h", 3)
    assert shape_of("pad", tt("f32", "batch", "seq"), vec(0, 1, 0, 2)) == ("batch", "seq+3")


def test_pad_with_axes_and_negative_pads():
    assert shape_of("pad", tt("f32", "batch", "seq", 8), vec(1, -3), None, vec(-1)) == ("batch", "seq", 6)
    assert shape_of("pad", tt("f32", "batch", "seq"), tt("i64", 4)) == (None, None)


def test_split_types():
    x = tt("f32", "batch", 10)
    assert [t.shape for t in infer("split", x, vec(3, 7), axis=1, n_out=2)] == [("batch", 3), ("batch", 7)]
    outs = infer("split", tt("f32", 7), n_out=3)
    assert [t.shape for t in outs] == [(3,), (3,), (1,)]
    outs = infer("split", tt("f32", "3*h", 2), n_out=3, num_outputs=3)
    assert [t.shape for t in outs] == [("h", 2)] * 3


def test_slice_types():
    x = tt("f32", "batch", "seq", 64)
    big = 2**63 - 1
    assert shape_of("slice", x, vec(1), vec(big), vec(1)) == ("batch", "seq-1", 64)
    assert shape_of("slice", x, vec(0), vec(-1), vec(-2)) == ("batch", "seq-1", 64)
    assert shape_of("slice", x, vec(-1), vec(big), vec(1)) == ("batch", 1, 64)
    assert shape_of("slice", x, vec(0, 10), vec(big, 20), vec(1, 2)) == ("batch", "seq", 10)
    assert shape_of("slice", x, vec(0, 0), vec(big, 64), vec(1, 2), vec(1, 2)) == ("batch", "seq", 32)
    assert shape_of("slice", x, vec(-1), vec(-big), vec(1), vec(-1)) == ("batch", "seq", 64)
    assert shape_of("slice", x, vec(-3), vec(2), vec(1)) == ("batch", None, 64)
    assert shape_of("slice", x, tt("i64", 1), tt("i64", 1), vec(1)) == ("batch", None, 64)
    assert shape_of("slice", x, tt("i64", 1), tt("i64", 1), tt("i64", 1)) == (None, None, None)


def test_gather_types():
    assert shape_of("gather", tt("i64", 3), np.array(0, np.int64)) == ()
    assert shape_of("gather", tt("f32", "vocab", 64), tt("i64", "batch", "seq")) == ("batch", "seq", 64)
    assert shape_of("gather", tt("f32", "b", 5, 7), tt("i32", 2, 3), axis=1) == ("b", 2, 3, 7)
    assert shape_of("gather_elements", tt("f32", 4, 5), tt("i64", 4, 2), axis=1) == (4, 2)
    assert shape_of("gather_nd", tt("f32", "b", 5, 6, 7), tt("i64", "b", 3, 2), batch_dims=1) == ("b", 3, 7)
    assert shape_of("scatter_nd", tt("f32", 4, 5), tt("i64", 2, 1), tt("f32", 2, 5)) == (4, 5)


def test_generator_types():
    assert infer("range", np.array(0, np.int64), np.array(10, np.int64), np.array(3, np.int64)) == [tt("i64", 4)]
    assert infer("range", np.array(10, np.int32), np.array(4, np.int32), np.array(-2, np.int32)) == [tt("i32", 3)]
    assert infer("range", np.array(1, np.float32), np.array(0, np.float32), np.array(1, np.float32)) == [tt("f32", 0)]
    assert infer("range", tt("i64"), tt("i64"), tt("i64")) == [tt("i64", None)]
    assert infer("constant_of_shape", vec(2, 3)) == [tt("f32", 2, 3)]
    assert infer("constant_of_shape", vec(2), value=np.array([7], np.int32)) == [tt("i32", 2)]
    assert infer("constant_of_shape", tt("i64", 3)) == [tt("f32", None, None, None)]
    assert infer("one_hot", tt("i64", "b", 3), np.array(10, np.int64), tt("f16", 2), axis=1) == [tt("f16", "b", 10, 3)]
    assert infer("eye_like", tt("f32", 3, 4), dtype=DType.I32) == [tt("i32", 3, 4)]


# ---- invalid inputs -----------------------------------------------------------------------------

INVALID = [
    ("reshape", (tt("f32", 2, 3), vec(-1, -1)), {}, "more than one -1"),
    ("reshape", (tt("f32", 2, 3), vec(4, 2)), {}, "cannot reshape 6 elements"),
    ("reshape", (tt("f32", 2, 3), vec(4, -1)), {}, "do not divide"),
    ("reshape", (tt("f32", 2, 3), vec(1, 1, 0)), {}, "copies dim 2"),
    ("reshape", (tt("f32", "b", 128), vec(0, 100)), {}, r"128\*b elements are not 100\*b"),
    ("reshape", (tt("f32", 2, 3), vec(-2, 3)), {}, "below -1"),
    ("reshape", (tt("f32", 0, 3), vec(0, -1)), {"allowzero": 1}, "both 0 and -1"),
    ("reshape", (tt("f32", 2, 3), np.array([6], np.int32)), {}, "must be i64"),
    ("transpose", (tt("f32", 2, 3),), {"perm": [0, 0]}, "not a permutation"),
    ("squeeze", (tt("f32", 2, 3), vec(1)), {}, "its dim is 3"),
    ("squeeze", (tt("f32", 2, 1), vec(2)), {}, "out of range"),
    ("unsqueeze", (tt("f32", 2, 3), vec(3, 3)), {}, "repeat"),
    ("unsqueeze", (tt("f32", 2, 3), vec(4)), {}, "out of range"),
    ("concat", (tt("f32", 2, 3), tt("f32", 2, 3, 1)), {"axis": 0}, "differ in rank"),
    ("concat", (tt("f32", 2, 3), tt("f32", 2, 4)), {"axis": 0}, "differ in dim 1"),
    ("concat", (tt("f32", 2, 3), tt("f32", 2, 4)), {"axis": 2}, "out of range"),
    ("concat", (tt("f32", 2, 3), tt("f16", 2, 4)), {"axis": 1}, "dtype"),
    ("split", (tt("f32", 10), vec(3, 3)), {"n_out": 2}, "do not add up"),
    ("split", (tt("f32", 10), vec(3, 7)), {"n_out": 3}, "do not give 3 outputs"),
    ("split", (tt("f32", 10),), {"n_out": 3, "num_outputs": 2}, "num_outputs is 2"),
    ("split", (tt("f32", 10), vec(3, 7)), {"n_out": 2, "num_outputs": 2}, "not both"),
    ("slice", (tt("f32", 4, 5), vec(0), vec(2), vec(0), vec(0)), {}, "contain 0"),
    ("slice", (tt("f32", 4, 5), vec(0), vec(2), vec(2)), {}, "out of range"),
    ("slice", (tt("f32", 4, 5), vec(0, 0), vec(2)), {}, "differ in length"),
    ("slice", (tt("f32", 4, 5), vec(0, 0), vec(2, 2), vec(1, -1)), {}, "repeat"),
    ("pad", (tt("f32", 4, 5), vec(0, 1, 0)), {}, "2 values"),
    ("pad", (tt("f32", 4, 5), vec(-3, 0, -2, 0)), {}, "remove more"),
    ("pad", (tt("f32", 4, 5), vec(1, 1, 1, 1)), {"mode": "mirror"}, "not one of"),
    ("pad", (tt("f32", 4, 5), vec(1, 1, 1, 1), np.array(1, np.int32)), {}, "dtype of the data"),
    ("pad", (tt("f32", 0, 5), vec(1, 0, 0, 0)), {"mode": "edge"}, "leave it empty"),
    ("pad", (tt("f32", 2, 5), vec(-2, 0, 1, 0)), {"mode": "reflect"}, "leave it empty"),
    ("pad", (tt("f32", 1, 5), vec(-2, 0, 3, 0)), {}, "remove more"),
    ("expand", (tt("f32", 3, 4), vec(2, 4)), {}, "cannot expand"),
    ("expand", (tt("f32", 3, 4), vec(-1, 4)), {}, "negative"),
    ("tile", (tt("f32", 3, 4), vec(2)), {}, "repeats"),
    ("gather", (tt("f32", 3, 4), vec(0, 3)), {}, "out of range"),
    ("gather", (tt("f32", 3, 4), vec(-4)), {}, "out of range"),
    ("gather", (tt("f32", 3, 4), tt("i64", 2)), {"axis": 2}, "out of range"),
    ("gather", (tt("f32", 3, 4), tt("f32", 2)), {}, "must be i32 or i64"),
    ("gather_elements", (tt("f32", 3, 4), tt("i64", 3)), {}, "rank 2"),
    ("gather_nd", (tt("f32", 3, 4), tt("i64", 2, 3)), {}, "address 3 dims"),
    ("gather_nd", (tt("f32", 3, 4), tt("i64", 2, 1)), {"batch_dims": 1}, "batch dims"),
    ("scatter_nd", (tt("f32", 4, 5), tt("i64", 2, 1), tt("f32", 2, 4)), {}, "updates"),
    ("scatter_nd", (tt("f32", 4, 5), tt("i64", 2, 1), tt("f32", 2, 5)), {"reduction": "sum"}, "reduction"),
    ("scatter_elements", (tt("f32", 4, 5), tt("i64", 2, 2), tt("f32", 2, 3)), {}, "shape of indices"),
    ("depth_to_space", (tt("f32", 1, 6, 2, 2),), {"blocksize": 2}, "divide"),
    ("space_to_depth", (tt("f32", 1, 6, 3, 2),), {"blocksize": 2}, "divide"),
    ("depth_to_space", (tt("f32", 6, 2, 2),), {"blocksize": 2}, "rank 4"),
    ("flatten", (tt("f32", 6, 2),), {"axis": 3}, "out of range"),
    ("range", (np.array(0, np.int64), np.array(5, np.int64), np.array(0, np.int64)), {}, "delta is 0"),
    ("range", (np.array(0, np.int64), np.array(5, np.int32), np.array(1, np.int64)), {}, "share one"),
    ("constant_of_shape", (vec(2, -3),), {}, "negative"),
    ("constant_of_shape", (vec(2),), {"value": np.array([1, 2], np.float32)}, "one element"),
    ("one_hot", (tt("i64", 3), np.array(4, np.int64), tt("f32", 3)), {}, "off_value, on_value"),
    ("one_hot", (tt("i64", 3), np.array(4, np.int64), tt("f32", 2)), {"axis": 2}, "out of range"),
    ("eye_like", (tt("f32", 3, 3, 3),), {}, "rank-2"),
    ("trilu", (tt("f32", 3),), {}, "rank 2"),
    ("reverse_sequence", (tt("f32", 3, 4), vec(1, 2, 3)), {}, "one entry per batch"),
    ("reverse_sequence", (tt("f32", 3, 4), vec(1, 2, 3, 4)), {"batch_axis": 0, "time_axis": 0}, "must be 0 and 1"),
    ("center_crop_pad", (tt("f32", 3, 4), vec(2)), {}, "one dim for each"),
]


@pytest.mark.parametrize("op,inputs,attrs,message", INVALID, ids=[f"{c[0]}-{c[3]}" for c in INVALID])
def test_invalid_inputs_raise_type_rule_error(op, inputs, attrs, message):
    with pytest.raises(TypeRuleError, match=message):
        infer(op, *inputs, **attrs)


def test_errors_name_the_shapes():
    with pytest.raises(TypeRuleError, match=r"f32\[batch,3\].*dim is 3"):
        infer("squeeze", tt("f32", "batch", 3), vec(1))
    with pytest.raises(TypeRuleError, match=r"\[2,3\], \[2,4\]"):
        infer("concat", tt("f32", 2, 3), tt("f32", 2, 4), axis=0)
    with pytest.raises(TypeRuleError, match=r"reshape of f32\[2,3\]"):
        infer("reshape", tt("f32", 2, 3), vec(-1, -1))


# ---- symbolic rules agree with the static ones --------------------------------------------------

BIG = 2**63 - 1


@settings(max_examples=budget(300))
@given(d=st.integers(20, 60), start=st.sampled_from([0, 1, 3, 7, -1, -3, -8, BIG, -BIG]),
       end=st.sampled_from([0, 2, 5, 9, -1, -2, -6, BIG, -BIG]), step=st.sampled_from([1, -1, 2, -3]))
def test_symbolic_slice_matches_static_when_the_dim_is_large_enough(d, start, end, step):
    sym = slice_dim("n", start, end, step)
    if sym is not None:
        assert dims.evaluate(sym, {"n": d}) == slice_dim(d, start, end, step)


@settings(max_examples=budget(200))
@given(a=st.integers(1, 6), b=st.integers(1, 6), perm=st.permutations([0, 1, 2]), minus=st.integers(0, 2))
def test_symbolic_reshape_matches_static(a, b, perm, minus):
    sym_in = ("a", "b", 12)
    stat_in = (a, b, 12)
    # A target that regroups the same elements: a permutation of [a, b, 12] written with 0s where it
    # stays in place and one -1.
    parts = [sym_in[p] for p in perm]
    target_sym, target_stat = [], []
    for i, p in enumerate(perm):
        if i == minus:
            target_sym.append(-1)
            target_stat.append(-1)
        elif p == i:
            target_sym.append(0)
            target_stat.append(0)
        else:
            target_sym.append(None if isinstance(parts[i], str) else parts[i])
            target_stat.append(stat_in[p])
    if None in target_sym:
        return  # a symbolic dim in a constant shape is not expressible
    sym = shape_of("reshape", TensorType(DType.F32, sym_in), vec(*target_sym))
    stat = shape_of("reshape", TensorType(DType.F32, stat_in), vec(*target_stat))
    assert tuple(dims.evaluate(d, {"a": a, "b": b}) for d in sym) == stat


# ---- output budgets (HARDENING C.19) ------------------------------------------------------------

BOMBS = [
    ("expand", (np.zeros(1, np.float32), vec(2**20, 2**20))),
    ("constant_of_shape", (vec(2**44),)),
    ("range", (np.array(0, np.int64), np.array(10**12, np.int64), np.array(1, np.int64))),
    ("tile", (np.zeros((2, 2), np.float32), vec(2**20, 2**20))),
    ("pad", (np.zeros((2, 2), np.float32), vec(2**40, 0, 0, 0))),
    ("one_hot", (vec(1, 2, 3), np.array(2**40, np.int64), np.array([0, 1], np.float32))),
    ("gather", (np.zeros((1, 2**16), np.float32), np.zeros(2**16, np.int64))),
    ("gather_nd", (np.zeros((1, 2**16), np.float32), np.zeros((2**16, 1), np.int64))),
]


@pytest.mark.parametrize("op,args", BOMBS, ids=[b[0] for b in BOMBS])
def test_huge_outputs_are_refused_before_allocating(op, args):
    opdef = OPS[op]
    with pytest.raises(ResourceLimitError, match=rf"{op}: .* elements, over the limit of {shape_ops.MAX_ELEMENTS}"):
        opdef.compute(*args, **opdef.with_defaults({}))


def test_budget_is_the_module_limit(monkeypatch):
    monkeypatch.setattr(shape_ops, "MAX_ELEMENTS", 11)
    opdef = OPS["constant_of_shape"]
    assert opdef.compute(vec(11), value=None).shape == (11,)
    with pytest.raises(ResourceLimitError, match="12 elements"):
        opdef.compute(vec(3, 4), value=None)


# ---- ONNX version coverage ----------------------------------------------------------------------

FAMILY = ["shape", "size", "reshape", "flatten", "transpose", "squeeze", "unsqueeze", "concat", "split", "slice",
          "expand", "tile", "pad", "center_crop_pad", "depth_to_space", "space_to_depth", "gather", "gather_elements",
          "gather_nd", "scatter_nd", "scatter_elements", "one_hot", "trilu", "eye_like", "reverse_sequence", "range",
          "constant_of_shape"]
# Versions knowingly left out, with the reason.
NOT_COVERED = {("OneHot", 9): "negative indices are off-values in OneHot-9 but count from the back since 11"}


def _active_versions(op_type: str, lo: int, hi: int) -> set[int]:
    out = set()
    for opset in range(lo, hi + 1):
        try:
            out.add(onnx.defs.get_schema(op_type, opset).since_version)
        except onnx.defs.SchemaError:
            pass
    return out


@pytest.mark.parametrize("op", FAMILY)
def test_every_active_onnx_version_imports(op):
    opdef = OPS[op]
    for v in sorted(_active_versions(opdef.onnx, 7, onnx.defs.onnx_opset_version())):
        covered = v in opdef.since or find_adapter("", opdef.onnx, v) is not None
        assert covered or (opdef.onnx, v) in NOT_COVERED, f"{opdef.onnx}-{v} has neither since nor an adapter"


# ---- end to end: old versions through the adapters, text round trip, against onnxruntime ---------


def _value(name: str, a: np.ndarray) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)


def check_against_ort(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int,
                      consts: dict[str, np.ndarray] | None = None) -> None:
    consts = consts or {}
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()]
    outputs = [oh.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output]
    graph = oh.make_graph([node], "g", [_value(k, v) for k, v in feeds.items()], outputs, inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model)  # onnxruntime wants typed graph outputs
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    graph = import_model(model)
    text = print_graph(graph)
    assert print_graph(parse_graph(text, graph.weights)) == text
    got = run(graph, feeds)
    assert len(got) == len(expected)
    for name, e in zip(node.output, expected):
        assert got[name].dtype == e.dtype and got[name].shape == e.shape, (name, got[name].shape, e.shape)
        np.testing.assert_array_equal(got[name], e)


rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
N = oh.make_node

OLD_VERSIONS = [
    ("squeeze-7-attr", N("Squeeze", ["x"], ["y"], axes=[0, 2]), {"x": X[:1, :, :1]}, 7, {}),
    ("squeeze-11-negative", N("Squeeze", ["x"], ["y"], axes=[-2]), {"x": X[:, :, :1]}, 11, {}),
    ("squeeze-11-all", N("Squeeze", ["x"], ["y"]), {"x": X[:1, :, :1]}, 11, {}),
    ("unsqueeze-9-attr", N("Unsqueeze", ["x"], ["y"], axes=[0, 3]), {"x": X[0, 0]}, 9, {}),
    ("unsqueeze-11-negative", N("Unsqueeze", ["x"], ["y"], axes=[-1, 1]), {"x": X[0, 0]}, 11, {}),
    ("split-9-attr", N("Split", ["x"], ["a", "b"], axis=3, split=[2, 3]), {"x": X}, 9, {}),
    ("split-11-equal", N("Split", ["x"], ["a", "b"], axis=-1), {"x": X[..., :4]}, 11, {}),
    ("split-13-input", N("Split", ["x", "s"], ["a", "b", "c"], axis=2), {"x": X}, 13, {"s": vec(1, 0, 3)}),
    ("split-18-uneven", N("Split", ["x"], ["a", "b", "c"], axis=3, num_outputs=3), {"x": X}, 18, {}),
    ("slice-9-attr", N("Slice", ["x"], ["y"], starts=[1, -3], ends=[100, -1], axes=[1, 3]), {"x": X}, 9, {}),
    ("slice-9-default-axes", N("Slice", ["x"], ["y"], starts=[0, 1], ends=[1, 3]), {"x": X}, 9, {}),
    ("slice-10-inputs", N("Slice", ["x", "s", "e", "a", "t"], ["y"]), {"x": X}, 10,
     {"s": vec(-1, 4), "e": vec(-BIG, 0), "a": vec(3, 2), "t": vec(-2, -1)}),
    ("pad-9-reflect", N("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], mode="reflect"), {"x": X}, 9, {}),
    ("pad-9-value", N("Pad", ["x"], ["y"], pads=[0, 1, 1, 0], value=1.5), {"x": X[0, 0]}, 9, {}),
    ("pad-9-f64", N("Pad", ["x"], ["y"], pads=[1, 0, 0, 2], value=3.0), {"x": X[0, 0].astype(np.float64)}, 9, {}),
    ("pad-11-edge", N("Pad", ["x", "p"], ["y"], mode="edge"), {"x": X[0]}, 11, {"p": vec(1, 0, -1, 0, 2, 1)}),
    ("pad-18-axes", N("Pad", ["x", "p", "v", "a"], ["y"]), {"x": X}, 18,
     {"p": vec(1, -1, 2, 0), "v": np.array(9, np.float32), "a": vec(-1, 1)}),
    ("reshape-7", N("Reshape", ["x", "s"], ["y"]), {"x": X}, 7, {"s": vec(0, -1, 5)}),
    ("concat-7", N("Concat", ["x", "x"], ["y"], axis=1), {"x": X}, 7, {}),
    ("transpose-7", N("Transpose", ["x"], ["y"], perm=[3, 1, 0, 2]), {"x": X}, 7, {}),
    ("flatten-9", N("Flatten", ["x"], ["y"], axis=3), {"x": X}, 9, {}),
    ("flatten-11-negative", N("Flatten", ["x"], ["y"], axis=-3), {"x": X}, 11, {}),
    ("gather-9", N("Gather", ["x", "i"], ["y"], axis=1), {"x": X}, 9, {"i": vec(2, 0, 2)}),
    ("gather-11-negative", N("Gather", ["x", "i"], ["y"], axis=-1), {"x": X}, 11, {"i": np.array([[-1, 0]], np.int32)}),
    ("tile-7", N("Tile", ["x", "r"], ["y"]), {"x": X[0]}, 7, {"r": vec(1, 2, 3)}),
    ("expand-8", N("Expand", ["x", "s"], ["y"]), {"x": X[0, :, :, :1]}, 8, {"s": vec(2, 1, 1, 6)}),
    ("depth_to_space-9", N("DepthToSpace", ["x"], ["y"], blocksize=2), {"x": X[:, :, :, :4].reshape(2, 4, 3, 4)}, 9, {}),
    ("depth_to_space-13-crd", N("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD"),
     {"x": X[:, :, :, :4].reshape(2, 4, 3, 4)}, 13, {}),
    ("space_to_depth-9", N("SpaceToDepth", ["x"], ["y"], blocksize=2), {"x": X[:, :, :4, :4]}, 9, {}),
    ("shape-9", N("Shape", ["x"], ["y"]), {"x": X}, 9, {}),
    ("shape-15-start-end", N("Shape", ["x"], ["y"], start=-3, end=3), {"x": X}, 15, {}),
    ("size-9", N("Size", ["x"], ["y"]), {"x": X}, 9, {}),
    ("constant_of_shape-9", N("ConstantOfShape", ["s"], ["y"], value=onnx.numpy_helper.from_array(np.array([4], np.int32))),
     {"s": vec(2, 3)}, 9, {}),
    ("eye_like-9", N("EyeLike", ["x"], ["y"], k=-1, dtype=TensorProto.INT32), {"x": X[0, 0]}, 9, {}),
    ("one_hot-11", N("OneHot", ["i", "d", "v"], ["y"], axis=0), {"i": np.array([[1, -1], [5, 0]], np.int64)}, 11,
     {"d": np.array(4.0, np.float32), "v": np.array([2, 7], np.int32)}),
    ("range-11", N("Range", ["s", "l", "d"], ["y"]), {"s": np.array(1.5, np.float32)}, 11,
     {"l": np.array(-2, np.float32), "d": np.array(-0.75, np.float32)}),
    ("range-11-int", N("Range", ["s", "l", "d"], ["y"]), {"s": np.array(10, np.int32)}, 11,
     {"l": np.array(-3, np.int32), "d": np.array(-4, np.int32)}),
    ("gather_elements-11", N("GatherElements", ["x", "i"], ["y"], axis=2), {"x": X}, 11,
     {"i": rng.integers(-4, 4, (2, 3, 6, 5))}),
    ("gather_nd-12-batch", N("GatherND", ["x", "i"], ["y"], batch_dims=1), {"x": X}, 12,
     {"i": np.array([[[1, 2], [0, -1]], [[2, 3], [1, 1]]], np.int64)}),
    ("scatter_nd-11", N("ScatterND", ["x", "i", "u"], ["y"]), {"x": X[0]}, 11,
     {"i": vec(2, 0).reshape(2, 1), "u": np.ones((2, 4, 5), np.float32)}),
    ("scatter_nd-16-add", N("ScatterND", ["x", "i", "u"], ["y"], reduction="add"), {"x": X[0]}, 16,
     {"i": vec(1, 1, 1, 1, 0, 0).reshape(3, 2), "u": np.ones((3, 5), np.float32)}),
    ("scatter_nd-18-max", N("ScatterND", ["x", "i", "u"], ["y"], reduction="max"), {"x": X[0]}, 18,
     {"i": vec(1, 1, 1, 1).reshape(2, 2), "u": np.full((2, 5), 0.5, np.float32)}),
    ("scatter_elements-11", N("ScatterElements", ["x", "i", "u"], ["y"], axis=1), {"x": X[0]}, 11,
     {"i": np.array([[[0], [2]], [[-1], [1]]], np.int64).reshape(2, 2, 1), "u": np.ones((2, 2, 1), np.float32)}),
    ("scatter_elements-18-mul", N("ScatterElements", ["x", "i", "u"], ["y"], axis=0, reduction="mul"), {"x": X[0]}, 18,
     {"i": np.zeros((2, 4, 5), np.int64), "u": np.full((2, 4, 5), 2, np.float32)}),
    ("reverse_sequence-10", N("ReverseSequence", ["x", "l"], ["y"], batch_axis=0, time_axis=1), {"x": X[0]}, 10,
     {"l": vec(4, 0, 2)}),
    ("trilu-14", N("Trilu", ["x", "k"], ["y"], upper=0), {"x": X}, 14, {"k": np.array(-1, np.int64)}),
    ("center_crop_pad-18", N("CenterCropPad", ["x", "s"], ["y"], axes=[1, -1]), {"x": X}, 18, {"s": vec(6, 2)}),
]


@pytest.mark.parametrize("node,feeds,opset,consts", [c[1:] for c in OLD_VERSIONS], ids=[c[0] for c in OLD_VERSIONS])
def test_matches_onnxruntime(node, feeds, opset, consts):
    check_against_ort(node, feeds, opset, consts)


def test_transformer_shape_chain_propagates_symbols():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, then a KV-cache Concat, as torch exports them."""
    s = lambda *v: onnx.numpy_helper.from_array(np.array(v, np.int64))  # noqa: E731
    nodes = [
        N("Shape", ["x"], ["shp"]),
        N("Gather", ["shp", "zero"], ["b"], axis=0),
        N("Gather", ["shp", "one"], ["q"], axis=0),
        N("Unsqueeze", ["b", "ax0"], ["b1"]),
        N("Unsqueeze", ["q", "ax0"], ["q1"]),
        N("Concat", ["b1", "q1", "heads"], ["target"], axis=0),
        N("Reshape", ["x", "target"], ["xh"]),
        N("Transpose", ["xh"], ["k"], perm=[0, 2, 1, 3]),
        N("Concat", ["past", "k"], ["present"], axis=2),
        N("Reshape", ["x", "flat"], ["xf"]),
    ]
    inits = [s(0), s(1), s(0), s(4, 32), s(0, -1)]
    for t, name in zip(inits, ["zero", "one", "ax0", "heads", "flat"]):
        t.name = name
    inits[0].dims[:] = []
    inits[1].dims[:] = []
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 128]),
                                       oh.make_tensor_value_info("past", TensorProto.FLOAT, ["batch", 4, "past", 32])],
                          [oh.make_tensor_value_info("present", TensorProto.FLOAT, None),
                           oh.make_tensor_value_info("xf", TensorProto.FLOAT, None)], inits)
    g = import_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    types = {v.name: v.type for v in g.values()}
    assert types["xh"] == tt("f32", "batch", "seq", 4, 32)
    assert types["present"] == tt("f32", "batch", 4, "past+seq", 32)
    assert types["xf"] == tt("f32", "batch", "128*seq")
    out = run(g, {"x": rng.standard_normal((2, 5, 128)).astype(np.float32), "past": np.zeros((2, 4, 3, 32), np.float32)})
    assert out["present"].shape == (2, 4, 8, 32)
    assert out["xf"].shape == (2, 640)


@pytest.mark.parametrize("node,consts,message", [
    (N("Reshape", ["x", "s"], ["y"]), {"s": vec(-1, -1)}, r"reshape of f32\[2,3,4,5\]: shape \[-1, -1\] has more than one -1"),
    (N("Slice", ["x", "s", "e", "a"], ["y"]), {"s": vec(0), "e": vec(1), "a": vec(4)}, "slice axes 4 is out of range for rank 4"),
    (N("Pad", ["x", "p"], ["y"]), {"p": vec(0, 0, 0, -9, 0, 0, 0, 0)}, "negative dim|remove more"),
    (N("Squeeze", ["x", "a"], ["y"]), {"a": vec(1)}, r"cannot squeeze axis 1 of f32\[2,3,4,5\]: its dim is 3"),
], ids=["reshape-two-minus-ones", "slice-axis", "pad-too-negative", "squeeze-non-one"])
def test_frontend_reports_invalid_shape_ops_as_model_validation_errors(node, consts, message):
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()]
    graph = oh.make_graph([node], "g", [_value("x", X)], [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    with pytest.raises(ModelValidationError, match=message):
        import_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]))

"""HARDENING.md group C, types, shapes and attributes (cases 14-20), under the harness contract (harness.py).

The huge declared sizes (case 16) and the constant-folding bombs (case 19) run in an `isolated` child, several probes
to a child, with the child's peak RSS held far below the sizes the models declare.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tritc
from tritc.errors import InputShapeError, ModelValidationError, ResourceLimitError, UnsupportedError
from tritc.frontend.onnx import load_model

from ..frontend.models import F, model, relu_model, vi, weighted_model
from .compare import matches_onnxruntime
from .harness import isolated, refuses

N = helper.make_node
I64 = TensorProto.INT64


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


# ---- 14: type and shape clashes ---------------------------------------------------------------------------------

CLASHES = {
    "add_f32_i64": (lambda: model([N("Add", ["x", "i"], ["y"], name="mixed")], [vi("x"), vi("i", (2, 3), I64)],
                                  [vi("y")]), ["'mixed'", "f32", "i64"]),
    "matmul_k": (lambda: model([N("MatMul", ["a", "b"], ["y"], name="mm")], [vi("a", (2, 3)), vi("b", (4, 5))],
                               [vi("y", None)]), ["'mm'", "[2,3]", "[4,5]"]),
    "broadcast": (lambda: model([N("Add", ["x", "z"], ["y"], name="bcast")], [vi("x", (2, 3)), vi("z", (4, 3))],
                                [vi("y", None)]), ["'bcast'", "f32[2,3]", "f32[4,3]"]),
}


@pytest.mark.parametrize("case", CLASHES)
def test_14_type_and_shape_clashes(sb, case):
    make, names = CLASHES[case]
    p = sb.save(make())
    refuses(sb, lambda: load_model(p), ModelValidationError, names=["model.onnx", *names])
    if case == "matmul_k":
        sb.cli("compile", p, "-o", sb.out / "m.tritc", names=names)


# ---- 15: unsupported dtypes -------------------------------------------------------------------------------------


def _initializer_of(elem: int) -> onnx.ModelProto:
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(onnx.TensorProto(name="w", data_type=elem, dims=[4, 4]))
    return m


def _input_of(elem: int) -> onnx.ModelProto:
    return model([N("Relu", ["x"], ["y"], name="relu")], [vi("x", (2,), elem)], [vi("y", (2,), elem)])


def _cast_to(elem: int) -> onnx.ModelProto:
    return model([N("Cast", ["x"], ["y"], name="cast", to=elem)], [vi("x")], [vi("y", None, elem)])


DTYPES = {
    "initializer_string": (lambda: _initializer_of(TensorProto.STRING), ["'w'", "STRING"]),
    "initializer_complex64": (lambda: _initializer_of(TensorProto.COMPLEX64), ["'w'", "COMPLEX64"]),
    "initializer_float8": (lambda: _initializer_of(TensorProto.FLOAT8E4M3FN), ["'w'", "FLOAT8E4M3FN"]),
    "initializer_float4": (lambda: _initializer_of(TensorProto.FLOAT4E2M1), ["'w'", "FLOAT4E2M1"]),
    "input_complex128": (lambda: _input_of(TensorProto.COMPLEX128), ["'x'", "COMPLEX128"]),
    "input_float8e5m2": (lambda: _input_of(TensorProto.FLOAT8E5M2), ["'x'", "FLOAT8E5M2"]),
    "cast_to_complex64": (lambda: _cast_to(TensorProto.COMPLEX64), ["'cast'", "COMPLEX64"]),
    "cast_to_string": (lambda: _cast_to(TensorProto.STRING), ["'cast'", "STRING"]),
}


@pytest.mark.parametrize("case", DTYPES)
def test_15_unsupported_dtype(sb, case):
    """UnsupportedError naming the dtype and the tensor (and the node, for a value a node makes). Fixed here: a Cast
    to an unsupported dtype named only its output tensor, not the node."""
    make, names = DTYPES[case]
    p = sb.save(make())
    refuses(sb, lambda: load_model(p), UnsupportedError, names=["model.onnx", "does not support", *names])


@pytest.mark.skip(reason="int4 and uint4 are supported dtypes in tritc (packed weights; "
                         "tests/frontend/test_values.py::test_sub_byte_*), not a case of 15")
def test_15_int4_is_supported():
    pass


# ---- 16: bad declared sizes and data, before any allocation -----------------------------------------------------


def _with_w(t: onnx.TensorProto) -> onnx.ModelProto:
    m = weighted_model()
    m.graph.initializer[0].CopyFrom(t)
    return m


def _both_raw_and_float() -> onnx.ModelProto:
    t = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    t.float_data.extend([0.0] * 16)
    return _with_w(t)


def _negative_input_dim() -> onnx.ModelProto:
    m = relu_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -3
    return m


DECLARED = 10**8  # FLOAT[1e8]: 400 MB declared, 4 bytes present
SIZES = {
    "negative_dim": (lambda: _with_w(onnx.TensorProto(name="w", data_type=F, dims=[-1, 4])),
                     ["initializer 'w'", "negative dim", "[-1, 4]"]),
    "negative_input_dim": (_negative_input_dim, ["graph input 'x'", "negative dim -3"]),
    "dims_overflow_int64": (lambda: _with_w(onnx.TensorProto(name="w", data_type=F, dims=[2**40, 2**40], raw_data=b"")),
                            ["initializer 'w'", "int64"]),
    "declared_big_4_bytes": (lambda: _with_w(onnx.TensorProto(name="w", data_type=F, dims=[DECLARED], raw_data=bytes(4))),
                             ["initializer 'w'", f"{4 * DECLARED} bytes", "it has 4"]),
    "raw_data_not_itemsize_multiple": (lambda: _with_w(onnx.TensorProto(name="w", data_type=F, dims=[4, 4],
                                                                        raw_data=bytes(63))),
                                       ["initializer 'w'", "64 bytes", "it has 63"]),
    "raw_and_float_data": (_both_raw_and_float, ["initializer 'w'", "both raw_data and float_data"]),
    "typed_count_mismatch": (lambda: _with_w(onnx.TensorProto(name="w", data_type=F, dims=[DECLARED],
                                                              float_data=[1.0])),
                             ["initializer 'w'", f"needs {DECLARED} values", "it holds 1"]),
}

_LOAD_EACH = """
import warnings
from tritc.frontend.onnx import load_model
warnings.simplefilter("ignore")
RESULT = {}
for case in CASES:
    try:
        load_model(f"model_dir/{case}.onnx")
        RESULT[case] = ("imported", [], "")
    except Exception as e:
        RESULT[case] = (type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e))
    RESULT[case] += (peak_rss_mib(),)
"""


def run_each(sb, cases: dict, memory: int = 2 * 2**30) -> dict[str, tuple[str, list[str], str, float]]:
    """Write each case's model to model_dir/<case>.onnx and load them all in one isolated child: case -> (error,
    its classes, message, peak RSS in MiB so far)."""
    for case, (make, *_rest) in cases.items():
        sb.save(make(), f"{case}.onnx")
    out = isolated(sb, f"CASES = {list(cases)}\n" + _LOAD_EACH, memory=memory)
    assert out.ok, out.stderr
    return eval(out.result)


def test_16_bad_sizes_are_refused_before_allocating(sb):
    """ModelValidationError naming the tensor, each before any allocation proportional to the declared size: the peak
    RSS of the child stays far below the 400 MB that FLOAT[1e8] declares."""
    results = run_each(sb, SIZES)
    for case, (_make, names) in SIZES.items():
        error, bases, message, _rss = results[case]
        assert "ModelValidationError" in bases, (case, error, message)
        assert "\n" not in message and "model.onnx" not in message  # the file is named by its own name
        for n in [f"{case}.onnx", *names]:
            assert n in message, (case, n, message)
    peak = max(r[3] for r in results.values())
    assert peak < 300, f"peak RSS {peak:.0f} MiB: something of the declared size was allocated"


# ---- 17: zero-size dims -----------------------------------------------------------------------------------------

EMPTY = {
    "relu_and_reduce": (lambda: model([N("Relu", ["x"], ["y"]), N("ReduceSum", ["x"], ["s"], keepdims=0, axes=[0])],
                                      [vi("x", (0, 3))], [vi("y", (0, 3)), vi("s", (3,))], opset=11),
                        {"x": np.zeros((0, 3), np.float32)}),
    "matmul_empty_output": (lambda: model([N("MatMul", ["x", "w"], ["y"])], [vi("x")], [vi("y", (2, 0))],
                                          [const("w", np.zeros((3, 0), np.float32))]),
                            {"x": np.ones((2, 3), np.float32)}),
    "matmul_k_0": (lambda: model([N("MatMul", ["x", "w"], ["y"])], [vi("x", (2, 0))], [vi("y", (2, 4))],
                                 [const("w", np.zeros((0, 4), np.float32))]),
                   {"x": np.zeros((2, 0), np.float32)}),
    "concat_with_empty": (lambda: model([N("Concat", ["x", "e"], ["y"], axis=0)], [vi("x"), vi("e", (0, 3))],
                                        [vi("y", (2, 3))]),
                          {"x": np.ones((2, 3), np.float32), "e": np.zeros((0, 3), np.float32)}),
}


@pytest.mark.parametrize("case", EMPTY)
def test_17_zero_size_dims_compile(sb, case):
    make, feed = EMPTY[case]
    matches_onnxruntime(sb, make(), feed)


# ---- 18: bad attributes and indices -----------------------------------------------------------------------------

ATTRIBUTES = {
    "attribute_wrong_type": (lambda: model([N("Softmax", ["x"], ["y"], name="sm", axis=1.5)], [vi("x")], [vi("y")]),
                             ["'sm'", "'axis'", "int", "float"]),
    "axis_out_of_range": (lambda: model([N("Softmax", ["x"], ["y"], name="sm", axis=5)], [vi("x")], [vi("y")]),
                          ["'sm'", "axis 5", "rank 2"]),
    "conv_weight_rank": (lambda: model([N("Conv", ["x", "w"], ["y"], name="conv")], [vi("x", (1, 1, 8, 8))],
                                       [vi("y", None)], [const("w", np.ones((1, 1, 3, 3, 3), np.float32))]),
                         ["'conv'", "[1,1,3,3,3]", "[1,1,8,8]", "rank"]),
    "reshape_two_minus_one": (lambda: model([N("Reshape", ["x", "s"], ["y"], name="rs")], [vi("x")], [vi("y", None)],
                                            [const("s", np.array([-1, -1], np.int64))]),
                              ["'rs'", "[-1, -1]", "more than one -1"]),
    "pad_removes_more_than_the_dim": (lambda: model([N("Pad", ["x", "p"], ["y"], name="pad")], [vi("x")],
                                                    [vi("y", None)], [const("p", np.array([0, -5, 0, 0], np.int64))]),
                                      ["'pad'", "[0, -5, 0, 0]", "f32[2,3]"]),
    "pad_wrong_length": (lambda: model([N("Pad", ["x", "p"], ["y"], name="pad")], [vi("x")], [vi("y", None)],
                                       [const("p", np.array([0, 0, 0], np.int64))]),
                         ["'pad'", "[0, 0, 0]", "2 values"]),
    "slice_axis_out_of_range": (lambda: model([N("Slice", ["x", "s", "e", "a"], ["y"], name="sl")], [vi("x")],
                                              [vi("y", None)], [const("s", np.array([0], np.int64)),
                                                                const("e", np.array([2], np.int64)),
                                                                const("a", np.array([5], np.int64))]),
                                ["'sl'", "axes 5", "rank 2"]),
    "slice_step_0": (lambda: model([N("Slice", ["x", "s", "e", "a", "st"], ["y"], name="sl")], [vi("x")],
                                   [vi("y", None)], [const("s", np.array([0], np.int64)),
                                                     const("e", np.array([2], np.int64)),
                                                     const("a", np.array([0], np.int64)),
                                                     const("st", np.array([0], np.int64))]),
                     ["'sl'", "steps [0]"]),
}


@pytest.mark.parametrize("case", ATTRIBUTES)
def test_18_bad_attributes_and_indices(sb, case):
    """Fixed here: a Pad removing more than a dim holds was refused by the negative dim ONNX inference computed for the
    graph output, a message that named neither the node nor the pads; inferred negative dims are now left to the op's
    own rule."""
    make, names = ATTRIBUTES[case]
    p = sb.save(make())
    refuses(sb, lambda: load_model(p), ModelValidationError, names=["model.onnx", *names])


def test_18_slice_indices_past_the_end_are_clamped(sb):
    """ONNX defines out-of-range Slice starts and ends as clamped, so this one is not an error: an empty result."""
    m = model([N("Slice", ["x", "s", "e", "a"], ["y"])], [vi("x")], [vi("y", None)],
              [const("s", np.array([10**18], np.int64)), const("e", np.array([2**62], np.int64)),
               const("a", np.array([1], np.int64))])
    matches_onnxruntime(sb, m, {"x": np.ones((2, 3), np.float32)})


# ---- 19: constant-folding bombs ---------------------------------------------------------------------------------


def _constant_of_shape(into_add: bool) -> onnx.ModelProto:
    nodes = [N("ConstantOfShape", ["s"], ["z" if into_add else "y"], name="fill")]
    if into_add:  # a consumer: ONNX's data propagation would write out the fill's 2**44 values
        nodes.append(N("Add", ["z", "x"], ["y"], name="add"))
    return model(nodes, [vi("x", (1,))] if into_add else [], [vi("y", None)], [const("s", np.array([2**44], np.int64))])


def _loop_2_62() -> onnx.ModelProto:
    body = helper.make_graph([N("Add", ["v", "one"], ["v2"]), N("Identity", ["cond"], ["cond2"])], "body",
                             [vi("i", (), I64), vi("cond", (), TensorProto.BOOL), vi("v", (1,))],
                             [vi("cond2", (), TensorProto.BOOL), vi("v2", (1,))])
    return model([N("Loop", ["trip", "", "v0"], ["y"], name="loop", body=body)], [], [vi("y", (1,))],
                 [const("trip", np.array(2**62, np.int64)), const("v0", np.ones(1, np.float32)),
                  const("one", np.ones(1, np.float32))])


BUDGET = ["max_fold_bytes", str(16 * 2**30)]
BOMBS = {
    "constant_of_shape": (lambda: _constant_of_shape(False), ResourceLimitError, ["'fill'", str(2**44 * 4), *BUDGET]),
    "constant_of_shape_used": (lambda: _constant_of_shape(True), ResourceLimitError, ["'fill'", *BUDGET]),
    "expand": (lambda: model([N("Expand", ["a", "s"], ["y"], name="grow")], [], [vi("y", None)],
                             [const("a", np.ones((1, 1), np.float32)), const("s", np.array([2**22, 2**22], np.int64))]),
               ResourceLimitError, ["'grow'", str(2**44 * 4), *BUDGET]),
    "range_1e12": (lambda: model([N("Range", ["a", "b", "d"], ["y"], name="rng")], [], [vi("y", None)],
                                 [const("a", np.array(0.0, np.float32)), const("b", np.array(1e12, np.float32)),
                                  const("d", np.array(1.0, np.float32))]),
                   ResourceLimitError, ["'rng'", *BUDGET]),
    "resize_1e6": (lambda: model([N("Resize", ["a", "", "sc"], ["y"], name="up")], [], [vi("y", None)],
                                 [const("a", np.ones((1, 1, 4, 4), np.float32)),
                                  const("sc", np.array([1, 1, 1e6, 1e6], np.float32))], opset=13),
                   ResourceLimitError, ["'up'", *BUDGET]),
    # tritc has no control flow: the Loop is refused at import, before any of its 2**62 trips could be folded
    "loop_2_62": (_loop_2_62, UnsupportedError, ["Loop", "'loop'"]),
}

_COMPILE_EACH = """
import warnings
import tritc
warnings.simplefilter("ignore")
RESULT = {}
for case in CASES:
    try:
        tritc.compile(f"model_dir/{case}.onnx", threads=1)
        RESULT[case] = ("compiled", [], "")
    except Exception as e:
        RESULT[case] = (type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e))
    RESULT[case] += (peak_rss_mib(),)
"""


def test_19_constant_folding_bombs(sb):
    """tritc.compile of each bomb in one child under a 3 GiB address-space limit: ResourceLimitError naming the node,
    the size and the folding budget, with nothing of the folded size allocated (peak RSS). Fixed here: a
    ConstantOfShape([2**44]) with a consumer made ONNX's data propagation (in the frontend's shape inference) write out
    its value before any limit: 2**24 elements took 2.5 GB, 2**44 ended in std::bad_alloc or took the machine."""
    for case, (make, *_rest) in BOMBS.items():
        sb.save(make(), f"{case}.onnx")
    out = isolated(sb, f"CASES = {list(BOMBS)}\n" + _COMPILE_EACH, memory=3 * 2**30, timeout=180)
    assert out.ok, out.stderr
    results = eval(out.result)
    for case, (_make, error, names) in BOMBS.items():
        got, bases, message, _rss = results[case]
        assert error.__name__ in bases, (case, got, message)
        assert "\n" not in message, message
        for n in names:
            assert n in message, (case, n, message)
    peak = max(r[3] for r in results.values())
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"
    sb.cli("compile", sb.model_dir / "constant_of_shape_used.onnx", "-o", sb.out / "m.tritc", names=["'fill'", *BUDGET],
           memory=3 * 2**30)


# ---- 20: symbolic and dynamic dims ------------------------------------------------------------------------------


def test_20_symbolic_dims_are_checked_at_run_time(sb):
    """Symbolic dims compile to generic code; a call whose sizes break them is refused before the code runs, naming
    the input, the axis and the symbol (or the fixed size)."""
    p = sb.save(model([N("Add", ["x", "y"], ["z"], name="add")], [vi("x", ("N", 3)), vi("y", ("N", 3))],
                      [vi("z", ("N", 3))]))
    cm = tritc.compile(str(p), threads=1)
    ones = np.ones((2, 3), np.float32)
    assert cm.run(None, {"x": ones, "y": ones})[0].shape == (2, 3)
    refuses(sb, lambda: cm.run(None, {"x": ones, "y": np.ones((4, 3), np.float32)}), InputShapeError,
            names=["input 'y'", "'N'", "4", "2"])
    refuses(sb, lambda: cm.run(None, {"x": np.ones((2, 4), np.float32), "y": np.ones((2, 4), np.float32)}),
            ValueError, names=["input 'x'", "dim 1", "expected 3"])


def test_20_a_dim_known_only_at_run_time_is_unsupported(sb):
    """A Reshape to a shape given as a runtime input: the result's dims are not a function of the input sizes, which
    the backend cannot compile: UnsupportedError naming the value and the node."""
    p = sb.save(model([N("Reshape", ["x", "s"], ["z"], name="rs")], [vi("x"), vi("s", (2,), I64)], [vi("z", None)]))
    refuses(sb, lambda: tritc.compile(str(p), threads=1), UnsupportedError, names=["%z", "'rs'", "not known"])

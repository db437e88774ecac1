"""The nn and cnn op families: symbolic type rules, invalid-input errors, numerics against
onnxruntime over many attribute combinations, ONNX version coverage and old-version adapters."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.defs
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh

from tritc.errors import ResourceLimitError, UnsupportedError
from tritc.frontend.adapters import find_adapter
from tritc.frontend.onnx import import_model
from tritc.ir.interpreter import run
from tritc.ir.ops import OPS, TypeRuleError, onnx_op
from tritc.ir.types import DType, TensorType

from .helpers import infer, shape_of, tt

# ---- symbolic type rules ------------------------------------------------------------------------


def test_matmul_follows_numpy_and_keeps_symbols():
    assert shape_of("matmul", tt("f32", "batch", "seq", 64), tt("f32", 64, 128)) == ("batch", "seq", 128)
    assert shape_of("matmul", tt("f32", "batch", 1, 4, 5), tt("f32", 3, 5, 6)) == ("batch", 3, 4, 6)
    assert shape_of("matmul", tt("f32", 5), tt("f32", 5)) == ()
    assert shape_of("matmul", tt("f32", 5), tt("f32", "b", 5, 7)) == ("b", 7)
    assert shape_of("matmul", tt("f32", "b", 4, 5), tt("f32", 5)) == ("b", 4)
    assert shape_of("matmul", tt("f32", "b", "k"), tt("f32", "k", 3)) == ("b", 3)


def test_matmul_rejects_inner_dim_mismatch_naming_both_shapes():
    with pytest.raises(TypeRuleError, match=r"A is \[batch,4,5\], B is \[6,7\]"):
        infer("matmul", tt("f32", "batch", 4, 5), tt("f32", 6, 7))
    with pytest.raises(TypeRuleError, match="batch dims"):
        infer("matmul", tt("f32", 2, 4, 5), tt("f32", 3, 5, 7))
    with pytest.raises(TypeRuleError, match="dtype"):
        infer("matmul", tt("f32", 4, 5), tt("f16", 5, 7))


def test_gemm_rule():
    assert shape_of("gemm", tt("f32", "batch", 512), tt("f32", 1000, 512), tt("f32", 1000), transB=1) == ("batch", 1000)
    assert shape_of("gemm", tt("f32", 512, "batch"), tt("f32", 512, 10), transA=1) == ("batch", 10)
    with pytest.raises(TypeRuleError, match=r"A is \[batch,512\], B is \[1000,256\]"):
        infer("gemm", tt("f32", "batch", 512), tt("f32", 1000, 256), transB=1)
    with pytest.raises(TypeRuleError, match=r"bias C \[7\]"):
        infer("gemm", tt("f32", 4, 5), tt("f32", 5, 6), tt("f32", 7))


def test_conv_rule_keeps_batch_and_computes_spatial_dims():
    x = tt("f32", "batch", 3, 224, 224)
    assert shape_of("conv", x, tt("f32", 64, 3, 7, 7), strides=[2, 2], pads=[3, 3, 3, 3]) == ("batch", 64, 112, 112)
    assert shape_of("conv", x, tt("f32", 8, 3, 3, 3), auto_pad="SAME_UPPER", strides=[2, 2]) == ("batch", 8, 112, 112)
    assert shape_of("conv", x, tt("f32", 8, 3, 3, 3), auto_pad="VALID", dilations=[2, 2]) == ("batch", 8, 220, 220)
    # A symbolic spatial dim stays exact with stride 1, and becomes unknown otherwise.
    assert shape_of("conv", tt("f32", 1, 4, "h", "w"), tt("f32", 2, 4, 3, 3)) == (1, 2, "h-2", "w-2")
    assert shape_of("conv", tt("f32", 1, 4, "h", 9), tt("f32", 2, 4, 3, 3), strides=[2, 2]) == (1, 2, None, 4)
    # Conv over an input whose rank is unknown takes it from the weight.
    assert shape_of("conv", TensorType(DType.F32, None), tt("f32", 2, 4, 3)) == (None, 2, None)


def test_conv_rule_rejects_bad_weights_naming_shapes():
    with pytest.raises(TypeRuleError, match=r"weight \[8,3,3,3,3\] has rank 5, input \[1,3,32,32\] has rank 4"):
        infer("conv", tt("f32", 1, 3, 32, 32), tt("f32", 8, 3, 3, 3, 3))
    with pytest.raises(TypeRuleError, match=r"input \[1,6,32,32\] has 6 channels, weight \[8,2,3,3\] with group 2"):
        infer("conv", tt("f32", 1, 6, 32, 32), tt("f32", 8, 2, 3, 3), group=2)
    with pytest.raises(TypeRuleError, match="do not split into 4 groups"):
        infer("conv", tt("f32", 1, 8, 32, 32), tt("f32", 6, 2, 3, 3), group=4)
    with pytest.raises(TypeRuleError, match="does not fit"):
        infer("conv", tt("f32", 1, 3, 2, 2), tt("f32", 8, 3, 3, 3))
    with pytest.raises(TypeRuleError, match="kernel_shape"):
        infer("conv", tt("f32", 1, 3, 8, 8), tt("f32", 8, 3, 3, 3), kernel_shape=[5, 5])
    with pytest.raises(TypeRuleError, match=r"pads \[1, 1\] should have 4 values"):
        infer("conv", tt("f32", 1, 3, 8, 8), tt("f32", 8, 3, 3, 3), pads=[1, 1])


def test_conv_transpose_rule():
    x = tt("f32", "batch", 4, 5, 5)
    assert shape_of("conv_transpose", x, tt("f32", 4, 3, 3, 3), strides=[2, 2]) == ("batch", 3, 11, 11)
    assert shape_of("conv_transpose", x, tt("f32", 4, 3, 3, 3), strides=[2, 2], output_padding=[1, 1],
                    pads=[1, 1, 1, 1]) == ("batch", 3, 10, 10)
    assert shape_of("conv_transpose", x, tt("f32", 4, 1, 3, 3), group=2, output_shape=[12, 13]) == ("batch", 2, 12, 13)
    assert shape_of("conv_transpose", x, tt("f32", 4, 3, 3, 3), auto_pad="SAME_UPPER", strides=[3, 3]) == ("batch", 3, 15, 15)
    with pytest.raises(TypeRuleError, match=r"weight \[5,3,3,3\] does not match the 4 channels"):
        infer("conv_transpose", x, tt("f32", 5, 3, 3, 3))


def test_pool_rules():
    x = tt("f32", "batch", 64, 112, 112)
    mp = infer("max_pool", x, n_out=2, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    assert mp == [tt("f32", "batch", 64, 56, 56), tt("i64", "batch", 64, 56, 56)]
    assert shape_of("average_pool", tt("f32", 1, 1, 5, 5), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1) == (1, 1, 3, 3)
    # ceil_mode never starts a window in the end padding.
    assert shape_of("max_pool", tt("f32", 1, 1, 4), kernel_shape=[2], strides=[2], pads=[0, 1], ceil_mode=1) == (1, 1, 2)
    assert shape_of("global_average_pool", x) == ("batch", 64, 1, 1)
    assert shape_of("lp_pool", tt("f32", "n", 2, "t"), kernel_shape=[3]) == ("n", 2, "t-2")
    with pytest.raises(TypeRuleError, match="kernel_shape"):
        infer("max_pool", x, kernel_shape=[3])
    with pytest.raises(TypeRuleError, match="rank >= 3"):
        infer("global_max_pool", tt("f32", 4, 5))
    with pytest.raises(TypeRuleError, match="must be one of"):
        infer("max_pool", tt("i32", 1, 1, 4), kernel_shape=[2])


def test_normalization_rules():
    x = tt("f32", "batch", "seq", 768)
    assert infer("layer_normalization", x, tt("f32", 768), n_out=3) == [x, tt("f32", "batch", "seq", 1),
                                                                        tt("f32", "batch", "seq", 1)]
    h = tt("f16", "batch", 16)
    assert infer("layer_normalization", h, tt("f16", 16), n_out=2, axis=0)[1] == tt("f32", 1, 1)
    img = tt("f32", "batch", 8, 4, 4)
    c = tt("f32", 8)
    assert infer("batch_normalization", img, c, c, c, c, n_out=3) == [img, tt("f32", 8), tt("f32", 8)]
    assert infer("instance_normalization", img, c, c) == [img]
    assert infer("group_normalization", img, c, c, num_groups=4) == [img]
    with pytest.raises(TypeRuleError, match=r"8 channels of X \[batch,8,4,4\] do not split into 3 groups"):
        infer("group_normalization", img, c, c, num_groups=3)
    with pytest.raises(TypeRuleError, match=r"operand 1 of shape \[7\] does not match the channels of X \[batch,8,4,4\]"):
        infer("batch_normalization", img, tt("f32", 7), c, c, c)
    with pytest.raises(TypeRuleError, match="out of range"):
        infer("layer_normalization", x, tt("f32", 768), axis=3)


def test_einsum_rule():
    a, b = tt("f32", "batch", 4, 5), tt("f32", "batch", 5, 6)
    assert shape_of("einsum", a, b, equation="bij,bjk->bik") == ("batch", 4, 6)
    assert shape_of("einsum", a, equation="...ij->...ji") == ("batch", 5, 4)
    assert shape_of("einsum", tt("f32", 3, 4), tt("f32", 4, 5), equation="ij,jk") == (3, 5)  # implicit output
    with pytest.raises(TypeRuleError, match="label 'j' has sizes 5 and 4"):
        infer("einsum", a, tt("f32", "batch", 4, 6), equation="bij,bjk->bik")


def test_resize_rule():
    x = tt("f32", "n", 3, 10, 10)
    scales = np.array([1, 1, 2, 0.55], dtype=np.float32)
    assert shape_of("resize", x, None, scales) == ("n", 3, 20, 5)
    assert shape_of("resize", tt("f32", 1, 3, 10, 20), None, None, np.array([8, 8], np.int64), axes=[2, 3],
                    keep_aspect_ratio_policy="not_larger") == (1, 3, 4, 8)
    assert shape_of("resize", x, None, tt("f32", 4)) == (None, None, None, None)
    assert shape_of("resize", x, None, tt("f32", 2), axes=[2, 3]) == ("n", 3, None, None)
    with pytest.raises(TypeRuleError, match="exactly one of scales and sizes"):
        infer("resize", x, None, scales, np.array([1, 3, 5, 5], np.int64))


# ---- numerics against onnxruntime ----------------------------------------------------------------

_ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.int64: TensorProto.INT64,
               np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.bool_: TensorProto.BOOL}


def _model(op: str, inputs: dict[str, np.ndarray], n_out: int, opset: int, consts: tuple[str, ...] = (),
           dim_params: dict[str, list] | None = None, **attrs) -> onnx.ModelProto:
    """A one-node model; inputs named in `consts` become initializers, the rest graph inputs."""
    names = list(inputs)
    node = oh.make_node(op, [n if inputs[n] is not None else "" for n in names], [f"y{i}" for i in range(n_out)], **attrs)
    graph_inputs = [oh.make_tensor_value_info(n, _ONNX_TYPES[inputs[n].dtype.type],
                                              (dim_params or {}).get(n, list(inputs[n].shape)))
                    for n in names if inputs[n] is not None and n not in consts]
    inits = [onnx.numpy_helper.from_array(inputs[n], n) for n in consts]
    outputs = [oh.make_empty_tensor_value_info(f"y{i}") for i in range(n_out)]
    graph = oh.make_graph([node], "g", graph_inputs, outputs, initializer=inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8)


def check_vs_ort(op: str, inputs: dict[str, np.ndarray | None], n_out: int = 1, opset: int = 22, consts=(),
                 rtol: float = 1e-4, atol: float = 1e-5, dim_params=None, **attrs) -> list[np.ndarray]:
    """Run a one-node model in tritc's interpreter and onnxruntime; outputs must agree in dtype,
    shape and value."""
    model = _model(op, inputs, n_out, opset, consts, dim_params, **attrs)
    feeds = {n: v for n, v in inputs.items() if v is not None and n not in consts}
    ours = run(import_model(model), feeds)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    results = []
    for i, expected in enumerate(theirs):
        actual = ours[f"y{i}"]
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, actual.shape,
                                                                                   expected.dtype, expected.shape)
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol)
        results.append(actual)
    return results


RNG = np.random.default_rng(1234)


def rand(*shape, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


CONV_CASES = [
    ((1, 3, 9), (4, 3, 3), {}),
    ((2, 4, 8, 9), (6, 2, 3, 3), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 3, 10, 10), (5, 3, 3, 2), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    ((1, 3, 7, 8), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 7, 8), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((1, 3, 7, 8), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 8, 6, 6), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ((2, 2, 4, 5, 6), (3, 2, 2, 3, 2), {"strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}),
    ((1, 16, 5, 5), (32, 16, 1, 1), {}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
def test_conv_matches_onnxruntime(x_shape, w_shape, attrs):
    check_vs_ort("Conv", {"x": rand(*x_shape), "w": rand(*w_shape), "b": rand(w_shape[0])}, **attrs)


def test_conv_without_bias_in_f16():
    check_vs_ort("Conv", {"x": rand(1, 3, 6, 6, dtype=np.float16), "w": rand(4, 3, 3, 3, dtype=np.float16)},
                 rtol=2e-2, atol=2e-2)


CONV_TRANSPOSE_CASES = [
    ((1, 3, 5), (3, 2, 3), {}),
    ((1, 2, 3, 3), (2, 3, 3, 3), {"strides": [2, 2], "output_padding": [1, 1]}),
    ((2, 4, 3, 4), (4, 2, 3, 2), {"group": 2, "strides": [2, 3], "pads": [1, 0, 1, 1], "dilations": [2, 1]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 3, 3, 3), (2, 1, 2, 2, 2), {"strides": [2, 1, 2]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose_matches_onnxruntime(x_shape, w_shape, attrs):
    m = w_shape[1] * attrs.get("group", 1)
    check_vs_ort("ConvTranspose", {"x": rand(*x_shape), "w": rand(*w_shape), "b": rand(m)}, **attrs)


POOL_CASES = [
    ("MaxPool", (1, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ("MaxPool", (2, 3, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", (1, 2, 9, 9), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 0, 2]}),
    ("MaxPool", (1, 2, 6, 7), {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("AveragePool", (1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", (1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", (1, 2, 6, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1,
                                   "count_include_pad": 1}),
    ("AveragePool", (1, 2, 6, 7), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("AveragePool", (1, 1, 4, 5, 6), {"kernel_shape": [2, 2, 3], "strides": [2, 2, 2]}),
    ("LpPool", (1, 2, 7, 7), {"kernel_shape": [3, 3], "p": 3, "pads": [1, 1, 1, 1]}),
    ("LpPool", (1, 2, 8), {"kernel_shape": [2], "p": 1, "strides": [2]}),
]


@pytest.mark.parametrize("op,x_shape,attrs", POOL_CASES)
def test_pools_match_onnxruntime(op, x_shape, attrs):
    check_vs_ort(op, {"x": rand(*x_shape)}, opset=18 if op == "LpPool" else 22, **attrs)


@pytest.mark.parametrize("shape,attrs", [((2, 3, 6, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}),
                                         ((1, 2, 4, 5, 6), {"kernel_shape": [2, 2, 2], "strides": [2, 1, 2]})])
def test_max_pool_indices(shape, attrs):
    x = rand(*shape)
    y, rows = check_vs_ort("MaxPool", {"x": x}, n_out=2, **attrs)
    np.testing.assert_array_equal(x.reshape(-1)[rows], y)  # row-major indices point at the maxima
    # storage_order=1 numbers the spatial dims column-major (onnxruntime does so only in 2-D, so
    # 3-D is checked against the row-major result).
    _, cols = OPS["max_pool"].compute(x, **OPS["max_pool"].with_defaults({**attrs, "storage_order": 1}))
    n_c, spatial = divmod(rows, int(np.prod(shape[2:])))
    coords = np.unravel_index(spatial, shape[2:])
    np.testing.assert_array_equal(cols, n_c * np.prod(shape[2:]) + np.ravel_multi_index(coords, shape[2:], order="F"))
    if len(shape) == 4:
        check_vs_ort("MaxPool", {"x": x}, n_out=2, storage_order=1, **attrs)


def test_max_pool_integers_pad_with_the_lowest_value():
    x = RNG.integers(-128, 0, (1, 2, 5, 5)).astype(np.int8)
    (y,) = check_vs_ort("MaxPool", {"x": x}, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    assert (y < 0).all()  # a zero pad would have won


@pytest.mark.parametrize("op,attrs", [("GlobalAveragePool", {}), ("GlobalMaxPool", {}), ("GlobalLpPool", {"p": 3})])
def test_global_pools_match_onnxruntime(op, attrs):
    check_vs_ort(op, {"x": rand(2, 3, 4, 5)}, opset=21, **attrs)  # onnxruntime lacks GlobalLpPool-22


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_matches_onnxruntime(size):
    check_vs_ort("LRN", {"x": rand(2, 7, 3, 3)}, size=size, alpha=0.01, beta=0.6, bias=1.5)


def test_lrn_even_size_sums_more_channels_after():
    # onnxruntime refuses even sizes; the spec's window is c - floor((size-1)/2) .. c + ceil((size-1)/2).
    x = rand(1, 5, 1, 1)
    y = OPS["lrn"].compute(x, alpha=1.0, beta=1.0, bias=1.0, size=4)
    sq = x[0, :, 0, 0] ** 2
    expected = [x[0, c, 0, 0] / (1 + sum(sq[max(0, c - 1):c + 3]) / 4) for c in range(5)]
    np.testing.assert_allclose(y[0, :, 0, 0], expected, rtol=1e-6)


RESIZE_CASES = [
    ({"mode": "nearest"}, [1, 1, 2.5, 1.5], None),
    ({"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 7, 3]),
    ({"mode": "nearest", "nearest_mode": "round_prefer_ceil", "coordinate_transformation_mode": "asymmetric"},
     [1, 1, 0.6, 1.7], None),
    ({"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "tf_half_pixel_for_nn"},
     [1, 1, 2, 0.5], None),
    ({"mode": "linear"}, [1, 1, 0.6, 2.3], None),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, [1, 2, 1, 9]),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 3, 8]),
    ({"mode": "linear", "antialias": 1}, [1, 1, 0.45, 0.7], None),
    ({"mode": "cubic"}, [1, 1, 1.7, 0.8], None),
    ({"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, [1, 1, 0.5, 1.5], None),
    ({"mode": "cubic", "antialias": 1}, None, [1, 2, 3, 2]),
    ({"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": "not_smaller"}, None, [9, 4]),
]


@pytest.mark.parametrize("attrs,scales,sizes", RESIZE_CASES)
def test_resize_matches_onnxruntime(attrs, scales, sizes):
    inputs = {"x": rand(1, 2, 6, 5), "roi": None,
              "scales": None if scales is None else np.array(scales, np.float32),
              "sizes": None if sizes is None else np.array(sizes, np.int64)}
    consts = tuple(k for k in ("scales", "sizes") if inputs[k] is not None)
    check_vs_ort("Resize", inputs, opset=19, consts=consts, **attrs)


def test_resize_tf_crop_and_resize_with_extrapolation():
    inputs = {"x": rand(1, 1, 5, 6), "roi": np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], np.float32),
              "scales": None, "sizes": np.array([1, 1, 4, 5], np.int64)}
    check_vs_ort("Resize", inputs, opset=19, consts=("roi", "sizes"), mode="linear",
                 coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0)


def test_resize_uint8_rounds_and_saturates():
    x = RNG.integers(0, 256, (1, 1, 4, 4)).astype(np.uint8)
    check_vs_ort("Resize", {"x": x, "roi": None, "scales": np.array([1, 1, 1.5, 1.5], np.float32)}, opset=19,
                 consts=("scales",), mode="linear", atol=1.0)


@pytest.mark.parametrize("a_shape,b_shape", [((3,), (3,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6))])
def test_matmul_matches_onnxruntime(a_shape, b_shape):
    check_vs_ort("MatMul", {"a": rand(*a_shape), "b": rand(*b_shape)}, opset=13)


def test_matmul_integers_are_exact():
    a = RNG.integers(-1000, 1000, (3, 4)).astype(np.int64)
    b = RNG.integers(-1000, 1000, (4, 2)).astype(np.int64)
    (y,) = check_vs_ort("MatMul", {"a": a, "b": b}, opset=13, rtol=0, atol=0)
    np.testing.assert_array_equal(y, a @ b)


@pytest.mark.parametrize("attrs,c_shape", [({}, None), ({"transA": 1, "alpha": 0.5}, (1, 5)),
                                           ({"transB": 1, "beta": 2.0}, (4, 1)), ({"transA": 1, "transB": 1}, ())])
def test_gemm_matches_onnxruntime(attrs, c_shape):
    a = rand(3, 4) if attrs.get("transA") else rand(4, 3)
    b = rand(5, 3) if attrs.get("transB") else rand(3, 5)
    inputs = {"a": a, "b": b}
    if c_shape is not None:
        inputs["c"] = rand(*c_shape)
    check_vs_ort("Gemm", inputs, opset=13, **attrs)


@pytest.mark.parametrize("equation,shapes", [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bkj->bik", [(2, 3, 4), (2, 5, 4)]),
                                             ("...ii->...i", [(2, 4, 4)]), ("ij->", [(3, 4)]), ("i,j", [(3,), (2,)])])
def test_einsum_matches_onnxruntime(equation, shapes):
    check_vs_ort("Einsum", {f"x{i}": rand(*s) for i, s in enumerate(shapes)}, opset=12, equation=equation)


def test_normalizations_match_onnxruntime():
    x = rand(2, 6, 3, 4)
    c = {"s": rand(6), "b": rand(6)}
    check_vs_ort("InstanceNormalization", {"x": x, **c}, epsilon=1e-3)
    check_vs_ort("GroupNormalization", {"x": x, **c}, opset=21, num_groups=3)
    check_vs_ort("BatchNormalization", {"x": x, **c, "m": rand(6), "v": np.abs(rand(6)) + 0.1}, opset=15)
    check_vs_ort("LayerNormalization", {"x": x, "s": rand(3, 4), "b": rand(3, 4)}, n_out=3, opset=17, axis=2)
    check_vs_ort("LayerNormalization", {"x": x, "s": rand(4)}, opset=17)
    check_vs_ort("RMSNormalization", {"x": x, "s": rand(4)}, opset=23)
    check_vs_ort("LpNormalization", {"x": x}, axis=1, p=1)
    check_vs_ort("LpNormalization", {"x": x}, axis=-1, p=2)


# onnx's strict shape inference rejects MVN-13's own function body; the frontend warns and goes on.
@pytest.mark.filterwarnings("ignore:.*ONNX shape inference")
def test_mean_variance_normalization_matches_onnxruntime():
    check_vs_ort("MeanVarianceNormalization", {"x": rand(2, 3, 4, 5)}, opset=13)
    check_vs_ort("MeanVarianceNormalization", {"x": rand(2, 3, 4, 5)}, opset=13, axes=[0, 2])


def test_batch_normalization_training_mode_uses_batch_statistics():
    x = rand(4, 3, 2, 2)
    y, mean, var = OPS["batch_normalization"].compute(x, np.ones(3, np.float32), np.zeros(3, np.float32),
                                                      np.zeros(3, np.float32), np.ones(3, np.float32),
                                                      epsilon=0.0, momentum=0.9, training_mode=1)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(axis=(0, 2, 3)), rtol=1e-5)


def test_symbolic_batch_runs_end_to_end():
    x, w = rand(3, 2, 6, 6), rand(4, 2, 3, 3)
    check_vs_ort("Conv", {"x": x, "w": w}, consts=("w",), dim_params={"x": ["N", 2, 6, 6]}, pads=[1, 1, 1, 1])
    model = _model("Conv", {"x": x, "w": w}, 1, 22, consts=("w",), dim_params={"x": ["N", 2, 6, 6]})
    assert import_model(model).outputs[0].type.shape == ("N", 4, 4, 4)


def test_dropout_is_identity_in_inference():
    x = rand(3, 4)
    y, mask = check_vs_ort("Dropout", {"x": x, "r": np.array(0.3, np.float32)}, n_out=2)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()
    y, mask = OPS["dropout"].compute(x, np.array(0.0, np.float32), np.array(True), seed=None, mask_dtype=DType.BOOL)
    np.testing.assert_array_equal(y, x)
    with pytest.raises(UnsupportedError, match="training mode"):
        OPS["dropout"].compute(x, np.array(0.5, np.float32), np.array(True), seed=0, mask_dtype=DType.BOOL)


# ---- versions and adapters ------------------------------------------------------------------------

MY_OPS = ["MatMul", "Gemm", "LayerNormalization", "RMSNormalization", "GroupNormalization", "InstanceNormalization",
          "BatchNormalization", "LpNormalization", "MeanVarianceNormalization", "Dropout", "Einsum", "Conv",
          "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
          "LRN", "Resize", "Upsample"]


@pytest.mark.parametrize("op_type", MY_OPS)
def test_every_version_active_at_opsets_7_to_28_imports(op_type):
    opdef = onnx_op(op_type)
    assert opdef is not None
    for opset in range(7, 29):
        try:
            schema = onnx.defs.get_schema(op_type, opset)
        except onnx.defs.SchemaError:
            continue  # the op does not exist yet at this opset
        if schema.deprecated:
            continue  # Upsample-10: deprecated, ONNX points users to Resize
        v = schema.since_version
        assert v in opdef.since or find_adapter("", op_type, v) is not None, f"{op_type}-{v} (opset {opset})"


def test_dropout7_mask_has_the_data_dtype():
    x = rand(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, mask = run(import_model(_model("Dropout", {"x": x}, 2, 9, ratio=0.5)), {"x": x}).values()
    np.testing.assert_array_equal(y, x)
    # Every element is kept, so the mask is all ones (onnxruntime's Dropout-7..11 kernel fills zeros
    # instead; Dropout-12 and ONNX's reference give ones, as here).
    assert mask.dtype == np.float32 and (mask == 1).all()


def test_old_batch_normalization_versions():
    x = rand(2, 3, 4)
    params = {"s": rand(3), "b": rand(3), "m": rand(3), "v": np.abs(rand(3)) + 0.5}
    check_vs_ort("BatchNormalization", {"x": x, **params}, opset=7, epsilon=1e-3)
    check_vs_ort("BatchNormalization", {"x": x, **params}, opset=9)
    with pytest.raises(UnsupportedError, match="spatial=0"):
        import_model(_model("BatchNormalization", {"x": x, **params}, 1, 7, spatial=0))


def test_group_normalization_18_per_group_parameters():
    x = rand(2, 6, 3, 3)
    s, b = rand(3), rand(3)
    model = _model("GroupNormalization", {"x": x, "s": s, "b": b}, 1, 18, consts=("s", "b"), num_groups=3)
    (ours,) = run(import_model(model), {"x": x}).values()
    per_channel = _model("GroupNormalization", {"x": x, "s": np.repeat(s, 2), "b": np.repeat(b, 2)}, 1, 21,
                         consts=("s", "b"), num_groups=3)
    (theirs,) = ort.InferenceSession(per_channel.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,scales", [("nearest", [1, 1, 2, 3]), ("nearest", [1, 1, 0.5, 0.6]), ("linear", [1, 1, 2, 1.5])])
def test_resize10_matches_onnxruntime(mode, scales):
    check_vs_ort("Resize", {"x": rand(1, 2, 4, 5), "scales": np.array(scales, np.float32)}, opset=10, consts=("scales",),
                 mode=mode)


def test_upsample_versions_match_onnxruntime():
    x = rand(1, 2, 3, 4)
    check_vs_ort("Upsample", {"x": x}, opset=7, mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])
    check_vs_ort("Upsample", {"x": x}, opset=7, mode="linear", scales=[1.0, 1.0, 2.0, 1.5])
    check_vs_ort("Upsample", {"x": x, "scales": np.array([1, 1, 3, 2], np.float32)}, opset=9, consts=("scales",))


def test_resize10_mixed_nearest_scales_are_unsupported():
    model = _model("Resize", {"x": rand(1, 1, 4, 4), "scales": np.array([1, 1, 2, 0.5], np.float32)}, 1, 10,
                   consts=("scales",), mode="nearest")
    with pytest.raises(UnsupportedError, match="upsamples some axes and downsamples others"):
        import_model(model)


# ---- resource budgets (HARDENING.md C.19) ---------------------------------------------------------


def test_huge_outputs_are_refused_before_allocating():
    x = rand(1, 1, 4, 4)
    with pytest.raises(ResourceLimitError, match="resize"):
        OPS["resize"].compute(x, None, np.array([1, 1, 1e6, 1e6], np.float32), **OPS["resize"].with_defaults({}))
    with pytest.raises(ResourceLimitError, match="max_pool"):
        OPS["max_pool"].compute(x, **OPS["max_pool"].with_defaults({"kernel_shape": [1, 1], "pads": [0, 0, 10**6, 10**6]}))
    with pytest.raises(ResourceLimitError, match="conv_transpose"):
        OPS["conv_transpose"].compute(x, rand(1, 1, 1, 1), **OPS["conv_transpose"].with_defaults({"output_shape": [10**6, 10**6]}))

"""LLVM lowerings of the cnn family against the interpreter: conv and conv_transpose (1-D to 3-D, groups,
depthwise, strides, dilations, pads, auto_pad, every float dtype, threads), the pools (max with Indices,
average, lp, global), LRN and resize (every mode), then ONNX's light model zoo through CompiledBackend.

Cases are compiled as one graph per test (see test_lower_nn.check).
"""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

from tritc.onnx_backend import CompiledBackend, InterpreterBackend

from .helpers import Const, build
from .test_lower_nn import Case, _llvm_ir, check, data

FLOATS = ["f32", "f16", "bf16", "f64"]


# ---- conv ---------------------------------------------------------------------------------------------------------

CONVS = [  # (x shape, w shape, bias, attrs)
    ((1, 3, 7, 7), (8, 3, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    ((2, 4, 9, 8), (6, 2, 3, 2), True, {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 8, 5, 5), (8, 1, 3, 3), False, {"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 16, 6, 6), (32, 16, 1, 1), True, {}),  # pointwise: a plain GEMM on X
    ((1, 16, 6, 6), (12, 16, 1, 1), True, {"strides": [2, 2]}),
    ((1, 3, 10), (5, 3, 3), True, {"dilations": [2], "auto_pad": "SAME_UPPER"}),
    ((2, 3, 11), (4, 3, 4), False, {"auto_pad": "SAME_LOWER", "strides": [2]}),
    ((1, 2, 5, 6, 7), (4, 2, 3, 3, 2), True, {"pads": [1, 0, 1, 1, 1, 0], "strides": [1, 2, 2]}),
    ((1, 5, 9, 9), (3, 5, 3, 3), True, {"auto_pad": "VALID", "dilations": [2, 1]}),
    ((1, 3, 1, 1), (2, 3, 1, 1), False, {}),
    ((3, 20, 12, 13), (24, 20, 3, 3), True, {"pads": [1, 1, 1, 1]}),  # packed tile with ragged rows and columns
]


def _conv_case(x: tuple, w: tuple, bias: bool, attrs: dict, dtype: str, const_w: bool = False) -> Case:
    inputs = [data(dtype, *x), Const(data(dtype, *w)) if const_w else data(dtype, *w)]
    if bias:
        inputs.append(data(dtype, w[0]))
    return Case("conv", inputs, attrs)


@pytest.mark.parametrize("dtype", FLOATS)
def test_conv(dtype):
    tol = 3e-2 if dtype == "bf16" else None
    cases = [_conv_case(*c, dtype) for c in CONVS]
    for case in cases:
        case.rtol = tol
    check(*cases)


def test_conv_weights_as_constants_and_threads():
    cases = [_conv_case(*c, "f32", const_w=True) for c in CONVS]
    cases.append(_conv_case((2, 16, 30, 30), (32, 16, 3, 3), True, {"pads": [1, 1, 1, 1]}, "f32"))
    for case in cases:
        case.rtol = 1e-4
    check(*cases, threads=3)


def test_convs_of_one_kind_share_a_kernel():
    """Sizes are kernel parameters: 3x3 convs with different channel counts and images use one kernel."""
    g, _ = build([_conv_case((1, c, s, s), (m, c, 3, 3), True, {"pads": [1, 1, 1, 1]}, "f32")
                  for c, m, s in [(8, 16, 10), (16, 32, 7), (5, 24, 12)]])
    names = set(re.findall(r'define internal void @"(tritc\.gemm\.\d+)"\(', _llvm_ir(g)))
    assert len(names) == 1, names


TRANSPOSED = [  # (x shape, w shape, bias, attrs)
    ((1, 3, 4, 5), (3, 2, 3, 3), True, {}),
    ((2, 4, 3, 3), (4, 3, 3, 2), True, {"group": 2, "strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 0]}),
    ((1, 2, 5), (2, 3, 4), False, {"strides": [3], "dilations": [2]}),
    ((1, 2, 3, 3), (2, 2, 3, 3), False, {"strides": [2, 2], "output_shape": [7, 8]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), True, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 2, 3, 2), (2, 1, 2, 2, 2), True, {"strides": [1, 2, 1], "pads": [0, 1, 0, 0, 0, 1]}),
]


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_conv_transpose(dtype):
    cases = []
    for x, w, bias, attrs in TRANSPOSED:
        m = w[1] * attrs.get("group", 1)
        cases.append(Case("conv_transpose", [data(dtype, *x), data(dtype, *w)] + ([data(dtype, m)] if bias else []), attrs))
    check(*cases)


# ---- pools --------------------------------------------------------------------------------------------------------

POOLS = [  # (x shape, attrs)
    ((1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ((2, 3, 6, 5), {"kernel_shape": [2, 3], "pads": [1, 0, 0, 2], "ceil_mode": 1, "strides": [2, 2]}),
    ((1, 1, 9, 8), {"kernel_shape": [3, 2], "dilations": [2, 2], "strides": [1, 3]}),
    ((1, 2, 10), {"kernel_shape": [4], "auto_pad": "SAME_UPPER", "strides": [3]}),
    ((1, 2, 4, 5, 6), {"kernel_shape": [2, 2, 3], "pads": [1, 0, 1, 1, 1, 0], "strides": [2, 2, 1]}),
    ((1, 1, 5, 5), {"kernel_shape": [5, 5], "auto_pad": "SAME_LOWER"}),
]


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i8", "u8"])
def test_max_pool_with_indices(dtype):
    cases = []
    for shape, attrs in POOLS:
        x = data(dtype, *shape)
        cases.append(Case("max_pool", [x], attrs, n_out=2))
        cases.append(Case("max_pool", [x], {**attrs, "storage_order": 1}, n_out=2))
    if dtype == "f32":  # NaN at a window's first offset stays; later NaNs never win
        x = data(dtype, 1, 1, 4, 4)
        x[0, 0, 0, 0] = x[0, 0, 2, 3] = np.nan
        cases.append(Case("max_pool", [x], {"kernel_shape": [2, 2]}, n_out=2))
        cases.append(Case("max_pool", [x], {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}))
    check(*cases)


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_average_and_lp_pools(dtype):
    cases = []
    for shape, attrs in POOLS:
        x = data(dtype, *shape)
        cases += [Case("average_pool", [x], attrs), Case("average_pool", [x], {**attrs, "count_include_pad": 1})]
        cases += [Case("lp_pool", [x], {**attrs, "p": p}) for p in (1, 2, 3)]
    x = data(dtype, 2, 3, 5, 6)
    x[1, 2, 0, 0] = np.nan
    cases += [Case("global_average_pool", [x]), Case("global_max_pool", [x]), Case("global_lp_pool", [x]),
              Case("global_lp_pool", [x], {"p": 3}), Case("global_average_pool", [data(dtype, 1, 40, 37)]),
              Case("global_max_pool", [data(dtype, 2, 2, 3, 2, 2)])]
    check(*cases)


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_lrn(dtype):
    x = data(dtype, 2, 7, 3, 4)
    check(Case("lrn", [x], {"size": 3}), Case("lrn", [x], {"size": 5, "alpha": float(np.float32(1e-4)), "beta": 0.75, "bias": 2.0}),
          Case("lrn", [x], {"size": 2, "beta": 0.5}), Case("lrn", [data(dtype, 1, 3, 5)], {"size": 7, "beta": 1.0}))


# ---- resize -------------------------------------------------------------------------------------------------------


def _resize(x: np.ndarray, scales=None, sizes=None, roi=None, **attrs) -> Case:
    inputs = [x, None if roi is None else Const(np.asarray(roi, np.float32)),
              None if scales is None else Const(np.asarray(scales, np.float32))]
    if sizes is not None:
        inputs.append(Const(np.asarray(sizes, np.int64)))
    return Case("resize", inputs, attrs)


@pytest.mark.parametrize("dtype", ["f32", "f16", "u8", "i32"])
def test_resize(dtype):
    x = data(dtype, 1, 2, 4, 5)
    up, down = [1, 1, 2.0, 1.5], [1, 1, 0.6, 0.5]
    cases = [_resize(x, up, mode="nearest", nearest_mode=n, coordinate_transformation_mode=c)
             for n in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
             for c in ("half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn")]
    cases += [_resize(x, s, mode=m, coordinate_transformation_mode=c) for s in (up, down) for m in ("linear", "cubic")
              for c in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")]
    cases += [_resize(x, down, mode="linear", antialias=1), _resize(x, down, mode="cubic", antialias=1, cubic_coeff_a=-0.5),
              _resize(x, up, mode="cubic", exclude_outside=1),
              _resize(x, sizes=[1, 2, 3, 9], mode="linear"), _resize(x, sizes=[7, 7], axes=[2, 3], mode="nearest",
                                                                      keep_aspect_ratio_policy="not_larger"),
              _resize(x, sizes=[6, 6], axes=[-1, 2], mode="cubic", keep_aspect_ratio_policy="not_smaller"),
              _resize(x, up, roi=[0, 0, 0.2, 0.3, 1, 1, 0.9, 1.2], mode="linear",
                      coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.0),
              _resize(x, up, roi=[0, 0, 0.2, -0.3, 1, 1, 0.9, 0.8], mode="nearest",
                      coordinate_transformation_mode="tf_crop_and_resize"),
              _resize(data(dtype, 3, 4), [1.0, 1.0], mode="linear")]
    for case in cases:
        case.rtol = 1e-2 if dtype == "f16" else 1e-5
    check(*cases)


# ---- the light model zoo ---------------------------------------------------------------------------------------------

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(onnx.__file__)))


def _light_cases() -> list:
    return sorted(load_model_tests(kind="real"), key=lambda c: c.name)


@pytest.mark.slow
@pytest.mark.conformance
@pytest.mark.parametrize("case", _light_cases(), ids=lambda c: c.model_name)
def test_light_model_compiled_matches_interpreter(case):
    path = os.path.join(_ROOT, case.url)
    model = onnx.load(path)
    initialized = {t.name for t in model.graph.initializer}
    feeds = {x.name: Runner.generate_dummy_data(x, seed=0, name=case.model_name, random=False)
             for x in model.graph.input if x.name not in initialized}
    got = CompiledBackend.prepare(model).run(feeds)
    want = InterpreterBackend.prepare(model).run(feeds)
    prefix = os.path.splitext(path)[0]
    for i, (y, e) in enumerate(zip(got, want)):
        stored = numpy_helper.to_array(onnx.load_tensor(f"{prefix}_output_{i}.pb"))
        assert y.dtype == e.dtype and y.shape == e.shape
        np.testing.assert_allclose(y, e, rtol=case.rtol, atol=max(case.atol, 1e-6), err_msg=f"{case.model_name} output {i}")
        np.testing.assert_allclose(y, stored, rtol=case.rtol, atol=case.atol, err_msg=f"{case.model_name} vs stored output")

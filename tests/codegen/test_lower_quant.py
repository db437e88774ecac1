"""Compiled quantization and QONNX ops against the interpreter: integer results bit for bit (rounding ties, saturation,
NaN, int32 wraparound), float results to a few ulps; per-tensor / per-axis / blocked parameters, every int dtype."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tritc
from tritc.errors import ResourceLimitError
from tritc.ir.interpreter import run
from tritc.ir.text import parse_graph

RNG = np.random.default_rng(7)
BF16 = np.dtype(ml_dtypes.bfloat16)


def compare(text: str, feeds: dict[str, np.ndarray], rtol: float = 1e-6) -> dict[str, np.ndarray]:
    """Compile `text`, run it and the interpreter on `feeds`: identical ints, close floats; returns the outputs."""
    ref = run(parse_graph(text), feeds)
    model = tritc.compile(parse_graph(text), pipeline="none")
    got = dict(zip(ref, model.run(list(ref), feeds)))
    for name, want in ref.items():
        out = got[name]
        assert out.dtype == want.dtype and out.shape == want.shape, (name, out.dtype, out.shape, want.dtype, want.shape)
        if want.dtype.kind == "f" or want.dtype == BF16:
            np.testing.assert_allclose(out.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=0, equal_nan=True,
                                       err_msg=name)
        elif want.dtype.kind == "V":  # 4- and 2-bit ints: the same bytes (value in the low bits, the rest zero)
            np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8), err_msg=name)
        else:
            np.testing.assert_array_equal(out, want, err_msg=name)
    return got


def ints(dtype, shape) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


# ---- QuantizeLinear / DequantizeLinear -------------------------------------------------------------------------


def test_quantize_per_tensor_ties_nan_saturation():
    # x / scale lands exactly on n + 0.5 for even, odd and negative n; then NaN, +-inf and out-of-range values
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.0, np.nan, np.inf, -np.inf, 1e6, -1e6, 200.25, -129.0], np.float32)
    scale, zp8, zp16 = np.float32(0.5), np.uint8(3), np.int16(-7)
    got = compare("""graph @g(%x: f32[14], %s: f32[], %zu: u8[], %zi: i16[]) -> (%u: u8[14], %i: i8[14], %h: i16[14], %w: u16[14]) {
  %u = quantize_linear(%x, %s, %zu) : u8[14]
  %i = quantize_linear(%x, %s) {output_dtype = i8} : i8[14]
  %h = quantize_linear(%x, %s, %zi) : i16[14]
  %w = quantize_linear(%x, %s) {output_dtype = u16} : u16[14]
  return %u, %i, %h, %w
}""", {"x": x * scale, "s": scale, "zu": zp8, "zi": zp16})
    assert got["i"][:6].tolist() == [0, 2, 2, 0, -2, -2]  # half to even, not half away from zero
    assert got["i"][7] == -128 and got["u"][7] == 0  # NaN -> the range minimum


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_quantize_low_precision_division(dtype):
    # the division rounds in the scale's dtype before the tie-breaking round
    x = (np.arange(-40, 40, dtype=np.float32) * np.float32(0.37)).astype(dtype)
    scale = np.array(0.1, dtype)
    name = "f16" if dtype == np.float16 else "bf16"
    compare(f"""graph @g(%x: {name}[80], %s: {name}[]) -> (%y: i8[80]) {{
  %y = quantize_linear(%x, %s) {{output_dtype = i8}} : i8[80]
  return %y
}}""", {"x": x, "s": scale})


def test_quantize_mixed_dtypes_and_precision():
    x32 = RNG.integers(-1000, 1000, size=(3, 5)).astype(np.int32)
    xf = RNG.standard_normal((3, 5)).astype(np.float32) * 20
    compare("""graph @g(%a: i32[3,5], %s: f32[], %b: f32[3,5], %h: f16[]) -> (%p: u8[3,5], %q: i8[3,5], %r: i8[3,5]) {
  %p = quantize_linear(%a, %s) : u8[3,5]
  %q = quantize_linear(%b, %h) {output_dtype = i8} : i8[3,5]
  %r = quantize_linear(%b, %s) {output_dtype = i8, precision = f16} : i8[3,5]
  return %p, %q, %r
}""", {"a": x32, "s": np.float32(7.0), "b": xf, "h": np.float16(0.3)})


def test_quantize_per_axis_and_blocked():
    x = RNG.standard_normal((2, 5, 3)).astype(np.float32) * 50
    axis_scale = np.array([0.5, 1.0, 2.0, 0.25, 3.0], np.float32)
    axis_zero = ints(np.int8, (5,))
    block_scale = RNG.uniform(0.1, 2, size=(2, 3, 3)).astype(np.float32)  # 5 = 2 + 2 + 1: a short last block
    block_zero = ints(np.uint8, (2, 3, 3))
    compare("""graph @g(%x: f32[2,5,3], %s: f32[5], %z: i8[5], %bs: f32[2,3,3], %bz: u8[2,3,3]) -> (%y: i8[2,5,3], %w: u8[2,5,3]) {
  %y = quantize_linear(%x, %s, %z) : i8[2,5,3]
  %w = quantize_linear(%x, %bs, %bz) {axis = -2, block_size = 2} : u8[2,5,3]
  return %y, %w
}""", {"x": x, "s": axis_scale, "z": axis_zero, "bs": block_scale, "bz": block_zero})


def test_quantize_empty():
    compare("""graph @g(%x: f32[0,3], %s: f32[]) -> (%y: u8[0,3]) {
  %y = quantize_linear(%x, %s) : u8[0,3]
  return %y
}""", {"x": np.zeros((0, 3), np.float32), "s": np.float32(1)})


def test_dequantize_every_int_dtype():
    feeds = {"s": np.float32(0.37)}
    lines, outs, params = [], [], []
    for name, dt in (("i8", np.int8), ("u8", np.uint8), ("i16", np.int16), ("u16", np.uint16), ("i32", np.int32)):
        feeds[f"x{name}"], feeds[f"z{name}"] = ints(dt, (4, 6)), ints(dt, ())
        params += [f"%x{name}: {name}[4,6]", f"%z{name}: {name}[]"]
        lines.append(f"  %y{name} = dequantize_linear(%x{name}, %s, %z{name}) : f32[4,6]")
        outs.append(f"%y{name}")
    text = (f"graph @g({', '.join(params)}, %s: f32[]) -> ({', '.join(o + ': f32[4,6]' for o in outs)}) {{\n"
            + "\n".join(lines) + f"\n  return {', '.join(outs)}\n}}")
    compare(text, feeds)


def test_dequantize_per_axis_blocked_low_precision():
    x = ints(np.int8, (3, 4))
    compare("""graph @g(%x: i8[3,4], %s: f16[4], %z: i8[4], %b: bf16[3,2], %c: f32[2,4]) -> (%y: f16[3,4], %w: bf16[3,4], %v: f16[3,4]) {
  %y = dequantize_linear(%x, %s, %z) {axis = 1} : f16[3,4]
  %w = dequantize_linear(%x, %b) {axis = 1, block_size = 2} : bf16[3,4]
  %v = dequantize_linear(%x, %c) {axis = 0, block_size = 2, output_dtype = f16} : f16[3,4]
  return %y, %w, %v
}""", {"x": x, "s": np.array([0.1, 0.2, 0.3, 1e-3], np.float16), "z": ints(np.int8, (4,)),
       "b": RNG.uniform(0.1, 1, (3, 2)).astype(BF16), "c": RNG.uniform(0.1, 1, (2, 4)).astype(np.float32)})


SUB_BYTE = [("i4", ml_dtypes.int4, -8, 7), ("u4", ml_dtypes.uint4, 0, 15), ("i2", ml_dtypes.int2, -2, 1),
            ("u2", ml_dtypes.uint2, 0, 3)]


@pytest.mark.parametrize("name, dtype, lo, hi", SUB_BYTE, ids=[s[0] for s in SUB_BYTE])
def test_quantize_dequantize_sub_byte(name, dtype, lo, hi):
    """QuantizeLinear to and DequantizeLinear from 4- and 2-bit ints, per tensor (ties, NaN, saturation), per axis
    and blocked (a short last block), with zero points of the same type."""
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, np.nan, np.inf, -np.inf, 100.0, -100.0, 1.0], np.float32)
    xs = RNG.standard_normal((5, 3)).astype(np.float32) * 4
    codes = RNG.integers(lo, hi, size=(5, 3), endpoint=True).astype(dtype)
    zero = np.array(hi // 2, dtype)
    feeds = {"x": x, "s": np.float32(1.0), "z": zero, "xs": xs, "as": RNG.uniform(0.5, 2, 3).astype(np.float32),
             "az": RNG.integers(lo, hi, 3, endpoint=True).astype(dtype), "bs": RNG.uniform(0.5, 2, (3, 3)).astype(np.float32),
             "bz": RNG.integers(lo, hi, (3, 3), endpoint=True).astype(dtype), "q": codes}
    got = compare(f"""graph @g(%x: f32[12], %s: f32[], %z: {name}[], %xs: f32[5,3], %as: f32[3], %az: {name}[3], %bs: f32[3,3],
        %bz: {name}[3,3], %q: {name}[5,3]) -> (%t: {name}[12], %a: {name}[5,3], %b: {name}[5,3], %dt: f32[5,3], %da: f32[5,3],
        %db: f32[5,3]) {{
  %t = quantize_linear(%x, %s) {{output_dtype = {name}}} : {name}[12]
  %a = quantize_linear(%xs, %as, %az) : {name}[5,3]
  %b = quantize_linear(%xs, %bs, %bz) {{axis = 0, block_size = 2}} : {name}[5,3]
  %dt = dequantize_linear(%q, %s, %z) : f32[5,3]
  %da = dequantize_linear(%q, %as, %az) : f32[5,3]
  %db = dequantize_linear(%q, %bs, %bz) {{axis = 0, block_size = 2}} : f32[5,3]
  return %t, %a, %b, %dt, %da, %db
}}""", feeds)
    rint = [0, 2, 2, 0, -2, -2]  # half to even
    want = [min(max(v, lo), hi) for v in rint] + [lo, hi, lo, hi, lo, 1]  # saturated; NaN -> the minimum
    assert got["t"].astype(np.int64).tolist() == want
    np.testing.assert_array_equal(got["dt"], (codes.astype(np.float32) - float(hi // 2)))


@pytest.mark.parametrize("x", [
    RNG.standard_normal((3, 7)).astype(np.float32) * 4,
    np.zeros((3, 7), np.float32),
    np.array([[np.nan, 1.0, -2.0, 0.5, np.nan, 3.0, -0.25]], np.float32),
    np.abs(RNG.standard_normal((2, 9))).astype(np.float32) + 1,  # all positive: the range widens to 0
], ids=["normal", "zeros", "nan", "positive"])
def test_dynamic_quantize(x):
    compare(f"""graph @g(%x: f32[{x.shape[0]},{x.shape[1]}]) -> (%y: u8[{x.shape[0]},{x.shape[1]}], %s: f32[], %z: u8[]) {{
  %y, %s, %z = dynamic_quantize_linear(%x) : u8[{x.shape[0]},{x.shape[1]}], f32[], u8[]
  return %y, %s, %z
}}""", {"x": x}, rtol=0)


# ---- integer matmul ----------------------------------------------------------------------------------------------


def test_matmul_integer_zero_points_and_broadcast():
    feeds = {"a": ints(np.uint8, (2, 3, 5)), "b": ints(np.uint8, (5, 4)), "za": ints(np.uint8, (3,)), "zb": ints(np.uint8, (4,)),
             "c": ints(np.int8, (5,)), "d": ints(np.int8, (2, 5, 3)), "zc": ints(np.int8, ()), "zd": ints(np.int8, ())}
    compare("""graph @g(%a: u8[2,3,5], %b: u8[5,4], %za: u8[3], %zb: u8[4], %c: i8[5], %d: i8[2,5,3], %zc: i8[], %zd: i8[]) \
-> (%p: i32[2,3,4], %q: i32[2,3], %r: i32[2,3,4]) {
  %p = matmul_integer(%a, %b, %za, %zb) : i32[2,3,4]
  %q = matmul_integer(%c, %d, %zc, %zd) : i32[2,3]
  %r = matmul_integer(%a, %b) : i32[2,3,4]
  return %p, %q, %r
}""", feeds)


def test_matmul_integer_past_the_int32_bound_is_refused():
    # 255 * 255 * k > 2**31: the interpreter's int64 -> int32 cast wraps (ONNX's int32 accumulation), but compiled
    # code refuses the node at compile time rather than wrap (docs/INTEGER.md; tests/hardening/test_integer_bounds.py)
    k = 33100
    a, b = np.full((1, k), 255, np.uint8), np.full((k, 2), 255, np.uint8)
    text = f"""graph @g(%a: u8[1,{k}], %b: u8[{k},2]) -> (%y: i32[1,2]) {{
  %y = matmul_integer(%a, %b) : i32[1,2]
  return %y
}}"""
    assert run(parse_graph(text), {"a": a, "b": b})["y"][0, 0] == np.int64(255 * 255 * k).astype(np.int32) < 0
    with pytest.raises(ResourceLimitError, match="K = 33100 .* K <= 33025"):
        tritc.compile(parse_graph(text), pipeline="none")


def test_matmul_integer_empty():
    compare("""graph @g(%a: i8[3,0], %b: i8[0,2], %c: i8[0,4], %d: i8[4,2]) -> (%y: i32[3,2], %z: i32[0,2]) {
  %y = matmul_integer(%a, %b) : i32[3,2]
  %z = matmul_integer(%c, %d) : i32[0,2]
  return %y, %z
}""", {"a": ints(np.int8, (3, 0)), "b": ints(np.int8, (0, 2)), "c": ints(np.int8, (0, 4)), "d": ints(np.int8, (4, 2))})


@pytest.mark.parametrize("sdt", ["f32", "f16", "bf16"])
def test_qlinear_matmul(sdt):
    np_sdt = {"f32": np.float32, "f16": np.float16, "bf16": BF16}[sdt]
    feeds = {"a": ints(np.uint8, (2, 3, 6)), "as": np.array([0.02, 0.05, 0.1], np_sdt), "az": ints(np.uint8, ()),
             "b": ints(np.int8, (6, 1500)), "bs": RNG.uniform(0.01, 0.1, 1500).astype(np_sdt), "bz": ints(np.int8, (1500,)),
             "ys": np.array(0.7, np_sdt), "yz": ints(np.int8, ())}
    # 1500 columns: more than one column tile of the accumulator
    compare(f"""graph @g(%a: u8[2,3,6], %as: {sdt}[3], %az: u8[], %b: i8[6,1500], %bs: {sdt}[1500], %bz: i8[1500], \
%ys: {sdt}[], %yz: i8[]) -> (%y: i8[2,3,1500]) {{
  %y = qlinear_matmul(%a, %as, %az, %b, %bs, %bz, %ys, %yz) : i8[2,3,1500]
  return %y
}}""", feeds)


def test_qlinear_matmul_requantize_ties():
    # acc * multiplier lands on n + 0.5: the requantization rounds half to even too
    a = np.array([[1, 3, 5, 7, 9, 11, 250]], np.uint8).reshape(7, 1)
    compare("""graph @g(%a: u8[7,1], %s: f32[], %z: u8[], %b: u8[1,1], %y: f32[], %yz: u8[]) -> (%q: u8[7,1]) {
  %q = qlinear_matmul(%a, %s, %z, %b, %s, %z, %y, %yz) : u8[7,1]
  return %q
}""", {"a": a, "s": np.float32(1), "z": np.uint8(0), "b": np.array([[1]], np.uint8), "y": np.float32(2), "yz": np.uint8(10)})


# ---- integer conv ------------------------------------------------------------------------------------------------

CONV_CASES = [
    ("1d", (1, 2, 9), (3, 2, 3), "{pads = [1, 2], strides = [2]}"),
    ("2d", (2, 3, 7, 6), (4, 3, 3, 2), "{dilations = [2, 1], pads = [2, 1, 0, 1], strides = [1, 2]}"),
    ("group", (1, 4, 5, 5), (6, 2, 3, 3), "{group = 2, pads = [1, 1, 1, 1]}"),
    ("same", (1, 2, 6, 5), (2, 2, 3, 3), "{auto_pad = \"SAME_UPPER\", strides = [2, 2]}"),
    ("3d", (1, 2, 4, 3, 5), (2, 2, 2, 2, 3), "{pads = [0, 1, 1, 1, 0, 1]}"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_integer(case):
    _, xs, ws, attrs = case
    x, w = ints(np.uint8, xs), ints(np.uint8, ws)
    want = run(_conv_graph("conv_integer", xs, ws, attrs, "i32", "(%x, %w, %xz, %wz)", "%xz: u8[], %wz: u8[" + str(ws[0]) + "]"),
               {"x": x, "w": w, "xz": np.uint8(128), "wz": ints(np.uint8, (ws[0],))})["y"]
    text = _conv_text("conv_integer", xs, ws, attrs, "i32", want.shape, "(%x, %w, %xz, %wz)", f"%xz: u8[], %wz: u8[{ws[0]}]")
    compare(text, {"x": x, "w": w, "xz": np.uint8(128), "wz": ints(np.uint8, (ws[0],))})


@pytest.mark.parametrize("case", CONV_CASES[1:3], ids=[c[0] for c in CONV_CASES[1:3]])
def test_qlinear_conv(case):
    _, xs, ws, attrs = case
    feeds = {"x": ints(np.int8, xs), "xs": np.float32(0.05), "xz": ints(np.int8, ()), "w": ints(np.int8, ws),
             "ws": RNG.uniform(0.001, 0.01, ws[0]).astype(np.float32), "wz": np.zeros(ws[0], np.int8),
             "ys": np.float32(0.3), "yz": ints(np.int8, ()), "bias": RNG.integers(-5000, 5000, ws[0]).astype(np.int32)}
    sig = f"%xs: f32[], %xz: i8[], %ws: f32[{ws[0]}], %wz: i8[{ws[0]}], %ys: f32[], %yz: i8[], %bias: i32[{ws[0]}]"
    args = "(%x, %xs, %xz, %w, %ws, %wz, %ys, %yz, %bias)"
    want = run(_conv_graph("qlinear_conv", xs, ws, attrs, "i8", args, sig, "i8"), feeds)["y"]
    compare(_conv_text("qlinear_conv", xs, ws, attrs, "i8", want.shape, args, sig, "i8"), feeds)


def _conv_text(op: str, xs, ws, attrs: str, out: str, out_shape, args: str, extra: str, xdt: str = "u8") -> str:
    dims = ",".join(map(str, out_shape)) if out_shape is not None else ",".join("?" * len(xs))
    return f"""graph @g(%x: {xdt}[{','.join(map(str, xs))}], %w: {xdt}[{','.join(map(str, ws))}], {extra}) -> (%y: {out}[{dims}]) {{
  %y = {op}{args} {attrs} : {out}[{dims}]
  return %y
}}"""


def _conv_graph(op: str, xs, ws, attrs: str, out: str, args: str, extra: str, xdt: str = "u8"):
    """The graph with its result shape left to the type rule (run through infer-shapes)."""
    from tritc.passes.infer_shapes import InferShapes

    g = parse_graph(_conv_text(op, xs, ws, attrs, out, None, args, extra, xdt))
    InferShapes().run(g)
    return g


# ---- QONNX -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"])
def test_qonnx_quant_rounding_modes(mode):
    x = np.concatenate([np.arange(-6, 6.5, 0.5), [np.nan, np.inf, -np.inf, 0.3, -0.3, 100]]).astype(np.float32).reshape(1, 31)
    scale = np.array([[0.5], [1.0], [0.25]], np.float32)
    compare(f"""graph @g(%x: f32[1,31], %s: f32[3,1], %z: f32[]) -> (%y: f32[3,31], %n: f32[3,31]) {{
  %b = constant 3.0 : f32[]
  %y = quant(%x, %s, %z, %b) {{rounding_mode = "{mode}"}} : f32[3,31]
  %n = quant(%x, %s, %z, %b) {{narrow = 1, rounding_mode = "{mode}", signed = 0}} : f32[3,31]
  return %y, %n
}}""", {"x": x, "s": scale, "z": np.float32(1.0)})


def test_qonnx_bipolar():
    x = np.array([[-1.5, -0.0, 0.0, 2.0, np.nan]], np.float32)
    compare("""graph @g(%x: f32[1,5], %s: f32[2,1]) -> (%y: f32[2,5]) {
  %y = bipolar_quant(%x, %s) : f32[2,5]
  return %y
}""", {"x": x, "s": np.array([[0.5], [2.0]], np.float32)})

"""fused_elementwise through the LLVM backend: bodies of several ops evaluated per element with the elementwise
emitters, compared with the interpreter (which runs the body op by op). 16-bit float bodies must round after each
op as the interpreter does; mixed dtypes, casts, comparisons, broadcasting operands, body constants and zero-size
results; and graphs fused by the fuse-elementwise pass.
"""

from __future__ import annotations

import numpy as np
import pytest

import tritc
from tritc.ir.interpreter import run

from .helpers import build
from .test_lower_elementwise import ACTIVATIONS, FUNCTIONS, TOL, Case, check, data


def body(sig: str, *lines: str, ret: str) -> str:
    """A body graph: `sig` lists the operands ("%in0: f32[*], %in1: f32[*]"), `ret` the result ("%r: f32[*]")."""
    return f"graph @fused({sig}) -> ({ret}) {{ {'  '.join(lines)}  return {ret.split(':')[0]} }}"


def fused(text: str, *inputs: np.ndarray, approx: bool = False) -> Case:
    return Case("fused_elementwise", list(inputs), {"body": text}, approx=approx)


SILU_SCALED = body("%in0: f32[*], %in1: f32[*]", "%c0 = constant 0.5 : f32[]", "%t0 = add(%in0, %in1) : f32[*]",
                   "%t1 = sigmoid(%t0) : f32[*]", "%t2 = mul(%t0, %t1) : f32[*]", "%t3 = mul(%t2, %c0) : f32[*]",
                   ret="%t3: f32[*]")


def test_silu_chain_with_broadcasting_and_zero_size():
    check(fused(SILU_SCALED, data("f32", 4, 16), data("f32", 16), approx=True),
          fused(SILU_SCALED, data("f32", 4, 1), data("f32", 1, 5), approx=True),
          fused(SILU_SCALED, data("f32"), data("f32", 3, 2, 7), approx=True),
          fused(SILU_SCALED, data("f32", 0, 16), data("f32", 16), approx=True))


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_16_bit_bodies_round_after_every_op(dtype):
    """a * b + c: the product is rounded to the dtype before the sum, as the interpreter's separate ops do."""
    t = f"{dtype}[*]"
    text = body(f"%in0: {t}, %in1: {t}, %in2: {t}", f"%t0 = mul(%in0, %in1) : {t}", f"%t1 = add(%t0, %in2) : {t}",
                f"%t2 = exp(%t1) : {t}", f"%t3 = sub(%t2, %t0) : {t}", ret=f"%t3: {t}")
    a, b, c = (data(dtype, 300, lo=-1.5, hi=1.5, specials=False) for _ in range(3))
    sums = body(f"%in0: {t}, %in1: {t}", f"%t0 = mul(%in0, %in1) : {t}", f"%t1 = add(%t0, %in0) : {t}",
                f"%t2 = sub(%t1, %in1) : {t}", ret=f"%t2: {t}")
    check(fused(text, a, b, c, approx=True), fused(sums, a, b))  # the second is exact: a wrong rounding shows


def test_mixed_dtypes_casts_comparisons_and_select():
    text = body("%in0: f32[*], %in1: i32[*], %in2: bool[*]",
                "%c0 = constant 3 : i32[]",
                "%t0 = cast(%in0) {to = i32} : i32[*]", "%t1 = mul(%t0, %in1) : i32[*]",
                "%t2 = bit_shift(%t1, %c0) {direction = \"RIGHT\"} : i32[*]",
                "%t3 = cast(%t2) {to = f32} : f32[*]", "%t4 = greater(%t3, %in0) : bool[*]", "%t5 = xor(%t4, %in2) : bool[*]",
                "%t6 = neg(%in0) : f32[*]", "%t7 = where(%t5, %t3, %t6) : f32[*]", ret="%t7: f32[*]")
    ints = body("%in0: u8[*], %in1: u8[*]", "%c0 = constant 7 : u8[]", "%t0 = mod(%in0, %c0) : u8[*]",
                "%t1 = bitwise_xor(%t0, %in1) : u8[*]", "%t2 = div(%t1, %in0) : u8[*]", "%t3 = max(%t2, %t0, %in1) : u8[*]",
                ret="%t3: u8[*]")
    check(fused(text, data("f32", 5, 8, lo=-50, hi=50), data("i32", 8), data("bool", 5, 1)),
          fused(ints, data("u8", 6, 9, lo=0, hi=25), data("u8", 9, lo=0, hi=25)))


def test_clip_leaky_relu_and_constants():
    text = body("%in0: f32[*], %in1: f32[*]", "%lo = constant -1.0 : f32[]", "%hi = constant 2.5 : f32[]",
                "%t0 = sub(%in0, %in1) : f32[*]", "%t1 = clip(%t0, %lo, %hi) : f32[*]",
                "%t2 = leaky_relu(%t1) {alpha = 0.125} : f32[*]", "%t3 = div(%t2, %in1) : f32[*]", ret="%t3: f32[*]")
    check(fused(text, data("f32", 3, 40), data("f32", 40)), fused(text, data("f32", 3, 40), data("f32", 3, 1)))


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_every_float_op_inside_a_body(dtype):
    """Each float function and activation behind an add, inside one body per op: the emitters fused.py reuses."""
    t = f"{dtype}[*]"
    cases = []
    x, y = data(dtype, 3, 20, lo=-4, hi=4), data(dtype, 20, lo=-0.5, hi=0.5)
    ops = [(f, {}) for f in FUNCTIONS] + [(op, attrs) for op, attrs in ACTIVATIONS]
    for op, attrs in ops:
        attr_text = " {" + ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in attrs.items()) + "}" if attrs else ""
        text = body(f"%in0: {t}, %in1: {t}", f"%t0 = add(%in0, %in1) : {t}", f"%t1 = {op}(%t0){attr_text} : {t}",
                    f"%t2 = mul(%t1, %in1) : {t}", ret=f"%t2: {t}")
        cases.append(Case("fused_elementwise", [x, y], {"body": text}, tol=(TOL[dtype][0], 1e-6)))
    check(*cases)


def test_fuse_elementwise_pass_then_compile():
    """A graph fused by the pass computes what the unfused graph does in the interpreter."""
    g, feeds = build([Case("add", [data("f32", 8, 33), data("f32", 33)])])
    a = g.outputs[0]
    s = g.add("sigmoid", [a], [a.type]).output
    m = g.add("mul", [a, s], [a.type]).output
    r = g.add("relu", [m], [a.type]).output
    g.outputs = [r]
    expected = run(g, feeds)[r.name]
    model = tritc.compile(g, passes="fuse-elementwise")
    assert [n.op for n in model.graph if n.op not in ("weight", "constant")] == ["fused_elementwise"]
    np.testing.assert_allclose(model.run(None, feeds)[0], expected, rtol=TOL["f32"][0], atol=1e-37, equal_nan=True)

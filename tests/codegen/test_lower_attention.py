"""Compiled transformer ops against the interpreter: Attention (3-D / 4-D, GQA, masks of every rank and kind, causal
and windowed with a KV cache, valid lengths, softcap, qk outputs, fully masked rows, f16 / bf16 / f64),
RotaryEmbedding, SwiGLU and LinearAttention (every update rule)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tritc
from tritc.ir.interpreter import run
from tritc.ir.text import parse_graph

RNG = np.random.default_rng(11)
BF16 = np.dtype(ml_dtypes.bfloat16)
NP = {"f32": np.float32, "f16": np.float16, "bf16": BF16, "f64": np.float64}
# f16 / bf16: an ulp where an intermediate rounds the other way (accumulation order); f32 / f64: accumulation order
TOL = {"f32": (1e-5, 1e-6), "f64": (1e-12, 1e-12), "f16": (2e-3, 2e-3), "bf16": (1.6e-2, 1.6e-2)}


def compare(text: str, feeds: dict[str, np.ndarray], dtype: str = "f32") -> dict[str, np.ndarray]:
    with np.errstate(all="ignore"):  # exp overflows to inf on purpose in some cases
        ref = run(parse_graph(text), feeds)
    model = tritc.compile(parse_graph(text), pipeline="none")
    got = dict(zip(ref, model.run(list(ref), feeds)))
    rtol, atol = TOL[dtype]
    for name, want in ref.items():
        out = got[name]
        assert out.dtype == want.dtype and out.shape == want.shape, (name, out.dtype, out.shape, want.dtype, want.shape)
        np.testing.assert_allclose(out.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=name)
    return got


def graph(params: list[str], results: list[str], *body: str) -> str:
    """IR text of @g: `params` and `results` as "%name: type", body lines without indentation."""
    names = ", ".join(r.split(":")[0] for r in results)
    return (f"graph @g({', '.join(params)}) -> ({', '.join(results)}) {{\n" + "".join(f"  {line}\n" for line in body)
            + f"  return {names}\n}}")


def rand(shape, dtype: str = "f32", scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(NP[dtype])


def t(dtype: str, shape) -> str:
    return f"{dtype}[{','.join(map(str, shape))}]"


# ---- Attention ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
def test_attention_4d_gqa_dtypes(dtype):
    q, k, v = rand((2, 4, 3, 8), dtype), rand((2, 2, 5, 8), dtype), rand((2, 2, 5, 6), dtype)
    compare(f"""graph @g(%q: {t(dtype, q.shape)}, %k: {t(dtype, k.shape)}, %v: {t(dtype, v.shape)}) -> (%y: {t(dtype, (2, 4, 3, 6))}) {{
  %y = attention(%q, %k, %v) : {t(dtype, (2, 4, 3, 6))}
  return %y
}}""", {"q": q, "k": k, "v": v}, dtype)


def test_attention_3d_heads_scale_softcap_and_qk_outputs():
    q, k, v = rand((2, 3, 4 * 8), scale=3), rand((2, 6, 2 * 8), scale=3), rand((2, 6, 2 * 5))
    outs, lines = [], []
    for mode in range(4):
        lines.append(f"  %y{mode}, %pk{mode}, %pv{mode}, %s{mode} = attention(%q, %k, %v) {{kv_num_heads = 2, q_num_heads = 4, "
                     f"qk_matmul_output_mode = {mode}, scale = 0.3, softcap = 2.5}} : "
                     "f32[2,3,20], f32[2,2,6,8], f32[2,2,6,5], f32[2,4,3,6]")
        outs += [f"%y{mode}: f32[2,3,20]", f"%s{mode}: f32[2,4,3,6]"]
    names = ", ".join(o.split(":")[0] for o in outs)
    compare(f"""graph @g(%q: f32[2,3,32], %k: f32[2,6,16], %v: f32[2,6,10]) -> ({', '.join(outs)}) {{
{chr(10).join(lines)}
  return {names}
}}""", {"q": q, "k": k, "v": v})


@pytest.mark.parametrize("mask_type", ["bool[5]", "bool[3,4]", "f32[1,4,1,5]", "f32[2,1,3,5]", "f32[4,3,2]"],
                         ids=["bool-rank1", "bool-short", "float-heads", "float-batch", "float-short-rank3"])
def test_attention_masks(mask_type):
    shape = tuple(int(d) for d in mask_type[mask_type.index("[") + 1:-1].split(","))
    mask = RNG.random(shape) > 0.4 if mask_type.startswith("bool") else rand(shape)
    if mask.dtype == np.float32:
        mask[..., 0] = -np.inf  # some keys forbidden outright
    q, k, v = rand((2, 4, 3, 8)), rand((2, 4, 5, 8)), rand((2, 4, 5, 8))
    compare(f"""graph @g(%q: f32[2,4,3,8], %k: f32[2,4,5,8], %v: f32[2,4,5,8], %m: {mask_type}) -> (%y: f32[2,4,3,8], %s: f32[2,4,3,5]) {{
  %y, %pk, %pv, %s = attention(%q, %k, %v, %m) {{qk_matmul_output_mode = 3}} : f32[2,4,3,8], f32[2,4,5,8], f32[2,4,5,8], f32[2,4,3,5]
  return %y, %s
}}""", {"q": q, "k": k, "v": v, "m": mask})


def test_attention_causal_with_past_windows_and_present():
    q, k, v = rand((1, 4, 3, 8)), rand((1, 2, 3, 8)), rand((1, 2, 3, 8))
    pk, pv = rand((1, 2, 4, 8)), rand((1, 2, 4, 8))
    ty = "f32[1,4,3,8], f32[1,2,7,8], f32[1,2,7,8], f32[1,4,3,7]"
    got = compare(graph(
        ["%q: f32[1,4,3,8]", "%k: f32[1,2,3,8]", "%v: f32[1,2,3,8]", "%pk: f32[1,2,4,8]", "%pv: f32[1,2,4,8]"],
        ["%y: f32[1,4,3,8]", "%ck: f32[1,2,7,8]", "%cv: f32[1,2,7,8]", "%s: f32[1,4,3,7]", "%w: f32[1,4,3,8]", "%r: f32[1,4,3,8]"],
        f"%y, %ck, %cv, %s = attention(%q, %k, %v, none, %pk, %pv) {{is_causal = 1, qk_matmul_output_mode = 2}} : {ty}",
        f"%w, %a1, %a2, %a3 = attention(%q, %k, %v, none, %pk, %pv) {{is_causal = 1, left_window_size = 2}} : {ty}",
        f"%r, %b1, %b2, %b3 = attention(%q, %k, %v, none, %pk, %pv) {{left_window_size = 1, right_window_size = 1}} : {ty}",
    ), {"q": q, "k": k, "v": v, "pk": pk, "pv": pv})
    # query i sits at position 4 + i: it sees keys 0 .. 4 + i and no later one
    assert np.isneginf(got["s"][0, 0, 0, 5:]).all() and np.isfinite(got["s"][0, 0, 2]).all()


def test_attention_nonpad_lengths_and_fully_masked_rows():
    q, k, v = rand((3, 2, 2, 4)), rand((3, 2, 6, 4)), rand((3, 2, 6, 4))
    nonpad = np.array([6, 3, 0], np.int64)  # the last batch entry has no valid key: its rows give zeros
    got = compare(graph(
        ["%q: f32[3,2,2,4]", "%k: f32[3,2,6,4]", "%v: f32[3,2,6,4]", "%n: i64[3]"], ["%y: f32[3,2,2,4]", "%p: f32[3,2,2,6]"],
        "%y, %pk, %pv, %p = attention(%q, %k, %v, none, none, none, %n) {is_causal = 1, qk_matmul_output_mode = 3} : "
        "f32[3,2,2,4], f32[3,2,6,4], f32[3,2,6,4], f32[3,2,2,6]",
    ), {"q": q, "k": k, "v": v, "n": nonpad})
    assert not got["y"][2].any() and not got["p"][2].any()


def test_attention_neg_inf_mask_row_and_nan_keys():
    q, k, v = rand((1, 1, 3, 4)), rand((1, 1, 4, 4)), rand((1, 1, 4, 4))
    mask = np.zeros((3, 4), np.float32)
    mask[1] = -np.inf  # a fully masked row: zeros, even though softmax would give NaN
    k[0, 0, 3, 0] = np.nan  # a NaN key poisons the rows that can see it
    compare("""graph @g(%q: f32[1,1,3,4], %k: f32[1,1,4,4], %v: f32[1,1,4,4], %m: f32[3,4]) -> (%y: f32[1,1,3,4]) {
  %y = attention(%q, %k, %v, %m) : f32[1,1,3,4]
  return %y
}""", {"q": q, "k": k, "v": v, "m": mask})


def test_attention_softmax_precision_f16():
    q, k, v = rand((1, 2, 4, 8), "f16", 2), rand((1, 2, 4, 8), "f16", 2), rand((1, 2, 4, 8), "f16")
    compare(graph(
        ["%q: f16[1,2,4,8]", "%k: f16[1,2,4,8]", "%v: f16[1,2,4,8]"], ["%y: f16[1,2,4,8]", "%s: f16[1,2,4,4]"],
        "%y, %a, %b, %s = attention(%q, %k, %v) {is_causal = 1, qk_matmul_output_mode = 3, softmax_precision = f32} : "
        "f16[1,2,4,8], f16[1,2,4,8], f16[1,2,4,8], f16[1,2,4,4]",
    ), {"q": q, "k": k, "v": v}, "f16")


# ---- RotaryEmbedding ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_rotary_embedding(dtype):
    x4, x3 = rand((2, 3, 5, 8), dtype), rand((2, 5, 3 * 8), dtype)
    pos = np.array([[0, 3, 9, 2, 2], [7, 6, 5, 4, 1]], np.int64)
    cos, sin = rand((10, 3), dtype), rand((10, 3), dtype)  # rotary dim 6 of 8: the last two features pass through
    cb, sb = rand((2, 5, 4), dtype), rand((2, 5, 4), dtype)
    tx4, tx3 = t(dtype, x4.shape), t(dtype, x3.shape)
    compare(graph(
        [f"%x: {tx4}", f"%y: {tx3}", "%p: i64[2,5]", f"%c: {dtype}[10,3]", f"%s: {dtype}[10,3]", f"%cb: {dtype}[2,5,4]",
         f"%sb: {dtype}[2,5,4]"],
        [f"%a: {tx4}", f"%b: {tx4}", f"%d: {tx3}", f"%e: {tx3}"],
        f"%a = rotary_embedding(%x, %c, %s, %p) {{rotary_embedding_dim = 6}} : {tx4}",
        f"%b = rotary_embedding(%x, %c, %s, %p) {{interleaved = 1, rotary_embedding_dim = 6}} : {tx4}",
        f"%d = rotary_embedding(%y, %cb, %sb) {{num_heads = 3}} : {tx3}",
        f"%e = rotary_embedding(%y, %cb, %sb) {{interleaved = 1, num_heads = 3}} : {tx3}",
    ), {"x": x4, "y": x3, "p": pos, "c": cos, "s": sin, "cb": cb, "sb": sb}, dtype)


# ---- SwiGLU --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
def test_swiglu(dtype):
    a, b = rand((3, 7), dtype, 3), rand((3, 7), dtype)
    compare(f"""graph @g(%a: {dtype}[3,7], %b: {dtype}[3,7]) -> (%y: {dtype}[3,7], %z: {dtype}[3,7]) {{
  %y = swiglu(%a, %b) : {dtype}[3,7]
  %z = swiglu(%a, %b) {{alpha = 1.702}} : {dtype}[3,7]
  return %y, %z
}}""", {"a": a, "b": b}, dtype)


# ---- LinearAttention -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule,decay_last,beta_last", [("linear", 0, 0), ("gated", 2, 0), ("gated", 8, 0), ("delta", 0, 2),
                                                       ("gated_delta", 2, 1), ("gated_delta", 8, 2)])
def test_linear_attention(rule, decay_last, beta_last):
    b, steps, hq, hkv, dk, dv = 2, 5, 4, 2, 4, 3
    feeds = {"q": rand((b, steps, hq * dk)), "k": rand((b, steps, hkv * dk), scale=0.5), "v": rand((b, steps, hkv * dv)),
             "s": rand((b, hkv, dk, dv))}
    args = "%q, %k, %v, %s"
    sig = ", ".join(f"%{n}: {t('f32', shape)}" for n, shape in
                    (("q", (b, steps, hq * dk)), ("k", (b, steps, hkv * dk)), ("v", (b, steps, hkv * dv)), ("s", (b, hkv, dk, dv))))
    if decay_last:
        feeds["g"] = -np.abs(rand((b, steps, decay_last)))
        args, sig = args + ", %g", sig + f", %g: f32[{b},{steps},{decay_last}]"
    elif beta_last:
        args += ", none"
    if beta_last:
        feeds["bt"] = RNG.random((b, steps, beta_last)).astype(np.float32)
        args, sig = args + ", %bt", sig + f", %bt: f32[{b},{steps},{beta_last}]"
    to, ts = t("f32", (b, steps, hq * dv)), t("f32", (b, hkv, dk, dv))
    text = graph([sig], [f"%o: {to}", f"%st: {ts}"],
                 f'%o, %st = linear_attention({args}) {{kv_num_heads = {hkv}, q_num_heads = {hq}, update_rule = "{rule}"}} : {to}, {ts}')
    compare(text, feeds)


def test_linear_attention_f16_no_past():
    feeds = {"q": rand((1, 3, 8), "f16"), "k": rand((1, 3, 8), "f16"), "v": rand((1, 3, 6), "f16")}
    compare("""graph @g(%q: f16[1,3,8], %k: f16[1,3,8], %v: f16[1,3,6]) -> (%o: f16[1,3,6], %st: f16[1,2,4,3]) {
  %o, %st = linear_attention(%q, %k, %v) {kv_num_heads = 2, q_num_heads = 2, scale = 0.7, update_rule = "linear"} : f16[1,3,6], f16[1,2,4,3]
  return %o, %st
}""", feeds, "f16")

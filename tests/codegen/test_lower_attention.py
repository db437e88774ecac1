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

from .helpers import Case, build, case_of, interpret_and_compile

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


# ---- Attention: the vectorised path (f32, no softcap, no qk output) ----------------------------------------------


def attention_case(hq: int, hkv: int, sq: int, kv: int, dk: int, dv: int | None = None, *, past: int = 0, mask=None,
                   nonpad=None, three_d: bool = False, **attrs) -> Case:
    """An f32 attention node on random inputs; `mask` is an array (given as is), past > 0 adds a KV cache."""
    dv = dv or dk
    batch = 2 if nonpad is None else len(nonpad)
    if three_d:
        q, k, v = rand((batch, sq, hq * dk)), rand((batch, kv, hkv * dk)), rand((batch, kv, hkv * dv))
        attrs = {"q_num_heads": hq, "kv_num_heads": hkv, **attrs}
    else:
        q, k, v = rand((batch, hq, sq, dk)), rand((batch, hkv, kv, dk)), rand((batch, hkv, kv, dv))
    caches = [rand((batch, hkv, past, dk)), rand((batch, hkv, past, dv))] if past else [None, None]
    inputs = [q, k, v, mask, *caches, nonpad]
    while inputs[-1] is None:
        inputs.pop()
    return Case("attention", inputs, attrs, n_out=3 if past else 1)


def check_cases(*cases: Case, **options) -> None:
    """Every case compiled (one graph) against the interpreter, within f32 accumulation-order rounding."""
    with np.errstate(all="ignore"):
        _, expected, got = interpret_and_compile(list(cases), **options)
    rtol, atol = TOL["f32"]
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{name}: {case_of(list(cases), name)}")


def llvm_ir(*cases: Case) -> str:
    from tritc.codegen.llvm.compiler import specialize
    from tritc.codegen.llvm.lower import lower_graph
    from tritc.codegen.llvm.memory import plan_memory
    from tritc.codegen.llvm.target import host_target
    from tritc.codegen.llvm.weights import layout_weights

    g, _ = build(list(cases))
    layout, _ = layout_weights(g)
    s = specialize(g, {})
    return str(lower_graph(s, plan_memory(s, {k: e.offset for k, e in layout.entries.items()}), layout, host_target()))


@pytest.mark.parametrize("dk", [8, 24, 64, 80])
def test_attention_vector_tails(dk):
    """Head dims that are not (or are) multiples of 16 lanes, key counts around the 16-key score blocks, GQA groups
    and single queries; 4-D and 3-D, plain and causal."""
    cases = [attention_case(hq, hkv, sq, kv, dk, dk + 8 if three_d else dk, three_d=three_d, is_causal=causal)
             for kv in (1, 5, 17, 33) for hq, hkv, sq, three_d, causal in
             ((4, 2, 3, False, 0), (3, 1, 1, True, 0), (2, 2, 20, False, 1), (6, 2, 7, True, 1))]
    check_cases(*cases)


def test_attention_masks_and_windows_on_the_vector_path():
    """Bool and float masks of every rank (short ones too) with causal rows, which skip key blocks no row can see;
    windows over a past cache; valid lengths, including absurd ones."""
    cases = []
    for kv in (5, 40):
        for shape in [(kv,), (6, kv), (2, 4, 6, kv - 3), (1, 1, 6, kv), (4, 6, kv // 2)]:
            bool_mask = RNG.random(shape) > 0.3
            float_mask = rand(shape)
            float_mask[..., 1] = -np.inf
            cases += [attention_case(4, 2, 6, kv, 16, mask=m, is_causal=1) for m in (bool_mask, float_mask)]
    causal = np.tril(np.ones((40, 40), bool))
    causal[7] = False  # a fully masked row gives zeros
    cases.append(attention_case(2, 1, 40, 40, 32, mask=causal[None, None]))
    for left, right in ((2, -1), (0, 0), (5, 3), (-1, 1)):
        cases.append(attention_case(4, 2, 6, 6, 16, past=30, is_causal=int(right < 0), left_window_size=left,
                                    right_window_size=right))
    for lengths in ([37, 3, 0, 19], [2**62, -2**62, 1, 2**40]):
        cases += [attention_case(2, 2, 5, 37, 8, nonpad=np.array(lengths, np.int64), is_causal=c) for c in (0, 1)]
    check_cases(*cases)


def test_attention_non_finite_values_in_skipped_blocks():
    """A causal row never sees the later keys, but the interpreter still computes with them: a NaN key, an infinite
    value or a float mask of +inf there makes the row NaN. Key blocks are skipped only when that cannot happen."""
    q, k, v = rand((1, 2, 48, 8)), rand((1, 2, 48, 8)), rand((1, 2, 48, 8))
    nan_k, inf_v = k.copy(), v.copy()
    nan_k[0, 1, 40, 3] = np.nan
    inf_v[0, 0, 45, 0] = np.inf
    mask = np.where(np.tril(np.ones((48, 48), bool)), 0, -np.inf).astype(np.float32)
    mask[3, 40], mask[20, 44] = np.inf, np.nan
    none_allowed = np.ones((48, 48), bool)
    none_allowed[5] = False
    cases = [Case("attention", [q, nan_k, v], {"is_causal": 1}), Case("attention", [q, k, inf_v], {"is_causal": 1}),
             Case("attention", [q, k, v, mask]), Case("attention", [q, k, inf_v, none_allowed]),
             Case("attention", [q, k * np.float32(1e37), v], {"is_causal": 1})]
    with np.errstate(all="ignore"):
        _, expected, got = interpret_and_compile(cases)
    assert np.isnan(expected["y0_0"][0, 1]).all() and np.isnan(expected["y1_0"][0, 0, :45, 0]).all()
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)


def test_attention_split_over_threads():
    check_cases(attention_case(8, 2, 64, 64, 32, is_causal=1), attention_case(4, 4, 1, 1, 64, past=700),
                attention_case(8, 2, 33, 50, 24, mask=RNG.random((33, 50)) > 0.5), threads=2)


def test_attention_takes_the_vector_path_when_it_can():
    q, k, v = rand((1, 2, 3, 8)), rand((1, 2, 5, 8)), rand((1, 2, 5, 8))
    assert "rowmeta" in llvm_ir(Case("attention", [q, k, v], {"is_causal": 1}))
    assert "rowmeta" not in llvm_ir(Case("attention", [q, k, v], {"softcap": 2.0}))
    assert "rowmeta" not in llvm_ir(Case("attention", [q, k, v], {"qk_matmul_output_mode": 1}, n_out=4))


def test_attention_kernel_shared_by_identical_nodes_only():
    """Identical nodes call one kernel; a node reading K from present_key (after a cache of 4) must not share the kernel
    of a cache-less node whose K has that shape: its queries sit 4 positions later."""
    q, pk, pv = rand((1, 4, 3, 8)), rand((1, 2, 4, 8)), rand((1, 2, 4, 8))
    k, v, k7, v7 = rand((1, 2, 3, 8)), rand((1, 2, 3, 8)), rand((1, 2, 7, 8)), rand((1, 2, 7, 8))
    cases = [Case("attention", [q, k, v, None, pk, pv], {"is_causal": 1}, n_out=3),
             Case("attention", [q, k7, v7], {"is_causal": 1}), Case("attention", [q, k7 * 2, v7], {"is_causal": 1})]
    check_cases(*cases)
    assert llvm_ir(*cases).count("define internal void @\"tritc.attention.") == 2


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

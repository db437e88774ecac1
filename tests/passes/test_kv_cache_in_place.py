"""kv-cache-in-place: fused_attention caches become capacity buffers plus one `past_len` input that gives the old
length symbol by value; the shape arithmetic that measured the past length reads past_len; the result is the
concatenated form's wherever that one is defined; and the pass refuses (graph untouched, a reason) what it cannot
rewrite."""

from __future__ import annotations

import numpy as np
import pytest

import tritc
from tritc.errors import VerificationError
from tritc.ir import parse_graph, print_graph, run, verify
from tritc.passes import PassManager, parse_pass_list

ATTENTION = ("%y, %scratch, %present_k, %present_v = fused_attention(%q, %k, %v, none, %past_k, %past_v) "
             "{causal = 1, heads = 4, kv_heads = 2, scale = 0.25} : f32[batch,4,seq,16], f32[0], "
             "f32[batch,2,past+seq,16], f32[batch,2,past+seq,16]")
SIGNATURE = ("graph @g(%q: f32[batch,4,seq,16], %k: f32[batch,2,seq,16], %v: f32[batch,2,seq,16], "
             "%past_k: f32[batch,2,past,16], %past_v: f32[batch,2,past,16])")
PRESENTS = "%present_k: f32[batch,2,past+seq,16], %present_v: f32[batch,2,past+seq,16]"

# The legacy exporter's positions: range(past, past + seq) with past read from Shape(past_key)[2].
SOURCE = f"""{SIGNATURE} -> (%y: f32[batch,4,seq,16], %pos: i64[seq], {PRESENTS}) {{
  %two = constant 2 : i64[]
  %one = constant 1 : i64[]
  %sp = shape(%past_k) : i64[4]
  %p = gather(%sp, %two) {{axis = 0}} : i64[]
  %sq = shape(%q) {{end = 3, start = 2}} : i64[1]
  %s = squeeze(%sq) : i64[]
  %end = add(%p, %s) : i64[]
  %pos = range(%p, %end, %one) : i64[seq]
  {ATTENTION}
  return %y, %pos, %present_k, %present_v
}}
"""

EXPECTED = (
    "graph @g(%q: f32[batch,4,seq,16], %k: f32[batch,2,seq,16], %v: f32[batch,2,seq,16], "
    "%past_k: f32[batch,2,past_capacity,16], %past_v: f32[batch,2,past_capacity,16], "
    "%past_len: i64[1] = past) -> (%y: f32[batch,4,seq,16], %pos: i64[seq], "
    "%present_k: f32[batch,2,past_capacity,16], %present_v: f32[batch,2,past_capacity,16]) {\n"
    "  %shape.1.c = constant [16] : i64[1]\n"
    "  %two = constant 2 : i64[]\n"
    "  %one = constant 1 : i64[]\n"
    "  %shape = shape(%past_k) {end = 2, start = 0} : i64[2]\n"
    "  %concat = concat(%shape, %past_len, %shape.1.c) {axis = 0} : i64[4]\n"
    "  %p = gather(%concat, %two) {axis = 0} : i64[]\n"
    "  %sq = shape(%q) {end = 3, start = 2} : i64[1]\n"
    "  %s = squeeze(%sq) : i64[]\n"
    "  %end = add(%p, %s) : i64[]\n"
    "  %pos = range(%p, %end, %one) : i64[seq]\n"
    "  %y, %scratch, %present_k, %present_v = fused_attention(%q, %k, %v, none, %past_k, %past_v, "
    "%past_len) {causal = 1, heads = 4, kv_heads = 2, scale = 0.25} : f32[batch,4,seq,16], f32[0], "
    "f32[batch,2,past_capacity,16], f32[batch,2,past_capacity,16]\n"
    "  return %y, %pos, %present_k, %present_v\n"
    "}\n"
)


def in_place(text: str):
    g = parse_graph(text)
    pm = PassManager(parse_pass_list("kv-cache-in-place"))
    pm.run(g)
    return g, pm.result_of("kv-cache-in-place")


def feeds(batch: int, seq: int, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = {n: rng.standard_normal((batch, h, seq, 16)).astype(np.float32) for n, h in (("q", 4), ("k", 2), ("v", 2))}
    for n in ("past_k", "past_v"):
        f[n] = rng.standard_normal((batch, 2, rows, 16)).astype(np.float32)
    return f


def test_the_capacity_form():
    g, report = in_place(SOURCE)
    assert print_graph(g) == EXPECTED
    assert report.in_place and report.caches == ["past_k", "past_v"] and report.past_len == "past_len"
    assert g.value_symbols == {"past_len": "past"}
    assert report.comment_lines() == ["// kv-cache-in-place: 2 cache inputs are buffers of past_capacity rows, %past_len "
                                      "gives the past rows they hold"]
    again = parse_graph(EXPECTED)  # the text carries which input gives which size
    assert again.value_symbols == {"past_len": "past"} and print_graph(again) == EXPECTED


def test_it_computes_the_concatenated_form():
    """Buffers of 9 rows holding 5 (the rest garbage that must not be read): the same Y and positions as the
    concatenated form on the 5 rows, the presents are the buffers with the 3 new rows after the 5, the rest as it
    was."""
    g, _ = in_place(SOURCE)
    before = parse_graph(SOURCE)
    f = feeds(2, 3, 5)
    want = run(before, f)
    buffers = {n: a for n, a in feeds(2, 3, 9, seed=1).items() if n.startswith("past")}
    for n in buffers:
        buffers[n][:, :, :5] = f[n]
    got = run(g, {**f, **buffers, "past_len": np.array([5], np.int64)})
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["pos"], np.arange(5, 8))
    for past, present in (("past_k", "present_k"), ("past_v", "present_v")):
        np.testing.assert_array_equal(got[present][:, :, :8], want[present])
        np.testing.assert_array_equal(got[present][:, :, 8:], buffers[past][:, :, 8:])


def test_compiled_it_appends_in_place_at_every_size():
    """The compiled capacity form (one generic code) with each present bound to its past input's array: Y as the
    interpreter's, the new rows written into the caller's buffers, rows after them untouched, at two capacities and
    lengths without compiling again."""
    g, _ = in_place(SOURCE)
    model = tritc.compile(g, pipeline="none", threads=1)
    assert model.stats["compilations"] == 1
    for batch, seq, past, rows in ((1, 1, 0, 4), (2, 3, 5, 11), (1, 2, 9, 11)):
        f = feeds(batch, seq, rows, seed=rows + past)
        f["past_len"] = np.array([past], np.int64)
        want = run(g, {n: a.copy() for n, a in f.items()})
        tail = {n: f[n][:, :, past + seq:].copy() for n in ("past_k", "past_v")}
        y, pos, pk, pv = model.run(None, f, outputs={"present_k": f["past_k"], "present_v": f["past_v"]})
        assert pk is f["past_k"] and pv is f["past_v"]
        np.testing.assert_allclose(y, want["y"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(pos, np.arange(past, past + seq))
        np.testing.assert_array_equal(pk, want["present_k"])
        np.testing.assert_array_equal(pv[:, :, past + seq:], tail["past_v"])
    assert model.stats["compilations"] == 1


def test_the_old_length_symbol_is_bound_from_past_len():
    """past_len gives `past`: a call binds it from the value (the positions are [past, past+seq)), and a value that
    does not fit the buffers is the kernel's one clear error."""
    from tritc.errors import InputShapeError, RunError

    g, _ = in_place(SOURCE)
    model = tritc.compile(g, pipeline="none", threads=1)
    f = feeds(1, 2, 4)
    with pytest.raises(RunError, match="past_len plus the seq new rows must fit the cache's past_capacity rows"):
        model.run(None, {**f, "past_len": np.array([3], np.int64)})
    with pytest.raises(InputShapeError, match="input 'past_len' holds the size 'past': one integer >= 0, not \\[-1\\]"):
        model.run(None, {**f, "past_len": np.array([-1], np.int64)})


REFUSED = [
    ("read by another op", "%r = relu(%past_k) : f32[batch,2,past,16]", "%r: f32[batch,2,past,16]", "%r",
     "input %past_k is also read by node '%r' (relu): a buffer of capacity rows is not the past tensor it reads"),
    ("present read inside", "%n = shape(%present_v) : i64[4]", "%n: i64[4]", "%n",
     "%present_v is read by node '%n' (shape) as well"),
]


@pytest.mark.parametrize("extra,result,name,reason", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_what_it_cannot_rewrite_is_left_as_it_was(extra, result, name, reason):
    text = f"""{SIGNATURE} -> (%y: f32[batch,4,seq,16], {result}, {PRESENTS}) {{
  {ATTENTION}
  {extra}
  return %y, {name}, %present_k, %present_v
}}
"""
    g, report = in_place(text)
    assert not report.in_place and reason in report.reason
    assert print_graph(g) == print_graph(parse_graph(text)) and not g.value_symbols
    assert report.comment_lines() == [f"// kv-cache-in-place: not done: {report.reason}"]


def test_two_length_symbols_are_refused():
    second = ("%y2, %s2, %pk2o, %pv2o = fused_attention(%q, %k, %v, none, %pk2, %pv2) {heads = 4, kv_heads = 2, "
              "scale = 0.25} : f32[batch,4,seq,16], f32[0], f32[batch,2,past2+seq,16], f32[batch,2,past2+seq,16]")
    inputs = SIGNATURE.replace(")", ", %pk2: f32[batch,2,past2,16], %pv2: f32[batch,2,past2,16])")
    outputs = (f"%y: f32[batch,4,seq,16], %y2: f32[batch,4,seq,16], {PRESENTS}, %pk2o: f32[batch,2,past2+seq,16], "
               f"%pv2o: f32[batch,2,past2+seq,16]")
    text = f"""{inputs} -> ({outputs}) {{
  {ATTENTION}
  {second}
  return %y, %y2, %present_k, %present_v, %pk2o, %pv2o
}}
"""
    _, report = in_place(text)
    assert not report.in_place and report.reason == "the caches' lengths are different symbols (past, past2): one past_len gives them all"


def test_nothing_to_do_and_idempotent():
    g, report = in_place("graph @g(%x: f32[n]) -> (%y: f32[n]) {\n  %y = relu(%x) : f32[n]\n  return %y\n}\n")
    assert not report.in_place and report.reason == "no fused_attention node reads a past key/value cache"
    g, _ = in_place(SOURCE)
    pm = PassManager(parse_pass_list("kv-cache-in-place"))
    assert not pm.run(g)
    assert print_graph(g) == EXPECTED
    assert pm.result_of("kv-cache-in-place").reason == "the graph is in the capacity form already"


def test_verify_checks_the_inputs_that_give_sizes():
    g = parse_graph("graph @g(%x: f32[n], %m: f32[1] = n) -> (%y: f32[n]) {\n  %y = relu(%x) : f32[n]\n  return %y\n}\n")
    with pytest.raises(VerificationError, match="graph input %m gives the size 'n' but is f32\\[1\\], not one integer"):
        verify(g)

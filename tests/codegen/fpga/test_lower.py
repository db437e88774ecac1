"""The lowering of IR nodes to instruction streams, run on the Simulator and compared with the interpreter.

Every stream is checked statically (check_stream: tokens balanced, no deadlock, addresses in range) and run with the
Simulator's hazard check on (two engines touching the same memory at once, one writing, is an error). ternary_matmul
with int8 activations and the IEEE elementwise ops must match the interpreter bit for bit; ops built on EXP, TANH,
ERF, SIN, COS and on the vector unit's sums (its reduction order is not numpy's pairwise one) within a tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.codegen.helpers import Case, Const, build
from tritc.codegen.fpga.config import PRESETS, FpgaConfig
from tritc.codegen.fpga.isa import Op, unpack_words, wgt_word_offset
from tritc.codegen.fpga.lower import DramMap, LoweringError, build_weight_image, device_support, lower_nodes
from tritc.codegen.fpga.verify import check_stream
from tritc.errors import ResourceLimitError
from tritc.ir.graph import Graph
from tritc.ir.interpreter import run as interpret
from tritc.ir.ternary import TernaryWeight
from tritc.ir.types import DType, TensorType
from tritc.runtime.fpga import Simulator

DRAM = 1 << 25
TRANSCENDENTAL = dict(rtol=2e-6, atol=2e-6)    # EXP / TANH / ERF / SIN / COS: a few ulp (docs/ISA.md)
SUMS = dict(rtol=1e-5, atol=1e-6)              # RSUM / MM order vs numpy's pairwise sums; softmax, norms, attention


def run_device(graph: Graph, feeds: dict, preset: str | FpgaConfig = "edge", double_buffer: bool = True):
    """Lower every work node of `graph`, run the stream on the Simulator: (results by value name, stats, stream)."""
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    nodes = [n for n in graph if n.op not in ("weight", "constant")]
    for n in nodes:
        assert device_support(n, graph, cfg) is None, (n, device_support(n, graph, cfg))
    image = build_weight_image(graph, cfg)
    dram = DramMap(-(-len(image.data) // 4096) * 4096, DRAM)
    for name, a in feeds.items():
        dram.place(name, a.shape, graph.value(name).type.dtype)
    instrs = lower_nodes(nodes, graph, cfg, dram, image, double_buffer=double_buffer)
    check_stream(instrs, cfg)
    sim = Simulator(cfg, dram_bytes=DRAM)
    sim.write(image.base, image.data)
    for name, data in dram.preloads.items():
        sim.write(dram[name].addr, data)
    for name, a in feeds.items():
        sim.write(dram[name].addr, np.ascontiguousarray(a))
    sim.load_stream(instrs)
    stats = sim.run()
    out = {}
    for n in nodes:
        for v in n.outputs:
            p = dram[v.name]
            out[v.name] = sim.read(p.addr, p.nbytes).view(p.dtype.np_dtype).reshape(p.shape)
    return out, stats, instrs


def check_cases(cases: list[Case], exact: bool = True, preset: str = "edge", double_buffer: bool = True,
                tol: dict | None = None) -> dict:
    g, feeds = build(cases)
    want = interpret(g, feeds)
    got, stats, _ = run_device(g, feeds, preset, double_buffer)
    for name, w in want.items():
        if exact:
            np.testing.assert_array_equal(got[name], w, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], w, err_msg=name, **(tol or TRANSCENDENTAL))
    return stats


def rnd(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed + sum(shape)).standard_normal(shape) * scale).astype(np.float32)


# ---- ternary_matmul, int8 activations: bit-exact ------------------------------------------------------------

def ternary_graph(m_shape: tuple, k: int, n: int, granularity: str = "per_channel", group: int = 0,
                  bias: bool = False, residual: bool = False, activation: str = "none", act_scale: str = "div",
                  seed: int = 0) -> tuple[Graph, dict]:
    rng = np.random.default_rng(seed)
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, m_shape + (k,)))
    trits = rng.integers(-1, 2, (k, n)).astype(np.int8)
    scale = {"per_tensor": np.array(0.37, np.float32), "per_channel": rng.uniform(0.1, 2, n).astype(np.float32),
             "per_group": rng.uniform(0.1, 2, (k // max(group, 1), n)).astype(np.float32)}[granularity]
    w = g.add_weight("w", TernaryWeight(trits, scale, group), TensorType(DType.T2, (k, n)))
    ins = [x, w]
    feeds = {"x": (rng.standard_normal(m_shape + (k,)) * 3).astype(np.float32)}
    ins.append(g.add_weight("b", rng.standard_normal(n).astype(np.float32), TensorType(DType.F32, (n,)))
               if bias else None)
    if residual:
        ins.append(g.add_input("r", TensorType(DType.F32, m_shape + (n,))))
        feeds["r"] = rng.standard_normal(m_shape + (n,)).astype(np.float32)
    node = g.add("ternary_matmul", ins, [TensorType(DType.F32, m_shape + (n,))],
                 {"act": "int8", "activation": activation, "act_scale": act_scale}, output_names=["y"])
    g.outputs = [node.output]
    return g, feeds


@pytest.mark.parametrize("m_shape,k,n,kw", [
    ((1,), 64, 16, {}),
    ((3,), 100, 40, {"granularity": "per_tensor"}),
    ((5,), 130, 70, {"bias": True, "residual": True}),
    ((2,), 128, 33, {"granularity": "per_group", "group": 64, "activation": "relu"}),
    ((4,), 96, 20, {"granularity": "per_group", "group": 32, "act_scale": "mul_reciprocal"}),   # groups padded
    ((2, 3), 64, 48, {"residual": True}),
    ((300,), 72, 24, {"bias": True}),                       # several blocks of rows
    ((1,), 2048, 1024, {}),                                  # several weight tiles, double-buffered
    ((1,), 64, 40000, {"bias": True}),                       # a result row longer than a vector row stride
])
@pytest.mark.parametrize("preset,double_buffer", [("edge", True), ("datacenter", True), ("edge", False)])
def test_ternary_matmul_int8_is_bit_exact(m_shape, k, n, kw, preset, double_buffer):
    g, feeds = ternary_graph(m_shape, k, n, **kw)
    got, stats, _ = run_device(g, feeds, preset, double_buffer)
    np.testing.assert_array_equal(got["y"], interpret(g, feeds)["y"])
    group = kw.get("group") or k
    words = -(-group // 64) * (k // group)       # each group's column padded to whole 64-trit words
    assert stats["ternary_ops"] == int(np.prod(m_shape)) * n * words * 64


# 4 trees of 128 lanes (2 words a beat, a beat of 104 bytes), WGT of 6 beats: a block of 4 columns holds 6 words of
# each, so K = 832 (13 words) goes in K-chunks of 6, 6 and 1 (padded to 2). ACC of 12 words makes the tiles 1 or 2
# columns (inside a block, at any slot); of 1024 words, whole blocks.
TINY_WGT = FpgaConfig(name="tiny-wgt", matrix_rows=4, matrix_lanes=128, weight_buffer_bytes=6 * 104,
                      activation_buffer_bytes=4096, accumulator_buffer_bytes=48, vector_buffer_bytes=65536,
                      cache_buffer_bytes=1024, vector_lanes=16, clock_hz=250e6, dram_bandwidth=16e9,
                      dram_latency_ns=40.0, dram_bytes=DRAM).validate()


@pytest.mark.parametrize("acc_bytes,packing", [(48, "base3"), (4096, "2bit"), (4096, "base3")])
@pytest.mark.parametrize("double_buffer", [True, False])
def test_ternary_matmul_in_k_chunks_and_part_blocks_is_bit_exact(acc_bytes, packing, double_buffer):
    """ISA v3 weight tiles: K-chunks in whole beats (the last one padded), tiles of whole blocks (one contiguous run
    per block and chunk) and tiles of part of a block (one row per beat), n not a multiple of the block."""
    from dataclasses import replace

    cfg = replace(TINY_WGT, accumulator_buffer_bytes=acc_bytes, weight_packing=packing,
                  weight_buffer_bytes=6 * 4 * 2 * (13 if packing == "base3" else 16)).validate()
    g, feeds = ternary_graph((3,), 832, 11, bias=True, seed=5)
    got, stats, instrs = run_device(g, feeds, cfg, double_buffer)
    np.testing.assert_array_equal(got["y"], interpret(g, feeds)["y"])
    gemms = [i for i in instrs if i.op == Op.GEMM]
    assert sorted({i.kw for i in gemms}) == [1, 6]                         # chunks of 6 words, then the last one
    assert all(i.wgt_addr % cfg.weight_beat_bytes == 0 for i in gemms)
    assert {i.n for i in gemms} <= {1, 2} if acc_bytes == 48 else {i.n for i in gemms} == {4, 3}
    assert stats["ternary_ops"] == 3 * 11 * 13 * 64


def test_ternary_matmul_silu_within_exp_error():
    g, feeds = ternary_graph((2,), 300, 500, activation="silu")
    got, _, _ = run_device(g, feeds, "datacenter")
    np.testing.assert_allclose(got["y"], interpret(g, feeds)["y"], **TRANSCENDENTAL)


def test_gemv_streams_weights_near_the_dram_roofline_and_double_buffering_pays():
    g, feeds = ternary_graph((1,), 2048, 2048, seed=1)
    cfg = PRESETS["edge"]
    roofline = 2048 * 2048 // 64 * cfg.word_bytes / cfg.bytes_per_cycle
    _, fast, instrs = run_device(g, feeds, "edge", True)
    _, slow, _ = run_device(g, feeds, "edge", False)
    assert roofline / fast["cycles"] >= 0.85
    assert slow["cycles"] > 1.2 * fast["cycles"]
    loads = [i for i in instrs if i.op == Op.LOAD and i.buf == 0]
    assert len(loads) >= 4 and all(i.rows * i.cols >= 64 * 1024 for i in loads[:-1])   # big contiguous tiles
    assert all(i.dram_cs == 1 and i.dram_rs in (0, i.cols) for i in loads)               # one run each


@pytest.mark.parametrize("activation,bias", [("none", False), ("relu", True)])
def test_datacenter_gemv_overlaps_the_epilogue_with_the_matrix_unit_and_stays_exact(activation, bias):
    """The epilogue of tile i runs on the vector unit (VOPs marked overlap) while the matrix unit multiplies tile i+1,
    in two accumulator slots; the result is still the interpreter's, bit for bit."""
    g, feeds = ternary_graph((1,), 1024, 2048, bias=bias, activation=activation, seed=4)
    out, st, instrs = run_device(g, feeds, "datacenter", True)
    np.testing.assert_array_equal(out["y"], interpret(g, feeds)["y"])
    gemms = [i for i in instrs if i.op == Op.GEMM]
    assert len(gemms) >= 6 and len({i.acc_addr for i in gemms}) == 2
    assert sum(i.overlap for i in instrs if i.op == Op.VOP) >= len(gemms) - 1
    assert st["engines"]["matrix"]["busy"] + st["engines"]["compute"]["busy"] > st["cycles"]     # they overlap


@pytest.mark.slow
@pytest.mark.parametrize("preset,floor", [("edge", 0.95), ("datacenter", 0.75)])
def test_gemv_4096_fraction_of_roofline(preset, floor):
    """docs/FPGA.md: edge streams at ~97% of its DRAM roofline; the datacenter matrix unit (8192 trit products per
    cycle) is slower than its HBM (9058 trits per cycle), so there the GEMV is compute-bound (at most 90% of the
    roofline) and reaches 77% with the epilogue, the DRAM latencies and the GEMM fills hidden (the cycle model as
    calibrated against the RTL: the stream's fetch, the token and commit latencies)."""
    g, feeds = ternary_graph((1,), 4096, 4096, seed=2)
    cfg = PRESETS[preset]
    _, st, _ = run_device(g, feeds, preset, True)
    assert 4096 * 4096 // 64 * cfg.word_bytes / cfg.bytes_per_cycle / st["cycles"] >= floor


# ---- elementwise ----------------------------------------------------------------------------------------------

F = lambda v: Const(np.array(v, np.float32))  # noqa: E731 - a scalar constant (an immediate)
EXACT = [
    Case("add", [rnd(3, 5), rnd(5)]),
    Case("sub", [rnd(2, 3, 5), rnd(3, 1)]),
    Case("mul", [rnd(4, 1, 7), rnd(1, 6, 7)]),
    Case("div", [rnd(2, 3, 4), F(2.5)]),
    Case("sub", [F(1.5), rnd(2, 3, 4)]),
    Case("div", [F(1.0), rnd(7, 9)]),
    Case("div", [F(3.0), rnd(7, 9)]),
    Case("max", [rnd(5, 6), rnd(6), rnd(5, 1)]),
    Case("min", [rnd(5, 6), F(0.25)]),
    Case("neg", [rnd(3, 300)]),
    Case("abs", [rnd(3, 30)]),
    Case("sqrt", [np.abs(rnd(3, 30))]),
    Case("reciprocal", [rnd(3, 30)]),
    Case("relu", [rnd(3, 30)]),
    Case("pow", [rnd(3, 30), F(2.0)]),
    Case("pow", [np.abs(rnd(3, 30)), F(0.5)]),
    Case("clip", [rnd(3, 30), F(-0.5), F(0.5)]),
    Case("where", [rnd(3, 30) > 0, rnd(3, 30), F(-1e9)]),
    Case("where", [rnd(1, 30) > 0, F(0.0), rnd(3, 30)]),
    Case("add", [rnd(200, 700), rnd(200, 700)]),            # several tiles
    Case("mul", [rnd(1, 70000), rnd(1)]),                  # a row longer than a tile
    Case("sum", [rnd(4, 8), rnd(8), rnd(4, 1)]),
]


@pytest.mark.parametrize("double_buffer", [True, False])
def test_ieee_elementwise_ops_are_bit_exact(double_buffer):
    check_cases(EXACT, double_buffer=double_buffer)


def test_where_of_two_tensors():
    c = rnd(3, 30) > 0
    x, y = rnd(3, 30, seed=1), rnd(3, 30, seed=2)
    check_cases([Case("where", [c, x, y])])


# the vector unit's bounds against float64 (docs/ISA.md, "Accuracy"), plus numpy's own float32 rounding
REL = lambda r: dict(rtol=r, atol=0)  # noqa: E731
ABS = lambda a: dict(rtol=0, atol=a)  # noqa: E731


@pytest.mark.parametrize("case,tol", [
    (Case("exp", [rnd(3, 40, scale=20)]), REL(5e-7)), (Case("tanh", [rnd(3, 40)]), ABS(5e-7)),
    (Case("erf", [rnd(3, 40)]), ABS(8e-7)), (Case("sin", [rnd(3, 40, scale=100)]), ABS(4.5e-6)),
    (Case("cos", [rnd(3, 40, scale=100)]), ABS(4.5e-6)), (Case("sigmoid", [rnd(3, 40, scale=5)]), ABS(5e-7)),
    (Case("swish", [rnd(3, 40, scale=5)], {"alpha": 1.0}), dict(rtol=1e-6, atol=1e-6)),
    (Case("gelu", [rnd(3, 40, scale=3)], {"approximate": "none"}), dict(rtol=1e-6, atol=1e-6)),
    (Case("gelu", [rnd(3, 40, scale=3)], {"approximate": "tanh"}), dict(rtol=1e-6, atol=1e-6)),
    (Case("pow", [rnd(3, 40, scale=3), F(3.0)]), REL(2.5e-7)),          # (x * x) * x: 2 ulp of numpy's powf
], ids=lambda c: c.op + str(c.attrs.get("approximate", "")) if isinstance(c, Case) else "")
def test_transcendental_elementwise_within_the_vector_unit_error(case, tol):
    check_cases([case], exact=False, tol=tol)


# ---- data movement: exact, and reshapes cost nothing ----------------------------------------------------------

MOVES = [
    Case("transpose", [rnd(1, 5, 4, 16)], {"perm": [0, 2, 1, 3]}),
    Case("transpose", [rnd(3, 4, 5)], {"perm": [2, 0, 1]}),
    Case("slice", [rnd(1, 4, 3, 16), Const(np.array([8])), Const(np.array([2**62])), Const(np.array([3])),
                   Const(np.array([1]))]),
    Case("slice", [rnd(6, 10), Const(np.array([5, 9])), Const(np.array([0, 1])), Const(np.array([0, 1])),
                   Const(np.array([-2, -3]))]),
    Case("concat", [rnd(1, 4, 3, 8), rnd(1, 4, 3, 8, seed=1)], {"axis": -1}),
    Case("concat", [rnd(2, 3), rnd(5, 3)], {"axis": 0}),
    Case("split", [rnd(4, 10), Const(np.array([3, 7]))], {"axis": 1}, n_out=2),
    Case("expand", [rnd(3, 1), Const(np.array([2, 3, 5]))]),
    Case("expand", [rnd(1, 5), Const(np.array([4, 5]))]),
    Case("cast", [rnd(3, 7) > 0], {"to": DType.F32}),
    Case("transpose", [rnd(2, 300, 4, 64)], {"perm": [0, 2, 1, 3]}),
]


def test_data_movement_is_exact():
    check_cases(MOVES)


def test_reshape_is_an_alias_with_no_instruction():
    g, feeds = build([Case("reshape", [rnd(2, 12), Const(np.array([4, 6]))])])
    got, _, instrs = run_device(g, feeds)
    assert [i.op for i in instrs] == [Op.FINISH]
    np.testing.assert_array_equal(got["y0_0"], feeds["x0_0"].reshape(4, 6))


# ---- along the last axis -----------------------------------------------------------------------------------------

def test_max_and_min_reductions_are_exact():
    check_cases([Case("reduce_max", [rnd(5, 37), Const(np.array([-1]))], {"keepdims": 1}),
                 Case("reduce_min", [rnd(5, 37), Const(np.array([1]))], {"keepdims": 0})])


def test_sums_softmax_and_norms_within_the_summation_order():
    check_cases([Case("reduce_sum", [rnd(5, 37), Const(np.array([-1]))], {"keepdims": 1}),
                 Case("reduce_mean", [rnd(2, 5, 300), Const(np.array([2]))], {"keepdims": 0}),
                 Case("softmax", [rnd(3, 4, 50)], {"axis": -1}),
                 Case("softmax", [rnd(300, 500)], {"axis": -1}),
                 Case("rms_normalization", [rnd(3, 4, 64), rnd(64)], {"axis": -1, "epsilon": 1e-5}),
                 Case("layer_normalization", [rnd(3, 64), rnd(64), rnd(64)], {"axis": -1, "epsilon": 1e-5}, n_out=3)],
                exact=False, tol=SUMS)


# ---- fused attention ---------------------------------------------------------------------------------------------

def attention(b: int, h: int, kvh: int, s: int, past: int, d: int, mask=None, causal: int = 1,  # noqa: ANN001
              mask_value: float = -np.inf, softcap: float = 0.0) -> Case:
    ins = [rnd(b, h, s, d), rnd(b, kvh, s, d, seed=1), rnd(b, kvh, s, d, seed=2), mask]
    if past:
        ins += [rnd(b, kvh, past, d, seed=3), rnd(b, kvh, past, d, seed=4)]
    return Case("fused_attention", ins, {"heads": h, "kv_heads": kvh, "scale": float(1 / np.sqrt(d)), "causal": causal,
                                         "mask_value": mask_value, "nan_to_zero": 1, "softcap": softcap},
                n_out=4 if past else 2)


@pytest.mark.parametrize("case", [
    attention(1, 4, 2, 5, 0, 16),                                            # prefill, grouped-query, causal
    attention(1, 4, 2, 1, 7, 16),                                            # decode with a past cache
    attention(2, 4, 4, 3, 4, 8, mask=np.random.default_rng(0).random((2, 1, 1, 7)) > 0.3),
    attention(1, 4, 2, 6, 0, 16, mask=np.array([[[[False, False, True, True, True, True]]]]),
              mask_value=float(-np.finfo(np.float32).max)),                  # rows with no allowed key
    attention(1, 2, 1, 1, 3000, 64),                                         # keys in several KV tiles: online softmax
    attention(1, 8, 2, 200, 0, 64),                                          # query blocks
    attention(1, 4, 2, 4, 3, 16, mask=rnd(1, 1, 4, 7), causal=0),            # a float mask
    attention(1, 4, 2, 4, 3, 16, softcap=5.0),
], ids=["prefill", "decode", "bool-mask", "mask-value", "online-softmax", "query-blocks", "float-mask", "softcap"])
def test_fused_attention_matches_the_interpreter(case):
    check_cases([case], exact=False, tol=dict(rtol=2e-5, atol=2e-5))


# ---- what the device does not do, and the data structures ----------------------------------------------------------

def test_device_support_reasons():
    cfg = PRESETS["edge"]
    g, _ = build([Case("gather", [rnd(10, 4), np.array([[1, 2]], np.int64)], {"axis": 0}),
                  Case("add", [np.array([1, 2], np.int64), np.array([3, 4], np.int64)]),
                  Case("log", [rnd(2, 3)]),
                  Case("pow", [rnd(2, 3), Const(np.array(4.0, np.float32))])])
    reasons = [device_support(n, g, cfg) for n in g if n.op not in ("weight", "constant")]
    assert reasons[0] == "gather: the embedding lookup runs on the host"
    assert reasons[1] == "int64 shape arithmetic"
    assert reasons[2] == "op log has no FPGA lowering"
    assert reasons[3] == "pow with an exponent other than a constant 2, 3, 1, 0.5 or -1"
    x = Graph("t")
    v = x.add_input("x", TensorType(DType.F32, ("seq", 4)))
    n = x.add("relu", [v], [TensorType(DType.F32, ("seq", 4))])
    assert device_support(n, x, cfg) == "dims not static"
    gf, _ = ternary_graph((1,), 64, 8)
    node = next(n for n in gf if n.op == "ternary_matmul")
    node.attrs["act"] = "float"
    assert "int8" in device_support(node, gf, cfg)


@pytest.mark.parametrize("preset", ["edge", "datacenter"])
def test_weight_image_holds_packed_columns_and_scales(preset):
    # ISA v3 layout: per group, blocks of matrix_rows columns, words interleaved by beats (datacenter: 2 words per
    # beat, so kw = 1 is padded to 2); the pad columns and words are words of zero trits
    cfg = PRESETS[preset]
    g, _ = ternary_graph((1,), 100, 5, granularity="per_group", group=50)
    w = g.weights["w"]
    image = build_weight_image(g, cfg, base=4096)
    e = image.entries["w"]
    rows, per_beat, wb = cfg.matrix_rows, cfg.words_per_beat, cfg.word_bytes
    assert e.groups == 2 and e.kw == 1 and e.addr % 64 == 0 and e.scale_addr % 64 == 0
    assert e.nbytes == 2 * rows * per_beat * wb and e.group_addr(1) - e.addr == rows * per_beat * wb
    data = np.frombuffer(image.data, np.uint8)
    seen = np.zeros(e.nbytes, bool)
    for grp in range(2):
        for col in range(rows):
            for word in range(per_beat):
                at = e.group_addr(grp) - image.base + wgt_word_offset(col, word, e.kw, rows, per_beat) * wb
                seen[at + image.base - e.addr:at + image.base - e.addr + wb] = True
                trits = unpack_words(data[at:at + wb], cfg.weight_packing)
                if col < 5 and word == 0:
                    np.testing.assert_array_equal(trits[:50], w.trits[grp * 50:(grp + 1) * 50, col])
                    assert not trits[50:].any()   # pad trits are zero
                else:
                    assert not trits.any()        # a pad column or pad word
    assert seen.all()
    scales = data[e.scale_addr - image.base:e.scale_addr - image.base + w.scale.nbytes].view(np.float32)
    np.testing.assert_array_equal(scales.reshape(w.scale.shape), w.scale)


def test_weight_image_leaves_out_what_only_the_host_reads():
    g, _ = build([Case("gather", [Const(rnd(10, 4)), np.array([[1, 2]], np.int64)], {"axis": 0}),
                  Case("add", [rnd(4), Const(rnd(4, seed=3))])])
    image = build_weight_image(g, PRESETS["edge"])
    assert list(image.entries) == ["c1_1"]


def test_dram_map_aligns_aliases_and_refuses_overflow():
    d = DramMap(100, 10_000)
    a = d.place("a", (3, 5), DType.F32)
    b = d.place("b", (1,), DType.BOOL)
    assert a.addr == 128 and b.addr == 192 and d.end == 256
    assert d.alias("c", "a", (15,)).addr == a.addr
    assert d.place("a", (3, 5), DType.F32) == a
    with pytest.raises(ValueError):
        d.place("a", (2, 5), DType.F32)
    with pytest.raises(ResourceLimitError, match="more DRAM"):
        d.place("big", (10_000,), DType.F32)


def test_lowering_refuses_a_node_the_device_cannot_run():
    g, feeds = build([Case("gather", [rnd(10, 4), np.array([[1, 2]], np.int64)], {"axis": 0})])
    dram = DramMap(0, DRAM)
    for name, a in feeds.items():
        dram.place(name, a.shape, g.value(name).type.dtype)
    with pytest.raises(LoweringError, match="cannot run on the FPGA: gather"):
        lower_nodes([n for n in g if n.op == "gather"], g, PRESETS["edge"], dram, build_weight_image(g, PRESETS["edge"]))


# ---- activation matmul, rotary embedding, ternary convolution ------------------------------------------------------

def test_activation_matmul_batched_within_the_summation_order():
    check_cases([Case("matmul", [rnd(2, 4, 5, 16), rnd(2, 4, 16, 7)]),
                 Case("matmul", [rnd(3, 40), rnd(40, 3000)]),                # B in column blocks (MM's 12-bit stride)
                 Case("matmul", [rnd(4, 1, 6, 8), rnd(3, 8, 5)])], exact=False, tol=dict(rtol=1e-5, atol=1e-5))


def test_matmul_with_a_constant_weight_stays_on_the_host():
    g, _ = build([Case("matmul", [rnd(2, 8), Const(rnd(8, 4))])])
    node = next(n for n in g if n.op == "matmul")
    assert device_support(node, g, PRESETS["edge"]).startswith("float matmul with a constant weight")


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_is_exact(interleaved):
    check_cases([Case("rotary_embedding", [rnd(2, 4, 3, 16), rnd(2, 3, 8), rnd(2, 3, 8, seed=5)],
                      {"interleaved": interleaved}),
                 Case("rotary_embedding", [rnd(1, 3, 32), rnd(1, 3, 4), rnd(1, 3, 4, seed=5)],
                      {"interleaved": interleaved, "num_heads": 2, "rotary_embedding_dim": 8})])


def conv_graph(n: int, c: int, h: int, w: int, m: int, k: int, stride: int = 1, pad: int = 1, group: int = 1,
               dilation: int = 1, per_channel: bool = True, bias: bool = True) -> tuple[Graph, dict]:
    from tritc.ir.ops import OPS, InferContext

    rng = np.random.default_rng(c * h + m)
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (n, c, h, w)))
    kg = c // group * k * k
    scale = rng.uniform(0.1, 1, m).astype(np.float32) if per_channel else np.array(0.3, np.float32)
    ins = [x, g.add_weight("w", TernaryWeight(rng.integers(-1, 2, (kg, m)).astype(np.int8), scale),
                           TensorType(DType.T2, (kg, m)))]
    if bias:
        ins.append(g.add_weight("b", rng.standard_normal(m).astype(np.float32), TensorType(DType.F32, (m,))))
    attrs = {"act": "int8", "kernel_shape": [k, k], "strides": [stride] * 2, "pads": [pad] * 4, "group": group,
             "dilations": [dilation] * 2}
    od = OPS["ternary_conv"]
    types = od.infer(InferContext("ternary_conv", [v.type for v in ins], od.with_defaults(attrs), [None] * len(ins), 1))
    g.outputs = g.add("ternary_conv", ins, types, attrs, output_names=["y"]).outputs
    return g, {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)}


@pytest.mark.parametrize("args,kw,preset", [
    ((2, 1, 8, 8, 16, 3), {}, "edge"),                                       # the digits CNN's first layer
    ((2, 16, 8, 8, 32, 3), {"stride": 2}, "edge"),                           # ... and its second
    ((1, 4, 9, 7, 6, 3), {"stride": 2, "pad": 0, "group": 2, "per_channel": False, "bias": False}, "edge"),
    ((1, 3, 10, 10, 8, 3), {"dilation": 2, "pad": 2}, "datacenter"),
    ((1, 8, 32, 32, 16, 5), {"pad": 2}, "edge"),                             # im2col in blocks of output rows
])
def test_ternary_conv_im2col_is_bit_exact(args, kw, preset):
    g, feeds = conv_graph(*args, **kw)
    got, _, _ = run_device(g, feeds, preset)
    np.testing.assert_array_equal(got["y"], interpret(g, feeds)["y"])


# ---- chains of nodes: results forwarded on chip, DRAM ordering between nodes ------------------------------------

def rms_chain() -> tuple[Graph, dict]:
    """x -> decomposed RMSNorm -> ternary_matmul -> + residual -> transpose: each node reads the last one's result."""
    from tritc.ir.ops import OPS, InferContext

    rng = np.random.default_rng(3)
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (2, 64)))
    feeds = {"x": rng.standard_normal((2, 64)).astype(np.float32)}

    def add(op, ins, **attrs):  # noqa: ANN001, ANN202
        od = OPS[op]
        consts = [g.const_value(v) for v in ins]
        types = od.infer(InferContext(op, [v.type for v in ins], od.with_defaults(attrs), consts, 1))
        return g.add(op, ins, types, attrs).output

    two = g.add_constant(np.array(2.0, np.float32), TensorType(DType.F32, ()))
    eps = g.add_constant(np.array(1e-5, np.float32), TensorType(DType.F32, ()))
    axes = g.add_constant(np.array([-1], np.int64), TensorType(DType.I64, (1,)))
    norm_w = g.add_weight("nw", rng.uniform(0.5, 1.5, 64).astype(np.float32), TensorType(DType.F32, (64,)))
    p = add("pow", [x, two])
    m = add("reduce_mean", [p, axes], keepdims=1)
    r = add("reciprocal", [add("sqrt", [add("add", [m, eps])])])
    h = add("mul", [norm_w, add("mul", [x, r])])
    w = g.add_weight("w", TernaryWeight(rng.integers(-1, 2, (64, 48)).astype(np.int8),
                                        rng.uniform(0.1, 1, 48).astype(np.float32)), TensorType(DType.T2, (64, 48)))
    y = add("ternary_matmul", [h, w], act="int8")
    z = add("add", [y, add("sigmoid", [y])])
    shape = g.add_constant(np.array([2, 4, 12], np.int64), TensorType(DType.I64, (3,)))
    g.outputs = [add("transpose", [add("reshape", [z, shape]), ], perm=[1, 0, 2])]
    return g, feeds


@pytest.mark.parametrize("double_buffer", [True, False])
def test_a_chain_of_nodes_matches_the_interpreter(double_buffer):
    g, feeds = rms_chain()
    got, _, instrs = run_device(g, feeds, "edge", double_buffer)
    want = interpret(g, feeds)
    out = g.outputs[0].name
    np.testing.assert_allclose(got[out], want[out], **SUMS)
    loads = sum(1 for i in instrs if i.op == Op.LOAD and i.buf != 0)
    if double_buffer:   # each node finds the last one's result in VEC: only x, constants and weights are loaded
        assert loads <= 6, loads

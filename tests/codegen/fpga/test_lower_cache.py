"""The in-place (capacity-form) KV cache on the FPGA: fused_attention with a past_len operand, lowered for the value
the size binding gives it, writes only the new rows into the cache buffers (the present outputs share their DRAM),
never the old ones; and a small decoder's capacity form (kv-cache-in-place) matches the interpreter on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tritc
from tests.codegen.fpga.test_lower import DRAM, rnd
from tests.codegen.helpers import Case, build
from tests.runtime.test_generate_fixtures import exactly_ternary
from tritc.codegen.fpga.config import PRESETS
from tritc.codegen.fpga.isa import ELEM_BYTES, Buf, Op
from tritc.codegen.fpga.lower import DramMap, LoweringError, Placement, build_weight_image, device_support, lower_nodes
from tritc.codegen.fpga.program import FpgaProgram
from tritc.codegen.fpga.verify import check_stream
from tritc.errors import ResourceLimitError
from tritc.ir.interpreter import run as interpret
from tritc.ir.types import DType
from tritc.passes.kv_cache_in_place import KVCacheInPlace
from tritc.runtime.fpga import Simulator
from tritc.runtime.fpga_model import FpgaModel

ATTENTION = dict(rtol=2e-5, atol=2e-5)
SENTINEL = 7.0     # the rows of a buffer past the valid ones: must come back as they were
LLAMA = Path(__file__).parents[2] / "fixtures" / "cache" / "llama_dynamo18.onnx"


def stored_bytes(instrs, lo: int, hi: int) -> set[int]:  # noqa: ANN001
    """The DRAM bytes in [lo, hi) that the stream's STOREs write."""
    out: set[int] = set()
    for ins in instrs:
        if ins.op != Op.STORE:
            continue
        f = ins.fields
        e = ELEM_BYTES[Buf(f["buf"])]
        for r in range(f["rows"]):
            for c in range(f["cols"]):
                a = f["dram_addr"] + r * f["dram_rs"] + c * f["dram_cs"]
                out.update(b for b in range(a, a + e) if lo <= b < hi)
    return out


def row_bytes(p: Placement, rows: range) -> set[int]:
    """The bytes of rows `rows` (dim 2) of every (batch, head) of a [batch, heads, capacity, d] fp32 buffer."""
    batch, heads, cap, d = p.shape
    return {p.addr + ((b * heads + h) * cap + r) * d * 4 + i
            for b in range(batch) for h in range(heads) for r in rows for i in range(d * 4)}


# ---- one fused_attention node in the capacity form -----------------------------------------------------------------

def capacity_case(b: int, h: int, kvh: int, s: int, past: int, cap: int, d: int, mask=None,  # noqa: ANN001
                  causal: int = 1) -> Case:
    buffers = []
    for seed in (3, 4):
        buf = np.full((b, kvh, cap, d), SENTINEL, np.float32)
        buf[:, :, :past] = rnd(b, kvh, past, d, seed=seed)
        buffers.append(buf)
    ins = [rnd(b, h, s, d), rnd(b, kvh, s, d, seed=1), rnd(b, kvh, s, d, seed=2), mask, *buffers,
           np.array([past], np.int64)]
    return Case("fused_attention", ins, {"heads": h, "kv_heads": kvh, "scale": float(1 / np.sqrt(d)), "causal": causal,
                                         "nan_to_zero": 1}, n_out=4)


def run_capacity(case: Case, past: int, preset: str = "edge"):  # noqa: ANN201
    """The case's graph (x0_6 gives `past` by value), lowered with sizes={"past": past} and run on the Simulator."""
    cfg = PRESETS[preset]
    g, feeds = build([case])
    g.value_symbols["x0_6"] = "past"
    node = next(n for n in g if n.op == "fused_attention")
    assert device_support(node, g, cfg) is not None          # without the binding past_len is a run-time value
    assert device_support(node, g, cfg, {"past": past}) is None
    image = build_weight_image(g, cfg)
    dram = DramMap(-(-len(image.data) // 4096) * 4096, DRAM)
    for name, a in feeds.items():
        dram.place(name, a.shape, g.value(name).type.dtype)
    instrs = lower_nodes([node], g, cfg, dram, image, sizes={"past": past})
    check_stream(instrs, cfg)
    sim = Simulator(cfg, dram_bytes=DRAM)
    sim.write(image.base, image.data)
    for name, data in dram.preloads.items():     # the causal table
        sim.write(dram[name].addr, data)
    for name, a in feeds.items():
        sim.write(dram[name].addr, np.ascontiguousarray(a))
    sim.load_stream(instrs)
    sim.run()

    def read(name: str) -> np.ndarray:
        p = dram[name]
        return sim.read(p.addr, p.nbytes).view(p.dtype.np_dtype).reshape(p.shape)

    return g, feeds, dram, instrs, read


@pytest.mark.parametrize("dims", [
    dict(b=1, h=4, kvh=2, s=1, past=5, cap=8, d=16),                     # decode, grouped-query
    dict(b=2, h=4, kvh=4, s=3, past=2, cap=8, d=8,                       # a chunk of 3 rows, batch 2, a bool mask
         mask=np.random.default_rng(0).random((2, 1, 1, 5)) > 0.3),
    dict(b=1, h=2, kvh=2, s=2, past=6, cap=8, d=16),                     # the buffer exactly full after the step
    dict(b=1, h=2, kvh=1, s=4, past=0, cap=8, d=16),                     # an empty cache (the prompt)
    dict(b=1, h=2, kvh=1, s=1, past=3000, cap=3072, d=64),               # keys in several KV tiles: online softmax
], ids=["decode", "chunk-mask", "full", "empty", "online-softmax"])
def test_capacity_form_appends_in_place(dims):
    past, s = dims["past"], dims["s"]
    case = capacity_case(**dims)
    g, feeds, dram, instrs, read = run_capacity(case, past)
    want = interpret(g, feeds)
    np.testing.assert_allclose(read("y0_0"), want["y0_0"], **ATTENTION)
    for out, buf, new in (("y0_2", "x0_4", "x0_1"), ("y0_3", "x0_5", "x0_2")):
        assert dram[out] == dram[buf]                            # the present is the past buffer's DRAM
        got = read(out)
        np.testing.assert_array_equal(got, want[out])            # the new rows at [past, past+s), the rest as fed
        np.testing.assert_array_equal(got[:, :, past:past + s], feeds[new])
        np.testing.assert_array_equal(got[:, :, :past], feeds[buf][:, :, :past])
        assert (got[:, :, past + s:] == SENTINEL).all()
        # the stream stores exactly the new rows into the buffer: no copy of the old ones
        p = dram[buf]
        assert stored_bytes(instrs, p.addr, p.addr + p.nbytes) == row_bytes(p, range(past, past + s))


def test_capacity_form_refusals():
    cfg = PRESETS["edge"]
    g, _ = build([capacity_case(1, 2, 2, 2, 7, 8, 16)])
    g.value_symbols["x0_6"] = "past"
    node = next(n for n in g if n.op == "fused_attention")
    assert "the sizes do not give" in device_support(node, g, cfg, {"seq": 2})
    assert device_support(node, g, cfg, {"past": 7}) == "past_len 7 plus the 2 new rows do not fit the cache's 8 rows"
    assert device_support(node, g, cfg, {"past": 6}) is None
    image = build_weight_image(g, cfg)
    dram = DramMap(-(-len(image.data) // 4096) * 4096, DRAM)
    for v in g.inputs:
        dram.place(v.name, v.type.shape, v.type.dtype)
    with pytest.raises(LoweringError, match="the sizes do not give"):
        lower_nodes([node], g, cfg, dram, image)
    # a buffer something else reads too: writing the present into it would change what that reads
    g.add("neg", [node.inputs[4]], [node.inputs[4].type])
    assert "is also read by" in device_support(node, g, cfg, {"past": 6})


def test_dram_map_reserve_places_around_fixed_buffers():
    dram = DramMap(4096, 1 << 16)
    dram.reserve("cache", Placement(4096 + 256, (64,), DType.F32))     # bytes [4352, 4608)
    a = dram.place("a", (32,), DType.F32)                             # 128 bytes: fits below it
    b = dram.place("b", (64,), DType.F32)                             # would overlap: goes after it
    assert (a.addr, b.addr) == (4096, 4608)
    assert dram.place("cache", (64,), DType.F32).addr == 4352          # placing it again finds it
    with pytest.raises(ValueError, match="overlaps 'a'"):
        dram.reserve("other", Placement(4096, (4,), DType.F32))
    with pytest.raises(ResourceLimitError, match="outside the DRAM"):
        dram.reserve("low", Placement(0, (4,), DType.F32))


# ---- a decoder's capacity form ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(tmp_path_factory):  # noqa: ANN201
    """The llama fixture exactly ternary, compiled for the FPGA (ONNX form), and its capacity form's graph."""
    path = exactly_ternary(LLAMA, tmp_path_factory.mktemp("llama"))
    model = tritc.compile(str(path), target="fpga", threads=1)
    graph = model.graph.copy()
    result = KVCacheInPlace().run(graph)
    assert result.changed, result.data.reason
    return model, graph


def decode_feed(graph, past: int, seq: int, cap: int) -> dict:  # noqa: ANN001
    rng = np.random.default_rng(past)
    feed = {"input_ids": rng.integers(0, 256, (1, seq)), "attention_mask": np.ones((1, past + seq), np.int64),
            "position_ids": np.arange(past, past + seq)[None], "past_len": np.array([past], np.int64)}
    for v in graph.inputs:
        if v.name.startswith("past_key_values"):
            buf = np.full((1, 2, cap, 16), SENTINEL, np.float32)
            buf[:, :, :past] = rng.standard_normal((1, 2, past, 16))
            feed[v.name] = buf
    return feed


def test_decoder_capacity_form_on_the_device(llama):
    """past=5, seq=1, capacity=8: the logits are the interpreter's and the ONNX form's on the device (same tiles, same
    order: bit for bit); the step's keys / values are at row 5 of each cache buffer in DRAM, rows 0..4 and 6..7 are
    as the host wrote them, and no STORE of the stream writes anything in the buffers but row 5."""
    onnx_form, graph = llama
    past, seq, cap = 5, 1, 8
    model = FpgaModel(graph, onnx_form.config, threads=1)
    feed = decode_feed(graph, past, seq, cap)
    got = dict(zip([o.name for o in graph.outputs], model.run(None, feed)))
    want = interpret(graph, feed)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    concat_feed = {k: (a[:, :, :past] if k.startswith("past_key") else a) for k, a in feed.items() if k != "past_len"}
    np.testing.assert_array_equal(got["logits"], onnx_form.run(["logits"], concat_feed)[0])

    code, = model.program.codes.values()
    assert code.bindings["past"] == past and code.bindings["past_capacity"] == cap
    device = [r for r in code.regions if r.kind == "device"]
    assert "fused_attention" in {n.op for r in device for n in r.nodes}
    assert not any(v.name == "past_len" for r in code.regions for v in r.inputs)   # its value is in the code
    caches = [v.name for v in graph.inputs if v.name.startswith("past_key_values")]
    assert len(caches) == 4
    for name in caches:
        present = name.replace("past_key_values", "present")
        p = code.dram[name]
        assert code.dram[present] == p
        dram = model.device.read(p.addr, p.nbytes).view(np.float32).reshape(p.shape)
        np.testing.assert_array_equal(dram[:, :, :past], feed[name][:, :, :past])
        np.testing.assert_allclose(dram[:, :, past], want[present][:, :, past], rtol=1e-5, atol=1e-6)
        assert (dram[:, :, past + seq:] == SENTINEL).all()
        np.testing.assert_array_equal(got[present], dram)
        written = set().union(*(stored_bytes(s, p.addr, p.addr + p.nbytes) for s in code.streams.values()))
        assert written == row_bytes(p, range(past, past + seq))


def test_persistent_placements_hold_for_every_size(llama):
    """lower_for(persistent=...): the cache buffers sit where the caller put them for every size binding of the same
    capacity (decode and a 3-row chunk), the presents with them, and nothing else overlaps them."""
    onnx_form, graph = llama
    program = FpgaProgram(graph, onnx_form.config)
    cap = 8
    top = onnx_form.config.dram_bytes
    names = [v.name for v in graph.inputs if v.name.startswith("past_key_values")]
    nbytes = cap * 2 * 16 * 4
    pinned = {n: Placement(top - (i + 1) * nbytes, (1, 2, cap, 16), DType.F32) for i, n in enumerate(names)}
    for past, seq in ((5, 1), (2, 3)):
        sizes = {"batch": 1, "seq": seq, "past": past, "total": past + seq, "past_capacity": cap}
        code = program.code_for(sizes, persistent=pinned)
        for n, p in pinned.items():
            assert code.dram[n] == p and code.dram[n.replace("past_key_values", "present")] == p
        lo = min(p.addr for p in pinned.values())
        others = [(k, q) for k, q in code.dram.items() if k not in pinned and q.addr + q.nbytes > lo and q.nbytes]
        assert all(k.startswith("present") for k, _ in others), others
    with pytest.raises(ValueError, match="is f32\\[1, 2, 4, 16\\], the input is f32\\[1, 2, 8, 16\\]"):
        program.lower_for({"batch": 1, "seq": 1, "past": 5, "total": 6, "past_capacity": cap},
                          persistent={names[0]: Placement(top - nbytes, (1, 2, 4, 16), DType.F32)})

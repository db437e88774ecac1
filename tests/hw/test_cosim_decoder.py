"""A whole decode step of a one-layer ternary decoder co-simulated (issue 11): the lowering's own stream, run on the
RTL core in Amaranth's simulator and on the cycle-modelled Simulator, with the same DRAM at FINISH.

The decoder is tests/runtime/decoders.py's native-Attention form at the smallest sizes whose step still has every
part of a layer: hidden 32, two query heads sharing one key / value head (grouped-query attention), an FFN of 64,
a vocabulary of 16, a context of 4 (3 cached positions and this token's). On the digits build (conftest.DIGITS: 4 x
16 lanes, 4 vector lanes, buffers large enough) the whole step is one device stream: the RMS norms, the int8
activation quantisation, the q / k / v / o projections, attention over the KV cache with its softmax, the ReLU FFN,
the residuals and the LM head; the host only gathers the embeddings and builds the mask. A few thousand RTL cycles,
so that it runs in make test (the RTL simulates a few hundred cycles a second).

The BitNet-shaped layer (benchmarks/bitnet_models.py: rotary embeddings, gains, the gated FFN) at the same sizes runs
its q projection as GEMMs of 4 and 8 columns back to back, each followed by an `overlap` VOP: the RTL once let such
a VOP start beside two GEMMs in flight and read the first one's ACC before it was written. The last test is that
case reduced to nine instructions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

import tritc
from tritc.codegen.fpga.isa import Buf, Instr, Op, VFunc
from tritc.ir import interpreter
from tritc.runtime.cosim import CosimDevice, format_reports

from ..runtime.decoders import DecoderSpec, attention_decoder, cache_names
from .conftest import DIGITS, SMALL

SPEC = DecoderSpec(layers=1, hidden=32, heads=2, kv_heads=1, ffn=64, vocab=16, positions=8, naming="attention")
CONTEXT = 4
# What a decoder layer's stream must hold: the movers, the matrix unit, and the vector functions of the RMS norm
# (MUL, RSUM, ADD, SQRT, DIV), the activation quantisation (AMAX), attention (MM for the scores and the weighted
# values, WHERE for the mask, RMAX, SUB, EXP, RSUM and DIV for the softmax) and the FFN's ReLU.
KINDS = {"LOAD", "STORE", "GEMM", "FINISH"} | {f"VOP.{f}" for f in ("MUL", "RSUM", "ADD", "SQRT", "DIV", "AMAX", "MM",
                                                                     "WHERE", "RMAX", "SUB", "EXP", "RELU")}
MAX_CYCLES = 40_000   # the RTL's budget: ~9x what the step takes


def kind(ins) -> str:
    return f"VOP.{VFunc(ins.func).name}" if ins.op is Op.VOP else ins.op.name


def step_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    past = CONTEXT - 1
    feeds = {"input_ids": rng.integers(0, SPEC.vocab, (1, 1)).astype(np.int64),
             "attention_mask": np.ones((1, CONTEXT), np.int64), "position_ids": np.array([[past]], np.int64)}
    for name, _ in cache_names(SPEC, 0):
        feeds[name] = rng.standard_normal((1, SPEC.kv_heads, past, SPEC.head_dim)).astype(np.float32)
    return feeds


def test_decoder_step_is_bit_exact_on_the_rtl_core(tmp_path):
    path = tmp_path / "decoder.onnx"
    onnx.save(attention_decoder(SPEC), path)
    dev = CosimDevice(DIGITS, max_cycles=MAX_CYCLES)
    model = tritc.compile(str(path), target="fpga", fpga_config=DIGITS, threads=1, device=dev,
                          shapes={"batch": 1, "seq": 1, "past": CONTEXT - 1})
    # the RTL's cycle budget bounds the run; the host-side watchdog (60 s) would only measure the machine's load
    model.device_timeout = None

    # the whole layer is on the device, in one stream; the host only gathers the embeddings and builds the mask
    (code,) = model.program.codes.values()
    device_ops = {n.op for r in code.regions if r.kind == "device" for n in r.nodes}
    host_ops = {n.op for r in code.regions if r.kind == "host" for n in r.nodes}
    assert {"ternary_matmul", "fused_attention", "reduce_mean", "sqrt"} <= device_ops, device_ops
    assert not host_ops & {"ternary_matmul", "fused_attention", "matmul", "softmax", "reduce_mean"}, host_ops
    (stream,) = code.streams.values()
    kinds = Counter(kind(ins) for ins in stream)
    assert KINDS <= set(kinds), sorted(KINDS - set(kinds))
    assert kinds["GEMM"] >= 7       # q, k, v, o, up, down, the LM head: at least one GEMM each

    feeds = step_feeds()
    outs = dict(zip([o.name for o in model.outputs], model.run(None, feeds)))

    (report,) = dev.reports
    print(f"\n{format_reports(dev.reports)}RTL: {report.rtl['cycles']:,} cycles simulated in "
          f"{report.rtl['simulator_seconds']:.1f} s")
    assert report.skipped is None and report.mismatch is None       # the RTL ran it, and its DRAM is the Simulator's
    assert report.instructions == len(stream) and report.rtl["instructions"] == len(stream)
    # the cycle model is calibrated against the RTL (docs/HW.md, "Calibration"): within 10% on the whole step
    assert report.sim["cycles"] > 0 and abs(report.rtl["cycles"] / report.sim["cycles"] - 1) < 0.10
    assert report.rtl["dram_write_bytes"] > 0 and report.rtl["dram_read_bytes"] > 0
    assert model.stats["device_runs"] == 1

    # what the device and the host together must compute (the final IR), and the CPU target with the same int8
    # activations: the cache appended exactly, the logits close (the device's EXP and summation order differ)
    want = interpreter.run(model.graph, feeds)
    for name, got in outs.items():
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-5, err_msg=name)
    cpu = tritc.compile(str(path), threads=1, ternary_act="int8")
    cpu_outs = dict(zip([o.name for o in cpu.outputs], cpu.run(None, feeds)))
    for name, _ in cache_names(SPEC, 0):
        present = name.replace("past_", "present_")
        np.testing.assert_array_equal(outs[present], cpu_outs[present])
        np.testing.assert_array_equal(outs[present][:, :, :CONTEXT - 1], feeds[name])
    np.testing.assert_allclose(outs["logits"], cpu_outs["logits"], atol=0.02 * np.abs(cpu_outs["logits"]).max())
    assert outs["logits"].argmax() == cpu_outs["logits"].argmax()


def test_an_overlap_vop_reads_the_gemm_before_the_one_in_flight():
    """Two GEMMs of one block each, back to back with their weights already loaded (the second taken while the first
    drains), then a VOP marked `overlap` copying the first one's sums: legal (it touches nothing the second GEMM
    does), so the Simulator runs it and the RTL must agree."""
    dev = CosimDevice(SMALL, dram_bytes=4096)
    rng = np.random.default_rng(0)
    dev.write(0, rng.integers(0, 243, 2 * SMALL.weight_beat_bytes, dtype=np.uint8))   # packed trits, 5 a byte
    dev.write(1024, rng.integers(-20, 20, 64, dtype=np.int8).view(np.uint8))
    beat = SMALL.weight_beat_bytes     # one word per beat on this build: a block of 4 columns is one beat

    def load(buf, sram, dram, n, **flags):
        return Instr(Op.LOAD, buf=buf, sram_addr=sram, dram_addr=dram, rows=1, cols=n, dram_rs=n, dram_cs=1,
                     sram_rs=n, **flags)

    gemm = dict(m=1, kw=1, n=4, acc_rs=32, reset=1)
    dev.load_stream([load(Buf.ACT, 0, 1024, 64), load(Buf.WGT, 0, 0, beat), load(Buf.WGT, beat, beat, beat, push_next=1),
                     Instr(Op.NOP, pop_prev=1),          # both weight tiles are in WGT: the GEMMs follow each other
                     Instr(Op.GEMM, **gemm), Instr(Op.GEMM, acc_addr=32, wgt_addr=beat, **gemm),
                     Instr(Op.VOP, func=VFunc.COPY, rows=1, cols=4, dst_buf=Buf.VEC, dst_cs=1, src1_buf=Buf.ACC,
                           src1_cs=1, overlap=1, push_next=1),
                     Instr(Op.STORE, pop_prev=1, buf=Buf.VEC, sram_addr=0, dram_addr=2048, rows=1, cols=4, dram_rs=16,
                           dram_cs=4, sram_rs=4),
                     Instr(Op.FINISH)])
    dev.run()
    print("\n" + format_reports(dev.reports))
    assert np.any(dev.read(2048, 16).view(np.float32) != 0)       # the first GEMM's sums, not the cleared ACC

"""Decoding on the FPGA Simulator: the KV-cache fixtures (Llama, Qwen2, GPT-2, BitNet; both exporters; the native
Attention op) with every linear layer exactly ternary decode the same 32 greedy tokens on the simulated device as on
the CPU target, whose ternary layers take int8 activations too (the fpga pipeline's quantize-activations)."""

from __future__ import annotations

import pytest

import tritc

from .test_generate_fixtures import DECODERS, NEW_TOKENS, exactly_ternary, expected

# make test decodes one fixture of each architecture and each exporter form (dynamo at opset 18, the legacy
# exporter, the native Attention op at opset 23, the eager attention): ~25 s each on the Simulator; the other eight
# run under `make test-long` (pytest -m long).
REDUCED = {"llama_dynamo18", "qwen2_legacy17", "gpt2_dynamo18", "bitnet_native_dynamo23", "llama_eager_legacy17"}


@pytest.mark.parametrize("model", [m if m.stem in REDUCED else pytest.param(m, marks=pytest.mark.long)
                                   for m in DECODERS], ids=lambda p: p.stem)
def test_fpga_decodes_the_cpu_targets_greedy_tokens(model, tmp_path):
    path = model if model.stem.startswith("bitnet") else exactly_ternary(model, tmp_path)
    ids = expected(model)["prompt_ids"]
    cpu = tritc.compile(str(path), threads=1, ternary_act="int8")
    fpga = tritc.compile(str(path), target="fpga", threads=1)
    want = tritc.generate(cpu, ids, NEW_TOKENS).tokens
    result = tritc.generate(fpga, ids, NEW_TOKENS)
    assert result.tokens == want
    # the cache stays in the device's DRAM (the capacity form, appended in place, grown by doubling): a decode step
    # moves the token, the mask and the new rows across, not the cache
    assert result.stats.cache_in_place and result.stats.cache_grows >= 1, result.stats
    in_place, _ = fpga.with_cache_in_place()
    stats = in_place.stats
    cache_bytes = sum(p.nbytes for p in in_place._pins.values())   # the resident buffers, at their fixed addresses
    assert 0 < stats["host_device_bytes"] < cache_bytes / 4, (stats["host_device_bytes"], cache_bytes)
    # every step ran its layers on the device (one device run: every ternary layer, attention and the norms)
    assert stats["ternary_ops"] > 0 and stats["device_runs"] == 1
    device_ops = {n.op for c in in_place.program.codes.values() for r in c.regions if r.kind == "device" for n in r.nodes}
    host_ops = {n.op for c in in_place.program.codes.values() for r in c.regions if r.kind == "host" for n in r.nodes}
    assert {"ternary_matmul", "fused_attention"} <= device_ops, device_ops
    assert not host_ops & {"ternary_matmul", "fused_attention", "matmul", "softmax"}, host_ops

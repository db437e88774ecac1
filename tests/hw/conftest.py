"""The small accelerator the RTL tests build (docs/HW.md, "The test configuration"): 4 trees of 16 lanes (a weight
word over 4 cycles), 4 vector lanes, buffers of a few hundred bytes, DRAM of 64 KiB, queues of 4 tokens. DIGITS: the
same core with buffers large enough for the whole digits classifier to be lowered to the device (one stream)."""

from __future__ import annotations

import dataclasses

from tritc.codegen.fpga.config import FpgaConfig

SMALL = FpgaConfig(name="rtl-small", matrix_rows=4, matrix_lanes=16, weight_buffer_bytes=2048,
                   activation_buffer_bytes=512, accumulator_buffer_bytes=256, vector_buffer_bytes=1024,
                   cache_buffer_bytes=512, vector_lanes=4, clock_hz=250e6, dram_bandwidth=16e9,
                   dram_latency_ns=40.0, dram_bytes=64 * 1024, queue_depth=4).validate()

DIGITS = dataclasses.replace(SMALL, name="rtl-digits", weight_buffer_bytes=8192, activation_buffer_bytes=4096,
                             accumulator_buffer_bytes=2048, vector_buffer_bytes=16384, dram_bytes=1 << 20).validate()

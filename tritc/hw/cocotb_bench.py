"""The cocotb testbench of the Verilog-level run (docs/HW.md, "The core in Verilog"): loaded by cocotb inside the HDL
simulator (Icarus) by tritc/hw/cocotb_run.py, never imported by tritc itself (it needs cocotb).

It mirrors RtlDevice (tritc/runtime/rtl.py) on the core's Verilog: the job folder (env TRITC_COCOTB_JOB) holds
job.json (the beat, DramModel's latency and rate, the stream's base and words, the cycle budget), dram.bin (the DRAM
image) and words.bin (the stream's words, placed at the first beat above DRAM, read only). The bench serves the
core's memory port as DramModel does, cycle for cycle (a request taken when a beat of credit has built up, its
response due `latency` cycles later, in order), pulses `clear`, then `start`, and stops when `running` falls or the
budget is spent; it writes result.json (the core's counters and how the run ended) and dram.out.bin.

Everything is driven at the falling edge and sampled after the combinational logic settles (ReadOnly), so what is
sampled is what the rising edge takes: the same handshakes as the Amaranth simulation's `tick().sample()`.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from tritc.hw.credit import DramCredit

# The core's outputs read into result.json (those the merged core lacks are left out, not an error).
OUTPUTS = ("running", "finished", "deadlock", "refused", "error", "error_index", "fetch_index", "fetch_blocked",
           "cycles", "instructions", "read_bytes", "write_bytes",
           *(f"{e}_{k}" for e in ("load", "compute", "store") for k in ("state", "index", "waiting", "busy", "stall")),
           *(f"tokens_{q}" for q in ("l2c", "c2l", "c2s", "s2c")))


def _int(handle) -> int:
    v = handle.value
    if not v.is_resolvable:
        raise ValueError(f"{handle._name} is {v} (X or Z bits)")
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)    # a LogicArray, or one bit's Logic


class Dram:
    """DramModel (tritc/hw/memory.py) on Verilog ports: the same credit, latency and order."""

    def __init__(self, dut, job: dict, mem: np.ndarray, words: np.ndarray):
        self.dut, self.beat, self.latency, self.rate = dut, job["beat"], job["latency"], job["bytes_per_cycle"]
        self.mem, self.words, self.stream_base = mem, words, job["stream_base"]
        self.req, self.resp = job["request"], job["response"]      # field: (offset, width)
        self.pending: deque[tuple[int, int]] = deque()            # (the cycle the response is due, its bits)
        self.credit, self.cycle, self.requests, self.shown = DramCredit(self.rate, self.beat), 0, 0, [None, None, None]

    def drive(self) -> None:
        d = self.dut
        self.accept = self.credit.offer()
        if self.shown[0] != self.accept:
            d.mem__req__ready.value = int(self.accept)
            self.shown[0] = self.accept
        pending = self.pending
        self.head = pending[0] if pending and pending[0][0] <= self.cycle else None
        if self.shown[1] != (self.head is not None):
            d.mem__resp__valid.value = int(self.head is not None)
            self.shown[1] = self.head is not None
        if self.head is not None and self.shown[2] is not self.head:
            d.mem__resp__payload.value = self.head[1]
            self.shown[2] = self.head

    def edge(self) -> None:
        """What the rising edge does, from the values sampled before it."""
        d = self.dut
        self.cycle += 1
        requested = bool(int(d.mem__req__valid.value))
        self.credit.settle(self.accept, requested)
        if self.accept and requested:
            self.requests += 1
            bits = _int(d.mem__req__payload)
            f = {k: (bits >> off) & ((1 << width) - 1) for k, (off, width) in self.req.items()}
            self.pending.append((self.cycle + self.latency - 1, self._access(f)))
        if self.head is not None and int(d.mem__resp__ready.value):
            self.pending.popleft()

    def _access(self, f: dict) -> int:
        lo = f["addr"] * self.beat
        data_off, write_off = self.resp["data"][0], self.resp["write"][0]
        if lo >= self.stream_base:
            off = lo - self.stream_base
            if f["write"] or off + self.beat > self.words.size:
                raise IndexError(f"the core {'wrote' if f['write'] else 'read'} DRAM byte {lo:#x}, past the stream's "
                                 f"{self.words.size} bytes at {self.stream_base:#x}")
            return int.from_bytes(self.words[off:off + self.beat].tobytes(), "little") << data_off
        if lo + self.beat > self.mem.size:
            raise IndexError(f"DRAM request at byte {lo:#x} is outside the model's {self.mem.size} bytes")
        row = self.mem[lo:lo + self.beat]
        if f["write"]:
            data = np.frombuffer(f["data"].to_bytes(self.beat, "little"), np.uint8)
            strobe = np.array([(f["strobe"] >> i) & 1 for i in range(self.beat)], bool)
            row[strobe] = data[strobe]
            return 1 << write_off
        return int.from_bytes(row.tobytes(), "little") << data_off


@cocotb.test()
async def run_stream(dut):
    folder = Path(os.environ["TRITC_COCOTB_JOB"])
    job = json.loads((folder / "job.json").read_text())
    mem = np.fromfile(folder / "dram.bin", np.uint8)
    words = np.fromfile(folder / "words.bin", np.uint8)
    dram = Dram(dut, job, mem, words)
    Clock(dut.clk, 10, unit="ns").start()
    # Every input driven from time 0, as Amaranth's simulator has them (0 until set): an undriven Verilog input is
    # Z, and the core registers the response payload while no response is valid (X then spreads to the counters).
    for name, v in (("rst", 1), ("clear", 1), ("start", 0), ("base", 0), ("count", 0), ("mem__req__ready", 0),
                    ("mem__resp__valid", 0), ("mem__resp__payload", 0)):
        getattr(dut, name).value = v
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    # RtlDevice's run: clear for 2 cycles (no request is in flight: the core has just been reset), then start with
    # base and count held for one cycle, then cycles until `running` is sampled low or the budget is spent.
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.clear.value = 0
    dut.base.value = job["base"]
    dut.count.value = job["count"]
    dut.start.value = 1
    budget, cycles, outcome, refusal = job["max_cycles"], -1, "timeout", None
    while budget is None or cycles <= budget:
        dram.drive()
        await ReadOnly()
        running = int(dut.running.value)
        try:
            dram.edge()
        except IndexError as e:          # the core reached outside DRAM and the stream: what RtlDevice reports
            outcome, refusal = "dram", str(e)
            break
        await FallingEdge(dut.clk)
        if cycles == -1:
            dut.start.value = 0
        elif not running:
            outcome = "stopped"
            break
        cycles += 1
    result = {"outcome": outcome, "refusal": refusal, "host_cycles": cycles, "dram_requests": dram.requests}
    for name in OUTPUTS:
        if hasattr(dut, name):
            try:
                result[name] = _int(getattr(dut, name))
            except ValueError as e:
                result[name] = str(e)
    mem.tofile(folder / "dram.out.bin")
    (folder / "result.json").write_text(json.dumps(result))

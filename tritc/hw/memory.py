"""The memory side: the request / response port every DRAM master uses, an arbiter that shares one port among
several masters, and DramModel, the behavioural DRAM the simulations attach to a port (docs/HW.md, "Memory").

A port moves whole beats of `mem_beat_bytes`, addressed by beat. A request reads a beat or writes the bytes its
strobe selects; every request gets one response, in order (a read's data, or a write's acknowledgement, so that
an engine knows when its stores have landed before it pushes a token).
"""

from __future__ import annotations

import math
from collections import deque
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import DRAM_ADDR_BITS
from .credit import DramCredit
from .params import HwParams


def request_layout(beat_bytes: int) -> data.StructLayout:
    return data.StructLayout({"addr": DRAM_ADDR_BITS - int(math.log2(beat_bytes)), "write": 1,
                              "data": 8 * beat_bytes, "strobe": beat_bytes})


def response_layout(beat_bytes: int) -> data.StructLayout:
    return data.StructLayout({"data": 8 * beat_bytes, "write": 1})


def port_signature(beat_bytes: int) -> wiring.Signature:
    """A memory port as its master sees it: requests out, responses in."""
    return wiring.Signature({"req": Out(stream.Signature(request_layout(beat_bytes))),
                             "resp": In(stream.Signature(response_layout(beat_bytes)))})


class MemArbiter(wiring.Component):
    """`masters` ports share the `bus` port: requests are granted round robin, one per cycle, and the master of each
    request in flight is remembered (up to `mem_outstanding`) so that its response goes back to it."""

    def __init__(self, params: HwParams, masters: int):
        self.params, self.n = params, masters
        sig = port_signature(params.mem_beat_bytes)
        super().__init__({**{f"m{i}": In(sig) for i in range(masters)}, "bus": Out(sig)})

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.n
        masters = [getattr(self, f"m{i}") for i in range(n)]
        owners = m.submodules.owners = fifo.SyncFIFO(width=max(1, (n - 1).bit_length()),
                                                     depth=self.params.mem_outstanding)
        # Round robin: `first` has the highest priority; the first valid master from it on is granted.
        first = Signal(range(n))
        sel = Signal(range(n))
        any_valid = Signal()
        with m.Switch(first):
            for p in range(n):
                with m.Case(p):
                    for k in reversed(range(n)):   # the last assignment wins: the first in rotated order
                        i = (p + k) % n
                        with m.If(masters[i].req.valid):
                            m.d.comb += [sel.eq(i), any_valid.eq(1)]
        bus = self.bus
        with m.Switch(sel):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [bus.req.payload.eq(masters[i].req.payload),
                                 masters[i].req.ready.eq(bus.req.ready & owners.w_rdy)]
        m.d.comb += [bus.req.valid.eq(any_valid & owners.w_rdy), owners.w_data.eq(sel),
                     owners.w_en.eq(bus.req.valid & bus.req.ready)]
        with m.If(bus.req.valid & bus.req.ready):
            m.d.sync += first.eq(Mux(sel == n - 1, 0, sel + 1))
        # Responses come back in request order: the head of `owners` says whose.
        for i in range(n):
            m.d.comb += [masters[i].resp.payload.eq(bus.resp.payload),
                         masters[i].resp.valid.eq(bus.resp.valid & owners.r_rdy & (owners.r_data == i))]
        with m.Switch(owners.r_data):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += bus.resp.ready.eq(owners.r_rdy & masters[i].resp.ready)
        m.d.comb += owners.r_en.eq(bus.resp.valid & bus.resp.ready)
        return m


class DramModel:
    """Behavioural DRAM behind a port, for simulation: `size` bytes (a numpy array, `mem`), each request answered
    `latency` cycles after it is taken, in order, and requests taken no faster than `bytes_per_cycle` allows (a
    credit of bytes that refills every cycle). Reads see every write taken before them. Run `serve` as a background
    testbench: `run(dut, bench, background=(dram.serve,))`. The rate: DramCredit."""

    def __init__(self, port, beat_bytes: int, size: int, *, latency: int, bytes_per_cycle: float):
        if size % beat_bytes:
            raise ValueError(f"DRAM size {size} is not a whole number of {beat_bytes}-byte beats")
        self.port, self.beat, self.latency, self.rate = port, beat_bytes, latency, bytes_per_cycle
        self.mem = np.zeros(size, np.uint8)
        self.requests = 0
        self.pending: deque[tuple[int, dict]] = deque()   # (the cycle the response is due, the response)

    @classmethod
    def for_params(cls, port, params: HwParams, size: int) -> DramModel:
        return cls(port, params.mem_beat_bytes, size, latency=params.mem_latency,
                   bytes_per_cycle=params.config.bytes_per_cycle)

    def _access(self, req) -> dict:
        lo = req.addr * self.beat
        if lo + self.beat > self.mem.size:
            raise IndexError(f"DRAM request at byte {lo:#x} is outside the model's {self.mem.size} bytes")
        row = self.mem[lo:lo + self.beat]
        if req.write:
            data = np.frombuffer(int(req.data).to_bytes(self.beat, "little"), np.uint8)
            strobe = np.array([(req.strobe >> i) & 1 for i in range(self.beat)], bool)
            row[strobe] = data[strobe]
            return {"data": 0, "write": 1}
        return {"data": int.from_bytes(row.tobytes(), "little"), "write": 0}

    async def serve(self, ctx) -> None:
        # Signals are set only when they change and the request is sampled as its bits, decoded only when taken: the
        # model runs every cycle of every simulation that has a DRAM, so its own cost matters.
        port = self.port
        pending = self.pending
        credit = DramCredit(self.rate, self.beat)
        cycle = 0
        layout = request_layout(self.beat)
        fields = {name: (layout[name].offset, (1 << layout[name].width) - 1) for name in ("addr", "write", "data",
                                                                                         "strobe")}
        req_bits = Value.cast(port.req.payload)
        resp_bits = Value.cast(port.resp.payload)
        resp_layout = response_layout(self.beat)
        data_off, write_off = resp_layout["data"].offset, resp_layout["write"].offset
        shown = [None, None, None]                   # req.ready, resp.valid, resp.payload as last set
        while True:
            accept = credit.offer()
            if shown[0] != accept:
                ctx.set(port.req.ready, accept)
                shown[0] = accept
            head = pending[0] if pending and pending[0][0] <= cycle else None
            if shown[1] != (head is not None):
                ctx.set(port.resp.valid, head is not None)
                shown[1] = head is not None
            if head is not None and shown[2] is not head:
                ctx.set(resp_bits, head[1]["data"] << data_off | head[1]["write"] << write_off)
                shown[2] = head
            _, _, req_valid, bits, resp_ready = await ctx.tick().sample(port.req.valid, req_bits, port.resp.ready)
            cycle += 1
            credit.settle(accept, req_valid)
            if accept and req_valid:
                self.requests += 1
                req = SimpleNamespace(**{k: (bits >> off) & mask for k, (off, mask) in fields.items()})
                pending.append((cycle + self.latency - 1, self._access(req)))
            if head is not None and resp_ready:
                pending.popleft()

"""Instruction fetch (docs/HW.md, "The core"): the stream's words read from DRAM through a memory port, decoded
(InstrDecoder) and routed in order to the engine each belongs to, tagged with its index in the stream.

A beat of `mem_beat_bytes` holds `mem_beat_bytes / 32` words, so the stream must start on a beat (the runtime
places it so). Beats are requested ahead as long as the beat FIFO has room for every response in flight, which
keeps the port's latency hidden behind the words already fetched. A word the decoder flags (an unknown opcode, bits
set above its last field, an unknown function or buffer), or one for a compute unit this build does not have,
stops the fetch: nothing after it is routed, and `error` holds why and `error_index` which word.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import DRAM_ADDR_BITS
from ..codegen.fpga.isa import INSTR_BITS, INSTR_BYTES, Engine, Op
from .memory import port_signature
from .params import HwConfigError, HwParams
from .queues import ERRORS, INSTR, InstrDecoder

INDEX_BITS = 32                                          # an instruction's index in its stream
CMD = data.StructLayout({"instr": INSTR, "index": INDEX_BITS})   # what an engine's command queue holds
FETCH_ERRORS = data.StructLayout({**{name: 1 for name, _ in ERRORS}, "absent": 1})
UNITS = ("gemm", "vop")                                  # the compute engine's units a build may leave out
UNIT_OPS = {"gemm": Op.GEMM, "vop": Op.VOP}


def beat_addr_bits(params: HwParams) -> int:
    return DRAM_ADDR_BITS - int(math.log2(params.mem_beat_bytes))


class Fetch(wiring.Component):
    """`start` (one cycle, `base` the stream's first beat and `count` its words held from then on) begins a fetch;
    `load`, `compute`, `store`: each engine's decoded instructions in stream order; `done` once all `count` words
    are routed; `next_index` the index of the next word to route; `error` (sticky until the next start) and
    `error_index` for a refused word; `progress` whenever a beat was requested or received or a word routed.
    `units`: the compute units present (a GEMM or VOP for an absent one is refused as `absent`)."""

    def __init__(self, params: HwParams, units: frozenset[str] = frozenset(), beats: int = 8):
        if params.mem_beat_bytes < INSTR_BYTES:
            raise HwConfigError(f"FPGA config '{params.config.name}': mem_beat_bytes {params.mem_beat_bytes} is smaller "
                                f"than an instruction ({INSTR_BYTES} bytes): fetch reads whole words from a beat")
        self.params, self.units, self.beats = params, frozenset(units), beats
        super().__init__({
            "start": In(1), "base": In(beat_addr_bits(params)), "count": In(INDEX_BITS),
            "mem": Out(port_signature(params.mem_beat_bytes)),
            "load": Out(stream.Signature(CMD)), "compute": Out(stream.Signature(CMD)),
            "store": Out(stream.Signature(CMD)),
            "done": Out(1), "error": Out(FETCH_ERRORS), "error_index": Out(INDEX_BITS), "progress": Out(1),
            "next_index": Out(INDEX_BITS),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        B = self.params.mem_beat_bytes
        W = B // INSTR_BYTES                                   # words per beat, a power of two
        lw = int(math.log2(W))
        beats = m.submodules.beats = fifo.SyncFIFO(width=8 * B, depth=self.beats)
        dec = m.submodules.decoder = InstrDecoder()

        running = Signal()
        next_beat = Signal(beat_addr_bits(self.params))
        to_request = Signal(INDEX_BITS)                        # beats not yet requested
        in_flight = Signal(range(self.beats + 1))              # beats requested, not yet in the FIFO
        words_left = Signal(INDEX_BITS)
        index = Signal(INDEX_BITS)
        slot = Signal(range(W))                                # the word of the head beat being decoded
        stopped = Signal()

        # Requests: only with room in the FIFO for every response in flight, so a response is always taken at once
        # (the arbiter returns responses in order: a master that stalled one would stall the others behind it).
        room = (beats.level + in_flight) < self.beats
        req = self.mem.req
        m.d.comb += [req.valid.eq(running & (to_request != 0) & room), req.payload.addr.eq(next_beat),
                     req.payload.write.eq(0), self.mem.resp.ready.eq(1),
                     beats.w_data.eq(self.mem.resp.payload.data), beats.w_en.eq(self.mem.resp.valid)]
        sent = req.valid & req.ready
        got = self.mem.resp.valid
        with m.If(sent):
            m.d.sync += [next_beat.eq(next_beat + 1), to_request.eq(to_request - 1)]
        with m.If(sent & ~got):
            m.d.sync += in_flight.eq(in_flight + 1)
        with m.Elif(got & ~sent):
            m.d.sync += in_flight.eq(in_flight - 1)

        # Decode the head beat's words in order and route each to its engine's queue (word `slot` of the beat starts at
        # bit 256 * slot: a shift amount wired from `slot`, not a multiply).
        m.d.comb += [dec.inp.payload.eq(beats.r_data.bit_select(Cat(Const(0, 8), slot), INSTR_BITS)),
                     dec.inp.valid.eq(running & ~stopped & beats.r_rdy & (words_left != 0))]
        d = dec.out.payload
        refused = Signal(FETCH_ERRORS)
        m.d.comb += [refused.opcode.eq(d.error.opcode), refused.unused.eq(d.error.unused),
                     refused.func.eq(d.error.func), refused.buf.eq(d.error.buf)]
        absent = [d.instr.op == UNIT_OPS[u] for u in UNITS if u not in self.units]
        for a in absent:
            with m.If(a & ~d.error.opcode):
                m.d.comb += refused.absent.eq(1)
        bad = refused.as_value() != 0
        routes = {Engine.LOAD: self.load, Engine.COMPUTE: self.compute, Engine.STORE: self.store}
        ready = Signal()
        for eng, out in routes.items():
            m.d.comb += [out.payload.instr.eq(d.instr), out.payload.index.eq(index),
                         out.valid.eq(dec.out.valid & ~bad & (d.engine == eng))]
            with m.If(d.engine == eng):
                m.d.comb += ready.eq(out.ready)
        m.d.comb += dec.out.ready.eq(ready | bad)
        taken = dec.out.valid & dec.out.ready
        with m.If(taken & bad):
            m.d.sync += [stopped.eq(1), self.error.eq(refused), self.error_index.eq(index)]
        with m.Elif(taken):
            last_of_beat = (slot == W - 1) | (words_left == 1)
            m.d.sync += [words_left.eq(words_left - 1), index.eq(index + 1), slot.eq(slot + 1)]
            with m.If(last_of_beat):
                m.d.sync += slot.eq(0)
            m.d.comb += beats.r_en.eq(last_of_beat)

        with m.If(self.start):
            m.d.sync += [running.eq(1), stopped.eq(0), self.error.eq(0), next_beat.eq(self.base),
                         to_request.eq((self.count + (W - 1)) >> lw), words_left.eq(self.count), index.eq(0),
                         slot.eq(0)]
        m.d.comb += [self.done.eq(running & (words_left == 0)), self.progress.eq(sent | got | (taken & ~bad)),
                     self.next_index.eq(index)]
        return m

"""The memory port on a board: an AXI4 master (docs/HW.md, "AXI4").

AXI returns read data (R) and write acknowledgements (B) on separate channels, while the port promises one
response per request in request order. The adapter therefore remembers the kind of every request in flight (up to
`mem_outstanding`, so that the DRAM latency is covered by requests in flight, as behind `DramModel`) and answers
the port from R or B as the oldest kind says. All transactions use one AXI ID, so AXI itself keeps reads in order
among reads and writes in order among writes; nothing in AXI orders a read against a write, so the adapter holds a
request while one of the other kind to its beat is in flight (the hazard check; DramModel's contract).

A beat wider than the AXI data bus becomes an INCR burst of `mem_beat_bytes / data_bytes` transfers, shifted out
of (and into) a beat-wide register by a constant shift, so the width costs registers, not multiplexers.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.config import DRAM_ADDR_BITS
from .memory import port_signature
from .params import HwConfigError, HwParams

AXI_MAX_DATA_BYTES = 128   # AXI4's widest data bus, 1024 bits
AXI_BOUNDARY = 4096        # an AXI burst may not cross a 4 KiB boundary
INCR = 0b01
OKAY = 0b00
ERROR_COUNT_BITS = 16


def axi4_signature(addr_bits: int, data_bytes: int, id_bits: int = 1) -> wiring.Signature:
    """An AXI4 interface as its master sees it: the five channels, AXI's names in lower case."""
    return wiring.Signature({
        "araddr": Out(addr_bits), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2), "arid": Out(id_bits),
        "arvalid": Out(1), "arready": In(1),
        "rdata": In(8 * data_bytes), "rresp": In(2), "rlast": In(1), "rid": In(id_bits), "rvalid": In(1),
        "rready": Out(1),
        "awaddr": Out(addr_bits), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2), "awid": Out(id_bits),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(8 * data_bytes), "wstrb": Out(data_bytes), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bid": In(id_bits), "bvalid": In(1), "bready": Out(1),
    })


def axi_width_error(beat: int, data_bytes: int) -> str | None:
    """Why a beat of `beat` bytes cannot be one AXI4 burst of `data_bytes` transfers, or None."""
    if data_bytes < 1 or data_bytes & (data_bytes - 1) or data_bytes > AXI_MAX_DATA_BYTES:
        return f"data_bytes must be a power of two from 1 to {AXI_MAX_DATA_BYTES} (AXI4's widths), got {data_bytes}"
    if data_bytes > beat:
        return f"data_bytes {data_bytes} is wider than mem_beat_bytes {beat} (a beat is a burst of whole transfers)"
    if beat > AXI_BOUNDARY or beat // data_bytes > 256:
        return (f"mem_beat_bytes {beat} in transfers of {data_bytes} bytes is not one AXI4 burst (at most 256 "
                f"transfers, not crossing 4 KiB)")
    return None


class AxiAdapter(wiring.Component):
    """`bus`: a memory port as its slave (what `MemArbiter.bus` connects to); `m_axi`: an AXI4 master of
    `data_bytes` per transfer (default: the beat, up to AXI's 128 bytes). `error` rises at the first response that
    is not OKAY (or a read burst whose RLAST is misplaced) and stays; `errors` counts such responses, saturating.
    The port still gets its response, in order, so that nothing waiting on it hangs. `hazard_check` keeps
    DramModel's contract (a read sees every write requested before it, a write never reaches an earlier read) with
    a comparator per request in flight; without it, only requests of one kind are ordered among themselves, which
    is all the ISA's tokens need (a STORE's `s2c` waits for its writes' acknowledgements, a LOAD's data is in
    before it signals)."""

    def __init__(self, params: HwParams, data_bytes: int | None = None, *, addr_bits: int = DRAM_ADDR_BITS,
                 hazard_check: bool = True):
        beat = params.mem_beat_bytes
        data_bytes = min(beat, AXI_MAX_DATA_BYTES) if data_bytes is None else data_bytes
        why = axi_width_error(beat, data_bytes)
        if why:
            self._MustUse__silence = True   # refused, not forgotten: no "created but never used" warning
            raise HwConfigError(f"AxiAdapter: {why}")
        self.params, self.beat, self.data_bytes, self.hazard_check = params, beat, data_bytes, hazard_check
        self.burst = beat // data_bytes
        super().__init__({"bus": In(port_signature(beat)), "m_axi": Out(axi4_signature(addr_bits, data_bytes)),
                          "error": Out(1), "errors": Out(ERROR_COUNT_BITS)})

    def elaborate(self, platform) -> Module:
        m = Module()
        n, dbits = self.burst, 8 * self.data_bytes
        req, resp, axi = self.bus.req, self.bus.resp, self.m_axi
        abits = len(req.payload.addr)
        shift = int(math.log2(self.beat))
        ring = _InFlight(m, self.params.mem_outstanding, abits if self.hazard_check else 0)
        ar = m.submodules.ar = fifo.SyncFIFOBuffered(width=abits, depth=3)
        aw = m.submodules.aw = fifo.SyncFIFOBuffered(width=abits, depth=3)

        # Requests: a read's address to AR; a write's address to AW and its data to the W register. AW and W then
        # go out independently, so a slave may take either first.
        wbusy, wcount = Signal(), Signal(range(n))
        wdata, wstrb = Signal(8 * self.beat, reset_less=True), Signal(self.beat, reset_less=True)
        w_take = Signal()
        w_last = Signal()
        m.d.comb += [w_take.eq(axi.wvalid & axi.wready), w_last.eq(wcount == n - 1)]
        w_free = ~wbusy | (w_take & w_last)
        is_write = req.payload.write
        take = Signal()
        hazard = ring.conflict(req.payload.addr, is_write) if self.hazard_check else Const(0)
        m.d.comb += [req.ready.eq(~ring.full & ~hazard & Mux(is_write, aw.w_rdy & w_free, ar.w_rdy)),
                     take.eq(req.valid & req.ready),
                     ar.w_en.eq(take & ~is_write), ar.w_data.eq(req.payload.addr),
                     aw.w_en.eq(take & is_write), aw.w_data.eq(req.payload.addr)]
        size, length = int(math.log2(self.data_bytes)), n - 1
        m.d.comb += [axi.araddr.eq(Cat(Const(0, shift), ar.r_data)), axi.arlen.eq(length), axi.arsize.eq(size),
                     axi.arburst.eq(INCR), axi.arid.eq(0), axi.arvalid.eq(ar.r_rdy), ar.r_en.eq(axi.arready),
                     axi.awaddr.eq(Cat(Const(0, shift), aw.r_data)), axi.awlen.eq(length), axi.awsize.eq(size),
                     axi.awburst.eq(INCR), axi.awid.eq(0), axi.awvalid.eq(aw.r_rdy), aw.r_en.eq(axi.awready),
                     axi.wdata.eq(wdata[:dbits]), axi.wstrb.eq(wstrb[:self.data_bytes]), axi.wlast.eq(w_last),
                     axi.wvalid.eq(wbusy)]
        with m.If(w_take):   # the next transfer of the burst moves down into the low bits
            m.d.sync += [wdata.eq(wdata[dbits:]), wstrb.eq(wstrb[self.data_bytes:]),
                         wcount.eq(Mux(w_last, 0, wcount + 1))]
            with m.If(w_last):
                m.d.sync += wbusy.eq(0)
        # The data loads whenever the register is free, taken or not (a hazard or a full ring does not reach these
        # wide enables); only `wbusy` waits for the request to be taken.
        with m.If(w_free):
            m.d.sync += [wdata.eq(req.payload.data), wstrb.eq(req.payload.strobe), wcount.eq(0)]
        with m.If(take & is_write):
            m.d.sync += wbusy.eq(1)

        # Responses, in request order: the oldest kind in flight says whether R's assembled beat or a B answers.
        head_write = ring.head_write
        rbuf = Signal(8 * self.beat, reset_less=True)
        rcount, rfull, rbad = Signal(range(n)), Signal(), Signal()
        bcount = Signal(range(self.params.mem_outstanding + 1))   # B's taken, not yet answered
        m.d.comb += [resp.valid.eq(ring.head_live & Mux(head_write, bcount != 0, rfull)),
                     resp.payload.data.eq(rbuf), resp.payload.write.eq(head_write)]
        ring.update(take, req.payload.addr, is_write, resp.valid & resp.ready)
        answer_read = resp.valid & resp.ready & ~head_write
        answer_write = resp.valid & resp.ready & head_write
        # R: a burst's transfers shift into `rbuf` from the top; a new burst may start as the full one leaves.
        r_take, r_end = Signal(), Signal()
        m.d.comb += [axi.rready.eq(~rfull | answer_read), r_take.eq(axi.rvalid & axi.rready),
                     r_end.eq(r_take & (rcount == n - 1))]
        r_bad = (axi.rresp != OKAY) | (axi.rlast != (rcount == n - 1))
        with m.If(answer_read):
            m.d.sync += rfull.eq(0)
        with m.If(r_take):
            m.d.sync += [rbuf.eq(Cat(rbuf[dbits:], axi.rdata)), rcount.eq(Mux(r_end, 0, rcount + 1)),
                         rbad.eq(Mux(r_end, 0, rbad | r_bad))]
            with m.If(r_end):
                m.d.sync += rfull.eq(1)
        # B: always taken (at most `mem_outstanding` writes are in flight), counted until answered.
        b_take = Signal()
        m.d.comb += [axi.bready.eq(1), b_take.eq(axi.bvalid)]
        m.d.sync += bcount.eq(bcount + b_take - answer_write)

        # Errors: a read burst counts once, at its last transfer; a B once.
        bad_r = Signal()
        bad_b = Signal()
        m.d.comb += [bad_r.eq(r_end & (rbad | r_bad)), bad_b.eq(b_take & (axi.bresp != OKAY))]
        total = Signal(ERROR_COUNT_BITS + 1)
        m.d.comb += total.eq(self.errors + bad_r + bad_b)
        m.d.sync += self.errors.eq(Mux(total[-1], (1 << ERROR_COUNT_BITS) - 1, total[:ERROR_COUNT_BITS]))
        with m.If(bad_r | bad_b):
            m.d.sync += self.error.eq(1)
        return m


class _InFlight:
    """The requests in flight, oldest first: a ring of `depth` slots of a beat address and a kind, taken when a
    request is accepted and freed when its response leaves. The kind of the oldest says where the next response
    comes from; the addresses let a request wait while one of the other kind to its beat is in flight, since AXI
    orders neither a read after a write nor a write after a read (the comparators are the cost: `depth` of them, 64
    at the presets). The head and tail are one-hot, so that each slot's update is a LUT, not a pointer decoder that
    synthesis folds into every slot."""

    def __init__(self, m: Module, depth: int, abits: int):
        self.m, self.depth = m, depth
        self.addrs = [Signal(abits, name=f"inflight{i}_addr", reset_less=True) for i in range(depth)]
        self.write = [Signal(name=f"inflight{i}_write", reset_less=True) for i in range(depth)]
        self.live = [Signal(name=f"inflight{i}_live") for i in range(depth)]
        self.head, self.tail = Signal(depth, init=1), Signal(depth, init=1)   # one-hot
        self.full, self.head_live, self.head_write = Signal(), Signal(), Signal()
        m.d.comb += [self.full.eq(Cat(self.tail[i] & self.live[i] for i in range(depth)).any()),
                     self.head_live.eq(Cat(self.head[i] & self.live[i] for i in range(depth)).any()),
                     self.head_write.eq(Cat(self.head[i] & self.write[i] for i in range(depth)).any())]

    def conflict(self, addr, write) -> Signal:
        same = [Signal(name=f"inflight{i}_same") for i in range(self.depth)]
        hit_w, hit_r, hit = Signal(), Signal(), Signal()
        self.m.d.comb += [s.eq(a == addr) for s, a in zip(same, self.addrs)]
        self.m.d.comb += [hit_w.eq(Cat(s & l & w for s, l, w in zip(same, self.live, self.write)).any()),
                          hit_r.eq(Cat(s & l & ~w for s, l, w in zip(same, self.live, self.write)).any()),
                          hit.eq(Mux(write, hit_r, hit_w))]
        return hit

    def update(self, push, addr, write, pop) -> None:
        m = self.m
        for i in range(self.depth):
            with m.If(push & self.tail[i]):
                m.d.sync += [self.addrs[i].eq(addr), self.write[i].eq(write)]
            with m.If(push & self.tail[i]):
                m.d.sync += self.live[i].eq(1)
            with m.Elif(pop & self.head[i]):
                m.d.sync += self.live[i].eq(0)
        with m.If(push):
            m.d.sync += self.tail.eq(self.tail.rotate_left(1))
        with m.If(pop):
            m.d.sync += self.head.eq(self.head.rotate_left(1))

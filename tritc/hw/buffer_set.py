"""The core's five buffers and the ports of everything that reads and writes them (docs/HW.md, "The core",
"Buffers"): the LOAD mover's chunk writes, the STORE mover's chunk reads, the GEMM engine's wide ACT reads
and R-word ACC reads and writes, the vector engine's lane reads (src1, src2) and lane writes.

- ACC, VEC, KV are `WordBuffer`s (`vector_lanes` word banks, byte enables). Their write port is shared by the LOAD
  mover (a chunk: up to `vector_lanes` words of one aligned window, the bytes it does not cover held, so that a
  4-byte element straddling two DRAM beats lands as two chunks), the vector engine and (ACC) the GEMM engine; read
  port 0 by the STORE mover (a chunk's window, every lane), the vector engine's src1 and (ACC) the GEMM engine;
  read port 1 is src2's alone.
- ACT is `ActBuffer` (`matrix_lanes` byte banks, a chunk write port, a wide read port, and here a lane write port).
  The GEMM engine reads it directly; the STORE mover takes a read's bytes as its chunk; the LOAD mover writes a
  chunk of up to `matrix_lanes` bytes inside one row of the banks; the vector engine writes its lanes on
  the lane port (a chunk per cycle when its lanes fall in distinct banks and no LOAD byte is for one of them) and
  reads through adapters, one lane's byte per cycle (a VOP reading ACT runs at about 1 / vector_lanes of the
  model's rate: the gap the docs name).
- WGT is the GEMM engine's `WgtBuffer` (the LOAD mover's WGT chunks leave on `wgt_wr`), or one of its own when the
  core has no GEMM engine, so that LOADs into WGT still work.

Every shared port has a fixed-priority arbiter, the movers first (a LOAD mover that waits stalls the DRAM responses
of the other masters behind it). A request presented and not taken keeps its port until it is: a word buffer
serves a conflicting request over several cycles and counts the lanes it has served. Each read port has at most one
answer outstanding (both buffers answer the cycle after a request and take the next one only once that answer is
taken), so an `owner` register routes it back.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Buf
from ..codegen.fpga.ports import store_bytes
from .buffers import ActBuffer
from .dma import byte_enables, chunk_read_layout, chunk_write_layout
from .gemm_engine import acc_read_layout, acc_write_layout
from .matrix_unit import sums_layout
from .params import ACT_BITS, HwConfigError, HwParams
from .wgt_buffer import WgtBuffer
from .word_buffer import ADDR_BITS, WordBuffer, read_port_signature, read_request_layout, write_layout, write_port_signature

WORD_BUFFERS = (Buf.ACC, Buf.VEC, Buf.KV)


def _or(values):
    out = 0
    for v in values:
        out = out | v
    return out


def _lowest(m: Module, bits, name: str) -> Signal:
    """The lowest set bit of `bits`, one-hot (0 for none)."""
    out = Signal(len(bits), name=name)
    m.d.comb += out.eq((bits & (~bits + 1))[:len(bits)])
    return out


def arbitrate(m: Module, name: str, target, masters: list[tuple]) -> tuple[list[Signal], Signal]:
    """Drive stream `target` from `masters` ((valid, payload) in priority order, the first wins), a request held
    until taken keeping the target. Returns each master's `ready` and the `owner` of the last request taken (the
    one its answer belongs to, for a read port)."""
    n = len(masters)
    locked = Signal(name=f"{name}_locked")
    held, sel, owner = (Signal(range(max(n, 2)), name=f"{name}_{s}") for s in ("held", "sel", "owner"))
    with m.If(locked):
        m.d.comb += sel.eq(held)
    with m.Else():
        for k in reversed(range(n)):          # the last assignment wins: the first master has priority
            with m.If(masters[k][0]):
                m.d.comb += sel.eq(k)
    valid = Signal(name=f"{name}_valid")
    with m.Switch(sel):
        for k, (v, payload) in enumerate(masters):
            with m.Case(k):
                m.d.comb += [valid.eq(v), target.payload.eq(payload)]
    m.d.comb += target.valid.eq(valid)
    readies = [Signal(name=f"{name}_ready{k}") for k in range(n)]
    m.d.comb += [r.eq((sel == k) & valid & target.ready) for k, r in enumerate(readies)]
    m.d.sync += [locked.eq(valid & ~target.ready), held.eq(sel)]
    with m.If(valid & target.ready):
        m.d.sync += owner.eq(sel)
    return readies, owner


def _window_word(byte_addr, lane: int, lane_bits: int):
    """The word address lane `lane` holds in the aligned window of `2^lane_bits` words around byte `byte_addr`."""
    return Cat(Const(lane, lane_bits), byte_addr[2 + lane_bits:]) if lane_bits else byte_addr[2:]


def _route_answer(m: Module, resp, owner, takers: list[tuple]) -> None:
    """A read port's answer to its owner: `takers` is (valid out or None, ready in) per master, in arbiter order."""
    with m.Switch(owner):
        for k, (_valid, ready) in enumerate(takers):
            with m.Case(k):
                m.d.comb += resp.ready.eq(ready)
    for k, (valid, _ready) in enumerate(takers):
        if valid is not None:
            m.d.comb += valid.eq(resp.valid & (owner == k))


class BufferSet(wiring.Component):
    """The buffers and their ports (the module's docstring). Always: `wr` (LOAD mover, chunks), `rd_req` /
    `rd_resp` (STORE mover: answered in order through a FIFO of `read_depth`, a request taken only with room for
    its answer). With `gemm`: `wgt_wr` out to the engine's WGT, `act_rd` / `act_data`, `acc_rd` / `acc_rd_data`,
    `acc_wr` (GemmEngine's ports, flipped). With `vop`: `rd_a`, `rd_b`, `vwr` (VectorEngine's ports, flipped)."""

    def __init__(self, params: HwParams, *, gemm: bool = False, vop: bool = False, read_depth: int = 4):
        L = params.vector_lanes
        if gemm and params.rows > L:
            raise HwConfigError(f"FPGA config '{params.config.name}': matrix_rows {params.rows} is more than "
                                f"vector_lanes {L} (the RTL core reads a block's R accumulators in one ACC request)")
        self.params, self.gemm, self.vop, self.read_depth = params, gemm, vop, read_depth
        self.act = ActBuffer(params, write_lanes=L if vop else 0)
        self.words = {b: WordBuffer(params, b, read_ports=3 if vop else 1) for b in WORD_BUFFERS}
        self.wgt = None if gemm else WgtBuffer(params)
        members = {"wr": In(stream.Signature(chunk_write_layout(params.mem_beat_bytes))),
                   "rd_req": In(stream.Signature(chunk_read_layout())),
                   "rd_resp": Out(stream.Signature(8 * store_bytes(params.config)))}
        if gemm:
            members.update({
                "wgt_wr": Out(stream.Signature(chunk_write_layout(params.mem_beat_bytes))),
                "act_rd": In(stream.Signature(params.addr_bits(Buf.ACT))),
                "act_data": Out(stream.Signature(data.ArrayLayout(signed(ACT_BITS), params.lanes))),
                "acc_rd": In(stream.Signature(acc_read_layout(params))),
                "acc_rd_data": Out(stream.Signature(sums_layout(params))),
                "acc_wr": In(stream.Signature(acc_write_layout(params)))})
        if vop:
            members.update({"rd_a": In(read_port_signature(L)), "rd_b": In(read_port_signature(L)),
                            "vwr": In(write_port_signature(L))})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        L = p.vector_lanes
        act = m.submodules.act = self.act
        for b, wb in self.words.items():
            m.submodules[b.name.lower()] = wb
        lw, w = self.wr, self.wr.payload
        load_ready = Signal()
        m.d.comb += lw.ready.eq(load_ready)

        # ---- WGT: the LOAD mover's chunks ----------------------------------------------------------------------
        if self.gemm:
            wgt_t = self.wgt_wr
        else:
            m.submodules.wgt = self.wgt
            wgt_t = self.wgt.wr
        m.d.comb += [wgt_t.valid.eq(lw.valid & (w.buf == Buf.WGT)), wgt_t.payload.eq(w)]
        with m.If(w.buf == Buf.WGT):
            m.d.comb += load_ready.eq(wgt_t.ready)

        # ---- ACT writes: the LOAD mover's chunks (its `wr`, first), the vector engine's lanes (its `wl`) ---------
        m.d.comb += [act.wr.valid.eq(lw.valid & (w.buf == Buf.ACT)), act.wr.payload.addr.eq(w.addr),
                     act.wr.payload.n.eq(w.n), act.wr.payload.data.eq(w.data)]
        with m.If(w.buf == Buf.ACT):
            m.d.comb += load_ready.eq(1)
        vop_wr_ready = {}
        if self.vop:
            vw = self.vwr.payload
            m.d.comb += [act.wl.valid.eq(self.vwr.valid & (vw.buf == Buf.ACT)), act.wl.payload.mask.eq(vw.mask)]
            m.d.comb += [act.wl.payload.addr[k].eq(vw.addr[k]) for k in range(L)]
            m.d.comb += [act.wl.payload.data[k].eq(vw.data[k][:8]) for k in range(L)]
            vop_wr_ready[Buf.ACT] = act.wl.ready

        # ---- word writes: the LOAD mover's chunks as lane writes, the vector engine's, the GEMM engine's ----------
        # A chunk lies inside one aligned window of L words (the walker's bank window): lane k writes word k of it,
        # its bytes shifted to the chunk's offset in the window, the bytes it does not cover held.
        lw_bits = (L - 1).bit_length()
        w_off = w.addr[:2 + lw_bits]
        window = Signal(32 * L)
        window_en = Signal(4 * L)
        m.d.comb += [window.eq(w.data << Cat(Const(0, 3), w_off)),
                     window_en.eq(byte_enables(w.n, 4 * L) << w_off)]
        for b, wb in self.words.items():
            load_w = Signal(write_layout(L), name=f"{b.name.lower()}_load_w")
            m.d.comb += load_w.buf.eq(b)
            for k in range(L):
                en = window_en[4 * k:4 * k + 4]
                m.d.comb += [load_w.addr[k].eq(_window_word(w.addr, k, lw_bits)),
                             load_w.data[k].eq(window.word_select(k, 32)), load_w.mask[k].eq(en != 0),
                             load_w.hold[k].eq(~en)]
            masters = [(lw.valid & (w.buf == b), load_w)]
            if self.vop:
                masters.append((self.vwr.valid & (self.vwr.payload.buf == b), self.vwr.payload))
            if self.gemm and b == Buf.ACC:
                gw = Signal(write_layout(L), name="acc_gemm_w")
                aw = self.acc_wr.payload
                m.d.comb += [gw.buf.eq(b), gw.mask.eq(aw.mask)]
                m.d.comb += [gw.addr[r].eq(aw.addr + r) for r in range(p.rows)]
                m.d.comb += [gw.data[r].eq(aw.data[r]) for r in range(p.rows)]
                masters.append((self.acc_wr.valid, gw))
            readies, _ = arbitrate(m, f"{b.name.lower()}_w", wb.wr, masters)
            with m.If(w.buf == b):
                m.d.comb += load_ready.eq(readies[0])
            if self.vop:
                vop_wr_ready[b] = readies[1]
            if self.gemm and b == Buf.ACC:
                m.d.comb += self.acc_wr.ready.eq(readies[-1])
        if self.vop:
            with m.Switch(self.vwr.payload.buf):
                for b, ready in vop_wr_ready.items():
                    with m.Case(b):
                        m.d.comb += self.vwr.ready.eq(ready)

        # ---- reads -------------------------------------------------------------------------------------------
        SW = store_bytes(p.config)
        answers = m.submodules.answers = fifo.SyncFIFO(width=8 * SW, depth=self.read_depth)
        s_pending, s_buf = Signal(), Signal(3)            # a STORE read taken last cycle is answered now
        sr = self.rd_req
        s_off = Signal(2 + lw_bits)                      # the chunk's byte in its word window
        s_room = (answers.level + s_pending) < self.read_depth
        s_ready = Signal()
        m.d.comb += sr.ready.eq(s_ready)
        m.d.sync += [s_pending.eq(sr.valid & sr.ready), s_buf.eq(sr.payload.buf), s_off.eq(sr.payload.addr)]
        answer = Signal(8 * SW)
        m.d.comb += [answers.w_en.eq(s_pending), answers.w_data.eq(answer),
                     self.rd_resp.valid.eq(answers.r_rdy), self.rd_resp.payload.eq(answers.r_data),
                     answers.r_en.eq(self.rd_resp.ready)]

        # Vector engine ports: which source took each port's last request (its answer comes from there).
        srcs = {}
        if self.vop:
            for port in ("rd_a", "rd_b"):
                rd = getattr(self, port)
                src = srcs[port] = Signal(3, name=f"{port}_src")
                with m.If(rd.req.valid & rd.req.ready):
                    m.d.sync += src.eq(rd.req.payload.buf)

        # ACT: STORE, GEMM, then the vector engine's adapters, on the one wide read port.
        act_masters, act_takers, after = [], [], []
        act_masters.append((sr.valid & s_room & (sr.payload.buf == Buf.ACT), sr.payload.addr[:p.addr_bits(Buf.ACT)]))
        act_takers.append((None, 1))
        if self.gemm:
            act_masters.append((self.act_rd.valid, self.act_rd.payload))
            act_takers.append((self.act_data.valid, self.act_data.ready))
            m.d.comb += self.act_data.payload.eq(act.rd_data.payload)
        if self.vop:
            for port in ("rd_a", "rd_b"):
                ad = _ActLanes(m, port, getattr(self, port), L, act, srcs[port])
                act_masters.append((ad.issue, ad.addr))
                act_takers.append((ad.data_valid, 1))
                after.append((port, ad))
        readies, owner = arbitrate(m, "act_r", act.rd, act_masters)
        _route_answer(m, act.rd_data, owner, act_takers)
        with m.If(sr.payload.buf == Buf.ACT):
            m.d.comb += s_ready.eq(readies[0])
        with m.If(s_buf == Buf.ACT):
            m.d.comb += answer.eq(act.rd_data.payload.as_value())
        if self.gemm:
            m.d.comb += self.act_rd.ready.eq(readies[1])
        for k, (_port, ad) in enumerate(after):
            ad.finish(readies[len(act_masters) - len(after) + k])

        # Word buffers: with the vector engine, port 0 for src1 and the GEMM engine's ACC reads, port 1 for src2 and
        # port 2 the STORE's own (a STORE draining VEC beside a VOP reading it would otherwise take the VOP's port
        # a chunk at a time); without it, port 0 for the STORE and the GEMM engine.
        for b, wb in self.words.items():
            n = b.name.lower()
            one = Signal(read_request_layout(L), name=f"{n}_store_r")       # the chunk's window, every lane
            m.d.comb += [one.buf.eq(b), one.mask.eq((1 << L) - 1)]
            m.d.comb += [one.addr[k].eq(_window_word(sr.payload.addr, k, lw_bits)) for k in range(L)]
            store_valid = sr.valid & s_room & (sr.payload.buf == b)
            masters, takers = [], []
            if self.vop:
                rs = wb.rd2
                m.d.comb += [rs.req.valid.eq(store_valid), rs.req.payload.eq(one), rs.resp.ready.eq(1)]
                with m.If(sr.payload.buf == b):
                    m.d.comb += s_ready.eq(rs.req.ready)
                with m.If(s_buf == b):
                    m.d.comb += answer.eq(rs.resp.payload.as_value() >> Cat(Const(0, 3), s_off))
                ra = self.rd_a
                masters.append((ra.req.valid & (ra.req.payload.buf == b), ra.req.payload))
                takers.append((Signal(name=f"{n}_a_valid"), ra.resp.ready & (srcs["rd_a"] == b)))
            else:
                masters.append((store_valid, one))
                takers.append((None, 1))
            if self.gemm and b == Buf.ACC:
                g = Signal(read_request_layout(L), name="acc_gemm_r")
                m.d.comb += [g.buf.eq(b), g.mask.eq(self.acc_rd.payload.mask)]
                m.d.comb += [g.addr[r].eq(self.acc_rd.payload.addr + r) for r in range(p.rows)]
                masters.append((self.acc_rd.valid, g))
                takers.append((self.acc_rd_data.valid, self.acc_rd_data.ready))
                m.d.comb += [self.acc_rd_data.payload[r].eq(wb.rd0.resp.payload[r]) for r in range(p.rows)]
            readies, owner = arbitrate(m, f"{n}_r0", wb.rd0.req, masters)
            _route_answer(m, wb.rd0.resp, owner, takers)
            if not self.vop:
                with m.If(sr.payload.buf == b):
                    m.d.comb += s_ready.eq(readies[0])
                with m.If(s_buf == b):
                    m.d.comb += answer.eq(wb.rd0.resp.payload.as_value() >> Cat(Const(0, 3), s_off))
            if self.gemm and b == Buf.ACC:
                m.d.comb += self.acc_rd.ready.eq(readies[-1])
            if self.vop:
                with m.If(self.rd_a.req.payload.buf == b):
                    m.d.comb += self.rd_a.req.ready.eq(readies[0])
                with m.If(srcs["rd_a"] == b):
                    m.d.comb += [self.rd_a.resp.valid.eq(takers[0][0]), self.rd_a.resp.payload.eq(wb.rd0.resp.payload)]
                rb = self.rd_b
                m.d.comb += [wb.rd1.req.valid.eq(rb.req.valid & (rb.req.payload.buf == b)),
                             wb.rd1.req.payload.eq(rb.req.payload), wb.rd1.resp.ready.eq(rb.resp.ready & (srcs["rd_b"] == b))]
                with m.If(rb.req.payload.buf == b):
                    m.d.comb += rb.req.ready.eq(wb.rd1.req.ready)
                with m.If(srcs["rd_b"] == b):
                    m.d.comb += [rb.resp.valid.eq(wb.rd1.resp.valid), rb.resp.payload.eq(wb.rd1.resp.payload)]
        return m


class _ActLanes:
    """A vector engine read port's requests on ACT, answered as one response (sign-extended), held until taken. A
    request whose masked lanes are consecutive bytes from lane 0's (a chunk of a row, column stride 1) is one read of
    the wide port, its answer's first lanes; any other reads the masked lanes' bytes one per cycle through it (lane
    0 of each answer), collected. One request at a time; `issue` / `addr` are its requests to the ACT arbiter,
    `data_valid` the answers it owns."""

    def __init__(self, m: Module, name: str, port, lanes: int, act: ActBuffer, src: Signal):
        self.m, self.port, self.lanes, self.src = m, port, lanes, src
        req = port.req
        self.busy, self.inflight, self.rvalid = (Signal(name=f"{name}_act_{s}") for s in ("busy", "inflight", "rvalid"))
        self.todo = Signal(lanes, name=f"{name}_act_todo")
        self.which = Signal(lanes, name=f"{name}_act_which")           # the lane of the read in flight
        self.addrs = Signal(data.ArrayLayout(ADDR_BITS, lanes), name=f"{name}_act_addrs")
        self.result = Signal(data.ArrayLayout(32, lanes), name=f"{name}_act_result")
        self.low = _lowest(m, self.todo, f"{name}_act_low")
        self.issue = Signal(name=f"{name}_act_issue")
        self.addr = Signal(act.rd.payload.shape(), name=f"{name}_act_addr")
        self.data_valid = Signal(name=f"{name}_act_data")
        m.d.comb += [self.issue.eq(self.busy & (self.todo != 0)),
                     self.addr.eq(_or(Mux(self.low[k], self.addrs[k], 0) for k in range(lanes)))]
        take = req.valid & (req.payload.buf == Buf.ACT) & ~self.busy & ~self.rvalid
        wide = Signal(name=f"{name}_act_wide")          # the request in hand is read in one wide read
        a = req.payload.addr
        if lanes <= act.lanes:
            run = req.payload.mask[0]
            for k in range(1, lanes):
                run = run & (~req.payload.mask[k] | (a[k] == (a[0] + k)[:len(a[k])]))
        else:
            run = 0
        with m.If(take):
            m.d.sync += [self.busy.eq(1), self.todo.eq(Mux(run, 1, req.payload.mask)), self.addrs.eq(a),
                         wide.eq(run)]
        with m.If(self.data_valid):
            byte = act.rd_data.payload[0]
            for k in range(lanes):
                with m.If(wide):
                    if k < act.lanes:
                        m.d.sync += self.result[k].eq(act.rd_data.payload[k])
                with m.Elif(self.which[k]):
                    m.d.sync += self.result[k].eq(byte)
        with m.If(req.payload.buf == Buf.ACT):
            m.d.comb += req.ready.eq(take)

    def finish(self, granted) -> None:
        m, port = self.m, self.port
        fire = self.issue & granted
        with m.If(fire):
            m.d.sync += [self.todo.eq(self.todo & ~self.low), self.which.eq(self.low), self.inflight.eq(1)]
        with m.Elif(self.data_valid):
            m.d.sync += self.inflight.eq(0)
        with m.If(self.busy & (self.todo == 0) & ~self.inflight):
            m.d.sync += [self.busy.eq(0), self.rvalid.eq(1)]
        with m.If(self.rvalid & port.resp.ready & (self.src == Buf.ACT)):
            m.d.sync += self.rvalid.eq(0)
        with m.If(self.src == Buf.ACT):
            m.d.comb += [port.resp.valid.eq(self.rvalid), port.resp.payload.eq(self.result)]

"""The vector unit's buffer ports and the banked word buffer behind them (docs/HW.md, "The vector engine").

A *read port* moves up to `lanes` elements per request: the buffer code, an element address per lane and a lane
mask go out on `req`; the raw elements come back on `resp` in request order, 32 bits each (an ACT int8
sign-extended), held until taken. A *write port* takes the buffer code, per-lane addresses, 32-bit data (ACT
keeps the low byte) and a mask. Lanes outside the mask carry don't-care addresses.

WordBuffer serves such ports for VEC, ACC or KV: `lanes` word-wide banks, element `a` in bank `a mod lanes` at
row `a div lanes`. Each cycle every bank serves the lowest waiting lane that maps to it, and (for reads) every
other waiting lane that wants the same element of it, so a view whose column stride is odd (or 0: a broadcast)
is served in one cycle; an even stride conflicts and takes `lanes / (lanes / gcd)` cycles, the worst (a stride of
`lanes`) `lanes` cycles. A request is answered only when all its lanes are read.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Buf
from .params import HwParams

ADDR_BITS = 22          # a VOP operand's address field: every buffer's element address fits


def read_request_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"buf": 3, "addr": data.ArrayLayout(ADDR_BITS, lanes), "mask": lanes})


def write_layout(lanes: int) -> data.StructLayout:
    """`hold`: per lane, the bytes of its word the write keeps (0, a whole word, unless a LOAD chunk covers part of
    it: a 4-byte element that straddles two DRAM beats, a run that starts or ends inside a word)."""
    return data.StructLayout({"buf": 3, "addr": data.ArrayLayout(ADDR_BITS, lanes),
                              "data": data.ArrayLayout(32, lanes), "mask": lanes,
                              "hold": data.ArrayLayout(4, lanes)})


def read_port_signature(lanes: int) -> wiring.Signature:
    """As the reader (the engine) sees it: `req` out, `resp` (the `lanes` raw elements) in."""
    return wiring.Signature({"req": Out(stream.Signature(read_request_layout(lanes))),
                             "resp": In(stream.Signature(data.ArrayLayout(32, lanes)))})


def write_port_signature(lanes: int) -> stream.Signature:
    return stream.Signature(write_layout(lanes))


def bank_grants(m: Module, addrs, todo, lanes: int, *, share: bool, name: str):
    """Which of the `todo` lanes each bank serves this cycle: lane l is granted unless a lower waiting lane maps to
    its bank (with `share`: to its bank at another row). Returns the grant mask and, per bank, (enable, row, the
    one-hot lanes it serves). The lowest waiting lane of each bank is always granted, so every request finishes."""
    lb = (lanes - 1).bit_length()
    bank = [a[:lb] if lb else 0 for a in addrs]
    row = [a[lb:] for a in addrs]
    grant = Signal(lanes, name=f"{name}_grant")
    for lane in range(lanes):
        blocked = [todo[k] & (bank[k] == bank[lane]) & ((row[k] != row[lane]) if share else 1) for k in range(lane)]
        m.d.comb += grant[lane].eq(todo[lane] & ~_or(blocked) if blocked else todo[lane])
    banks = []
    for b in range(lanes):
        hit = Signal(lanes, name=f"{name}_hit{b}")
        m.d.comb += hit.eq(Cat(grant[lane] & (bank[lane] == b) for lane in range(lanes)))
        r = Signal(len(row[0]), name=f"{name}_row{b}")
        m.d.comb += r.eq(_or(Mux(hit[lane], row[lane], 0) for lane in range(lanes)))
        banks.append((hit != 0, r, hit))
    return grant, banks


def _or(values):
    """The OR of `values` (0 for none): a one-hot select's mux, or any of several conditions."""
    out = 0
    for v in values:
        out = out | v
    return out


class WordBuffer(wiring.Component):
    """One of VEC, ACC, KV (`buf`) as `lanes` word banks: `rd0 .. rd{n-1}` read ports (each bank has a read port
    per port: a replicated RAM past one), one `wr` write port. `resp` follows its request's last bank read by a
    cycle; reads and writes stall (ready low) while a request's lanes conflict, and a read stalls while its
    answer is not taken. A write is in the RAM from the cycle after it is accepted. `banks`: the RAMs (bank b
    holds elements b, b + lanes, ...), for testbenches to load and inspect."""

    def __init__(self, params: HwParams, buf: Buf, read_ports: int = 2):
        if buf not in (Buf.ACC, Buf.VEC, Buf.KV):
            raise ValueError(f"WordBuffer holds 4-byte words (ACC, VEC, KV), not {buf.name}")
        self.lanes = params.vector_lanes
        self.depth = params.buffer_units[buf] // self.lanes
        self.buf = buf
        self.read_ports = read_ports
        self.banks = [Memory(shape=32, depth=self.depth, init=[]) for _ in range(self.lanes)]
        members = {f"rd{k}": In(read_port_signature(self.lanes)) for k in range(read_ports)}
        members["wr"] = In(write_port_signature(self.lanes))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        L = self.lanes
        lb = (L - 1).bit_length()
        rb = max(1, (self.depth - 1).bit_length())
        banks = self.banks
        for b, bank in enumerate(banks):
            m.submodules[f"bank{b}"] = bank

        def element(addr):            # bank and row bits only: the core sends in-range addresses
            return addr[:lb + rb]

        # The write port.
        wr = self.wr
        w_served = Signal(L)
        w_todo = Signal(L)
        m.d.comb += w_todo.eq(Mux(wr.valid, wr.payload.mask & ~w_served, 0))
        w_addr = [element(wr.payload.addr[lane]) for lane in range(L)]
        w_grant, w_banks = bank_grants(m, w_addr, w_todo, L, share=False, name="w")
        w_complete = wr.valid & ((w_todo & ~w_grant) == 0)
        m.d.comb += wr.ready.eq(w_complete)
        with m.If(wr.valid):
            m.d.sync += w_served.eq(Mux(w_complete, 0, w_served | w_grant))
        w_data = [wr.payload.data[lane] for lane in range(L)]     # each a view built once (slow to build)
        w_hold = [wr.payload.hold[lane] for lane in range(L)]
        for b, (en, row, hit) in enumerate(w_banks):
            port = banks[b].write_port(granularity=8)
            hold = _or(Mux(hit[lane], w_hold[lane], 0) for lane in range(L))
            m.d.comb += [port.en.eq(en.replicate(4) & ~hold), port.addr.eq(row),
                         port.data.eq(_or(Mux(hit[lane], w_data[lane], 0) for lane in range(L)))]

        # The read ports.
        for k in range(self.read_ports):
            rd = getattr(self, f"rd{k}")
            req, resp = rd.req, rd.resp
            advance = ~resp.valid | resp.ready
            served = Signal(L, name=f"r{k}_served")
            todo = Signal(L, name=f"r{k}_todo")
            m.d.comb += todo.eq(Mux(req.valid & advance, req.payload.mask & ~served, 0))
            addr = [element(req.payload.addr[lane]) for lane in range(L)]
            grant, r_banks = bank_grants(m, addr, todo, L, share=True, name=f"r{k}")
            complete = req.valid & advance & ((todo & ~grant) == 0)
            m.d.comb += req.ready.eq(complete)
            with m.If(req.valid & advance):
                m.d.sync += served.eq(Mux(complete, 0, served | grant))
            outs = []
            for b, (en, row, _) in enumerate(r_banks):
                port = banks[b].read_port()                   # a bank nobody wants keeps its output (and power)
                m.d.comb += [port.en.eq(advance & en), port.addr.eq(row)]
                outs.append(port.data)
            # Lanes granted last cycle read their bank's output now; earlier ones were kept in `kept`.
            g_prev = Signal(L, name=f"r{k}_gprev")
            sel_prev = [Signal(range(L), name=f"r{k}_sel{lane}") for lane in range(L)]
            kept = [Signal(32, name=f"r{k}_kept{lane}") for lane in range(L)]
            with m.If(advance):
                m.d.sync += [g_prev.eq(grant), resp.valid.eq(complete)]
                m.d.sync += [sel_prev[lane].eq(addr[lane][:lb] if lb else 0) for lane in range(L)]
            for lane in range(L):
                live = Signal(32, name=f"r{k}_live{lane}")
                with m.Switch(sel_prev[lane]):
                    for b in range(L):
                        with m.Case(b):
                            m.d.comb += live.eq(outs[b])
                with m.If(advance & g_prev[lane]):
                    m.d.sync += kept[lane].eq(live)
                m.d.comb += resp.payload[lane].eq(Mux(g_prev[lane], live, kept[lane]))
        return m

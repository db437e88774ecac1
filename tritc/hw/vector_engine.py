"""The vector engine: one decoded VOP at a time, from its operands' reads to its results' writes (docs/ISA.md,
"VOP"; docs/HW.md, "The vector engine"). Bit-exact with runtime/fpga_steps.py's VOP step.

    cmd -> VopWalker -> chunk --+--> rd_a.req (src1) ........ rd_a.resp --+
                                +--> rd_b.req (src2) ........ rd_b.resp --+--> join: IntToFp (ACT, ACC) ->
                                +--> pending chunks (FIFO) ---------------+
        VectorLane x L (one-pass; MM's products, AMAX's |a|) --+--> write register -> sat8 / sat32 / NaN -> wr
        Requantise x L (REQ) ----------------------------------+
        LaneReducer (RSUM, RMAX, AMAX, MM) -> AMAX's floor ----+
        multi-step units (DivSqrtLanes: DIV, RECIP, SQRT) -----+

A chunk's reads go out when the walker makes it; the join takes the oldest pending chunk once its responses are in
(responses arrive in request order). `done` follows the acceptance of the last write, so the next instruction
reads what this one wrote. A function no unit computes (EXP, SIN, COS, TANH, ERF until their sequencer is added to
`units`) is refused: `done` with `refused` set, nothing read or written. An instruction with no output (rows or
cols 0, other than a reduction's cols) is done at once.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import BINARY, Buf, VFunc
from .fp_add import CANONICAL_NAN
from .fp_compare import FpCompare, Requantise
from .fp_convert import FpToInt, IntToFp
from .lane_reduce import LaneReducer
from .params import HwParams
from .vector_lane import SINGLE_PASS, VectorLane
from .vector_units import DivSqrtLanes
from .vector_walker import REDUCE, VOP, VopWalker
from .word_buffer import ADDR_BITS, read_port_signature, write_port_signature

DONE = data.StructLayout({"refused": 1})
PENDING_CHUNKS = 4       # chunks between the walker and the join: covers a buffer answering 2-3 cycles later


def pending_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"d": data.ArrayLayout(ADDR_BITS, lanes), "mask": lanes, "last": 1, "final": 1})


class VectorEngine(wiring.Component):
    """`cmd`: a VOP's fields (queues.INSTR's `f.vop`); `done`: one per command. `rd_a`, `rd_b`: read ports for src1
    and src2; `wr`: the write port (word_buffer.py's signatures). `units`: the multi-step unit classes
    (vector_units.py), each built with the lane count."""

    def __init__(self, params: HwParams, units=(DivSqrtLanes,)):
        self.params = params
        self.lanes = L = params.vector_lanes
        self.unit_classes = tuple(units)
        super().__init__({"cmd": In(stream.Signature(VOP)), "done": Out(stream.Signature(DONE)),
                          "rd_a": Out(read_port_signature(L)), "rd_b": Out(read_port_signature(L)),
                          "wr": Out(write_port_signature(L))})

    def supported(self) -> tuple[VFunc, ...]:
        return (*SINGLE_PASS, VFunc.REQ, *REDUCE, VFunc.MM, *(f for u in self.unit_classes for f in u.FUNCS))

    def elaborate(self, platform) -> Module:
        m = Module()
        L = self.lanes
        f = Signal(VOP)                               # the instruction being executed
        func = f.func
        one_pass = func.matches(*SINGLE_PASS)
        is_req = func == VFunc.REQ
        reducing = func.matches(*REDUCE, VFunc.MM)
        reads_a = func != VFunc.FILL
        reads_b = (func == VFunc.WHERE) | (func.matches(*BINARY) & ~f.use_imm)
        imm_b = f.use_imm & (func != VFunc.WHERE)     # WHERE's b is src2 whatever use_imm says

        # -- command and completion --------------------------------------------------------------------------
        walker = m.submodules.walker = VopWalker(L)
        c = self.cmd.payload
        known = c.func.matches(*self.supported())
        empty = (c.rows == 0) | ((c.cols == 0) & ~c.func.matches(*REDUCE))
        final_written = Signal()
        with m.FSM():
            with m.State("idle"):
                m.d.comb += [self.cmd.ready.eq(1), walker.cmd.valid.eq(self.cmd.valid & known & ~empty),
                             walker.cmd.payload.eq(c)]
                with m.If(self.cmd.valid):
                    m.d.sync += [f.eq(c), self.done.payload.refused.eq(~known)]
                    with m.If(known & ~empty):
                        m.next = "run"
                    with m.Else():
                        m.next = "done"
            with m.State("run"):
                with m.If(final_written):
                    m.next = "done"
            with m.State("done"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "idle"

        # -- fork: a chunk's reads and its pending entry leave together, each as soon as its side is ready ------
        pending = m.submodules.pending = fifo.SyncFIFO(width=pending_layout(L).size, depth=PENDING_CHUNKS)
        chunk = walker.out.payload
        sent_a, sent_b, sent_p = Signal(), Signal(), Signal()
        ra, rb = self.rd_a.req, self.rd_b.req
        m.d.comb += [ra.valid.eq(walker.out.valid & reads_a & ~sent_a), ra.payload.buf.eq(f.src1_buf),
                     ra.payload.addr.eq(chunk.a), ra.payload.mask.eq(chunk.mask),
                     rb.valid.eq(walker.out.valid & reads_b & ~sent_b), rb.payload.buf.eq(f.src2_buf),
                     rb.payload.addr.eq(chunk.b), rb.payload.mask.eq(chunk.mask),
                     pending.w_en.eq(walker.out.valid & ~sent_p)]
        entry = data.View(pending_layout(L), pending.w_data)
        m.d.comb += [entry.d.eq(chunk.d), entry.mask.eq(chunk.mask), entry.last.eq(chunk.last),
                     entry.final.eq(chunk.final)]
        got_a = ~reads_a | sent_a | ra.ready
        got_b = ~reads_b | sent_b | rb.ready
        got_p = sent_p | pending.w_rdy
        m.d.comb += walker.out.ready.eq(got_a & got_b & got_p)
        with m.If(walker.out.valid):
            with m.If(walker.out.ready):
                m.d.sync += [sent_a.eq(0), sent_b.eq(0), sent_p.eq(0)]
            with m.Else():
                m.d.sync += [sent_a.eq(got_a), sent_b.eq(got_b), sent_p.eq(got_p)]

        # -- join: the oldest pending chunk with its operands, converted --------------------------------------
        head = data.View(pending_layout(L), pending.r_data)
        resp_a, resp_b = self.rd_a.resp.payload, self.rd_b.resp.payload
        have = pending.r_rdy & (~reads_a | self.rd_a.resp.valid) & (~reads_b | self.rd_b.resp.valid)
        sink_ready = Signal()
        take = Signal()
        m.d.comb += [take.eq(have & sink_ready), pending.r_en.eq(take),
                     self.rd_a.resp.ready.eq(take & reads_a), self.rd_b.resp.ready.eq(take & reads_b)]
        int_a = f.src1_buf.matches(Buf.ACT, Buf.ACC)
        int_b = f.src2_buf.matches(Buf.ACT, Buf.ACC)
        lane_func = Mux(func == VFunc.MM, VFunc.MUL,
                        Mux(func == VFunc.AMAX, VFunc.ABS, Mux(func.matches(VFunc.RSUM, VFunc.RMAX), VFunc.COPY, func)))
        a_vals, b_vals, lane_out, req_out = [], [], [], []
        for lane in range(L):
            ca = m.submodules[f"int_a{lane}"] = IntToFp()
            cb = m.submodules[f"int_b{lane}"] = IntToFp()
            req = m.submodules[f"req{lane}"] = Requantise()
            vl = m.submodules[f"lane{lane}"] = VectorLane()
            a = Signal(32, name=f"a{lane}")
            b = Signal(32, name=f"b{lane}")
            # REQ reads src1 raw and never src2: its int8 result goes to fp32 through src2's converter. Operands
            # reach only the units the function uses (operand isolation: less switching, a faster simulation).
            m.d.comb += [req.acc.eq(Mux(is_req, resp_a[lane].as_signed(), 0)), req.mult.eq(f.imm),
                         req.shift.eq(f.depth[:5]),
                         ca.x.eq(Mux(int_a, resp_a[lane].as_signed(), 0)),
                         cb.x.eq(Mux(is_req, req.y, Mux(int_b, resp_b[lane].as_signed(), 0))),
                         a.eq(Mux(int_a, ca.y, resp_a[lane])),
                         b.eq(Mux(imm_b, f.imm, Mux(int_b, cb.y, resp_b[lane]))),
                         vl.func.eq(lane_func), vl.a.eq(a), vl.b.eq(b), vl.imm.eq(f.imm)]
            a_vals.append(a)
            b_vals.append(b)
            lane_out.append(vl.y)
            req_out.append(cb.y)

        # -- the write register and the write port's conversions ---------------------------------------------
        w_valid = Signal()
        w_addr = Signal(data.ArrayLayout(ADDR_BITS, L))
        w_data = Signal(data.ArrayLayout(32, L))
        w_mask, w_final = Signal(L), Signal()
        w_free = ~w_valid | self.wr.ready
        m.d.comb += final_written.eq(w_valid & self.wr.ready & w_final)
        dst = f.dst_buf
        wp = self.wr.payload
        m.d.comb += [self.wr.valid.eq(w_valid), wp.buf.eq(dst), wp.addr.eq(w_addr), wp.mask.eq(w_mask)]
        for lane in range(L):
            to8 = m.submodules[f"sat8_{lane}"] = FpToInt(8)
            to32 = m.submodules[f"sat32_{lane}"] = FpToInt(32)
            x = w_data[lane]
            nan = (x[23:31] == 0xFF) & (x[0:23] != 0)
            m.d.comb += [to8.a.eq(Mux(dst == Buf.ACT, x, 0)), to32.a.eq(Mux(dst == Buf.ACC, x, 0)),
                         wp.data[lane].eq(Mux(dst == Buf.ACT, to8.y.as_signed(),
                                              Mux(dst == Buf.ACC, to32.y, Mux(nan, CANONICAL_NAN, x))))]

        def load_write(valid, addrs, values, mask, final):
            with m.If(valid & w_free):
                m.d.sync += [w_mask.eq(mask), w_final.eq(final)]
                m.d.sync += [w_addr[lane].eq(addrs[lane]) for lane in range(L)]
                m.d.sync += [w_data[lane].eq(v) for lane, v in enumerate(values)]

        sources = []                                  # (valid) of each producer; one is active per instruction

        # One-pass functions and REQ: straight from the join.
        direct = take & (one_pass | is_req)
        load_write(direct, head.d, [Mux(is_req, r, y) for r, y in zip(req_out, lane_out)], head.mask, head.final)
        sources.append(direct)
        ready_terms = [(one_pass | is_req, w_free)]

        # Reductions and MM: the lanes' terms (products, magnitudes) into the lane tree; the result to d(i, 0) or
        # d(i, j), which the chunk marked `last` carries: that address and `final` wait in `pending_results` while
        # the row goes through the tree (at most one per tree stage, log2(L) + 1).
        red = m.submodules.reducer = LaneReducer(L)
        results = m.submodules.pending_results = fifo.SyncFIFO(width=ADDR_BITS + 1, depth=(L - 1).bit_length() + 2)
        m.d.comb += [red.inp.valid.eq(take & reducing), red.inp.payload.mask.eq(head.mask),
                     red.inp.payload.last.eq(head.last), red.inp.payload.max.eq(func.matches(VFunc.RMAX, VFunc.AMAX))]
        m.d.comb += [red.inp.payload.terms[lane].eq(Mux(reducing, lane_out[lane], 0)) for lane in range(L)]
        m.d.comb += [results.w_en.eq(red.inp.valid & red.inp.ready & head.last),
                     results.w_data.eq(Cat(head.d[0], head.final))]
        floor = m.submodules.floor = FpCompare()      # AMAX with use_imm: MAX(absmax, imm)
        m.d.comb += [floor.a.eq(red.out.payload), floor.b.eq(f.imm)]
        red_value = Mux((func == VFunc.AMAX) & f.use_imm, floor.max, red.out.payload)
        red_valid = red.out.valid & reducing
        m.d.comb += [red.out.ready.eq(w_free & reducing), results.r_en.eq(red_valid & w_free)]
        load_write(red_valid, [results.r_data[:ADDR_BITS]] * L, [red_value] * L, 1, results.r_data[ADDR_BITS])
        sources.append(red_valid)
        ready_terms.append((reducing, red.inp.ready & results.w_rdy))

        # Multi-step units: the chunk's destination waits beside the unit in `pending_units`.
        meta = m.submodules.pending_units = fifo.SyncFIFO(width=pending_layout(L).size, depth=PENDING_CHUNKS)
        meta_in, meta_out = data.View(pending_layout(L), meta.w_data), data.View(pending_layout(L), meta.r_data)
        m.d.comb += [meta_in.d.eq(head.d), meta_in.mask.eq(head.mask), meta_in.final.eq(head.final)]
        for k, cls in enumerate(self.unit_classes):
            unit = m.submodules[f"unit{k}"] = cls(L)
            mine = func.matches(*cls.FUNCS)
            m.d.comb += [unit.inp.valid.eq(take & mine), unit.inp.payload.func.eq(func),
                         unit.inp.payload.imm.eq(f.imm)]
            m.d.comb += [unit.inp.payload.a[lane].eq(Mux(mine, a_vals[lane], 0)) for lane in range(L)]
            m.d.comb += [unit.inp.payload.b[lane].eq(Mux(mine, b_vals[lane], 0)) for lane in range(L)]
            with m.If(take & mine):
                m.d.comb += meta.w_en.eq(1)
            ready_terms.append((mine, unit.inp.ready & meta.w_rdy))
            out_valid = unit.out.valid & meta.r_rdy & mine
            m.d.comb += unit.out.ready.eq(out_valid & w_free)
            with m.If(out_valid & w_free):
                m.d.comb += meta.r_en.eq(1)
            load_write(out_valid, meta_out.d, [unit.out.payload[lane] for lane in range(L)], meta_out.mask,
                       meta_out.final)
            sources.append(out_valid)

        for cls_active, ready in ready_terms:
            with m.If(cls_active):
                m.d.comb += sink_ready.eq(ready)
        any_source = 0
        for s in sources:
            any_source = any_source | s
        with m.If(w_free):
            m.d.sync += w_valid.eq(any_source)
        return m


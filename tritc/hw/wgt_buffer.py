"""WGT, the weight buffer (docs/HW.md, "The GEMM engine"): rows of one matrix-unit beat, `rows * words_per_beat`
packed words (`row_bytes` = R * P * word_bytes bytes), so that a GEMM reads a whole beat from one row per cycle.
ISA v3's weight layout (docs/ISA.md, "Weights") makes every beat of a GEMM one such row: byte `a` of WGT is byte
`a mod row_bytes` of row `a div row_bytes`.

`row_bytes` is 13 * R * P in base3, not a power of two, and neither port has a divider:
- The read port takes a row index. The GEMM's `wgt_addr` is a multiple of `row_bytes` (the ISA requires it), and an
  exact quotient is a multiply by the divisor's inverse modulo a power of two, a few constant shift-adds
  (`exact_quotient`), once per GEMM.
- The write port takes LoadMover's chunks (up to a DRAM beat of consecutive bytes) at any byte address, one a cycle.
  It keeps a cursor, the row and offset of the byte after the last one written, so a run of consecutive chunks
  (every row of a LOAD) maps with adds; a chunk elsewhere starts a restoring division, one quotient bit per cycle
  (`row_bits` cycles, 12 on both presets), then goes on as a consecutive one. A LOAD of a weight tile is one
  contiguous run: one division.
- A chunk may span several rows (a beat is up to `ceil(beat / row_bytes) + 1` of them), so WGT is `banks` RAMs, row
  q in RAM q mod banks at q div banks: the rows of a chunk are in distinct RAMs and written in the same cycle.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codegen.fpga import ports
from ..codegen.fpga.isa import Buf
from .dma import byte_enables, chunk_write_layout
from .params import HwParams


def row_bytes(p: HwParams) -> int:
    """Bytes of one WGT row: one beat of the matrix unit, R trees of P words (ports.py, shared with the model)."""
    return ports.wgt_row_bytes(p.config)


def wgt_rows(p: HwParams) -> int:
    return ports.wgt_rows(p.config)


def row_bits(p: HwParams) -> int:
    return ports.wgt_row_bits(p.config)


def _csd(k: int) -> list[tuple[int, int]]:
    """k as signed binary digits (canonical: no two adjacent nonzero), as (sign, shift) pairs: fewest adders."""
    out, shift = [], 0
    while k:
        if k & 1:
            digit = 2 - (k & 3)   # +1 when k = 1 mod 4, -1 when k = 3 mod 4
            out.append((digit, shift))
            k -= digit
        k >>= 1
        shift += 1
    return out


def exact_quotient(m: Module, x, divisor: int, width: int, name: str):
    """x // divisor modulo 2^width, for an x that is a multiple of `divisor`: the shift of the divisor's power of two,
    then a multiply by its odd part's inverse mod 2^width, as a balanced tree of constant shifts, adds and
    subtracts (no multiplier, no divider). For an x that is not a multiple the result is meaningless."""
    shift = (divisor & -divisor).bit_length() - 1
    odd = divisor >> shift
    y = x[shift:] if shift else x
    terms = []
    for k, (sign, s) in enumerate(_csd(pow(odd, -1, 1 << width))):
        t = Signal(width, name=f"{name}_t{k}")
        m.d.comb += t.eq((y << s)[:width])
        terms.append((sign, t))
    level = 0
    while len(terms) > 1:
        nxt = []
        for k in range(0, len(terms) - 1, 2):
            (sa, a), (sb, b) = terms[k], terms[k + 1]
            s = Signal(width, name=f"{name}_s{level}_{k // 2}")
            if sa > 0:
                m.d.comb += s.eq((a + b)[:width] if sb > 0 else (a - b)[:width])
                nxt.append((1, s))
            else:
                m.d.comb += s.eq((b - a)[:width] if sb > 0 else (a + b)[:width])
                nxt.append((sb, s))
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms, level = nxt, level + 1
    sign, q = terms[0]
    if sign < 0:
        neg = Signal(width, name=f"{name}_neg")
        m.d.comb += neg.eq((-q)[:width])
        return neg
    return q


def row_layout(p: HwParams) -> data.ArrayLayout:
    """A WGT row as its R * P packed words, word w at bytes [w * word_bytes, (w + 1) * word_bytes)."""
    return data.ArrayLayout(unsigned(8 * p.word_bytes), p.rows * p.words_per_beat)


def row_span(p: HwParams) -> int:
    """The most rows one chunk (a beat at most, from any offset in a row) touches."""
    return -(-(p.mem_beat_bytes - 1) // row_bytes(p)) + 1


class WgtBuffer(wiring.Component):
    """`wr`: LoadMover's chunks (`chunk_write_layout(mem_beat_bytes)`; `buf` is the core's routing and ignored),
    taken one a cycle while consecutive; `rd`: row indices, each answered on `rd_data` the next cycle (held while not
    taken), as ActBuffer's read port. `mems`: the RAMs (row q is row q // banks of mems[q % banks]); `row_value`
    reads a row back in a simulation."""

    def __init__(self, params: HwParams):
        self.params = params
        self.row_bytes = row_bytes(params)
        self.depth = wgt_rows(params)
        self.row_bits = row_bits(params)
        self.span = row_span(params)
        self.banks = 1 << (self.span - 1).bit_length()
        self.mems = [Memory(shape=8 * self.row_bytes, depth=-(-self.depth // self.banks), init=[])
                     for _ in range(self.banks)]
        super().__init__({"wr": In(stream.Signature(chunk_write_layout(params.mem_beat_bytes))),
                          "rd": In(stream.Signature(self.row_bits)),
                          "rd_data": Out(stream.Signature(row_layout(params)))})

    def row_value(self, ctx, row: int) -> int:
        return ctx.get(self.mems[row % self.banks].data[row // self.banks])

    def elaborate(self, platform) -> Module:
        m = Module()
        rb, qbits, K, J = self.row_bytes, self.row_bits, self.banks, self.span
        kb = (K - 1).bit_length()
        B = self.params.mem_beat_bytes
        abits = self.params.addr_bits(Buf.WGT)
        for k, mem in enumerate(self.mems):
            m.submodules[f"mem{k}"] = mem

        # Read: as ActBuffer, a synchronous read that holds its data until taken, from the row's RAM.
        advance = ~self.rd_data.valid | self.rd_data.ready
        q = self.rd.payload
        sel = Signal(range(K))
        outs = []
        for mem in self.mems:
            r = mem.read_port()
            m.d.comb += [r.addr.eq(q[kb:]), r.en.eq(advance)]
            outs.append(r.data)
        m.d.comb += [self.rd.ready.eq(advance), self.rd_data.payload.eq(Array(outs)[sel])]
        with m.If(advance):
            m.d.sync += [self.rd_data.valid.eq(self.rd.valid), sel.eq(q[:kb])]

        # Write: the cursor is where byte `cur_addr` lives; a chunk there goes straight in.
        # one bit wider than an address, so that after the last byte the cursor matches no byte (no wrap to 0)
        cur_addr, cur_row, cur_off = Signal(abits + 1), Signal(qbits + 1), Signal(range(rb))
        dividing = Signal()
        rem = Signal(abits + 1)                     # the division's remainder, then the offset in the row
        dvs = Signal(abits + qbits + 1)             # row_bytes << (the quotient bit being decided)
        quo = Signal(qbits)
        step = Signal(range(qbits + 1))
        w = self.wr.payload
        addr = w.addr[:abits]
        hit = addr == cur_addr
        fire = self.wr.valid & self.wr.ready
        m.d.comb += self.wr.ready.eq(hit & ~dividing)
        # The chunk laid over the J rows from the cursor's: bytes and enables shifted to the cursor's offset.
        span = Signal(8 * rb * J)
        span_en = Signal(rb * J)
        m.d.comb += [span.eq(w.data << Cat(Const(0, 3), cur_off)),
                     span_en.eq(byte_enables(w.n, B) << cur_off)]
        for k, mem in enumerate(self.mems):
            port = mem.write_port(granularity=8)
            part = Signal(range(K), name=f"part{k}")            # which of the chunk's rows lands in RAM k
            m.d.comb += part.eq((k - cur_row[:kb]) if kb else 0)
            rows_data = Array(span.word_select(j, 8 * rb) if j < J else Const(0, 8 * rb) for j in range(K))
            rows_en = Array(span_en.word_select(j, rb) if j < J else Const(0, rb) for j in range(K))
            m.d.comb += [port.addr.eq((cur_row + part)[kb:]), port.data.eq(rows_data[part]),
                         port.en.eq(Mux(fire, rows_en[part], 0))]
        end = cur_off + w.n                          # the offset after the chunk, counted from the cursor's row
        with m.If(fire):
            m.d.sync += cur_addr.eq(cur_addr + w.n)
            for j in range(J):
                with m.If((end >= j * rb) & (end < (j + 1) * rb)):
                    m.d.sync += [cur_off.eq(end - j * rb), cur_row.eq(cur_row + j)]
        with m.If(self.wr.valid & ~hit & ~dividing):
            m.d.sync += [dividing.eq(1), cur_addr.eq(addr), rem.eq(addr), quo.eq(0), step.eq(qbits),
                         dvs.eq(rb << (qbits - 1))]
        with m.If(dividing):
            with m.If(step == 0):
                m.d.sync += [dividing.eq(0), cur_row.eq(quo), cur_off.eq(rem)]
            with m.Else():
                bigger = rem >= dvs
                with m.If(bigger):
                    m.d.sync += rem.eq(rem - dvs)
                m.d.sync += [quo.eq(Cat(bigger, quo)), dvs.eq(dvs >> 1), step.eq(step - 1)]
        return m

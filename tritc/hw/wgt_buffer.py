"""WGT, the weight buffer (docs/HW.md, "The GEMM engine"): rows of one matrix-unit beat, `rows * words_per_beat`
packed words (`row_bytes` = R * P * word_bytes bytes), so that a GEMM reads a whole beat from one row per cycle.
ISA v3's weight layout (docs/ISA.md, "Weights") makes every beat of a GEMM one such row: byte `a` of WGT is byte
`a mod row_bytes` of row `a div row_bytes`.

`row_bytes` is 13 * R * P in base3, not a power of two, and neither port has a divider:
- The read port takes a row index. The GEMM's `wgt_addr` is a multiple of `row_bytes` (the ISA requires it), and an
  exact quotient is a multiply by the divisor's inverse modulo a power of two, a few constant shift-adds
  (`exact_quotient`), once per GEMM.
- The write port takes LoadMover's byte pieces (BUF_WRITE) at any byte address. It keeps a cursor, the row and
  offset of the byte after the last one written, so a run of consecutive bytes (every row of a LOAD) maps with an
  increment; a write elsewhere starts a restoring division, one quotient bit per cycle (`row_bits` cycles, 12 on
  both presets), then goes on as a consecutive one. A LOAD of a weight tile is one contiguous run: one division.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import Buf
from .dma import BUF_WRITE
from .params import HwParams


def row_bytes(p: HwParams) -> int:
    """Bytes of one WGT row: one beat of the matrix unit, R trees of P words."""
    return p.rows * p.words_per_beat * p.word_bytes


def wgt_rows(p: HwParams) -> int:
    """Rows of WGT: the last one partial when the buffer is not a whole number of rows (a GEMM never reads it)."""
    return -(-p.buffer_units[Buf.WGT] // row_bytes(p))


def row_bits(p: HwParams) -> int:
    return max(1, (wgt_rows(p) - 1).bit_length())


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


class WgtBuffer(wiring.Component):
    """`wr`: BUF_WRITE pieces as LoadMover makes them for a byte buffer (byte `addr`, data bits 0..7, mask bit 0;
    `buf` is the core's routing and ignored), taken one a cycle while consecutive; `rd`: row indices, each answered
    on `rd_data` the next cycle (held while not taken), as ActBuffer's read port."""

    def __init__(self, params: HwParams):
        self.params = params
        self.row_bytes = row_bytes(params)
        self.depth = wgt_rows(params)
        self.row_bits = row_bits(params)
        super().__init__({"wr": In(stream.Signature(BUF_WRITE)),
                          "rd": In(stream.Signature(self.row_bits)),
                          "rd_data": Out(stream.Signature(row_layout(params)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        rb, qbits = self.row_bytes, self.row_bits
        abits = self.params.addr_bits(Buf.WGT)
        mem = m.submodules.mem = Memory(shape=8 * rb, depth=self.depth, init=[])
        w, r = mem.write_port(granularity=8), mem.read_port()

        # Read: as ActBuffer, a synchronous read that holds its data until taken.
        advance = ~self.rd_data.valid | self.rd_data.ready
        m.d.comb += [self.rd.ready.eq(advance), r.addr.eq(self.rd.payload), r.en.eq(advance),
                     self.rd_data.payload.eq(r.data)]
        with m.If(advance):
            m.d.sync += self.rd_data.valid.eq(self.rd.valid)

        # Write: the cursor is where byte `cur_addr` lives; a write there goes straight in.
        # one bit wider than an address, so that after the last byte the cursor matches no byte (no wrap to 0)
        cur_addr, cur_row, cur_off = Signal(abits + 1), Signal(qbits), Signal(range(rb))
        dividing = Signal()
        rem = Signal(abits + 1)                     # the division's remainder, then the offset in the row
        dvs = Signal(abits + qbits + 1)             # row_bytes << (the quotient bit being decided)
        q = Signal(qbits)
        step = Signal(range(qbits + 1))
        addr = self.wr.payload.addr[:abits]
        hit = addr == cur_addr
        fire = self.wr.valid & self.wr.ready
        m.d.comb += [self.wr.ready.eq(hit & ~dividing),
                     w.addr.eq(cur_row), w.data.eq(self.wr.payload.data[:8].replicate(rb)),
                     w.en.eq((fire & self.wr.payload.mask[0]).replicate(rb) & (Const(1, 1) << cur_off)[:rb])]
        with m.If(fire):
            m.d.sync += cur_addr.eq(cur_addr + 1)
            with m.If(cur_off == rb - 1):
                m.d.sync += [cur_off.eq(0), cur_row.eq(cur_row + 1)]
            with m.Else():
                m.d.sync += cur_off.eq(cur_off + 1)
        with m.If(self.wr.valid & ~hit & ~dividing):
            m.d.sync += [dividing.eq(1), cur_addr.eq(addr), rem.eq(addr), q.eq(0), step.eq(qbits),
                         dvs.eq(rb << (qbits - 1))]
        with m.If(dividing):
            with m.If(step == 0):
                m.d.sync += [dividing.eq(0), cur_row.eq(q), cur_off.eq(rem)]
            with m.Else():
                bigger = rem >= dvs
                with m.If(bigger):
                    m.d.sync += rem.eq(rem - dvs)
                m.d.sync += [q.eq(Cat(bigger, q)), dvs.eq(dvs >> 1), step.eq(step - 1)]
        return m

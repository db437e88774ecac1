"""The fetch side's small parts: the instruction decoder (a 256-bit word to typed fields, exactly isa.py's layout)
and the four dependency-token queues between the engines (docs/ISA.md, "Engines and tokens").

The layouts below are generated from isa.FIELDS, so the RTL's field positions are the encoder's by construction:
INSTR is the header (opcode, the four flags) and a union of each opcode's fields from bit 8 up.

    word = View(INSTR, w);  word.op == Op.GEMM;  word.flags.push_next;  word.f.gemm.kw;  word.f.vop.src1_buf
"""

from __future__ import annotations

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.fpga.isa import DEP_FLAGS, ENGINE_OF, FIELDS, HEADER_BITS, INSTR_BITS, Buf, Op, VFunc
from ..codegen.fpga.verify import QUEUES

FLAGS = data.StructLayout({name: 1 for name in DEP_FLAGS})


def fields_layout(op: Op) -> data.StructLayout:
    """The fields of `op` in encoding order, each its width, signed where the ISA says so."""
    return data.StructLayout({f.name: signed(f.width) if f.signed else unsigned(f.width) for f in FIELDS[op]})


FIELD_OPS = {op.name.lower(): op for op in Op if FIELDS[op]}   # load, store, gemm, vop
INSTR = data.StructLayout({
    "op": 4,
    "flags": FLAGS,
    "f": data.UnionLayout({name: fields_layout(op) for name, op in FIELD_OPS.items()}),
})
assert INSTR.size <= INSTR_BITS
BUF_FIELDS = {Op.LOAD: ("buf",), Op.STORE: ("buf",), Op.VOP: ("dst_buf", "src1_buf", "src2_buf")}

# What the decoder refuses (isa.decode raises on the same words, reporting the first in this order).
ERRORS = data.StructLayout({"opcode": 1, "unused": 1, "func": 1, "buf": 1})
DECODED = data.StructLayout({"instr": INSTR, "engine": 2, "error": ERRORS})


class InstrDecoder(wiring.Component):
    """`inp`: 256-bit instruction words; `out`: the word as INSTR, the engine it goes to (isa.Engine) and what is
    wrong with it. Combinational: a word passes in the cycle it arrives (valid and ready pass straight through)."""

    def __init__(self):
        super().__init__({"inp": In(stream.Signature(INSTR_BITS)), "out": Out(stream.Signature(DECODED))})

    def elaborate(self, platform) -> Module:
        m = Module()
        word = self.inp.payload
        ins = data.View(INSTR, word[:INSTR.size])
        out = self.out.payload
        m.d.comb += [self.out.valid.eq(self.inp.valid), self.inp.ready.eq(self.out.ready),
                     out.instr.eq(ins)]
        m.d.comb += out.error.opcode.eq(1)
        with m.Switch(ins.op):
            for op in Op:
                with m.Case(op):
                    last = HEADER_BITS + sum(f.width for f in FIELDS[op])
                    m.d.comb += [out.engine.eq(ENGINE_OF[op]), out.error.opcode.eq(0),
                                 out.error.unused.eq(word[last:] != 0)]
                    if op is Op.VOP:
                        m.d.comb += out.error.func.eq(ins.f.vop.func > max(VFunc))
                    fields = getattr(ins.f, op.name.lower()) if FIELDS[op] else None
                    bad = [getattr(fields, name) > max(Buf) for name in BUF_FIELDS.get(op, ())]
                    if bad:
                        m.d.comb += out.error.buf.eq(_any(bad))
        return m


def _any(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


class TokenQueue(wiring.Component):
    """A dependency queue: tokens carry nothing, so it is a counter of 0..depth. `push` is ready while fewer than
    `depth` tokens are held, `pop` valid while any is; a push and a pop in the same cycle leave the count as it
    is. A token pushed in one cycle can be popped from the next."""

    def __init__(self, depth: int):
        if depth < 1:
            raise ValueError(f"a token queue holds at least one token, got depth {depth}")
        self.depth = depth
        super().__init__({"push": In(stream.Signature(0)), "pop": Out(stream.Signature(0)),
                          "count": Out(range(depth + 1))})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += [self.push.ready.eq(self.count != self.depth), self.pop.valid.eq(self.count != 0)]
        pushed = self.push.valid & self.push.ready
        popped = self.pop.valid & self.pop.ready
        with m.If(pushed & ~popped):
            m.d.sync += self.count.eq(self.count + 1)
        with m.Elif(popped & ~pushed):
            m.d.sync += self.count.eq(self.count - 1)
        return m


class TokenQueues(wiring.Component):
    """The four queues of docs/ISA.md, each `queue_depth` deep: `<queue>_push` for the engine that pushes it,
    `<queue>_pop` for the one that pops it (queues l2c, c2l, c2s, s2c)."""

    def __init__(self, depth: int):
        self.depth = depth
        members = {}
        for q in QUEUES:
            members[f"{q}_push"] = In(stream.Signature(0))
            members[f"{q}_pop"] = Out(stream.Signature(0))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        for q in QUEUES:
            queue = m.submodules[q] = TokenQueue(self.depth)
            wiring.connect(m, wiring.flipped(getattr(self, f"{q}_push")), queue.push)
            wiring.connect(m, queue.pop, wiring.flipped(getattr(self, f"{q}_pop")))
        return m

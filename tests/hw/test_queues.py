"""The instruction decoder against isa.encode / isa.decode on random words (valid ones of every opcode, and words
with an unknown opcode, vector function or buffer, or unused bits set), and the token queues against a counter."""

from __future__ import annotations

import random

import pytest

from tritc.codegen.fpga.isa import DEP_FLAGS, ENGINE_OF, FIELDS, HEADER_BITS, Buf, Instr, Op, StreamError, VFunc, decode, encode
from tritc.hw.queues import InstrDecoder, TokenQueue, TokenQueues
from tritc.hw.sim import run

# isa.decode's message for each error the decoder flags, in the order isa.decode checks them (it reports the first).
ERRORS = [("unknown opcode", "opcode"), ("bits set above", "unused"), ("unknown vector function", "func"),
          ("is not a buffer", "buf")]
ERROR_RANK = {flag: k for k, (_, flag) in enumerate(ERRORS)}


def random_instr(rng: random.Random) -> Instr:
    op = rng.choice(list(Op))
    values = {}
    for f in FIELDS[op]:
        if f.name.endswith("buf"):
            values[f.name] = rng.choice(list(Buf))
        elif f.name == "func":
            values[f.name] = rng.choice(list(VFunc))
        else:
            values[f.name] = rng.choice([f.lo, f.hi, 0, rng.randint(f.lo, f.hi)])
    return Instr(op, **{flag: rng.randint(0, 1) for flag in DEP_FLAGS}, **values)


def corrupt(word: int, op: Op, rng: random.Random) -> int:
    """The word with one thing wrong: an unknown opcode, a bit above the last field, a bad func or buffer code."""
    kinds = ["opcode", "unused"] + (["func"] if op is Op.VOP else []) + (["buf"] if FIELDS[op] and op is not Op.GEMM
                                                                             else [])
    kind = rng.choice(kinds)
    last = HEADER_BITS + sum(f.width for f in FIELDS[op])
    if kind == "opcode":
        return (word & ~0xF) | rng.randint(len(Op), 15)
    if kind == "unused":
        return word | (1 << rng.randint(last, 255))
    pos = HEADER_BITS
    names = [f for f in FIELDS[op] if (f.name == "func" if kind == "func" else f.name.endswith("buf"))]
    target = rng.choice(names)
    for f in FIELDS[op]:
        if f is target:
            bad = rng.randint(len(VFunc), 63) if kind == "func" else rng.randint(len(Buf), 7)
            return (word & ~(((1 << f.width) - 1) << pos)) | (bad << pos)
        pos += f.width
    raise AssertionError


def test_decoder_agrees_with_isa_decode():
    rng = random.Random(5)
    words = []
    for _ in range(300):
        ins = random_instr(rng)
        word = int.from_bytes(encode(ins), "little")
        words.append(corrupt(word, ins.op, rng) if rng.random() < 0.4 else word)
    dut = InstrDecoder()
    seen = []

    async def bench(ctx):
        ctx.set(dut.out.ready, 1)
        ctx.set(dut.inp.valid, 1)
        for w in words:
            ctx.set(dut.inp.payload, w)
            assert ctx.get(dut.out.valid) and ctx.get(dut.inp.ready)
            seen.append(ctx.get(dut.out.payload))

    run(dut, bench)
    errors = 0
    for w, got in zip(words, seen):
        flags = {name for name in ("opcode", "unused", "func", "buf") if getattr(got.error, name)}
        try:
            want = decode(w.to_bytes(32, "little"))
        except StreamError as e:
            errors += 1
            first = next(flag for text, flag in ERRORS if text in str(e))
            assert first in flags and first == min(flags, key=ERROR_RANK.get), (hex(w), str(e), flags)
            continue
        assert not flags, (want, flags)
        ins = got.instr
        assert ins.op == want.op and got.engine == ENGINE_OF[want.op]
        assert tuple(getattr(ins.flags, f) for f in DEP_FLAGS) == want.flags
        if FIELDS[want.op]:
            fields = getattr(ins.f, want.op.name.lower())
            assert {f.name: getattr(fields, f.name) for f in FIELDS[want.op]} == dict(want.fields)
    assert 80 < errors < 160   # both kinds well represented


@pytest.mark.parametrize("depth", [1, 4])
def test_token_queue_counts(depth):
    dut = TokenQueue(depth)
    rng = random.Random(depth)

    async def bench(ctx):
        held = 0
        for _ in range(300):
            push, pop = rng.random() < 0.5, rng.random() < 0.45
            ctx.set(dut.push.valid, push)
            ctx.set(dut.pop.ready, pop)
            assert ctx.get(dut.push.ready) == (held < depth) and ctx.get(dut.pop.valid) == (held > 0)
            held += (push and held < depth) - (pop and held > 0)
            await ctx.tick()
            assert ctx.get(dut.count) == held

    run(dut, bench)


def test_four_queues_are_independent():
    dut = TokenQueues(2)

    async def bench(ctx):
        ctx.set(dut.l2c_push.valid, 1)
        ctx.set(dut.s2c_push.valid, 1)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.l2c_pop.valid) and ctx.get(dut.s2c_pop.valid)
        assert not ctx.get(dut.c2l_pop.valid) and not ctx.get(dut.c2s_pop.valid)
        assert not ctx.get(dut.l2c_push.ready)   # full at 2

    run(dut, bench)

"""The engines' token handshakes against verify.token_order (the protocol run alone, what check_stream and the
Simulator use): random streams of token flags over the three engines, balanced or not, with queues of 1 and 4
tokens; the RTL finishes exactly when token_order finds no deadlock, and raises `deadlock` (never hangs) otherwise."""

from __future__ import annotations

import random

import pytest

from tritc.codegen.fpga.isa import DEP_FLAGS, Engine, Instr, Op
from tritc.codegen.fpga.verify import POP_QUEUE, PUSH_QUEUE, QUEUES, DeadlockError, token_order
from tritc.hw.sim import put, run
from tritc.hw.tokens import TokenProtocol

OPS = {Engine.LOAD: Op.LOAD, Engine.COMPUTE: Op.NOP, Engine.STORE: Op.STORE}


PUSHER = {q: key for key, q in PUSH_QUEUE.items()}   # queue -> (engine, flag)
POPPER = {q: key for key, q in POP_QUEUE.items()}


def random_stream(rng: random.Random) -> list[Instr]:
    """Tokens pushed and popped in pairs (a pop after its push, or half the time anywhere before it: a stream that may
    deadlock), on random queues, with a few flagless instructions between."""
    plan: list[tuple[Engine, dict[str, int]]] = []
    for _ in range(rng.randint(2, 7)):
        q = rng.choice(QUEUES)
        (producer, push), (consumer, pop) = PUSHER[q], POPPER[q]
        i = rng.randint(0, len(plan))
        plan.insert(i, (producer, {push: 1}))
        j = rng.randint(0, i) if rng.random() < 0.5 else rng.randint(i + 1, len(plan))
        plan.insert(j, (consumer, {pop: 1}))
    for _ in range(rng.randint(0, 3)):
        plan.insert(rng.randint(0, len(plan)), (rng.choice(list(Engine)), {}))
    return [Instr(OPS[engine], **flags) for engine, flags in plan]


def deadlocks(instrs: list[Instr], depth: int) -> bool:
    try:
        token_order(instrs, depth)
    except DeadlockError:
        return True
    return False


def rtl_deadlocks(instrs: list[Instr], depth: int) -> bool:
    """Run the stream's flags through TokenProtocol: True if it raised `deadlock`, False if every engine finished."""
    dut = TokenProtocol(depth)
    result = {}

    def feeder(engine: Engine):
        mine = [i for i in instrs if i.engine is engine]

        async def bench(ctx):
            port = getattr(dut, engine.name.lower())
            if not mine:   # an engine with nothing to do still ends: one flagless instruction
                await put(ctx, port, {"last": 1})
            for k, ins in enumerate(mine):
                await put(ctx, port, {**dict(zip(DEP_FLAGS, ins.flags)), "last": int(k == len(mine) - 1)})
        return bench

    async def watch(ctx):
        while not (ctx.get(dut.done) or ctx.get(dut.deadlock)):
            await ctx.tick()
        result["deadlock"] = bool(ctx.get(dut.deadlock))

    # A deadlocked engine never takes its next flags: the feeders run in the background.
    run(dut, watch, background=tuple(feeder(e) for e in Engine), max_cycles=500)
    return result["deadlock"]


@pytest.mark.parametrize("depth", [1, 4])
def test_token_protocol_agrees_with_token_order(depth):
    rng = random.Random(depth)
    streams = [random_stream(rng) for _ in range(14)]
    outcomes = [(rtl_deadlocks(instrs, depth), deadlocks(instrs, depth)) for instrs in streams]
    assert all(got == want for got, want in outcomes), [k for k, (g, w) in enumerate(outcomes) if g != w]
    assert 3 <= sum(want for _, want in outcomes) <= 11    # both outcomes represented

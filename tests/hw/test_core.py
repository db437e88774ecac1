"""The core running whole streams (RtlDevice over tritc/hw/core.py) against the Simulator: random streams of LOADs,
STOREs and NOPs with tokens, copying between DRAM regions through every buffer kind, end with the same DRAM and the
same buffers bit for bit; a stream missing a token, or pushing into a queue nobody pops, is a DeadlockError naming
the blocked instructions (never a hang); a malformed word stops the core with its index; the Device protocol."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from tritc.codegen.fpga.isa import INSTR_BYTES, ISA_VERSION, MAGIC, STREAM_HEADER, Buf, Instr, Op, StreamError, encode, encode_stream
from tritc.errors import AcceleratorTimeoutError, ArtifactCompatibilityError
from tritc.runtime.fpga import DeadlockError, Device, DeviceError, Simulator
from tritc.runtime.rtl import ABSENT_KEYS, RtlDevice

from .conftest import SMALL
from .test_dma import random_transfer

DRAM = 8192


@pytest.fixture(scope="module")
def devices():
    """One RtlDevice and one Simulator for the module: building the core's simulation takes a few seconds, and both
    keep their buffers between runs, so they stay in step as long as every test runs both. The streams here have no
    GEMM or VOP, so the core is built without its compute engines (a third of the build and simulation time;
    test_core_compute.py runs the whole core)."""
    return RtlDevice(SMALL, dram_bytes=DRAM, units=frozenset()), Simulator(SMALL, dram_bytes=DRAM)


def transfer_of(op: Op, buf: Buf | None, rng: random.Random, units) -> Instr:
    while True:
        ins = random_transfer(op, rng, units)
        if buf is None or ins.buf == buf:
            return ins


def random_stream(rng: random.Random, rounds: int, units) -> list[Instr]:
    """Rounds of: LOADs (each pushing l2c, the round's first popping c2l after the round before), a compute NOP
    relaying each l2c (the last also pushing c2s), STOREs (the first popping c2s, the last pushing s2c), a NOP
    turning s2c into the next round's c2l; random flagless NOPs between. Race free by construction (the Simulator
    checks hazards), and several tokens sit in l2c at once (its depth, 4, is reached with 5 LOADs)."""
    out: list[Instr] = []
    for r in range(rounds):
        bufs = list(Buf) if r == 0 else [None] * rng.randint(1, 5)
        loads = [transfer_of(Op.LOAD, b, rng, units).replace(push_next=1) for b in bufs]
        if r:
            loads[0] = loads[0].replace(pop_next=1)
        stores = [transfer_of(Op.STORE, b, rng, units)
                  for b in ([Buf.ACT, Buf.ACC, Buf.VEC, Buf.KV] if r == 0 else [None] * rng.randint(1, 4))]
        stores[0] = stores[0].replace(pop_prev=1)
        stores[-1] = stores[-1].replace(push_prev=1)
        relays = [Instr(Op.NOP, pop_prev=1) for _ in loads]
        relays[-1] = relays[-1].replace(push_next=1)
        # program order: the loads and their relays merged at random (a relay may come before the LOAD it waits for)
        body: list[Instr] = []
        pending = list(relays)
        for ld in loads:
            while pending and rng.random() < 0.4:
                body.append(pending.pop(0))
            body.append(ld)
        body += pending + stores
        body += [Instr(Op.NOP) for _ in range(rng.randint(0, 2))]
        out += body + [Instr(Op.NOP, pop_next=1, push_prev=int(r < rounds - 1))]
    return out + [Instr(Op.FINISH)]


def run_both(devices, stream, image) -> tuple[dict, dict]:
    rtl, sim = devices
    rtl.write(0, image)
    sim.write(0, image)
    rtl.load_stream(stream)
    sim.load_stream(stream)
    return rtl.run(), sim.run()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_streams_match_the_simulator(devices, seed):
    rtl, sim = devices
    rng = random.Random(seed)
    stream = random_stream(rng, 3, rtl.params.buffer_units)
    image = np.random.default_rng(seed).integers(0, 256, DRAM, dtype=np.uint8)
    got, want = run_both(devices, stream, image)
    print(f"\nseed {seed}: {len(stream)} instructions, RTL {got['cycles']} cycles, Simulator {want['cycles']} "
          f"(x{got['cycles'] / want['cycles']:.2f})")
    assert not np.array_equal(rtl.read(0, DRAM), image), "the stream stored nothing"
    assert np.array_equal(rtl.read(0, DRAM), sim.read(0, DRAM))
    held = rtl.buffers()
    for b in Buf:
        assert np.array_equal(held[b], sim.raw[b]), b.name
    for key in ("dram_read_bytes", "dram_write_bytes", "instructions", "tokens_left"):
        assert got[key] == want[key], key
    assert got["cycles"] == round(got["seconds"] * SMALL.clock_hz)
    for e in ("load", "compute", "store"):
        assert got["engines"][e]["busy"] > 0


def test_a_slow_dram_and_one_token_queues():
    """The same kind of stream where the DRAM takes a request every other cycle (the three masters wait on each
    other in the arbiter) and every queue holds one token (pushes wait for room all the time)."""
    import dataclasses

    config = dataclasses.replace(SMALL, dram_bandwidth=8e9, queue_depth=1)
    devices = RtlDevice(config, dram_bytes=DRAM, units=frozenset()), Simulator(config, dram_bytes=DRAM)
    rng = random.Random(3)
    stream = random_stream(rng, 3, devices[0].params.buffer_units)
    image = np.random.default_rng(3).integers(0, 256, DRAM, dtype=np.uint8)
    got, want = run_both(devices, stream, image)
    print(f"\nslow DRAM, queues of 1: RTL {got['cycles']} cycles, Simulator {want['cycles']}")
    assert np.array_equal(devices[0].read(0, DRAM), devices[1].read(0, DRAM))
    held = devices[0].buffers()
    assert all(np.array_equal(held[b], devices[1].raw[b]) for b in Buf)
    assert got["engines"]["load"]["stall"] > 0 and got["dram_write_bytes"] == want["dram_write_bytes"] > 0


def test_stats_are_the_simulators_keys_but_the_absent_ones(devices):
    rtl, sim = devices
    stream = [Instr(Op.NOP), Instr(Op.FINISH)]
    got, want = run_both(devices, stream, np.zeros(16, np.uint8))
    absent = {k for k in ABSENT_KEYS if "." not in k}
    assert set(got) == set(want) - absent
    assert set(got["engines"]) == set(want["engines"])
    assert got["instructions"] == want["instructions"] == 2
    assert isinstance(rtl, Device)


def test_missing_token_is_a_deadlock_not_a_hang(devices):
    rtl, sim = devices
    load = Instr(Op.LOAD, buf=Buf.VEC, sram_addr=0, dram_addr=64, rows=1, cols=4, dram_rs=16, dram_cs=4, sram_rs=4)
    stream = [load.replace(push_next=1), Instr(Op.NOP, pop_prev=1), Instr(Op.NOP, pop_prev=1, push_next=1),
              Instr(Op.STORE, **{**load.fields, "dram_addr": 512}, pop_prev=1), Instr(Op.FINISH)]
    for dev in (sim, rtl):
        dev.load_stream(stream)
        with pytest.raises(DeadlockError) as e:
            dev.run()
        msg = str(e.value)
        assert "compute engine at instruction 2 (NOP" in msg and "l2c" in msg, msg
        assert "store engine at instruction 3 (STORE" in msg and "c2s" in msg, msg
    # a queue nobody pops: the fifth push waits for room forever
    stream = [Instr(Op.NOP, push_next=1) for _ in range(5)] + [Instr(Op.FINISH)]
    rtl.load_stream(stream)
    with pytest.raises(DeadlockError, match=r"compute engine at instruction 4 \(NOP.*waits for room in c2s"):
        rtl.run()
    # the core sees cmd_depth (16) instructions ahead per engine, the Simulator the whole stream: a token from a LOAD
    # behind 17 compute instructions never comes (a limit of the hardware the report names; compiled streams issue
    # producers first)
    stream = [Instr(Op.NOP, pop_prev=1)] + [Instr(Op.NOP) for _ in range(17)] + [load.replace(push_next=1),
                                                                              Instr(Op.FINISH)]
    sim.load_stream(stream)
    sim.run()
    rtl.load_stream(stream)
    with pytest.raises(DeadlockError, match=r"compute engine at instruction 0 \(NOP !pop_prev\) waits for a token in "
                                            r"l2c.*; fetch holds instruction 17 \(NOP\): its engine's command queue is "
                                            r"full"):
        rtl.run()
    # the device is usable after a deadlock
    got, want = run_both(devices, [load, Instr(Op.FINISH)], np.arange(DRAM, dtype=np.uint8))
    assert got["dram_read_bytes"] == want["dram_read_bytes"] == 16


def raw_stream(words: list[bytes], config=None) -> bytes:
    """A binary stream of the given words as they are (the header's hash over them, so only the words are wrong)."""
    body = b"".join(words)
    build = config.build_id if config is not None else bytes(32)
    return STREAM_HEADER.pack(MAGIC, ISA_VERSION, 0, len(words), build, hashlib.sha256(body).digest()) + body


def test_a_malformed_word_stops_the_core_with_its_index(devices):
    rtl, sim = devices
    good = [encode(Instr(Op.NOP)) for _ in range(3)]
    unknown = (9).to_bytes(INSTR_BYTES, "little")                        # opcode 9
    stray = (int.from_bytes(encode(Instr(Op.NOP)), "little") | 1 << 200).to_bytes(INSTR_BYTES, "little")
    for word, why in ((unknown, "unknown opcode 9"), (stray, "bits set above its last field")):
        data = raw_stream(good[:2] + [word] + good[2:] + [encode(Instr(Op.FINISH))], SMALL)
        with pytest.raises(StreamError, match="instruction 2"):
            sim.load_stream(data)                                      # the host's checks refuse it first
        with pytest.raises(StreamError, match="instruction 2"):
            rtl.load_stream(data)
        rtl.load_stream(data, check=False)                            # ... and the core's own decoder, too
        with pytest.raises(StreamError, match=f"RTL core stopped at instruction 2: its decoder refused .*{why}"):
            rtl.run()
    far = Instr(Op.LOAD, buf=Buf.VEC, sram_addr=0, dram_addr=60000, rows=1, cols=4, dram_rs=16, dram_cs=4, sram_rs=4)
    rtl.load_stream(raw_stream([encode(far), encode(Instr(Op.FINISH))]), check=False)   # unchecked: past DRAM
    with pytest.raises(DeviceError, match="the RTL simulation stopped: the core read DRAM byte 0xea40"):
        rtl.run()
    with pytest.raises(ArtifactCompatibilityError):   # the header's build: the Simulator's check
        rtl.load_stream(encode_stream([Instr(Op.FINISH)], config=Simulator("edge", dram_bytes=64).config))


def test_host_access_and_the_cycle_budget(devices):
    rtl, _sim = devices
    with pytest.raises(DeviceError, match="outside the device's DRAM"):
        rtl.write(DRAM - 2, b"abcd")
    with pytest.raises(DeviceError, match="outside the device's DRAM"):
        rtl.read(-1, 4)
    rtl.write(100, np.array([1, 2], np.int16))
    assert rtl.read(100, 4).tolist() == [1, 0, 2, 0]
    rtl.load_stream([Instr(Op.NOP) for _ in range(40)] + [Instr(Op.FINISH)])
    rtl.max_cycles = 30
    try:
        with pytest.raises(AcceleratorTimeoutError, match="accelerator timeout after 30 cycles"):
            rtl.run()
    finally:
        rtl.max_cycles = 100_000
    assert rtl.run()["instructions"] == 41    # rebuilt after the timeout

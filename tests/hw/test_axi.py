"""The AXI4 adapter against an AXI4 slave model: random reads and strobed writes from the port side, checked against
a shadow memory and the port's one-response-per-request-in-order contract, through a slave that stalls every
channel, takes AW and W independently, serves reads and writes independently (a read may overtake an earlier
write) and answers R and B after random delays; one-beat bursts and bursts of 4 and 8 transfers; error responses
flagged and counted; the latency covered by requests in flight; the protocol's stability rules checked."""

from __future__ import annotations

import dataclasses
import random
import sys
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from tritc.hw.axi import AxiAdapter
from tritc.hw.memory import MemArbiter
from tritc.hw.params import HwConfigError, hw_params
from tritc.hw.sim import get, put, run

from .conftest import SMALL

SLVERR, DECERR = 0b10, 0b11
EARLY_LAST = -1


class AxiSlave:
    """An AXI4 memory of `size` bytes behind `axi` for simulation (run `serve` in the background). Every ready is
    low with probability `stall`; R and B come `delay` cycles (a random range) after the request is complete, in
    order per channel (one ID), each transfer's valid raised with probability `present`. `faults` maps a beat's
    byte address to the response code its reads and writes get (a read's on one transfer of the burst). Asserts
    the master's side of the protocol: burst fields, WLAST, and valid and payload held until taken. A fault code
    of EARLY_LAST instead raises RLAST on a burst's first transfer with OKAY (a slave's protocol error)."""

    def __init__(self, axi, size: int, beat: int, data_bytes: int, rng: random.Random, *, stall=0.3, delay=(1, 12),
                 present=0.7, faults: dict[int, int] | None = None):
        self.axi, self.beat, self.db, self.n = axi, beat, data_bytes, beat // data_bytes
        self.rng, self.stall, self.delay, self.present = rng, stall, delay, present
        self.mem = np.zeros(size, np.uint8)
        self.faults = faults or {}
        self.reads = self.writes = self.acked = 0   # bursts returned, writes done, B's taken

    def _due(self, cycle: int) -> int:
        return cycle + self.rng.randint(*self.delay)

    def _check_burst(self, addr: int, length: int, size: int, burst: int) -> None:
        assert addr % self.beat == 0 and addr + self.beat <= self.mem.size, hex(addr)
        assert (length, size, burst) == (self.n - 1, self.db.bit_length() - 1, 1)

    async def serve(self, ctx) -> None:
        a, rng, db = self.axi, self.rng, self.db
        reads: deque = deque()        # (due, byte address) of bursts asked for
        rburst = None                 # the burst being returned: [transfers, next index]
        early = False
        r_valid = b_valid = False
        aws: deque = deque()          # write addresses taken
        wbursts: deque = deque()      # complete W bursts: [(data, strobe)] per transfer
        cur: list = []
        bq: deque = deque()           # (due, resp)
        held: dict[str, tuple] = {}   # a channel's payload offered and not taken last cycle
        ar_sig = (a.araddr, a.arlen, a.arsize, a.arburst)
        aw_sig = (a.awaddr, a.awlen, a.awsize, a.awburst)
        w_sig = (a.wdata, a.wstrb, a.wlast)
        cycle = 0
        while True:
            ready = {ch: rng.random() >= self.stall for ch in ("ar", "aw", "w")}
            ctx.set(a.arready, ready["ar"])
            ctx.set(a.awready, ready["aw"])
            ctx.set(a.wready, ready["w"])
            if rburst is None and reads and reads[0][0] <= cycle:
                _, addr = reads.popleft()
                code = self.faults.get(addr, 0)
                row = self.mem[addr:addr + self.beat]
                rburst = [[(int.from_bytes(row[k * db:(k + 1) * db].tobytes(), "little"),
                            code if k == self.n // 2 and code > 0 else 0) for k in range(self.n)], 0]
                early = code == EARLY_LAST
            if rburst is not None and not r_valid:
                r_valid = rng.random() < self.present
            ctx.set(a.rvalid, r_valid)
            if r_valid:
                rdata, rresp = rburst[0][rburst[1]]
                ctx.set(a.rdata, rdata)
                ctx.set(a.rresp, rresp)
                ctx.set(a.rlast, rburst[1] == self.n - 1 or (early and rburst[1] == 0))
                ctx.set(a.rid, 0)
            if not b_valid and bq and bq[0][0] <= cycle:
                b_valid = rng.random() < self.present
            ctx.set(a.bvalid, b_valid)
            if b_valid:
                ctx.set(a.bresp, bq[0][1])
                ctx.set(a.bid, 0)
            s = await ctx.tick().sample(a.arvalid, *ar_sig, a.awvalid, *aw_sig, a.wvalid, *w_sig, a.rready, a.bready)
            cycle += 1
            arv, ar, awv, aw, wv, w = s[2], s[3:7], s[7], s[8:12], s[12], s[13:16]
            rready, bready = s[16], s[17]
            for ch, valid, payload in (("ar", arv, ar), ("aw", awv, aw), ("w", wv, w)):
                if ch in held:   # AXI: once valid, held with its payload until taken
                    assert valid and tuple(map(int, payload)) == held.pop(ch), f"{ch} dropped or changed"
                if valid and not ready[ch]:
                    held[ch] = tuple(map(int, payload))
            if arv and ready["ar"]:
                self._check_burst(*map(int, ar))
                reads.append((self._due(cycle), int(ar[0])))
            if awv and ready["aw"]:
                self._check_burst(*map(int, aw))
                aws.append(int(aw[0]))
            if wv and ready["w"]:
                cur.append((int(w[0]), int(w[1])))
                assert bool(w[2]) == (len(cur) == self.n), "WLAST not on the burst's last transfer"
                if w[2]:
                    wbursts.append(cur)
                    cur = []
            while aws and wbursts:   # a write is done when both its address and its data are in
                addr, transfers = aws.popleft(), wbursts.popleft()
                for k, (data, strobe) in enumerate(transfers):
                    new = np.frombuffer(data.to_bytes(db, "little"), np.uint8)
                    mask = np.array([(strobe >> i) & 1 for i in range(db)], bool)
                    self.mem[addr + k * db:addr + (k + 1) * db][mask] = new[mask]
                self.writes += 1
                bq.append((self._due(cycle), max(0, self.faults.get(addr, 0))))
            if r_valid and rready:
                r_valid = False
                rburst[1] += 1
                if rburst[1] == self.n:
                    rburst = None
                    self.reads += 1
            if b_valid and bready:
                b_valid = False
                bq.popleft()
                self.acked += 1


def port_traffic(port, slave: AxiSlave, rows: int, ops: int, rng: random.Random, shadow: np.ndarray, log: list, *,
                 hazards: bool = True, base: int = 0):
    """A master on the port: `ops` random reads and strobed writes over `rows` beats, each response checked in
    order against the shadow memory as it was when the request was made (DramModel's contract: a read sees every
    write requested before it), through a slave that may serve a read before an earlier write. No response may
    leave before the slave has returned its R burst or B (a write acknowledged is a write landed). Without
    `hazards`, a beat with a request of one kind in flight gets only that kind until it is answered (what the ISA's
    tokens guarantee; enough without the adapter's hazard check). The rows start at beat `base`."""
    beat = slave.beat
    answered = [0, 0]                 # reads, writes
    expect: deque = deque()
    in_flight: dict[int, list] = {}   # row -> [write?, count]

    async def issue(ctx):
        for _ in range(ops):
            row = base + rng.randrange(rows)
            write = rng.random() < 0.5
            if not hazards and row in in_flight:
                write = in_flight[row][0]
            in_flight.setdefault(row, [write, 0])[1] += 1
            if write:
                data, strobe = rng.getrandbits(8 * beat), rng.getrandbits(beat)
                new = np.frombuffer(data.to_bytes(beat, "little"), np.uint8)
                mask = np.array([(strobe >> b) & 1 for b in range(beat)], bool)
                shadow[row * beat:(row + 1) * beat][mask] = new[mask]
                expect.append((row, None))
                await put(ctx, port.req, {"addr": row, "write": 1, "data": data, "strobe": strobe})
            else:
                expect.append((row, shadow[row * beat:(row + 1) * beat].tobytes()))
                await put(ctx, port.req, {"addr": row, "write": 0, "data": 0, "strobe": 0})
            while rng.random() < 0.2:
                await ctx.tick()

    async def collect(ctx):
        for _ in range(ops):
            while rng.random() < 0.2:
                await ctx.tick()
            resp = await get(ctx, port.resp)
            row, want = expect.popleft()
            assert resp.write == (want is None), f"response {len(log)}: a {'read' if resp.write else 'write'}'s"
            if want is not None:
                assert int(resp.data).to_bytes(beat, "little") == want, f"response {len(log)}: row {row}"
            answered[resp.write] += 1
            assert answered[0] <= slave.reads and answered[1] <= slave.acked, "a response before its R or B"
            log.append((row, bool(resp.write)))
            in_flight[row][1] -= 1
            if not in_flight[row][1]:
                del in_flight[row]
    return issue, collect


def random_traffic(data_bytes: int, *, hazard_check=True, hazards=True, ops=150) -> None:
    p = hw_params(SMALL)
    beat, rows = p.mem_beat_bytes, 12
    dut = AxiAdapter(p, data_bytes, hazard_check=hazard_check)
    rng = random.Random(data_bytes)
    slave = AxiSlave(dut.m_axi, 16 * beat, beat, data_bytes, rng)
    slave.mem[:] = np.frombuffer(rng.randbytes(slave.mem.size), np.uint8)
    shadow = slave.mem.copy()
    log: list = []
    issue, collect = port_traffic(dut.bus, slave, rows, ops, rng, shadow, log, hazards=hazards)
    seen = {}

    async def outcome(ctx):
        await collect(ctx)
        seen["error"], seen["errors"] = ctx.get(dut.error), ctx.get(dut.errors)

    run(dut, issue, outcome, background=(slave.serve,), max_cycles=30 * ops)
    assert len(log) == ops and slave.reads + slave.writes == ops
    assert np.array_equal(slave.mem, shadow)
    assert seen == {"error": 0, "errors": 0}


@pytest.mark.parametrize("data_bytes", [64, 16, 8])
def test_random_traffic_in_port_order(data_bytes):
    # 64: one-transfer bursts; 16 and 8: bursts of 4 and 8 transfers (a beat wider than the AXI bus). Reads and
    # writes of the same beats interleave: the hazard check keeps each read after the writes before it.
    random_traffic(data_bytes)


def test_without_the_hazard_check():
    # Traffic that never has both kinds in flight to one beat (the ISA's tokens guarantee it) needs no check ...
    random_traffic(16, hazard_check=False, hazards=False)
    # ... and the slave does serve reads before earlier writes: without the check, the same traffic as above fails.
    with pytest.raises(AssertionError, match="row"):
        random_traffic(16, hazard_check=False)


def test_datacenter_beat_as_64_transfer_bursts():
    # Datacenter's 2,048-byte beat on a 256-bit HBM port: bursts of 64 transfers (ARLEN 63), 24 random requests.
    # Python refuses to print integers over 4,300 digits, which Amaranth's simulator does for a 16,384-bit
    # register's mask while compiling it: the limit is lifted for this test only.
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        p = hw_params("datacenter")
        beat = p.mem_beat_bytes
        dut = AxiAdapter(p, 32)
        rng = random.Random(5)
        slave = AxiSlave(dut.m_axi, 6 * beat, beat, 32, rng)
        slave.mem[:] = np.frombuffer(rng.randbytes(slave.mem.size), np.uint8)
        shadow = slave.mem.copy()
        log: list = []
        run(dut, *port_traffic(dut.bus, slave, 6, 24, rng, shadow, log), background=(slave.serve,),
            max_cycles=5000)
    finally:
        sys.set_int_max_str_digits(limit)
    assert len(log) == 24 and np.array_equal(slave.mem, shadow)


class _Board(Elaboratable):
    """The memory side as a core would build it: masters through MemArbiter into the adapter."""

    def __init__(self, arbiter: MemArbiter, adapter: AxiAdapter):
        self.arbiter, self.adapter = arbiter, adapter

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.arbiter, m.submodules.adapter = self.arbiter, self.adapter
        wiring.connect(m, self.arbiter.bus, self.adapter.bus)
        return m


def test_behind_the_arbiter():
    # Three masters, each on its own 6 beats, through MemArbiter's `bus` into the adapter (bursts of 4).
    p = hw_params(SMALL)
    beat = p.mem_beat_bytes
    arbiter, adapter = MemArbiter(p, 3), AxiAdapter(p, 16)
    rng = random.Random(3)
    slave = AxiSlave(adapter.m_axi, 18 * beat, beat, 16, rng)
    slave.mem[:] = np.frombuffer(rng.randbytes(slave.mem.size), np.uint8)
    shadow = slave.mem.copy()
    logs: list[list] = [[], [], []]
    benches = [b for i in range(3) for b in port_traffic(getattr(arbiter, f"m{i}"), slave, 6, 50,
                                                         random.Random(10 + i), shadow, logs[i], base=6 * i)]
    run(_Board(arbiter, adapter), *benches, background=(slave.serve,), max_cycles=6000)
    assert [len(log) for log in logs] == [50, 50, 50] and slave.reads + slave.writes == 150
    assert np.array_equal(slave.mem, shadow)


@pytest.mark.parametrize("data_bytes", [64, 16])
def test_error_responses_are_flagged_counted_and_answered(data_bytes):
    # SLVERR on a row's reads (on one transfer in the middle of a burst) and writes, DECERR on another's, RLAST on
    # the first transfer of a third's read bursts: every request still gets its response in order, `error` rises
    # at the first and stays, `errors` counts each (RLAST misplaced only where a burst has several transfers).
    p = hw_params(SMALL)
    beat = p.mem_beat_bytes
    dut = AxiAdapter(p, data_bytes)
    rng = random.Random(7)
    faults = {3 * beat: SLVERR, 5 * beat: DECERR, 6 * beat: EARLY_LAST}
    slave = AxiSlave(dut.m_axi, 8 * beat, beat, data_bytes, rng, faults=faults)
    shadow = slave.mem.copy()
    log: list = []
    issue, collect = port_traffic(dut.bus, slave, 8, 80, rng, shadow, log)
    flags = []

    async def watch(ctx):
        while len(log) < 80:
            _, _, error = await ctx.tick().sample(dut.error)
            flags.append(int(error))
        # an error is counted when its R burst or B arrives, before its response leaves
        flags.append(int(ctx.get(dut.errors)))

    run(dut, issue, collect, watch, background=(slave.serve,), max_cycles=3000)
    early = data_bytes < beat
    bad = sum(row in (3, 5) or (early and row == 6 and not written) for row, written in log)
    assert bad > 0 and flags[-1] == bad
    first = flags.index(1)
    assert all(flags[first:-1])


@pytest.mark.parametrize("mixed", [False, True])
def test_requests_in_flight_cover_the_latency(mixed):
    # A slave always ready, answering 10 cycles (mem_latency) after each request: 64 back-to-back reads (or reads
    # and writes of different beats, alternating) take 64 cycles plus about one latency, not 64 latencies,
    # because up to mem_outstanding (16) are in flight.
    p = hw_params(SMALL)
    beat = p.mem_beat_bytes
    dut = AxiAdapter(p)
    rng = random.Random(1)
    slave = AxiSlave(dut.m_axi, 128 * beat, beat, beat, rng, stall=0.0, delay=(p.mem_latency, p.mem_latency),
                     present=1.0)
    got = []

    async def issue(ctx):
        for k in range(64):
            write = mixed and k % 2
            await put(ctx, dut.bus.req, {"addr": 64 * write + k, "write": write, "data": k, "strobe": 1})

    async def collect(ctx):
        ctx.set(dut.bus.resp.ready, 1)
        while len(got) < 64:
            _, _, valid = await ctx.tick().sample(dut.bus.resp.valid)
            if valid:
                got.append(1)

    cycles = run(dut, issue, collect, background=(slave.serve,), max_cycles=1000)
    assert cycles <= 64 + p.mem_latency + 4, cycles
    assert slave.mem[64 * beat:128 * beat:beat].tolist() == [k if mixed and k % 2 else 0 for k in range(64)]


@pytest.mark.parametrize("data_bytes, why", [(24, "power of two"), (256, "power of two"), (128, "wider than"),
                                             (0, "power of two")])
def test_refused_widths(data_bytes, why):
    with pytest.raises(HwConfigError, match=why):
        AxiAdapter(hw_params(SMALL), data_bytes)
    with pytest.raises(HwConfigError, match="one AXI4 burst"):
        AxiAdapter(hw_params(dataclasses.replace(SMALL, dram_bandwidth=2048 * 250e6, dram_bytes=1 << 20)), 4)

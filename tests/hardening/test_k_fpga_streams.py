"""HARDENING.md group K, FPGA instruction streams (cases 55-58): what reaches the accelerator is checked first.

A stream starts with a header (magic, ISA version, the accelerator build it was lowered for, a SHA-256 of its words);
a stream for another ISA or build is refused before anything is sent to the device, its DMA stays inside the DRAM
the program allocated (checked when it is emitted and when an artifact is loaded), a truncated or malformed one is
refused before it runs, the token protocol is checked for deadlock, a device run has a watchdog, and the Simulator
agrees bit for bit with the CPU backend on the same quantised model. docs/ISA.md ("Streams") is the contract.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time

import numpy as np
import pytest

import tritc
from tritc.codegen.fpga.isa import (
    ISA_VERSION,
    MAGIC,
    NO_BUILD,
    STREAM_HEADER,
    Buf,
    Instr,
    Op,
    StreamError,
    decode_stream,
    encode_stream,
    read_stream_header,
)
from tritc.codegen.fpga.verify import DeadlockError, check_stream
from tritc.errors import (
    AcceleratorTimeoutError,
    ArtifactCompatibilityError,
    ArtifactError,
    ArtifactIntegrityError,
    RunError,
)
from tritc.ir import parse_graph
from tritc.runtime.fpga import Simulator
from tritc.runtime.fpga_model import FpgaModel

from ..runtime.fpga_streams import config, load, store
from .artifacts import rewrite
from .harness import refuses

GRAPH = """graph @t(%x: f32[batch,64]) -> (%y: f32[batch,32]) {
  %w = weight "w" : f32[64,32]
  %m = matmul(%x, %w) : f32[batch,32]
  %y = relu(%m) : f32[batch,32]
  return %y
}"""
RNG = np.random.default_rng(0)
W = (RNG.integers(-1, 2, (64, 32)) * 0.5).astype(np.float32)
X = RNG.standard_normal((2, 64)).astype(np.float32)
EDGE = config("edge")


@pytest.fixture(scope="module")
def fpga_model():
    """A ternary layer with int8 activations, lowered for the edge build at batch 2: one device region."""
    return tritc.compile(parse_graph(GRAPH, {"w": W}), target="fpga", shapes={"batch": 2})


@pytest.fixture()
def saved(sb, fpga_model):
    p = sb.model_dir / "f.tritc"
    fpga_model.save(p)
    sb.mark()
    return p


def small_stream() -> list[Instr]:
    """LOAD a row into ACT, STORE it back elsewhere, FINISH: tokens load -> compute relay -> store."""
    return [load(Buf.ACT, 0, 0, 1, 64, push_next=1), Instr(Op.NOP, pop_prev=1, push_next=1),
            store(Buf.ACT, 0, 4096, 1, 64, pop_prev=1), Instr(Op.FINISH)]


def with_header(blob: bytes, **changes) -> bytes:
    """The stream with header fields replaced (the hash recomputed unless given)."""
    magic, version, reserved, count, build, digest = STREAM_HEADER.unpack_from(blob)
    fields = dict(magic=magic, version=version, reserved=reserved, count=count, build=build,
                  digest=hashlib.sha256(blob[STREAM_HEADER.size:]).digest())
    fields.update(changes)
    return STREAM_HEADER.pack(*fields.values()) + blob[STREAM_HEADER.size:]


def untouched(sim: Simulator) -> None:
    """Nothing was submitted: no stream loaded, no run, DRAM all zeros."""
    assert sim._instrs == [] and sim.stats == {} and not sim.dram.any()


def stream_section(path) -> str:
    from tritc.runtime import artifact as art

    return next(s for s in art.read_artifact(path).sections if s.startswith("stream."))


# ---- 55: the header --------------------------------------------------------------------------------------------

def test_55_header_holds_magic_isa_build_and_hash(fpga_model, saved):
    from tritc.runtime import artifact as art

    blob = encode_stream(small_stream(), EDGE)
    head = read_stream_header(blob)
    assert blob[:8] == MAGIC and head.isa_version == ISA_VERSION and head.count == 4
    assert head.build_id == EDGE.build_id != NO_BUILD
    assert head.sha256 == hashlib.sha256(blob[STREAM_HEADER.size:]).digest()
    assert decode_stream(blob, EDGE) == small_stream()
    stored = art.read_artifact(saved)
    assert stored.manifest["target"]["isa_version"] == ISA_VERSION
    assert read_stream_header(stored.sections[stream_section(saved)]).build_id == fpga_model.config.build_id


def test_55_another_isa_version_is_refused_before_anything_runs(sb):
    sim = Simulator(EDGE, dram_bytes=1 << 20)
    newer = with_header(encode_stream(small_stream(), EDGE), version=ISA_VERSION + 1)
    refuses(sb, lambda: sim.load_stream(newer), ArtifactCompatibilityError,
            names=[f"ISA version {ISA_VERSION + 1}", f"ISA version {ISA_VERSION}"])
    untouched(sim)


def test_55_another_build_is_refused_before_anything_runs(sb):
    other = config("edge", matrix_rows=EDGE.matrix_rows * 2)
    sim = Simulator(other, dram_bytes=1 << 20)
    blob = encode_stream(small_stream(), EDGE)
    refuses(sb, lambda: sim.load_stream(blob), ArtifactCompatibilityError,
            names=[EDGE.build_id.hex()[:16], other.name, other.build_id.hex()[:16]])
    untouched(sim)
    assert config("edge").build_id == EDGE.build_id  # the name is not part of the build
    Simulator(EDGE, dram_bytes=1 << 20).load_stream(blob)


def test_55_a_corrupted_stream_is_refused(sb):
    sim = Simulator(EDGE, dram_bytes=1 << 20)
    blob = bytearray(encode_stream(small_stream(), EDGE))
    blob[STREAM_HEADER.size + 40] ^= 1  # a field of the second word
    refuses(sb, lambda: sim.load_stream(bytes(blob)), ArtifactIntegrityError, names=["instruction stream hash mismatch"])
    untouched(sim)


def test_55_a_model_on_a_device_of_another_build_sends_nothing(sb, fpga_model):
    """The model's streams were lowered for edge; a device of another build is refused before the weights or the
    inputs are written to it (no DMA)."""
    writes = []

    class Recording(Simulator):
        def write(self, addr, data):
            writes.append(addr)
            super().write(addr, data)

    other = Recording(config("edge", vector_lanes=EDGE.vector_lanes * 2))
    m = FpgaModel(fpga_model.graph, fpga_model.config, device=other)
    refuses(sb, lambda: m.run(None, {"x": X}), ArtifactCompatibilityError,
            names=["device is the FPGA build", fpga_model.config.name, "nothing was sent"])
    assert writes == []


def test_55_an_artifact_stream_for_another_isa_or_build_is_refused(sb, saved):
    name = stream_section(saved)
    newer = rewrite(saved, sb.model_dir / "isa.tritc",
                    sections=lambda s: s.update({name: with_header(s[name], version=ISA_VERSION + 1)}))
    other = rewrite(saved, sb.model_dir / "build.tritc",
                    sections=lambda s: s.update({name: with_header(s[name], build=bytes(range(32)))}))
    manifest = rewrite(saved, sb.model_dir / "manifest.tritc", manifest=lambda m: m["target"].update(isa_version=9))
    sb.mark()
    refuses(sb, lambda: tritc.load(newer), ArtifactCompatibilityError, names=["isa.tritc", name, "ISA version"])
    refuses(sb, lambda: tritc.load(other), ArtifactCompatibilityError, names=["build.tritc", name, "000102030405"])
    refuses(sb, lambda: tritc.load(manifest), ArtifactCompatibilityError, names=["manifest.tritc", "ISA version 9"])


# ---- 56: DMA bounds, truncation, bad words ---------------------------------------------------------------------

def test_56_dma_outside_the_allocated_buffers_is_refused_at_emit(sb, monkeypatch):
    """A lowering that stores into the weight image (read only) or past the activations: refused when the stream is
    emitted, so nothing is compiled or written."""
    from tritc.codegen.fpga import lower

    real = lower.lower_nodes

    def rogue(*a, **k):
        instrs = real(*a, **k)
        return [store(Buf.ACT, 0, 0, 1, 64), *instrs]  # DRAM 0: the weight image

    monkeypatch.setattr(lower, "lower_nodes", rogue)
    refuses(sb, lambda: tritc.compile(parse_graph(GRAPH, {"w": W}), target="fpga", shapes={"batch": 2}), StreamError,
            names=["instruction 0 (STORE", "writes DRAM [0, 63]", "outside the buffers allocated to it", "activations"])


def test_56_dma_outside_the_allocated_buffers_is_refused_at_load(sb, saved, fpga_model):
    """A stored stream (hashes fixed up) that reads DRAM the program never allocated (inside the device's DRAM, so
    the per-instruction check passes): refused by the loader."""
    name = stream_section(saved)
    far = fpga_model.config.dram_bytes - 4096

    def evil(s):
        instrs = decode_stream(s[name])
        s[name] = encode_stream([load(Buf.ACT, 0, far, 1, 64), *instrs], fpga_model.config)

    bad = rewrite(saved, sb.model_dir / "dma.tritc", sections=evil)
    sb.mark()
    refuses(sb, lambda: tritc.load(bad), ArtifactError,
            names=["dma.tritc", "instruction 0 (LOAD", f"reads DRAM [{far}, {far + 63}]", "the weight image"])


def test_56_address_past_dram_and_bad_opcode_refused_before_submission(sb):
    sim = Simulator(EDGE, dram_bytes=1 << 20)
    past = [load(Buf.ACT, 0, (1 << 20) - 32, 1, 64), Instr(Op.FINISH)]
    refuses(sb, lambda: sim.load_stream(encode_stream(past, EDGE)), StreamError,
            names=["instruction 0", "outside the 1048576 bytes of DRAM"])
    blob = bytearray(encode_stream(small_stream(), EDGE))
    blob[STREAM_HEADER.size + 32] = 0x0B  # the second word's opcode: 11 is no opcode
    refuses(sb, lambda: sim.load_stream(with_header(bytes(blob))), StreamError, names=["instruction 1", "unknown opcode 11"])
    untouched(sim)


def test_56_truncated_streams_are_refused(sb, saved):
    sim = Simulator(EDGE, dram_bytes=1 << 20)
    blob = encode_stream(small_stream(), EDGE)
    for n in (0, 7, STREAM_HEADER.size - 1, STREAM_HEADER.size, STREAM_HEADER.size + 31, len(blob) - 1):
        refuses(sb, lambda n=n: sim.load_stream(blob[:n]), StreamError, names=["stream"])
    untouched(sim)
    name = stream_section(saved)
    cut = rewrite(saved, sb.model_dir / "cut.tritc", sections=lambda s: s.update({name: s[name][:-5]}))
    sb.mark()
    refuses(sb, lambda: tritc.load(cut), ArtifactError, names=["cut.tritc", "truncated instruction stream"])


# ---- 57: deadlock and the watchdog -----------------------------------------------------------------------------

def test_57_a_deadlock_is_found_statically_and_by_the_device(sb):
    """Balanced tokens in a deadly order: the load waits for a token the compute engine pushes only after the load's
    own. check_stream (run on every emitted and loaded stream) names the stuck engines; the Simulator, given the
    stream anyway, reports the same at run time, at once, instead of hanging."""
    instrs = [load(Buf.ACT, 0, 0, 1, 64, pop_next=1, push_next=1), Instr(Op.NOP, pop_prev=1, push_prev=1),
              Instr(Op.FINISH)]
    refuses(sb, lambda: check_stream(instrs, EDGE), DeadlockError,
            names=["deadlock", "load engine at instruction 0", "waits for a token in c2l", "compute engine"])
    sim = Simulator(EDGE, dram_bytes=1 << 20)
    sim.load_stream(instrs)
    t = time.process_time()   # CPU seconds: seen at once, whatever else the machine runs
    refuses(sb, sim.run, DeadlockError, names=["deadlock at cycle", "waits for a token in c2l", "waits for a token in l2c"])
    assert time.process_time() - t < 2


def test_57_the_simulator_watchdog_stops_a_run_over_its_cycle_budget(sb):
    sim = Simulator(EDGE, dram_bytes=1 << 20, max_cycles=50)
    sim.load_stream(small_stream())
    err = refuses(sb, sim.run, AcceleratorTimeoutError, names=["accelerator timeout after 50 cycles", "max_cycles",
                                                               "instruction"])
    assert isinstance(err, RuntimeError) and isinstance(err, RunError)
    sim = Simulator(EDGE, dram_bytes=1 << 20, max_cycles=10**6)
    sim.load_stream(small_stream())
    assert sim.run()["cycles"] < 10**6


def test_57_a_hung_device_becomes_an_accelerator_timeout(sb, fpga_model):
    """A device whose run never returns (a hung board): the model's watchdog turns it into AcceleratorTimeoutError
    (a RuntimeError) after device_timeout seconds; the CLI prints such a RunError on one line, exit 2."""
    release = threading.Event()

    class Hung:
        """A board driver (not the Simulator) whose run waits for the board: here, for `release`."""

        def __init__(self, cfg):
            self.sim = Simulator(cfg)
            self.config, self.stats = cfg, {}
            self.write, self.read, self.load_stream = self.sim.write, self.sim.read, self.sim.load_stream

        def run(self):
            release.wait(30)
            return self.sim.run()

    m = FpgaModel(fpga_model.graph, fpga_model.config, device=Hung(fpga_model.config), device_timeout=0.5)
    t = time.monotonic()
    try:
        err = refuses(sb, lambda: m.run(None, {"x": X}), AcceleratorTimeoutError,
                      names=["accelerator timeout after", "device_timeout=0.5 s", "device region 0"])
    finally:
        release.set()
    assert time.monotonic() - t < 10
    assert isinstance(err, RuntimeError)
    ok = FpgaModel(fpga_model.graph, fpga_model.config, device=Hung(fpga_model.config), device_timeout=30)
    np.testing.assert_array_equal(ok.run(None, {"x": X})[0], fpga_model.run(None, {"x": X})[0])


# ---- 58: the functional simulator is the oracle ----------------------------------------------------------------

def test_58_simulator_and_cpu_backend_agree_bit_for_bit(sb, fpga_model, saved):
    """The same quantised model (the FPGA pipeline's final IR: int8 activations x trits) compiled for the CPU: the
    Simulator's outputs equal the CPU backend's exactly, from the compiled model and from its artifact."""
    cpu = tritc.compile(fpga_model.graph, pipeline="none", shapes={"batch": 2}, threads=1)
    xs = [X, np.zeros_like(X), np.full_like(X, 1e4), -X * 3, RNG.standard_normal((2, 64)).astype(np.float32)]
    loaded = tritc.load(saved)
    for x in xs:
        want = cpu(x=x)
        np.testing.assert_array_equal(fpga_model(x=x), want)
        np.testing.assert_array_equal(loaded(x=x), want)
    assert loaded.stats["device_runs"] == 1 and loaded.compilations == 0
    sb.check()


def test_55_streams_before_isa_3_are_refused(sb):
    """ISA 3 changed where a GEMM reads its weights in WGT (docs/ISA.md, "Weight layout"): a stream of version 2, or
    of the header-less format (ISA 1), would multiply by the wrong trits, so it is refused, saying why, before
    anything is submitted (its words are valid ones)."""
    blob = encode_stream(small_stream(), EDGE)
    legacy = b"TRITISA1" + struct.pack("<I", 4) + blob[STREAM_HEADER.size:]
    for version, stream in ((2, with_header(blob, version=2)), (1, legacy)):
        sim = Simulator(EDGE, dram_bytes=1 << 20)
        refuses(sb, lambda sim=sim, stream=stream: sim.load_stream(stream), ArtifactCompatibilityError,
                names=[f"ISA version {version}", f"run ISA version {ISA_VERSION}", "weight layout", "lower the model"])
        untouched(sim)


def test_55_an_artifact_of_isa_2_is_refused(sb, saved):
    manifest = rewrite(saved, sb.model_dir / "isa2.tritc", manifest=lambda m: m["target"].update(isa_version=2))
    sb.mark()
    refuses(sb, lambda: tritc.load(manifest), ArtifactCompatibilityError, names=["isa2.tritc", "ISA version 2"])

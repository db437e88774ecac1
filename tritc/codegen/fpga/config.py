"""FpgaConfig: the parameters of one accelerator build (docs/ISA.md, "Configuration").

Two presets, `edge` (Kria KV260 class) and `datacenter` (Alveo U280 / U55C class), and a JSON file of the
same fields for any other build: `load_config("edge")`, `load_config("my_board.json")`. Every field is checked
(`FpgaConfig.validate`): a build the ISA cannot address or that cannot hold one tile is refused with a
one-line FpgaConfigError naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ...errors import OptionError

TRIT_GROUP = 64          # trits per weight word: K is padded to a multiple of this (docs/ISA.md, "Weights")
PACKINGS = {"base3": 13, "2bit": 16}   # bytes per 64-trit word: 5 trits per byte (+1 pad trit), 2 bits per trit
DRAM_KINDS = ("ddr4", "hbm2")
VEC_ADDR_BITS = 20       # word address of a vector operand (VEC and KV buffers, ACC): 4 MiB each at most
BYTE_ADDR_BITS = 22      # byte address in WGT and ACT: 4 MiB each at most
DRAM_ADDR_BITS = 40


class FpgaConfigError(OptionError):
    """A preset name that does not exist, or a configuration field that is missing or impossible."""


@dataclass(frozen=True)
class FpgaConfig:
    name: str
    matrix_rows: int                 # outputs the matrix unit computes per cycle (one adder tree each)
    matrix_lanes: int                # trit-activation products per tree per cycle (divides 64, or a multiple of it)
    weight_buffer_bytes: int         # WGT: packed weight words, double-buffered by the lowering
    activation_buffer_bytes: int     # ACT: int8 activation rows
    accumulator_buffer_bytes: int    # ACC: int32 accumulators
    vector_buffer_bytes: int         # VEC: fp32 working rows of the vector unit
    cache_buffer_bytes: int          # KV: fp32 key / value tiles of the attention
    vector_lanes: int                # fp32 lanes of the vector unit
    clock_hz: float
    dram_bandwidth: float            # bytes per second
    dram_latency_ns: float           # first byte of a transfer
    dram_bytes: int                  # capacity
    dram_kind: str = "ddr4"          # for the energy model: ddr4 | hbm2
    dram_burst_bytes: int = 64       # a transfer moves whole bursts
    weight_packing: str = "base3"    # base3 (5 trits per byte) | 2bit
    queue_depth: int = 64            # tokens a dependency queue holds
    dram_outstanding: int = 1        # transfers a DMA engine has in flight at once (their latencies overlap)
    host_link_bandwidth: float = 4e9  # bytes per second between host and device memory (PCIe / AXI HP)
    host_link_latency_ns: float = 2000.0

    # -- derived -----------------------------------------------------------------------------------------
    @property
    def word_bytes(self) -> int:
        """Bytes of one packed 64-trit weight word."""
        return PACKINGS[self.weight_packing]

    @property
    def words_per_beat(self) -> int:
        """P: packed words an adder tree takes per cycle, at least 1 (fewer than 64 lanes take one word over
        64 / matrix_lanes cycles). WGT holds weights in beats of matrix_rows * P words (docs/ISA.md, "Weight
        layout")."""
        return max(1, self.matrix_lanes // TRIT_GROUP)

    @property
    def weight_beat_bytes(self) -> int:
        """One beat of the matrix unit: matrix_rows * words_per_beat words; a GEMM's wgt_addr is a multiple of it."""
        return self.matrix_rows * self.words_per_beat * self.word_bytes

    @property
    def bytes_per_cycle(self) -> float:
        return self.dram_bandwidth / self.clock_hz

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def build_id(self) -> bytes:
        """The identity of the accelerator build (the bitstream) this config describes: SHA-256 of its fields but the
        name, as canonical JSON. A stream records the build it was lowered for; a device of another build refuses it."""
        fields_ = {k: v for k, v in asdict(self).items() if k != "name"}
        return hashlib.sha256(json.dumps(fields_, sort_keys=True, separators=(",", ":")).encode()).digest()

    # -- checks ------------------------------------------------------------------------------------------
    def validate(self) -> FpgaConfig:
        def bad(field: str, why: str) -> FpgaConfigError:
            return FpgaConfigError(f"FPGA config '{self.name}': {field} {why}")

        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", "float") and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                               or not math.isfinite(v)):
                raise bad(f.name, f"must be a number, got {v!r}")
        positive = ("matrix_rows", "matrix_lanes", "weight_buffer_bytes", "activation_buffer_bytes",
                    "accumulator_buffer_bytes", "vector_buffer_bytes", "cache_buffer_bytes", "vector_lanes",
                    "clock_hz", "dram_bandwidth", "dram_bytes", "dram_burst_bytes", "queue_depth",
                    "dram_outstanding", "host_link_bandwidth")
        for name in positive:
            if getattr(self, name) <= 0:
                raise bad(name, f"must be positive, got {getattr(self, name)}")
        for name in ("dram_latency_ns", "host_link_latency_ns"):
            if getattr(self, name) < 0:
                raise bad(name, f"must not be negative, got {getattr(self, name)}")
        if self.matrix_lanes % TRIT_GROUP and TRIT_GROUP % self.matrix_lanes:
            # A tree takes a whole number of packed weight words per cycle, or one word over several cycles.
            raise bad("matrix_lanes", f"must divide {TRIT_GROUP} or be a multiple of it (a packed weight word "
                      f"is {TRIT_GROUP} trits), got {self.matrix_lanes}")
        if self.matrix_rows > 4096 or self.matrix_lanes > 4096 or self.vector_lanes > 4096:
            raise bad("matrix_rows/matrix_lanes/vector_lanes", "must be at most 4096")
        if self.dram_outstanding > 16:
            raise bad("dram_outstanding", f"must be at most 16 (the DMA engines' request queues), got "
                      f"{self.dram_outstanding}")
        if self.vector_lanes & (self.vector_lanes - 1):
            raise bad("vector_lanes", f"must be a power of two (its reduction tree), got {self.vector_lanes}")
        if self.weight_packing not in PACKINGS:
            raise bad("weight_packing", f"must be one of {', '.join(PACKINGS)}, got '{self.weight_packing}'")
        if self.dram_kind not in DRAM_KINDS:
            raise bad("dram_kind", f"must be one of {', '.join(DRAM_KINDS)}, got '{self.dram_kind}'")
        if self.dram_bytes > 1 << DRAM_ADDR_BITS:
            raise bad("dram_bytes", f"exceeds the {DRAM_ADDR_BITS}-bit DRAM address ({1 << DRAM_ADDR_BITS} bytes)")
        for name in ("weight_buffer_bytes", "activation_buffer_bytes"):
            if getattr(self, name) > 1 << BYTE_ADDR_BITS:
                raise bad(name, f"exceeds the {BYTE_ADDR_BITS}-bit buffer address ({1 << BYTE_ADDR_BITS} bytes)")
        for name in ("accumulator_buffer_bytes", "vector_buffer_bytes", "cache_buffer_bytes"):
            if getattr(self, name) > 4 << VEC_ADDR_BITS:
                raise bad(name, f"exceeds the {VEC_ADDR_BITS}-bit word address ({4 << VEC_ADDR_BITS} bytes)")
        # One tile of each kind must fit (the smallest the lowering makes; double buffering wants two).
        if self.weight_buffer_bytes < 2 * self.weight_beat_bytes:
            raise bad("weight_buffer_bytes", f"is {self.weight_buffer_bytes}: too small for two "
                      f"{self.matrix_rows}x{self.matrix_lanes} weight tiles ({2 * self.weight_beat_bytes} bytes)")
        if self.activation_buffer_bytes < 2 * self.matrix_lanes:
            raise bad("activation_buffer_bytes", f"is {self.activation_buffer_bytes}: too small for two "
                      f"activation rows of {self.matrix_lanes} lanes")
        if self.accumulator_buffer_bytes < 4 * self.matrix_rows:
            raise bad("accumulator_buffer_bytes", f"is {self.accumulator_buffer_bytes}: too small for "
                      f"{self.matrix_rows} accumulators")
        if self.vector_buffer_bytes < 16 * 4 * self.vector_lanes:
            raise bad("vector_buffer_bytes", f"is {self.vector_buffer_bytes}: too small for 16 rows of "
                      f"{self.vector_lanes} lanes")
        if self.cache_buffer_bytes < 2 * 4 * self.vector_lanes:
            raise bad("cache_buffer_bytes", f"is {self.cache_buffer_bytes}: too small for two cache rows")
        return self


KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

PRESETS: dict[str, FpgaConfig] = {
    # Kria KV260 (Zynq UltraScale+ XCK26): 144 BRAM36 + 64 URAM (~2.9 MB on chip), one 64-bit DDR4-2400
    # channel (19.2 GB/s), 4 GB. 16 adder trees of 64 lanes, 16 fp32 vector lanes, 250 MHz.
    "edge": FpgaConfig(name="edge", matrix_rows=16, matrix_lanes=64, weight_buffer_bytes=512 * KIB,
                       activation_buffer_bytes=128 * KIB, accumulator_buffer_bytes=64 * KIB,
                       vector_buffer_bytes=512 * KIB, cache_buffer_bytes=512 * KIB, vector_lanes=16,
                       clock_hz=250e6, dram_bandwidth=19.2e9, dram_latency_ns=120.0, dram_bytes=4 * GIB,
                       dram_kind="ddr4", dram_outstanding=4, host_link_bandwidth=4e9, host_link_latency_ns=1000.0),
    # Alveo U280 / U55C: 960 URAM + 2016 BRAM36 (~43 MB on chip), HBM2 at 460 GB/s, 8 GB (U280) / 16 GB
    # (U55C). 64 adder trees of 128 lanes, 128 fp32 vector lanes, 250 MHz; PCIe Gen3 x16 to the host.
    "datacenter": FpgaConfig(name="datacenter", matrix_rows=64, matrix_lanes=128, weight_buffer_bytes=4 * MIB,
                             activation_buffer_bytes=1 * MIB, accumulator_buffer_bytes=1 * MIB,
                             vector_buffer_bytes=4 * MIB, cache_buffer_bytes=4 * MIB, vector_lanes=128,
                             clock_hz=250e6, dram_bandwidth=460e9, dram_latency_ns=150.0, dram_bytes=8 * GIB,
                             dram_kind="hbm2", dram_outstanding=4, host_link_bandwidth=12e9,
                             host_link_latency_ns=2000.0),
}


def config_from_dict(data: Any, where: str) -> FpgaConfig:
    if not isinstance(data, dict):
        raise FpgaConfigError(f"{where}: an FPGA config must be a JSON object, got {type(data).__name__}")
    names = {f.name: f for f in fields(FpgaConfig)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise FpgaConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    required = [f.name for f in fields(FpgaConfig) if f.default is MISSING]
    missing = [n for n in required if n not in data and n != "name"]
    if missing:
        raise FpgaConfigError(f"{where}: missing field(s) {', '.join(missing)}")
    values = dict(data)
    values.setdefault("name", Path(where).stem)
    for key, f in names.items():
        v = values.get(key)
        if v is None:
            continue
        if f.type == "int" and isinstance(v, float) and v.is_integer():
            values[key] = int(v)
        if f.type == "int" and not (isinstance(values[key], int) and not isinstance(values[key], bool)):
            raise FpgaConfigError(f"{where}: field {key} must be an integer, got {v!r}")
        if f.type == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise FpgaConfigError(f"{where}: field {key} must be a number, got {v!r}")
        if f.type == "str" and not isinstance(v, str):
            raise FpgaConfigError(f"{where}: field {key} must be a string, got {v!r}")
    return FpgaConfig(**values).validate()


def load_config(spec: str | FpgaConfig | dict[str, Any] | None = None) -> FpgaConfig:
    """A preset name (edge, datacenter), a JSON file's path, a dict of fields, or a config (checked)."""
    if spec is None:
        return PRESETS["edge"]
    if isinstance(spec, FpgaConfig):
        return spec.validate()
    if isinstance(spec, dict):
        return config_from_dict(spec, "config")
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix.lower() != ".json":
        raise FpgaConfigError(f"unknown FPGA preset '{spec}' (presets: {', '.join(PRESETS)}; or a .json file)")
    try:
        text = path.read_text()
    except OSError as e:
        raise FpgaConfigError(f"{spec}: cannot read the FPGA config ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FpgaConfigError(f"{spec}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return config_from_dict(data, str(spec))

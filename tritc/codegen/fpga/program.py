"""FpgaProgram: the FPGA code of one model: its weight image, and per set of sizes the specialised graph, its
partition into host and device regions, and an instruction stream per device region.

    program = FpgaProgram(final_graph, config)
    code = program.code_for({"batch": 1, "seq": 7})    # lowered once per sizes, then kept
    code.streams[i]          # the instructions of device region i (ending in FINISH, tokens checked)
    code.dram[value_name]    # where a value lives in DRAM
    program.code_for(sizes, persistent={"past_key_values.0.key": Placement(...), ...})   # graph inputs at fixed
                             # addresses (device-resident cache buffers): every code places the rest around them

The stream of a size binding is lowered from the graph specialised for it (the `specialise` pipeline: shape
arithmetic folded, every type concrete). A decoder therefore has one stream per (seq, past) it runs at: the
lowering is a few milliseconds per layer, and `stats["compilations"]` counts them. Host regions are graphs the
runtime compiles with the LLVM backend (generic code, so one compile serves every size of that graph).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import ResourceLimitError
from ...ir.graph import Graph
from ...ir.sizes import format_symbols
from .config import FpgaConfig
from .isa import Instr
from .lower_image import Placement
from .partition import Region, extract_subgraph, partition

MAX_RUNTIME_CODES = 32  # streams lowered at a run that a program keeps (as codegen/llvm/program.py's CPU codes)

DRAM_ALIGN = 4096


@dataclass
class FpgaCode:
    """The code for one size binding."""

    bindings: dict[str, int]
    graph: Graph
    regions: list[Region]
    streams: dict[int, list[Instr]]               # device region index -> its stream
    host_graphs: dict[int, Graph]                 # host region index -> its graph (compiled by the runtime)
    dram: object                                  # lower.DramMap: every value a device region reads or writes
    activation_bytes: int = 0
    notes: list[str] = field(default_factory=list)


class FpgaProgram:
    def __init__(self, graph: Graph, config: FpgaConfig, *, double_buffer: bool = True,
                 progress: Callable[[str], None] | None = None):
        from .lower import build_weight_image

        self.graph = graph
        self.config = config
        self.double_buffer = double_buffer
        self.progress = progress or (lambda _m: None)
        self.weights = build_weight_image(graph, config, base=0)
        self.activation_base = -(-(self.weights.base + len(self.weights.data)) // DRAM_ALIGN) * DRAM_ALIGN
        if self.activation_base > config.dram_bytes:
            raise ResourceLimitError(
                f"the model's weights take {len(self.weights.data)} bytes of DRAM, the FPGA config "
                f"'{config.name}' has {config.dram_bytes} (dram_bytes): the model is too large for this device")
        self.codes: dict[tuple[tuple[str, int], ...], FpgaCode] = {}
        self.compilations = 0
        self.evictions = 0
        self.max_runtime_codes = MAX_RUNTIME_CODES
        self._runtime: OrderedDict[tuple, None] = OrderedDict()  # codes lowered at a run, least recent first
        self._lock = threading.Lock()

    def code_for(self, bindings: Mapping[str, int], persistent: Mapping[str, Placement] | None = None, *,
                 ahead: bool = False) -> FpgaCode:
        """The stream for these sizes, lowered on first use. Codes lowered ahead of time (`ahead`: at compile, and
        every code an artifact holds) are kept; of those lowered at a run (a decoder lowers one per context length)
        the `max_runtime_codes` most recently used are, as the CPU program keeps its codes (docs/THREADS.md)."""
        key = tuple(sorted((k, int(v)) for k, v in bindings.items()))
        pinned = tuple(sorted((persistent or {}).items()))
        full = key + pinned  # type: ignore[operator]
        with self._lock:
            code = self.codes.get(full)
            if code is None:
                code = self.codes[full] = self.lower_for(dict(key), persistent)
                self.compilations += 1
                if not ahead:
                    self._runtime[full] = None
                    while len(self._runtime) > self.max_runtime_codes:
                        gone, _ = self._runtime.popitem(last=False)
                        del self.codes[gone]
                        self.evictions += 1
            elif full in self._runtime:
                if ahead:
                    del self._runtime[full]     # asked for ahead of time now: kept
                else:
                    self._runtime.move_to_end(full)
        return code

    def support(self, node, graph: Graph, sizes: Mapping[str, int] | None = None) -> str | None:  # noqa: ANN001 - a Node
        from .lower import device_support

        return device_support(node, graph, self.config, sizes)

    def lower_for(self, bindings: Mapping[str, int], persistent: Mapping[str, Placement] | None = None) -> FpgaCode:
        """Specialise, partition, place and lower: the code for these sizes. `persistent`: graph inputs at addresses
        the caller chose (the same in every size's code, so a device-resident cache buffer stays where it is),
        recorded in the DramMap before anything is placed."""
        from ...passes.pass_manager import PassManager
        from ...passes.pipelines import specialise_passes
        from .lower import DramMap, bind_size_inputs, lower_nodes
        from .verify import check_stream

        at = format_symbols(dict(bindings)) if bindings else "static sizes"
        self.progress(f"lowering for the FPGA at {at}")
        graph = self.graph.copy()
        bind_size_inputs(graph, bindings)   # past_len reads its value: the shape arithmetic on it folds
        PassManager(specialise_passes(tuple(f"{k}={v}" for k, v in bindings.items()))).run(graph)
        regions = partition(graph, lambda node, g: self.support(node, g, bindings))
        dram = DramMap(self.activation_base, self.config.dram_bytes)
        for name, p in (persistent or {}).items():
            _check_persistent(graph, name, p)
            dram.reserve(name, p)
        streams: dict[int, list[Instr]] = {}
        hosts: dict[int, Graph] = {}
        placed: set[str] = set()
        for i, region in enumerate(regions):
            if region.kind == "host":
                hosts[i] = extract_subgraph(graph, region, f"host{i}")
                continue
            for v in region.inputs:
                if v.name not in placed:
                    dram.place(v.name, tuple(int(d) for d in v.type.shape), v.type.dtype)  # type: ignore[union-attr]
                    placed.add(v.name)
            instrs = lower_nodes(region.nodes, graph, self.config, dram, self.weights,
                                 double_buffer=self.double_buffer, sizes=bindings)
            check_stream(instrs, self.config)
            self.check_dma(instrs, dram)
            streams[i] = instrs
            placed.update(v.name for n in region.nodes for v in n.outputs)
        # graph outputs a device region made and host regions' device inputs are in `dram` now
        return FpgaCode(dict(bindings), graph, regions, streams, hosts, dram,
                        activation_bytes=dram.end - self.activation_base)


    def dma_ranges(self, dram: Any) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
        """(readable, writable) DRAM ranges of a code whose activations `dram` (a DramMap) placed: the weight image
        is read only."""
        image = (self.weights.base, self.weights.base + len(self.weights.data), "the weight image")
        acts = [(lo, hi, "activations") for lo, hi in dram.ranges()]
        return [image, *acts], acts

    def check_dma(self, instrs: list[Instr], dram: Any) -> None:
        from .verify import check_dma

        readable, writable = self.dma_ranges(dram)
        check_dma(instrs, readable, writable)


def _check_persistent(graph: Graph, name: str, p: Placement) -> None:
    v = next((x for x in graph.inputs if x.name == name), None)
    if v is None:
        raise ValueError(f"persistent placement '{name}' is not an input of the graph")
    shape = tuple(int(d) for d in v.type.shape)  # type: ignore[union-attr]
    if (tuple(p.shape), p.dtype) != (shape, v.type.dtype):
        raise ValueError(f"persistent placement '{name}' is {p.dtype}{list(p.shape)}, the input is "
                         f"{v.type.dtype}{list(shape)} at these sizes")

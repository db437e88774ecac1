"""FpgaModel: a model compiled for the FPGA target, run on a `Device` (the Simulator by default).

    model = tritc.compile("model.onnx", target="fpga", fpga_config="edge")   # or tritc.load("model.tritc")
    logits, = model.run(None, {"x": x})        # onnxruntime's calling style, as the CPU target's CompiledModel
    model.stats                                 # the last run's report: cycles, seconds, DRAM bytes, energy, ...

A call binds the model's symbols from its inputs, asks the FpgaProgram (codegen/fpga/program.py) for the code of
those sizes (lowered once, then kept), and walks its regions in order: a device region's inputs that live on the
host are written into DRAM, its stream runs on the device; a host region runs through the LLVM backend (a
CompiledModel of its graph, compiled once), reading from DRAM what the device made. The weights are written into
the device's DRAM once. What crosses between host and device is counted (`host_device_bytes`) and costed at the
config's host link bandwidth (`transfer_seconds`); host regions are timed (`host_seconds`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..codegen.fpga.config import FpgaConfig
from ..codegen.fpga.program import FpgaCode, FpgaProgram
from ..ir.graph import Graph
from ..ir.text import print_graph
from .model import IOSpec, check_feed, check_relations

SUMMED = ("cycles", "seconds", "dram_read_bytes", "dram_write_bytes", "ternary_ops", "instructions", "energy_joules")


class FpgaModel:
    """A model compiled for the FPGA: final IR, weights, the FpgaProgram, a Device and host codes."""

    target_kind = "fpga"

    def __init__(self, graph: Graph, config: FpgaConfig, *, device: Any = None, double_buffer: bool = True,
                 threads: int | None = None, meta: Mapping[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None):
        self.graph = graph
        self.config = config
        self.threads = threads or os.cpu_count() or 1
        self.meta = dict(meta or {})
        self.program = FpgaProgram(graph, config, double_buffer=double_buffer, progress=progress)
        self.inputs = [IOSpec(v.name, v.type) for v in graph.inputs]
        self.outputs = [IOSpec(v.name, v.type) for v in graph.outputs]
        self._device = device
        self._weights_on_device = False
        self._last_code: FpgaCode | None = None
        self._hosts: dict[int, Any] = {}   # id of a host graph -> its CompiledModel
        self.stats: dict[str, Any] = {}

    # ---- what it is ------------------------------------------------------------------------------

    def get_inputs(self) -> list[IOSpec]:
        return list(self.inputs)

    def get_outputs(self) -> list[IOSpec]:
        return list(self.outputs)

    @property
    def progress(self) -> Callable[[str], None] | None:
        return self.program.progress

    @progress.setter
    def progress(self, say: Callable[[str], None] | None) -> None:
        self.program.progress = say or (lambda _m: None)

    @property
    def ir_text(self) -> str:
        return print_graph(self.graph)

    @property
    def symbols(self) -> list[str]:
        from ..codegen.llvm.compiler import symbols_of

        return symbols_of(self.graph)

    @property
    def device(self) -> Any:
        if self._device is None:
            from .fpga import Simulator

            self._device = Simulator(self.config)
        return self._device

    @property
    def compilations(self) -> int:
        return self.program.compilations

    def code_for(self, bindings: Mapping[str, int]) -> FpgaCode:
        return self.program.code_for(bindings)

    # ---- running ---------------------------------------------------------------------------------

    def _check_inputs(self, feed: Mapping[str, Any]) -> tuple:
        return check_feed(self.inputs, feed, self.graph.value_symbols)

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None) -> list[np.ndarray]:
        """onnxruntime's InferenceSession.run: outputs in the order of `output_names` (all if None)."""
        arrays, bindings, _values, bound_by = check_feed(self.inputs, input_feed, self.graph.value_symbols)
        names = [o.name for o in self.outputs]
        if output_names is not None:
            unknown = [n for n in output_names if n not in names]
            if unknown:
                raise ValueError(f"unknown output name(s) {', '.join(map(repr, unknown))}; outputs are {', '.join(names)}")
        check_relations(SimpleNamespace(relations=self.graph.source_relations, checks=self.graph.source_checks),
                        bindings, bound_by)
        code = self.program.code_for(bindings)
        device = self.device
        if not self._weights_on_device:
            device.write(self.program.weights.base, self.program.weights.data)
            self._weights_on_device = True
        # Constants that specialising for these sizes folded (lower.DramMap.preload): every code places its values from
        # the same base, so another code's run may have overwritten them; written again unless this code ran last.
        if self._last_code is not code:
            for name, data in code.dram.preloads.items():
                device.write(code.dram[name].addr, data)
            self._last_code = code
        host: dict[str, np.ndarray] = dict(arrays)   # values whose current copy is on the host
        on_device: set[str] = set()                  # values a device region wrote into DRAM
        totals: dict[str, Any] = {k: 0 for k in SUMMED}
        totals.update(host_seconds=0.0, host_device_bytes=0, transfers=0, device_runs=0)
        engines: dict[str, dict[str, int]] = {}
        energy: dict[str, float] = {}

        def fetch(name: str, spec_type: Any) -> np.ndarray:
            if name not in host:
                place = code.dram[name]
                dtype = spec_type.dtype.np_dtype
                nbytes = int(np.prod(place.shape, dtype=np.int64)) * dtype.itemsize
                host[name] = device.read(place.addr, nbytes).view(dtype).reshape(place.shape).copy()
                totals["host_device_bytes"] += nbytes
                totals["transfers"] += 1
            return host[name]

        for i, region in enumerate(code.regions):
            if region.kind == "host":
                sub = code.host_graphs[i]
                model = self._host_model(sub)
                feed = {v.name: fetch(v.name, v.type) for v in region.inputs}
                t0 = time.perf_counter()
                results = model.run(None, feed)
                totals["host_seconds"] += time.perf_counter() - t0
                for v, a in zip(sub.outputs, results):
                    host[v.name] = a
                continue
            for v in region.inputs:
                if v.name in on_device:
                    continue
                a = np.ascontiguousarray(fetch(v.name, v.type))
                device.write(code.dram[v.name].addr, a.view(np.uint8).reshape(-1))
                totals["host_device_bytes"] += a.nbytes
                totals["transfers"] += 1
                on_device.add(v.name)
            device.load_stream(code.streams[i])
            st = device.run()
            totals["device_runs"] += 1
            for k in SUMMED:
                totals[k] += st.get(k, 0)
            for eng, d in (st.get("engines") or {}).items():
                acc = engines.setdefault(eng, {})
                for k, v in d.items():
                    acc[k] = acc.get(k, 0) + v
            for k, v in (st.get("energy") or {}).items():
                energy[k] = energy.get(k, 0.0) + v
            for n in region.nodes:
                for v in n.outputs:
                    on_device.add(v.name)
                    host.pop(v.name, None)
        by_name = {o.name: fetch(o.name, o.type) for o in self.graph.outputs}
        self.stats = self._report(totals, engines, energy, code)
        return [by_name[n] for n in (output_names if output_names is not None else names)]

    def _report(self, totals: dict[str, Any], engines: dict, energy: dict, code: FpgaCode) -> dict[str, Any]:
        cfg = self.config
        transfer = totals["host_device_bytes"] / cfg.host_link_bandwidth + totals["transfers"] * cfg.host_link_latency_ns * 1e-9
        macs = cfg.matrix_rows * cfg.matrix_lanes
        stats = dict(totals)
        stats["matrix_utilisation"] = totals["ternary_ops"] / (totals["cycles"] * macs) if totals["cycles"] else 0.0
        stats["engines"] = engines
        stats["energy"] = energy
        stats["transfer_seconds"] = transfer
        stats["total_seconds"] = totals["seconds"] + totals["host_seconds"] + transfer
        host_time = totals["host_seconds"] + transfer
        stats["host_share"] = host_time / stats["total_seconds"] if stats["total_seconds"] else 0.0
        stats["regions"] = [r.describe() for r in code.regions]
        stats["compilations"] = self.program.compilations
        stats["config"] = cfg.name
        return stats

    def _host_model(self, sub: Graph) -> Any:
        model = self._hosts.get(id(sub))
        if model is None:
            from ..codegen.llvm.target import host_target
            from ..codegen.llvm.weights import layout_weights
            from .model import CompiledModel

            layout, blob = layout_weights(sub)
            model = CompiledModel(sub, layout, blob, host_target(), threads=self.threads, meta={"fpga_host": True})
            if model.compile_generic() is None:
                model.compile_for({})
            self._hosts[id(sub)] = model
        return model

    def __call__(self, **inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        out = self.run(None, inputs)
        return out[0] if len(out) == 1 else tuple(out)

    def save(self, path: str | os.PathLike[str]) -> None:
        from .serialize import save_fpga_model

        save_fpga_model(self, path)

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"FpgaModel({ins} -> {outs}; FPGA config {self.config.name}, {len(self.program.codes)} lowered size(s))"

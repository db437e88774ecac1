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

Before anything is written to a device, its build (FpgaConfig.build_id) must be the one the model was lowered for
(else ArtifactCompatibilityError). A device other than the Simulator runs each stream under a watchdog
(`device_timeout` seconds): a run that does not return in time is AcceleratorTimeoutError ("accelerator timeout after
..."); the Simulator is bounded by its own `max_cycles`.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..codegen.fpga.config import FpgaConfig
from ..codegen.fpga.program import FpgaCode, FpgaProgram
from ..errors import AcceleratorTimeoutError, ArtifactCompatibilityError
from ..ir.graph import Graph
from ..ir.text import print_graph
from .feeds import check_feed
from .model import IOSpec, check_bound_outputs, check_relations, in_place_pairs

PIN_ALIGN = 4096
DEVICE_TIMEOUT = 60.0  # seconds a device other than the Simulator may take for one stream before the watchdog fires


def _identity(a: np.ndarray, placement: Any) -> tuple:
    """What makes the device's copy of a cache buffer the caller's array: the same memory, shape and address."""
    return (a.__array_interface__["data"][0], a.shape, placement.addr)


def _mark(device: Any, name: str, value: Any) -> None:
    """Note on the device what it holds (a board driver may refuse attributes: then nothing is assumed)."""
    try:
        setattr(device, name, value)
    except AttributeError:
        pass


_LOCKS = threading.Lock()


def device_lock(device: Any) -> threading.RLock:
    """The lock of one device: a call holds it from its first write to the device until its outputs are read back,
    so calls from several threads (of one model, or of models sharing the device) take turns. A device that refuses
    attributes gets a lock per call's lookup from a table instead."""
    with _LOCKS:
        lock = getattr(device, "_tritc_lock", None)
        if lock is None:
            lock = _DEVICE_LOCKS.setdefault(id(device), threading.RLock())
            _mark(device, "_tritc_lock", lock)
        return lock


_DEVICE_LOCKS: dict[int, threading.RLock] = {}  # only for devices that refuse the attribute


SUMMED = ("cycles", "seconds", "dram_read_bytes", "dram_write_bytes", "ternary_ops", "instructions", "energy_joules")


class FpgaModel:
    """A model compiled for the FPGA: final IR, weights, the FpgaProgram, a Device and host codes."""

    target_kind = "fpga"

    def __init__(self, graph: Graph, config: FpgaConfig, *, device: Any = None, double_buffer: bool = True,
                 threads: int | None = None, meta: Mapping[str, Any] | None = None,
                 progress: Callable[[str], None] | None = None, device_timeout: float | None = DEVICE_TIMEOUT):
        self.graph = graph
        self.config = config
        self.device_timeout = device_timeout
        self.threads = threads or os.cpu_count() or 1
        self.meta = dict(meta or {})
        self.program = FpgaProgram(graph, config, double_buffer=double_buffer, progress=progress)
        self.inputs = [IOSpec(v.name, v.type) for v in graph.inputs]
        self.outputs = [IOSpec(v.name, v.type) for v in graph.outputs]
        self._device = device
        self._weights_on_device = False
        self._last_code: FpgaCode | None = None
        self._pairs = in_place_pairs(graph)            # capacity form: present output -> its past input buffer
        self._pins: dict[str, Any] = {}                # past input -> its fixed Placement in DRAM
        self._resident: dict[str, tuple] = {}          # past input -> identity of the host array the device holds
        self._top = config.dram_bytes // PIN_ALIGN * PIN_ALIGN
        self._cache_in_place: tuple[FpgaModel | None, str] | None = None
        # a host region's graph -> its CompiledModel and lean call; weak, so that the host models of a code the
        # program evicted (FpgaProgram.max_runtime_codes) go with it, and a new graph never meets a dead one's id
        self._hosts: weakref.WeakKeyDictionary[Graph, tuple] = weakref.WeakKeyDictionary()
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

            with _LOCKS:  # one simulator, even when the first calls come from several threads at once
                if self._device is None:
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
            run_options: Any = None, *, outputs: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """onnxruntime's InferenceSession.run: outputs in the order of `output_names` (all if None).

        `outputs` binds outputs to the caller's arrays (as CompiledModel.run). In the capacity form
        (with_cache_in_place) a present output bound to its past input's very array is a device-resident cache: the
        buffer sits at a fixed DRAM address, is written to the device only when the host array is not the one the
        device holds (the first call, or after the cache grew), the device appends the new rows in place, and only
        those rows are copied back into the caller's array. The device runs one call at a time (device_lock): calls
        from several threads take turns."""
        with device_lock(self.device):
            return self._run(output_names, input_feed, outputs)

    def _run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
             outputs: Mapping[str, np.ndarray] | None) -> list[np.ndarray]:
        arrays, bindings, _values, bound_by = check_feed(self.inputs, input_feed, self.graph.value_symbols)
        names = [o.name for o in self.outputs]
        if output_names is not None:
            unknown = [n for n in output_names if n not in names]
            if unknown:
                raise ValueError(f"unknown output name(s) {', '.join(map(repr, unknown))}; outputs are {', '.join(names)}")
        check_relations(SimpleNamespace(relations=self.graph.source_relations, checks=self.graph.source_checks),
                        bindings, bound_by)
        pins = self._pin_cache_buffers(arrays)
        code = self.program.code_for(bindings, persistent=pins) if pins else self.program.code_for(bindings)
        shapes = {v.name: [int(d) for d in v.type.shape] for v in code.graph.outputs}  # type: ignore[union-attr]
        bound = check_bound_outputs(self.outputs, outputs, shapes, arrays, self._pairs) if outputs else {}
        device = self.device
        self._check_build(device)
        # Another model may have run on this device since (the capacity form shares it): then its weights and this
        # model's resident cache buffers are no longer known to be there.
        if getattr(device, "_tritc_last_model", None) is not self:
            self._resident.clear()
            self._last_code = None
            if getattr(device, "_tritc_image", None) is not self.program.weights:
                self._weights_on_device = False
        if not self._weights_on_device:
            device.write(self.program.weights.base, self.program.weights.data)
            self._weights_on_device = True
            _mark(device, "_tritc_image", self.program.weights)
        _mark(device, "_tritc_last_model", self)
        # Constants that specialising for these sizes folded (lower.DramMap.preload): every code places its values from
        # the same base, so another code's run may have overwritten them; written again unless this code ran last.
        if self._last_code is not code:
            for name, data in code.dram.preloads.items():
                device.write(code.dram[name].addr, data)
            self._last_code = code
        host: dict[str, np.ndarray] = dict(arrays)   # values whose current copy is on the host
        on_device: set[str] = set()                  # values a device region wrote into DRAM
        totals: dict[str, Any] = {k: 0 for k in SUMMED}
        totals.update(host_seconds=0.0, host_device_bytes=0, transfers=0, device_runs=0, cache_row_bytes=0,
                      cache_row_transfers=0)
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
                model, call = self._host_model(sub)
                feed = {v.name: fetch(v.name, v.type) for v in region.inputs}
                t0 = time.perf_counter()
                results = call(feed) if call is not None else model.run(None, feed)
                totals["host_seconds"] += time.perf_counter() - t0
                for v, a in zip(sub.outputs, results):
                    host[v.name] = a
                continue
            for v in region.inputs:
                if v.name in on_device:
                    continue
                if v.name in pins and self._resident.get(v.name) == _identity(arrays[v.name], pins[v.name]):
                    on_device.add(v.name)  # the device holds this very buffer already (appended in place)
                    continue
                a = np.ascontiguousarray(fetch(v.name, v.type))
                device.write(code.dram[v.name].addr, a.view(np.uint8).reshape(-1))
                totals["host_device_bytes"] += a.nbytes
                totals["transfers"] += 1
                on_device.add(v.name)
            device.load_stream(code.streams[i])
            st = self._run_device(device, i, len(code.streams[i]))
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
        for out_name, past_name in self._pairs.items():
            if bound.get(out_name) is not None and bound[out_name] is arrays.get(past_name) and past_name in pins:
                moved = self._copy_new_rows(code, out_name, past_name, bound[out_name], bindings)
                totals["host_device_bytes"] += moved
                totals["cache_row_bytes"] += moved
                totals["cache_row_transfers"] = 1  # every buffer's new rows: one scatter-gather DMA per call
                self._resident[past_name] = _identity(bound[out_name], pins[past_name])
                host[out_name] = bound[out_name]
        totals["transfers"] += totals["cache_row_transfers"]
        for name, a in bound.items():
            if name not in host:
                a[...] = fetch(name, next(o.type for o in self.graph.outputs if o.name == name))
            host[name] = a
        wanted = output_names if output_names is not None else names
        by_name = {o.name: fetch(o.name, o.type) for o in self.graph.outputs if o.name in wanted}
        self.stats = self._report(totals, engines, energy, code)
        return [by_name[n] for n in wanted]

    def _check_build(self, device: Any) -> None:
        """The device is the accelerator build the streams were lowered for: checked before any DMA."""
        theirs = getattr(getattr(device, "config", None), "build_id", None)
        if theirs != self.config.build_id:
            name = getattr(getattr(device, "config", None), "name", "?")
            raise ArtifactCompatibilityError(
                f"the device is the FPGA build '{name}' ({theirs.hex()[:16] if isinstance(theirs, bytes) else 'unknown'}), "
                f"the model was lowered for '{self.config.name}' ({self.config.build_id.hex()[:16]}): nothing was sent to it")

    def _run_device(self, device: Any, region: int, n: int) -> dict[str, Any]:
        """device.run(); under the watchdog unless the device is the Simulator (bounded by its max_cycles) or
        device_timeout is None. A run that does not return in time is left to the driver (the thread cannot be
        stopped from Python) and reported as AcceleratorTimeoutError."""
        from .fpga import Simulator

        if self.device_timeout is None or isinstance(device, Simulator):
            return device.run()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["stats"] = device.run()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = e

        t0 = time.monotonic()
        worker = threading.Thread(target=work, name="tritc-device-run", daemon=True)
        worker.start()
        worker.join(self.device_timeout)
        if worker.is_alive():
            raise AcceleratorTimeoutError(
                f"accelerator timeout after {time.monotonic() - t0:.3g} s: the device's run of device region {region} "
                f"({n} instructions) did not finish within device_timeout={self.device_timeout:g} s")
        if "error" in result:
            raise result["error"]
        return result["stats"]

    # ---- the device-resident cache of the capacity form --------------------------------------------

    def _pin_cache_buffers(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Fixed DRAM addresses (from the top of DRAM down) for the capacity form's cache buffers, the same for every
        size's code; a buffer whose shape changed (the cache grew) gets a new address."""
        from ..codegen.fpga.lower_image import Placement

        pins: dict[str, Any] = {}
        for past_name in self._pairs.values():
            a = arrays[past_name]
            old = self._pins.get(past_name)
            if old is None or tuple(old.shape) != tuple(a.shape):
                self._top = (self._top - a.nbytes) // PIN_ALIGN * PIN_ALIGN
                if self._top < self.program.activation_base:
                    from ..errors import ResourceLimitError

                    raise ResourceLimitError(f"the KV cache buffers need more DRAM than the FPGA config "
                                             f"'{self.config.name}' has ({self.config.dram_bytes} bytes)")
                self._pins[past_name] = Placement(self._top, tuple(a.shape), self._type_of(past_name).dtype)
                self._resident.pop(past_name, None)
            pins[past_name] = self._pins[past_name]
        return pins

    def _type_of(self, name: str) -> Any:
        return next(v.type for v in self.graph.inputs if v.name == name)

    def _copy_new_rows(self, code: FpgaCode, out_name: str, past_name: str, buf: np.ndarray,
                       bindings: Mapping[str, int]) -> int:
        """Copy the rows this call appended to the cache buffer in DRAM into the caller's array: [past, past+n) along
        the sequence axis (2) of [batch, kv_heads, capacity, head_dim]. Returns the bytes moved."""
        node = next(n for n in code.graph if n.op == "fused_attention" and len(n.outputs) > 2
                    and out_name in (n.outputs[2].name, n.outputs[3].name))
        new = int(node.inputs[1].type.shape[-2])  # this call's keys: [batch, kv, n, d]
        # the rows the buffer held before this call: the size its length input gives (`past_len` -> past); the lowering
        # made that operand a constant, so it is read from the bindings, not from the node
        symbols = list(self.graph.value_symbols.values())
        past = int(bindings[symbols[0]]) if len(symbols) == 1 and symbols[0] in bindings else 0
        addr = self._pins[past_name].addr
        b, h, cap, d = buf.shape
        row = d * buf.itemsize
        moved = 0
        for i in range(b):
            for j in range(h):
                start = addr + ((i * h + j) * cap + past) * row
                buf[i, j, past:past + new] = device_rows = self.device.read(start, new * row).view(buf.dtype) \
                    .reshape(new, d)
                moved += device_rows.nbytes
        return moved

    def with_cache_in_place(self) -> tuple[FpgaModel | None, str]:
        """This model in the capacity form of its KV cache (kv-cache-in-place on the final IR), on the same device:
        the cache buffers stay in the device's DRAM and the device appends to them (docs/FPGA.md)."""
        if self._cache_in_place is None:
            from ..passes.kv_cache_in_place import KVCacheInPlace
            from ..passes.pass_manager import PassManager

            graph = self.graph.copy()
            step = PassManager([KVCacheInPlace()])
            step.run(graph)
            report = step.result_of(KVCacheInPlace.name)
            if not report.in_place:
                self._cache_in_place = (None, report.reason)
            else:
                model = FpgaModel(graph, self.config, device=self.device, double_buffer=self.program.double_buffer,
                                  threads=self.threads, meta={**self.meta, "kv_cache": "in place"},
                                  progress=self.program.progress, device_timeout=self.device_timeout)
                self._cache_in_place = (model, "")
        return self._cache_in_place

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

    def _host_model(self, sub: Graph) -> tuple[Any, Any]:
        """The CompiledModel of a host region's graph (compiled once), and its lean call (CompiledModel.static_call:
        the region's inputs are this model's checked feed and arrays read back from DRAM in the code's shapes)."""
        got = self._hosts.get(sub)
        if got is None:
            from ..codegen.llvm.target import host_target
            from ..codegen.llvm.weights import layout_weights
            from .model import CompiledModel

            layout, blob = layout_weights(sub)
            model = CompiledModel(sub, layout, blob, host_target(), threads=self.threads, meta={"fpga_host": True})
            if model.compile_generic() is None:
                model.compile_for({})
            got = self._hosts[sub] = (model, model.static_call())
        return got

    def __call__(self, **inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        out = self.run(None, inputs)
        return out[0] if len(out) == 1 else tuple(out)

    def save(self, path: str | os.PathLike[str], *, sign_key: bytes | None = None) -> None:
        from .serialize import save_fpga_model

        save_fpga_model(self, path, sign_key=sign_key)

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"FpgaModel({ins} -> {outs}; FPGA config {self.config.name}, {len(self.program.codes)} lowered size(s))"

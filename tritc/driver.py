"""The compile driver behind `tritc.compile` and `tritc compile`: import, passes, weights, code.

    import -> pipeline (passes/pipelines.py) -> weight blob -> generic code (+ a specialisation per --shape)

A model whose graph cannot have generic code (codegen/llvm/program.py says why) gets code for its default
sizes instead, and further sizes are compiled when first run.

Everything a user can choose is a keyword argument here and a flag of the CLI.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from .codegen.llvm.compiler import prepare, symbols_of
from .codegen.llvm.sizes import choose_sizes
from .codegen.llvm.target import host_target
from .codegen.llvm.weights import layout_weights
from .errors import CompilerError, InternalError, OptionError, UnsupportedError
from .frontend.metadata import metadata_of, recorded_sizes
from .frontend.onnx import import_model, load_model, load_model_bytes
from .ir.graph import Graph
from .limits import DEFAULT_LIMITS, CompileClock, Limits
from .passes.fold_constants import FoldConstants
from .passes.pass_manager import Pass, PassManager, parse_pass_list
from .passes.pipelines import TernaryFlag, pass_source, with_ternary_flags
from .passes.pipelines import pipeline as named_pipeline
from .runtime.model import CompiledModel

TARGETS = ("cpu", "fpga")
FPGA_FLOAT_ACT = ("int8", "host")
FPGA_FLOAT_LAYERS = ("radix3", "host")
DEFAULT_DIM = 1  # size compiled ahead of time, without generic code, for a symbolic dim nobody gave a size for


def import_any(model: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[Graph, str]:
    """A Graph from a path, bytes, ModelProto or Graph (copied), and a name for messages."""
    if isinstance(model, Graph):
        return model.copy(), model.name
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, limits=limits), str(model)
    if isinstance(model, (bytes, bytearray)):
        return load_model_bytes(bytes(model), limits=limits), "<bytes>"
    if isinstance(model, onnx.ModelProto):
        return import_model(model, limits=limits), model.graph.name or "<model>"
    raise TypeError(f"cannot compile a {type(model).__name__}: give a path, bytes, an onnx.ModelProto or a tritc Graph")


def build_passes(*, pipeline: str = "cpu", passes: str | None = None, **ternary: TernaryFlag) -> list[Pass]:
    """A custom pass list (`-p`) or a named pipeline, with the --ternary* flags (compile()'s keywords) applied."""
    if passes:
        return with_ternary_flags(parse_pass_list(passes), pass_source(pipeline, passes), **ternary)
    return named_pipeline(pipeline, **ternary)


def within_limits(plist: list[Pass], limits: Limits) -> list[Pass]:
    """The passes with the budgets of `limits` applied: fold-constants refuses results over max_fold_bytes (or over
    its own limit-bytes, if that is lower)."""
    return [dataclasses.replace(p, limit_bytes=min(p.limit_bytes, limits.max_fold_bytes))
            if isinstance(p, FoldConstants) else p for p in plist]


def parse_shapes(items: Sequence[str] | Mapping[str, int] | None) -> dict[str, int]:
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): int(v) for k, v in items.items()}
    out: dict[str, int] = {}
    for item in items:
        for part in str(item).split(","):
            name, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit():
                raise OptionError(f"bad --shape '{part}' (expected name=size, e.g. batch=1)")
            out[name.strip()] = int(value)
    return out


def shape_bindings(graph: Graph, shapes: Sequence[str] | Mapping[str, int] | None) -> dict[str, int]:
    """The --shape sizes, each naming a dim of the model (else an OptionError listing the model's dims)."""
    symbols = symbols_of(graph)
    given = parse_shapes(shapes)
    unknown = [k for k in given if k not in symbols]
    if unknown:
        raise OptionError(f"--shape names unknown dim(s) {', '.join(unknown)} (the model's dims: "
                          f"{', '.join(symbols) or 'none, all static'})")
    return given


def default_sizes(graph: Graph, given: Mapping[str, int], model: Any, say: Callable[[str], None]) -> dict[str, int]:
    """The sizes compiled ahead of time: `given`, then the sizes the model records (frontend/metadata.py), then
    DEFAULT_DIM, if the graph admits them; else the smallest sizes it admits (codegen/llvm/sizes.py)."""
    recorded = recorded_sizes(metadata_of(model), [(v.name, v.type) for v in graph.inputs])
    preferred = {s: recorded[s][0] if s in recorded else DEFAULT_DIM for s in symbols_of(graph)}
    choice = choose_sizes(graph, given, preferred)
    if choice.searched:
        say(f"{', '.join(f'{s}={preferred[s]}' for s in choice.searched)} do{'es' if len(choice.searched) == 1 else ''} "
            f"not fit ({choice.misfit}); the smallest sizes that fit are "
            f"{', '.join(f'{s}={choice.sizes[s]}' for s in choice.searched)}")
    return choice.sizes


def source_constraints(graph: Graph, say: Callable[[str], None] = lambda _m: None) -> None:
    """Record on `graph` what the model as imported implies about its symbols, before passes rewrite the ops that
    imply it (fuse-attention absorbs the mask broadcast that ties a legacy export's `total` to `past+seq`): the
    relations and the equalities its type rules assume, both checked by the runtime at every call. A graph whose
    generic form cannot be prepared (the compile then says why, or specialises) records nothing."""
    if not symbols_of(graph):
        return
    say("reading the relations between the model's sizes")
    checks: list = []
    try:
        prepared, relations = prepare(graph, {}, checks=checks)
    except CompilerError:
        return
    # The copy shares the weight arrays; its nodes and values form reference cycles that only the cycle collector
    # frees, at a time that depends on allocation counts: drop its references now (a 0.7B model: 2.6 GB of floats
    # that fold-ternary would otherwise not free layer by layer).
    prepared.weights.clear()
    graph.source_relations = dict(relations)
    graph.source_checks = checks


def compile_model(model: Any, *, target: str = "cpu", threads: int | None = None, pipeline: str = "cpu",
                  passes: str | None = None, ternary: str | None = None, ternary_include: Sequence[str] = (),
                  ternary_exclude: Sequence[str] = (), ternary_act: str | None = None,
                  shapes: Sequence[str] | Mapping[str, int] | None = None,
                  cpu_features: str | None = None, opt_level: int = 3,
                  progress: Callable[[str], None] | None = None, lazy: bool = False,
                  fpga_config: Any = None, fpga_float_act: str = "int8", fpga_float_layers: str = "radix3",
                  double_buffer: bool = True, device: Any = None, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Compile `model` for `target` ("cpu" or "fpga"). Options mirror `tritc compile`'s flags. lazy=True stops after
    the passes: the first run compiles the code it needs (generation does, when it runs the model's capacity form
    instead: CompiledModel.with_cache_in_place). For "fpga": `fpga_config` (a preset name, a JSON path, a dict or an
    FpgaConfig; default edge), `fpga_float_act` ("int8": float-activation ternary layers take int8 activations on
    the matrix unit; "host": they stay float and run on the host), `fpga_float_layers` ("radix3": float linear layers
    such as an LM head become five balanced-ternary planes on the matrix unit; "host": they stay float, on the host),
    `double_buffer`, and a `device` to run on (the
    Simulator by default); the result is an FpgaModel. `limits`: the resource budgets (tritc/limits.py,
    docs/LIMITS.md), from the model's size to the compile's wall time and the arena of a run."""
    if target not in TARGETS:
        raise UnsupportedError(f"unknown target '{target}' (targets: {', '.join(TARGETS)})")
    if target == "fpga":
        return compile_fpga(model, threads=threads, pipeline="fpga" if pipeline == "cpu" else pipeline, passes=passes,
                            ternary=ternary, ternary_include=ternary_include, ternary_exclude=ternary_exclude,
                            ternary_act=ternary_act, shapes=shapes, progress=progress, fpga_config=fpga_config,
                            fpga_float_act=fpga_float_act, fpga_float_layers=fpga_float_layers,
                            double_buffer=double_buffer, device=device, limits=limits)
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be at least 1, not {threads}")
    say = progress or (lambda _msg: None)
    clock = CompileClock(limits, str(model) if isinstance(model, (str, os.PathLike)) else "the model")
    say("importing")
    graph, name = import_any(model, limits)
    plist = within_limits(build_passes(pipeline=pipeline, passes=passes, ternary=ternary, ternary_include=ternary_include,
                                       ternary_exclude=ternary_exclude, ternary_act=ternary_act), limits)
    source_constraints(graph, say)
    pm = PassManager(plist, progress=lambda m: say(f"pass {m}"), before_each=clock.check)
    pm.run(graph)
    report = pm.result_of("fold-ternary")
    clock.check("laying out the weights")
    say("laying out weights")
    layout, blob = layout_weights(graph)
    tgt = host_target(cpu_features, opt_level=opt_level)
    meta = {"source": Path(name).name if name else "", "passes": [p.describe() for p in plist]}
    if report is not None:
        meta["ternary"] = report.summary()
    cm = CompiledModel(graph, layout, blob, tgt, threads=threads, meta=meta, progress=say)
    cm.max_arena_bytes = limits.max_arena_bytes
    given = shape_bindings(graph, shapes)
    clock.check("code generation")
    if not cm.program.value_inputs and not lazy:
        generic = cm.compile_generic()
        if generic is None:
            say(f"no generic code: {cm.program.generic_error}")
            clock.check("the code for the default sizes")
            cm.compile_for(default_sizes(graph, given, model, say))
        elif given:
            clock.check("the code for the --shape sizes")
            cm.compile_for(given)
    say("done")
    cm.pass_timings = pm.timing_table()  # type: ignore[attr-defined]
    cm.ternary_report = report  # type: ignore[attr-defined]
    return cm


def compile_fpga(model: Any, *, threads: int | None, pipeline: str, passes: str | None, ternary: str | None,
                 ternary_include: Sequence[str], ternary_exclude: Sequence[str], ternary_act: str | None,
                 shapes: Sequence[str] | Mapping[str, int] | None, progress: Callable[[str], None] | None,
                 fpga_config: Any, fpga_float_act: str, fpga_float_layers: str, double_buffer: bool,
                 device: Any, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The FPGA target: the fpga pipeline, then the stream lowered for the --shape sizes (dims not given: their
    default) so that compile errors show at compile time; other sizes are lowered when first run."""
    from .codegen.fpga.config import load_config
    from .runtime.fpga_model import FpgaModel

    if fpga_float_act not in FPGA_FLOAT_ACT:
        raise OptionError(f"fpga_float_act must be one of {', '.join(FPGA_FLOAT_ACT)}, got '{fpga_float_act}'")
    if fpga_float_layers not in FPGA_FLOAT_LAYERS:
        raise OptionError(f"fpga_float_layers must be one of {', '.join(FPGA_FLOAT_LAYERS)}, got '{fpga_float_layers}'")
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be at least 1, not {threads}")
    config = load_config(fpga_config)
    say = progress or (lambda _msg: None)
    clock = CompileClock(limits, str(model) if isinstance(model, (str, os.PathLike)) else "the model")
    say("importing")
    graph, name = import_any(model, limits)
    plist = within_limits(build_passes(pipeline=pipeline, passes=passes, ternary=ternary, ternary_include=ternary_include,
                                       ternary_exclude=ternary_exclude, ternary_act=ternary_act), limits)
    if fpga_float_act == "host":
        plist = [p for p in plist if p.name != "quantize-activations"]
    if fpga_float_layers == "host":
        plist = [p for p in plist if p.name != "fold-radix3"]
    source_constraints(graph, say)
    pm = PassManager(plist, progress=lambda m: say(f"pass {m}"), before_each=clock.check)
    pm.run(graph)
    report = pm.result_of("fold-ternary")
    clock.check("lowering for the FPGA")
    meta: dict[str, Any] = {"source": Path(name).name if name else "", "passes": [p.describe() for p in plist],
                            "fpga_float_act": fpga_float_act, "fpga_float_layers": fpga_float_layers}
    if report is not None:
        meta["ternary"] = report.summary()
    radix3 = pm.result_of("fold-radix3")
    if radix3 is not None and radix3.layers:
        meta["fpga_radix3_layers"] = [name for name, _err in radix3.layers]
    say(f"packing weights for the FPGA ({config.name}, {config.weight_packing})")
    fm = FpgaModel(graph, config, device=device, double_buffer=double_buffer, threads=threads, meta=meta,
                   progress=say)
    given = shape_bindings(graph, shapes)
    fpga_ahead_of_time(fm, graph, given, model, say)
    say("done")
    fm.pass_timings = pm.timing_table()  # type: ignore[attr-defined]
    fm.ternary_report = report  # type: ignore[attr-defined]
    return fm


def fpga_ahead_of_time(fm: Any, graph: Graph, given: dict[str, int], model: Any, say: Callable[[str], None]) -> None:
    """Lower the stream of the --shape sizes at compile time (errors show here, and the artifact holds it). Without
    --shape: sizes the model records, else 1, with the relations the model implies applied (a legacy export's
    total = past + seq); when no such sizes fit the model, nothing is lowered ahead of time and the first run lowers
    the sizes it is given (said on the progress line)."""
    from .ir import dims as dimlib

    relations = graph.source_relations
    if given:
        sizes = dict(given)
        for sym, dim in relations.items():
            if sym not in sizes:
                value = dimlib.evaluate(dim, sizes)
                if value is not None:
                    sizes[sym] = value
        fm.program.code_for(sizes, ahead=True)
        return
    try:
        free = {s: v for s, v in default_sizes(graph, {}, model, lambda _m: None).items() if s not in relations}
        sizes = dict(free)
        for sym, dim in relations.items():
            value = dimlib.evaluate(dim, free)
            if value is not None:
                sizes[sym] = value
        fm.program.code_for(sizes, ahead=True)
    except (CompilerError, InternalError) as e:  # (sizes the model's shape rules reject surface as either)
        fm.program.codes.clear()
        say(f"no stream lowered ahead of time ({str(e).splitlines()[0]}); each size is lowered at its first run")

"""Save a CompiledModel as an artifact and load it back, recompiling for the host when needed.

On load every section is verified first (artifact.py: the signature when a key is given, then the hashes); then the
versions (a newer format, tritc or code ABI is refused; format 1 holds code of an older entry ABI: refused, recompile
the model; an older tritc of the same format and ABI loads with a warning) and the target are checked: another
architecture is refused, missing CPU features mean the code is rebuilt for this host (from the stored bitcode when
the host has the same kernel ISA, otherwise from the stored IR), with a warning, so an artifact never runs
instructions the CPU lacks. All of it happens before any object is mapped.
"""

from __future__ import annotations

import base64
import os
import platform
import re
from typing import Any

import llvmlite.binding as llvm

from .. import __version__
from ..codegen.llvm.compiler import Specialization, compile_code
from ..codegen.llvm.lower import ABI_VERSION
from ..codegen.llvm.program import key_of
from ..codegen.llvm.symbolic import from_json, to_json
from ..codegen.llvm.target import Target, host_target, init_llvm
from ..codegen.llvm.weights import WeightEntry, WeightLayout, read_weights
from ..errors import ArtifactCompatibilityError, ArtifactError, ArtifactIntegrityError, ArtifactVersionError, CompilerError, OptionError
from ..ir import dims as dimlib
from ..ir.text import format_type, parse_graph, parse_type
from ..ir.verify import verify
from .artifact import FORMAT_VERSION, read_artifact, write_artifact
from .model import CompiledModel, warn

MIN_FORMAT = 2  # the oldest format whose code this tritc calls (format 1: the 4-argument entry of ABI 2)
FORMAT2_ABI = 3  # format 2 did not record the code's ABI: every format 2 artifact holds code of ABI 3


def save_model(model: CompiledModel, path: str | os.PathLike[str], *, sign_key: bytes | None = None) -> None:
    specs = []
    sections: dict[str, bytes] = {"ir": model.ir_text.encode(), "weights": bytes(model.blob)}
    for i, (key, spec) in enumerate(model.program.codes.items()):
        values = dict(key[1])
        sections[f"object.{i}"] = spec.object
        sections[f"bitcode.{i}"] = spec.bitcode
        specs.append({
            "bindings": spec.bindings,
            "values": {k: base64.b64encode(v).decode() for k, v in values.items()},
            "arena_bytes": to_json(spec.arena_bytes),
            "relations": spec.relations,
            "checks": [list(c) for c in spec.checks],
            "entry": spec.entry,
            "object": f"object.{i}",
            "bitcode": f"bitcode.{i}",
            "input_names": spec.input_names,
            "input_types": [format_type(t) for t in spec.input_types],
            "output_types": [format_type(t) for t in spec.output_types],
        })
    generic = model.program.codes.get(key_of({}, {}))
    static = [s["arena_bytes"] for s in specs if isinstance(s["arena_bytes"], int)]
    manifest = {
        "tritc_version": __version__,
        "abi_version": ABI_VERSION,
        "target": {"triple": model.target.triple, "cpu": model.target.cpu, "features": model.target.features,
                   "isa": model.target.isa, "opt_level": model.target.opt_level},
        "threads": model.threads,
        "inputs": [{"name": i.name, "type": format_type(i.type)} for i in model.inputs],
        "outputs": [{"name": o.name, "type": format_type(o.type)} for o in model.outputs],
        "symbols": model.symbols,
        "weights": [e.to_json() for e in model.layout.entries.values()],
        "weights_bytes": model.layout.size,
        # the generic code's arena as a formula of the symbols; else the largest of the specialisations'
        "arena_bytes": to_json(generic.arena_bytes) if generic is not None else max(static, default=0),
        "generic_error": model.program.generic_error,
        "source_relations": model.graph.source_relations,
        "source_checks": [list(c) for c in model.graph.source_checks],
        "specializations": specs,
        "meta": model.meta,
    }
    write_artifact(path, manifest, sections, key=sign_key)


def version_tuple(text: str) -> tuple[int, ...] | None:
    """(0, 1, 0) for "0.1.0" (a suffix such as "rc1" or "+local" after the numbers is ignored); None if not a
    version."""
    match = re.fullmatch(r"(\d{1,6}(?:\.\d{1,6}){0,3})(?:[.+-]?[A-Za-z0-9.+-]{0,40})?", text)
    return tuple(int(x) for x in match.group(1).split(".")) if match else None


def check_versions(m: dict[str, Any], where: str) -> None:
    """The tritc that wrote the artifact: newer than this one is refused (its IR or manifest may say what this tritc
    cannot read correctly); older loads, with a warning, when the format and code ABI (checked by the caller) are
    ones this tritc reads."""
    stored = m.get("tritc_version")
    parsed = version_tuple(stored) if isinstance(stored, str) else None
    if parsed is None:
        raise ArtifactError(f"{where}: manifest field 'tritc_version' is missing or not a version ({stored!r:.40})")
    ours = version_tuple(__version__) or ()
    if parsed > ours:
        raise ArtifactVersionError(f"{where}: written by tritc {stored}, newer than this tritc {__version__}: use tritc "
                                   f">= {stored}, or compile the model again with this one")
    if parsed < ours:
        warn(f"{where}: written by tritc {stored}, loaded by tritc {__version__} (artifact format "
             f"{m.get('format_version')}, which this tritc reads)")


def _field(m: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in m or not isinstance(m[key], kind):
        raise ArtifactError(f"{where}: manifest field '{key}' is missing or not a {kind.__name__}")
    return m[key]


def load_model(path: str | os.PathLike[str], *, threads: int | None = None, key: bytes | None = None,
               device: Any = None) -> CompiledModel:
    """The model of an artifact. With `key`, the artifact must be signed with it (else ArtifactIntegrityError, before
    anything in it is parsed); without one, a signed artifact loads with a warning that its signature was not
    checked (the hashes still detect corruption, but not who wrote the file). `device` (FPGA artifacts only): what
    the model runs on, "sim" (the Simulator, the default), "rtl" (the RTL core in simulation) or a Device."""
    where = str(path)
    art = read_artifact(path, key=key)
    if art.signed and not art.signature_checked:
        warn(f"{where}: the artifact is signed, but no key was given: its signature was not checked "
             f"(tritc.load(path, key=...), --key FILE)")
    m = art.manifest
    check_versions(m, where)
    if isinstance(m.get("target"), dict) and m["target"].get("kind") == "fpga":
        return load_fpga_model(art, where, threads=threads, device=device)
    if device is not None:
        raise OptionError(f"{where}: device={device!r} applies to FPGA artifacts; this one holds CPU code")
    if m["format_version"] < MIN_FORMAT:
        raise ArtifactVersionError(f"{where}: artifact format {m['format_version']} holds code for the entry ABI of "
                                   f"tritc {m.get('tritc_version', '?')}, which this tritc no longer calls (format "
                                   f"{FORMAT_VERSION}); compile the model again")
    abi = m.get("abi_version", FORMAT2_ABI if m["format_version"] == 2 else None)
    if isinstance(abi, bool) or not isinstance(abi, int):
        raise ArtifactError(f"{where}: manifest field 'abi_version' is missing or not an int")
    if abi != ABI_VERSION:
        newer = "newer than" if abi > ABI_VERSION else "older than"
        raise ArtifactVersionError(f"{where}: compiled code of ABI {abi}, {newer} the ABI {ABI_VERSION} this tritc "
                                   f"{__version__} calls: compile the model again"
                                   + (" with this tritc" if abi < ABI_VERSION else " or use a newer tritc"))
    tinfo = _field(m, "target", dict, where)
    target = Target(str(tinfo.get("triple", "")), str(tinfo.get("cpu", "")), str(tinfo.get("features", "")),
                    int(tinfo.get("opt_level", 3)))
    _check_triple(target, where)
    specs = _field(m, "specializations", list, where)
    _check_sections(art, {"ir", "weights"} | {str(s.get(k)) for s in specs if isinstance(s, dict)
                                              for k in ("object", "bitcode")}, where)
    layout, graph = _stored_graph(art, where)
    model = CompiledModel(graph, layout, art.sections["weights"], target, threads=threads or m.get("threads"),
                          meta=m.get("meta") or {})
    model.program.generic_error = m.get("generic_error")
    for s in specs:
        try:
            spec = Specialization({str(k): int(v) for k, v in s["bindings"].items()},
                                  [parse_type(t) for t in s["input_types"]], [parse_type(t) for t in s["output_types"]],
                                  from_json(s["arena_bytes"]), art.sections[s["object"]], art.sections[s["bitcode"]],
                                  str(s["entry"]), relations={str(k): v for k, v in (s.get("relations") or {}).items()},
                                  checks=[_check_entry(c) for c in (s.get("checks") or [])],
                                  input_names=s.get("input_names"))
            values = {k: base64.b64decode(v) for k, v in s.get("values", {}).items()}
        except (KeyError, TypeError, ValueError, CompilerError) as e:
            raise ArtifactError(f"{where}: malformed specialisation entry ({e})") from e
        model.add_specialization(spec, values)
    missing = target.missing_on_host()
    if missing:
        _retarget(model, target, missing, where)
    return model


def _stored_graph(art: Any, where: str) -> tuple[WeightLayout, Any]:
    """The weight layout and the final IR (verified, with the source relations and checks) of an artifact."""
    m = art.manifest
    try:
        layout = WeightLayout({e["key"]: WeightEntry.from_json(e) for e in _field(m, "weights", list, where)},
                              int(m.get("weights_bytes", 0)))
        weights = read_weights(layout, art.sections["weights"])
        graph = parse_graph(art.sections["ir"].decode(), weights)
        verify(graph)
        graph.source_relations = {str(k): _dim_entry(v) for k, v in (m.get("source_relations") or {}).items()}
        graph.source_checks = [list(_check_entry(c)) for c in (m.get("source_checks") or [])]
    except (KeyError, TypeError, ValueError, CompilerError, UnicodeDecodeError, AttributeError) as e:
        raise ArtifactError(f"{where}: the stored model is unreadable ({e})") from e
    return layout, graph


def _dim_entry(d: object) -> object:
    if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, str) and dimlib.to_poly(d) is None):
        raise ValueError(f"a dim must be an int or a polynomial, not {d!r}")
    return d


def _check_entry(c: object) -> tuple:
    """A stored check [a, b, where] (a = b) or [a, b, where, ">="]: two dims (ints or polynomial text) and the node
    that assumes the relation."""
    if not isinstance(c, list) or len(c) not in (3, 4) or not isinstance(c[2], str) or (len(c) == 4 and c[3] != ">="):
        raise ValueError(f"a check must be [dim, dim, where] or [dim, dim, where, \">=\"], not {c!r}")
    return (_dim_entry(c[0]), _dim_entry(c[1]), *c[2:])


def _check_sections(art: Any, referenced: set[str], where: str) -> None:
    """Every section is one the manifest uses: a file that carries anything else (a payload, a pickle) is refused."""
    extra = sorted(set(art.sections) - referenced)
    if extra:
        raise ArtifactIntegrityError(f"{where}: section(s) {', '.join(extra)} are not part of the model the manifest "
                                     f"describes (an artifact holds nothing else)")


def object_format(triple: str) -> str:
    """The object file format LLVM emits for a triple: COFF (Windows), MachO (Apple), else ELF."""
    t = triple.lower()
    if "windows" in t or "win32" in t or "mingw" in t:
        return "COFF"
    if any(k in t for k in ("darwin", "macos", "ios", "apple")):
        return "MachO"
    return "ELF"


def _check_triple(target: Target, where: str) -> None:
    init_llvm()
    host = llvm.get_process_triple()
    arch = target.triple.split("-")[0]
    if arch != host.split("-")[0]:
        raise ArtifactCompatibilityError(f"{where}: built for {target.triple}, this host is {host} "
                                         f"({platform.machine()})")
    if object_format(target.triple) != object_format(host):
        raise ArtifactCompatibilityError(f"{where}: built for {target.triple} ({object_format(target.triple)} "
                                         f"objects), this host {host} loads {object_format(host)} objects")


def _retarget(model: CompiledModel, built: Target, missing: list[str], where: str) -> None:
    host = host_target()
    shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
    if host.isa == built.isa:
        warn(f"{where}: built for CPU features this host lacks ({shown}); recompiling from the stored bitcode")
        model.recompile_objects_for(host)
        return
    warn(f"{where}: built for {built.isa} kernels, this host supports {host.isa} (missing {shown}); "
         f"recompiling from the stored IR")
    model.target = host
    program = model.program
    for key, spec in list(program.codes.items()):
        values = dict(key[1])
        program.codes[key] = compile_code(program.with_values(values), model.layout, spec.bindings, host,
                                          symbols=program.symbols, threads=model.threads)
    model._exes.clear()


# ---- the FPGA target -----------------------------------------------------------------------------------------

def save_fpga_model(model: Any, path: str | os.PathLike[str], *, sign_key: bytes | None = None) -> None:
    """An FPGA artifact: the final IR and its weights (as the CPU's layout, for the host regions and for lowering
    new sizes), the FPGA config, and the instruction stream of every device region of every lowered size."""
    from ..codegen.fpga.isa import ISA_VERSION, encode_stream
    from ..codegen.llvm.weights import layout_weights

    layout, blob = layout_weights(model.graph)
    sections: dict[str, bytes] = {"ir": model.ir_text.encode(), "weights": bytes(blob)}
    codes = []
    for i, code in enumerate(model.program.codes.values()):
        streams = {}
        for r, instrs in code.streams.items():
            name = f"stream.{i}.{r}"
            sections[name] = encode_stream(instrs, model.config)
            streams[str(r)] = name
        codes.append({"bindings": code.bindings, "streams": streams})
    manifest = {
        "tritc_version": __version__,
        "target": {"kind": "fpga", "fpga_config": model.config.to_json(), "double_buffer": model.program.double_buffer,
                   "isa_version": ISA_VERSION, "build_id": model.config.build_id.hex()},
        "threads": model.threads,
        "inputs": [{"name": i.name, "type": format_type(i.type)} for i in model.inputs],
        "outputs": [{"name": o.name, "type": format_type(o.type)} for o in model.outputs],
        "symbols": model.symbols,
        "weights": [e.to_json() for e in layout.entries.values()],
        "weights_bytes": layout.size,
        "source_relations": model.graph.source_relations,
        "source_checks": [list(c) for c in model.graph.source_checks],
        "fpga_codes": codes,
        "meta": model.meta,
    }
    write_artifact(path, manifest, sections, key=sign_key)


def load_fpga_model(art: Any, where: str, *, threads: int | None = None, device: Any = None) -> Any:
    """The FpgaModel of an FPGA artifact. Its stored streams are decoded (their ISA version and accelerator build must
    be this tritc's and the manifest's config's: ArtifactCompatibilityError), checked (check_stream, and check_dma
    against the DRAM the program allocates) and used as they are; the partition and DRAM placement of their sizes are
    derived again from the IR (deterministic), and sizes not stored are lowered from the IR when first run."""
    from ..codegen.fpga.config import config_from_dict
    from ..codegen.fpga.isa import ISA_VERSION, READABLE_ISA_VERSIONS, StreamError, decode_stream
    from ..codegen.fpga.verify import check_stream
    from .fpga_model import FpgaModel

    m = art.manifest
    tinfo = _field(m, "target", dict, where)
    config = config_from_dict(tinfo.get("fpga_config"), f"{where}: fpga_config")
    isa = tinfo.get("isa_version", 1)
    if isa not in READABLE_ISA_VERSIONS:
        raise ArtifactCompatibilityError(f"{where}: instruction streams of ISA version {isa}; this tritc runs ISA "
                                         f"version {ISA_VERSION}")
    stored = tinfo.get("build_id")
    if stored is not None and stored != config.build_id.hex():
        raise ArtifactCompatibilityError(f"{where}: the manifest's build id {str(stored)[:16]} is not that of its FPGA "
                                         f"config '{config.name}' ({config.build_id.hex()[:16]})")
    codes = m.get("fpga_codes") or []
    if not isinstance(codes, list) or not all(isinstance(c, dict) and isinstance(c.get("streams"), dict) for c in codes):
        raise ArtifactError(f"{where}: manifest field 'fpga_codes' is malformed")
    _check_sections(art, {"ir", "weights"} | {str(n) for c in codes for n in c["streams"].values()}, where)
    _layout, graph = _stored_graph(art, where)
    model = FpgaModel(graph, config, threads=threads or m.get("threads"), meta=m.get("meta") or {},
                      double_buffer=bool(tinfo.get("double_buffer", True)), device=device)
    for entry in codes:
        try:
            bindings = {str(k): int(v) for k, v in entry["bindings"].items()}
            code = model.program.lower_for(bindings)   # the partition and placement of these sizes
            for r, name in entry["streams"].items():
                try:
                    instrs = decode_stream(art.sections[name], config)
                except ArtifactError as e:
                    raise type(e)(f"{where}: {name}: {e}") from None
                check_stream(instrs, config)
                model.program.check_dma(instrs, code.dram)
                if int(r) not in code.streams:
                    raise ValueError(f"stream {name} is for region {r}, which is not a device region")
                code.streams[int(r)] = instrs
        except (KeyError, TypeError, ValueError, StreamError) as e:
            raise ArtifactError(f"{where}: malformed FPGA code entry ({e})") from e
        model.program.codes[tuple(sorted(bindings.items()))] = code
    return model

"""tritc inspect: what an artifact holds (manifest summary and a table of its sections), or its stored IR,
its LLVM IR (from the bitcode) or the target assembly."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ArtifactError, CompilerError
from .options import add_key_option, read_key_option
from .output import ending_in_newline, format_bindings, human_bytes, table

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a .tritc artifact holds",
                       description="Verify an artifact (header, manifest and section hashes) and print a summary of its "
                                   "manifest and a table of its sections; or, with --ir / --llvm / --asm, only that "
                                   "text (for piping).")
    p.add_argument("artifact", metavar="MODEL.tritc")
    p.add_argument("--ir", action="store_true", help="print the stored IR (the final IR after the pipeline)")
    p.add_argument("--llvm", action="store_true", help="print the LLVM IR of each compiled shape (from its bitcode)")
    p.add_argument("--asm", action="store_true", help="print the target assembly of each compiled shape")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the summary")
    add_key_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime.artifact import read_artifact

    art = read_artifact(args.artifact, key=read_key_option(args.key))  # verifies everything first
    m = art.manifest
    texts = []
    try:
        if args.json:
            texts.append(json.dumps(m, indent=2, sort_keys=True) + "\n")
        elif not (args.ir or args.llvm or args.asm):
            signed = ("HMAC-SHA256, checked against the key" if art.signature_checked else
                      "HMAC-SHA256, not checked (no --key)" if art.signed else "none")
            texts.append(summary(args.artifact, m, art.data_start, signed))
        if args.ir:
            texts.append(_section(art.sections, "ir").decode("utf-8", errors="replace"))
        fpga = isinstance(m.get("target"), dict) and m["target"].get("kind") == "fpga"
        if fpga and args.llvm:
            raise ArtifactError(f"{args.artifact}: an FPGA artifact holds instruction streams, not LLVM code "
                                f"(--asm prints their listing)")
        if fpga and args.asm:
            texts.append(_fpga_listing(m, art.sections))
        elif args.llvm or args.asm:
            specs = _specs(m)
            if args.llvm:
                texts.append(_per_spec(specs, art.sections, "llvm", multi=len(specs) > 1 or len(texts) > 0))
            if args.asm:
                texts.append(_per_spec(specs, art.sections, "asm", multi=len(specs) > 1 or len(texts) > 0, target=m["target"]))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ArtifactError(f"{args.artifact}: malformed manifest ({type(e).__name__}: {e})") from None
    sys.stdout.write("".join(ending_in_newline(t) for t in texts))
    return EXIT_OK


def _section(sections: dict[str, bytes], name: str) -> bytes:
    if name not in sections:
        raise ArtifactError(f"the artifact has no '{name}' section")
    return sections[name]


def _specs(m: dict[str, Any]) -> list[dict[str, Any]]:
    specs = m.get("specializations") or []
    if not isinstance(specs, list):
        raise TypeError("specializations is not a list")
    return specs


def _per_spec(specs: list[dict[str, Any]], sections: dict[str, bytes], what: str, *, multi: bool,
              target: dict[str, Any] | None = None) -> str:
    import llvmlite.binding as llvm

    from ..codegen.llvm.target import init_llvm

    if not specs:
        return ("; " if what == "llvm" else "# ") + "no compiled shapes in this artifact (they compile on first run)\n"
    init_llvm()
    out = []
    comment = ";" if what == "llvm" else "#"
    for i, s in enumerate(specs):
        bitcode = _section(sections, s["bitcode"])
        try:
            ref = llvm.parse_bitcode(bitcode)
        except RuntimeError as e:
            raise ArtifactError(f"section '{s['bitcode']}' is not LLVM bitcode ({e})") from None
        if multi:
            out.append(f"{comment} ---- {what} of shape {i}: {format_bindings(dict(s['bindings']))} ----\n")
        if what == "llvm":
            out.append(str(ref))
        else:
            out.append(_assembly(bitcode, {str(k): int(v) for k, v in s["bindings"].items()}, target or {}))
    return "".join(out)


def _assembly(bitcode: bytes, bindings: dict[str, int], t: dict[str, Any]) -> str:
    import llvmlite.binding as llvm

    from ..codegen.llvm.compiler import Specialization, assembly
    from ..codegen.llvm.target import Target

    target = Target(str(t.get("triple", "")), str(t.get("cpu", "")), str(t.get("features", "")), int(t.get("opt_level", 3)))
    host_arch = llvm.get_process_triple().split("-")[0]
    if target.triple.split("-")[0] != host_arch:
        raise CompilerError(f"built for {target.triple}: this tritc prints assembly for {host_arch} only")
    return assembly(Specialization(bindings, [], [], 0, b"", bitcode), target)


def _bytes(expr: Any) -> str:
    """An arena size: bytes, or its formula over the symbols (generic code)."""
    if isinstance(expr, int):
        return human_bytes(expr)
    from ..codegen.llvm.symbolic import from_json, pretty

    return f"{pretty(from_json(expr))} bytes"


def _code_name(m: dict[str, Any], bindings: dict[str, int]) -> str:
    if not bindings and m.get("symbols"):
        return f"every size ({', '.join(m['symbols'])} at run time)"
    return format_bindings(bindings)


def _arena(m: dict[str, Any]) -> str:
    expr = m.get("arena_bytes", 0)
    if not isinstance(expr, int):
        return f"{_bytes(expr)} (generic code)"
    return human_bytes(expr) + (" (largest compiled shape)" if m.get("symbols") is None or m.get("generic_error") else "")


def _fpga_listing(m: dict[str, Any], sections: dict[str, bytes]) -> str:
    """The assembly listing of every stored stream (decoded and checked first)."""
    from ..codegen.fpga.asm import format_listing
    from ..codegen.fpga.isa import StreamError, decode_stream

    codes = m.get("fpga_codes") or []
    if not codes:
        return "# no lowered sizes in this artifact (they are lowered on first run)\n"
    out = []
    for code in codes:
        where = format_bindings({str(k): int(v) for k, v in code["bindings"].items()}) or "static sizes"
        for region, name in code["streams"].items():
            try:
                instrs = decode_stream(_section(sections, name))
            except StreamError as e:
                raise ArtifactError(f"section '{name}': {e}") from None
            out.append(f"# ---- {where}, device region {region}: {len(instrs)} instructions ----\n")
            out.append(ending_in_newline(format_listing(instrs)))
    return "".join(out)


def _fpga_target(m: dict[str, Any]) -> str:
    c = (m.get("target") or {}).get("fpga_config") or {}
    return (f"fpga, config {c.get('name', '?')}: {c.get('matrix_rows', '?')}x{c.get('matrix_lanes', '?')} matrix unit, "
            f"{c.get('vector_lanes', '?')} vector lanes, {float(c.get('clock_hz', 0)) / 1e6:g} MHz, "
            f"{float(c.get('dram_bandwidth', 0)) / 1e9:g} GB/s {c.get('dram_kind', '?')}, weights "
            f"{c.get('weight_packing', '?')}")


def summary(path: str, m: dict[str, Any], data_start: int, signed: str = "none") -> str:
    t = m.get("target") or {}
    if t.get("kind") == "fpga":
        return _fpga_summary(path, m, data_start, signed)
    meta = m.get("meta") or {}
    weights = m.get("weights") or []
    kinds = [w.get("kind", "?") for w in weights]
    specs = _specs(m)
    enabled = [f[1:] for f in str(t.get("features", "")).split(",") if f.startswith("+")]
    rows = [
        ("artifact", f"{path} ({human_bytes(os.path.getsize(path))})"),
        ("format", f"{m.get('format_version')} (written by tritc {m.get('tritc_version', '?')})"),
        ("signed", signed),
        ("source", str(meta.get("source") or "-")),
        ("target", f"{t.get('triple', '?')}, cpu {t.get('cpu', '?')}, {t.get('isa', '?')} kernels, "
                   f"-O{t.get('opt_level', '?')}, {m.get('threads', '?')} threads"),
        ("features", " ".join(enabled) if enabled else "baseline (no extra features)"),
        ("inputs", ", ".join(f"{i['name']}: {i['type']}" for i in m.get("inputs", []))),
        ("outputs", ", ".join(f"{o['name']}: {o['type']}" for o in m.get("outputs", []))),
        ("arena", _arena(m)),
        ("weights", f"{human_bytes(int(m.get('weights_bytes', 0)))} in {len(weights)} tensors "
                    f"({kinds.count('ternary')} ternary, {kinds.count('dense')} dense)"),
        ("shapes", "; ".join(f"{_code_name(m, dict(s['bindings']))} (arena {_bytes(s['arena_bytes'])})"
                             for s in specs) or "none (compiled on first run)"),
    ]
    if meta.get("passes"):
        rows.append(("passes", ", ".join(map(str, meta["passes"]))))
    tern = meta.get("ternary")
    if isinstance(tern, dict):
        rows.append(("ternary", f"{tern.get('folded')} of {tern.get('layers')} linear layers ({tern.get('exact')} exact); "
                                f"weights {human_bytes(int(tern.get('bytes_before', 0)))} -> "
                                f"{human_bytes(int(tern.get('bytes_after', 0)))}"))
    head = "".join(f"{k:<9} {v}\n" for k, v in rows)
    sec_rows = [("section", "offset", "bytes", "sha256")]
    for s in m.get("sections", []):
        sec_rows.append((str(s["name"]), str(data_start + int(s["offset"])), str(int(s["length"])), str(s["sha256"])))
    return head + "\n" + table(sec_rows, right=(1, 2))


def _fpga_summary(path: str, m: dict[str, Any], data_start: int, signed: str) -> str:
    meta = m.get("meta") or {}
    codes = m.get("fpga_codes") or []
    rows = [
        ("artifact", f"{path} ({human_bytes(os.path.getsize(path))})"),
        ("format", f"{m.get('format_version')} (written by tritc {m.get('tritc_version', '?')})"),
        ("signed", signed),
        ("source", str(meta.get("source") or "-")),
        ("target", _fpga_target(m)),
        ("inputs", ", ".join(f"{i['name']}: {i['type']}" for i in m.get("inputs", []))),
        ("outputs", ", ".join(f"{o['name']}: {o['type']}" for o in m.get("outputs", []))),
        ("weights", f"{human_bytes(int(m.get('weights_bytes', 0)))} in {len(m.get('weights') or [])} tensors"),
        ("streams", "; ".join(f"{format_bindings(dict(c['bindings'])) or 'static sizes'}: {len(c['streams'])} device "
                              f"region(s)" for c in codes) or "none (lowered on first run)"),
    ]
    if meta.get("passes"):
        rows.append(("passes", ", ".join(map(str, meta["passes"]))))
    head = "".join(f"{k:<9} {v}\n" for k, v in rows)
    sec_rows = [("section", "offset", "bytes", "sha256")]
    for s in m.get("sections", []):
        sec_rows.append((str(s["name"]), str(data_start + int(s["offset"])), str(int(s["length"])), str(s["sha256"])))
    return head + "\n" + table(sec_rows, right=(1, 2))

"""Opset handling for the ONNX frontend: which opsets a model may use, and which version of each op it means.

A node's operator version is the since_version of the ONNX schema active at the model's opset for
the node's domain. That version is supported when the op's OpDef lists it in `since` or an adapter
in tritc/frontend/adapters/ rewrites it; every other (op, version) is reported, all in one error.
The rules are written down in docs/FRONTEND.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import onnx
import onnx.defs

from ..errors import ModelFormatError, ModelValidationError, UnsupportedError
from ..ir.ops import BY_ONNX, onnx_op
from .adapters import find_adapter

# There is no oldest opset: a model stamped with an old opset is accepted when each of its ops
# resolves to a version tritc reads (Not has been version 1 since opset 1); otherwise the error
# names the op, its version and the opset. Every version active from opset 11 up is covered by
# the op table and the adapters, or reported by name.
# A model may be stamped with an ai.onnx opset newer than the installed onnx knows, up to this
# margin: each op is then read as its newest known version, with a warning. Exporters stamp the
# newest opset they know even when the model's ops did not change; a stamp far beyond the newest
# opset (999) is not a plausible future version and is refused.
NEWER_OPSET_MARGIN = 3
DEFAULT_DOMAIN = ""
# How many node names an unsupported-op report shows per (op, version).
NAMES_SHOWN = 3


def canonical_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain == "ai.onnx" else domain


def domain_label(domain: str) -> str:
    return domain or "ai.onnx"


def newest_opset() -> int:
    return onnx.defs.onnx_opset_version()


def read_opsets(model: onnx.ModelProto, source: str, warnings: list[str]) -> dict[str, int]:
    """The model's opset per domain ('' for ai.onnx), checked against what tritc accepts."""
    opsets: dict[str, int] = {}
    for entry in model.opset_import:
        domain = canonical_domain(entry.domain)
        if domain in opsets:
            raise UnsupportedError(f"{source}: opset_import lists domain '{domain_label(domain)}' twice "
                                   f"(opsets {opsets[domain]} and {entry.version})")
        opsets[domain] = entry.version
    if not model.opset_import:
        if model.ir_version >= 3:
            raise ModelFormatError(f"{source}: the model has no opset_import (IR version {model.ir_version} "
                                   f"needs at least the ai.onnx opset)")
        opsets[DEFAULT_DOMAIN] = 1  # IR versions 1 and 2 had no opset_import: opset 1 was implied
    newest = newest_opset()
    v = opsets.get(DEFAULT_DOMAIN)
    if v is not None:
        if v > newest + NEWER_OPSET_MARGIN:
            raise UnsupportedError(f"{source}: opset {v} of ai.onnx is not a known opset (onnx {onnx.__version__} "
                                   f"knows up to {newest}; tritc accepts up to {newest + NEWER_OPSET_MARGIN})")
        if v > newest:
            warnings.append(f"opset {v} of ai.onnx is newer than the newest this onnx knows ({newest}); "
                            f"each op is read as its newest known version")
    for domain, version in opsets.items():
        if version < 1:
            raise ModelValidationError(f"{source}: opset {version} of domain '{domain_label(domain)}' is not valid")
    return opsets


@dataclass(frozen=True)
class OpVersion:
    """How the frontend reads one ONNX op at one opset."""

    op_type: str
    domain: str
    opset: int
    since: int | None  # the resolved since_version; None when ONNX has no such op at this opset
    supported: bool
    adapted: bool  # supported through an adapter (not as-is)

    def describe(self) -> str:
        where = f"{domain_label(self.domain)} opset {self.opset}"
        if self.since is None:
            return f"{self.op_type} ({where}: no such operator)"
        return f"{self.op_type} version {self.since} ({where})"


@lru_cache(maxsize=4096)
def op_version(op_type: str, domain: str, opset: int) -> OpVersion:
    """Resolve and classify (op_type, domain, opset). Cached: a model repeats the same few ops."""
    domain = canonical_domain(domain)
    opdef = onnx_op(op_type, domain)
    since: int | None
    try:
        query = min(opset, newest_opset()) if domain == DEFAULT_DOMAIN else opset
        since = onnx.defs.get_schema(op_type, query, domain).since_version
    except onnx.defs.SchemaError:
        since = None
        if opdef is not None and domain != DEFAULT_DOMAIN:
            # A domain onnx has no schemas for (a vendor or tritc's own): the op's versions are the
            # ones the table and adapters list, and the active one is the newest not above the opset.
            known = [v for v in supported_versions(op_type, domain) if v <= opset]
            since = max(known) if known else None
    if since is None or opdef is None:
        return OpVersion(op_type, domain, opset, since, False, False)
    # `since` lists versions of the OpDef's own ONNX op; an op imported under another name too
    # (Upsample as resize) is read through adapters only.
    if since in opdef.since and opdef.onnx == op_type:
        return OpVersion(op_type, domain, opset, since, True, False)
    adapted = find_adapter(domain, op_type, since) is not None
    return OpVersion(op_type, domain, opset, since, adapted, adapted)


def supported_versions(op_type: str, domain: str) -> list[int]:
    """The since_versions of an op that import as-is or through an adapter (for messages)."""
    from .adapters import ADAPTERS

    opdef = onnx_op(op_type, domain)
    versions = set(opdef.since) if opdef is not None and opdef.onnx == op_type else set()
    versions |= {v for (d, op, v) in ADAPTERS if d == domain and op == op_type}
    return sorted(versions)


def resolve_versions(nodes: Sequence[onnx.NodeProto], opsets: Mapping[str, int], source: str,
                     label: Callable[[onnx.NodeProto, int], str]) -> list[int]:
    """The since_version of every node (0 for Constant, which the frontend folds itself).

    Raises one UnsupportedError naming every unsupported (op, version): its domain and opset, how
    many nodes use it and the first few of them."""
    versions: list[int] = []
    unsupported: dict[OpVersion, list[str]] = defaultdict(list)
    for i, node in enumerate(nodes):
        domain = canonical_domain(node.domain)
        opset = opsets.get(domain)
        if opset is None:
            raise ModelValidationError(f"{source}: node {label(node, i)} uses domain '{domain_label(domain)}', "
                                       f"which opset_import does not list")
        if node.op_type == "Constant" and domain == DEFAULT_DOMAIN:
            versions.append(0)
            continue
        ov = op_version(node.op_type, domain, opset)
        if not ov.supported:
            unsupported[ov].append(label(node, i))
        versions.append(ov.since or 0)
    if unsupported:
        raise UnsupportedError(f"{source}: {unsupported_message(unsupported)}")
    return versions


def unsupported_message(unsupported: Mapping[OpVersion, list[str]]) -> str:
    """One line naming every unsupported op, sorted by domain, op and version."""
    parts = []
    for ov, names in sorted(unsupported.items(), key=lambda kv: (kv[0].domain, kv[0].op_type, kv[0].since or 0)):
        shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
        count = f"{len(names)} node{'s' if len(names) != 1 else ''}"
        have = supported_versions(ov.op_type, ov.domain) if ov.since is not None else []
        hint = f"; tritc reads versions {', '.join(map(str, have))}" if have else ""
        parts.append(f"{ov.describe()}: {count} [{shown}]{hint}")
    n = len(parts)
    return f"{n} unsupported operator{'s' if n != 1 else ''}: " + "; ".join(parts)


def table_problems() -> list[str]:
    """Inconsistencies between the op table, the adapters and ONNX's schemas (a test keeps this empty).

    Every `since` entry and every adapter must name a real since_version of its ONNX op, and no
    version may be both imported as-is and adapted. Domains onnx has no schemas for are skipped."""
    from .adapters import ADAPTERS

    history: dict[tuple[str, str], set[int]] = defaultdict(set)
    for schema in onnx.defs.get_all_schemas_with_history():
        history[(canonical_domain(schema.domain), schema.name)].add(schema.since_version)
    known_domains = {d for d, _ in history}
    problems = []
    for (domain, op_type), opdef in sorted(BY_ONNX.items(), key=lambda kv: kv[0]):
        if domain not in known_domains or opdef.onnx != op_type:
            continue
        real = history.get((domain, op_type), set())
        for v in opdef.since:
            if v not in real:
                problems.append(f"op '{opdef.name}': since {v} is not a version of ONNX {op_type} ({sorted(real)})")
    for (domain, op_type, v) in sorted(ADAPTERS):
        if domain not in known_domains:
            continue
        real = history.get((domain, op_type), set())
        opdef = onnx_op(op_type, domain)
        if v not in real:
            problems.append(f"adapter {op_type} {v}: not a version of ONNX {op_type} ({sorted(real)})")
        if opdef is None:
            problems.append(f"adapter {op_type} {v}: no op in the table imports {op_type}")
        elif v in opdef.since and opdef.onnx == op_type:
            problems.append(f"adapter {op_type} {v}: the version is also in op '{opdef.name}'.since")
    return problems


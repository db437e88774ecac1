"""The op reference (docs/OPS.md), generated from the op table: `python -m tritc.ir.opdoc > docs/OPS.md`."""

from __future__ import annotations

from .ops import OPS, REQUIRED, OpDef


def _operands(op: OpDef) -> str:
    return ", ".join(o.name + ("?" if o.optional else "") + ("..." if o.variadic else "") for o in op.inputs)


def _attrs(op: OpDef) -> str:
    parts = []
    for k, a in sorted(op.attrs.items()):
        default = "" if a.default is REQUIRED else ("" if a.default is None else f" = {a.default!r}")
        parts.append(f"{k}: {a.kind}{' (required)' if a.default is REQUIRED else default}")
    return "; ".join(parts)


def render() -> str:
    lines = [
        "# Op reference",
        "",
        "Generated from the op table by `python -m tritc.ir.opdoc` (a test checks it is current).",
        "Each op's meaning is its numpy function in `tritc/ir/ops/`; ONNX versions listed import as-is,",
        "older ones go through `tritc/frontend/adapters/`.",
        "",
        f"{len(OPS)} ops.",
        "",
        "| op | ONNX | versions | operands | results | attributes |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(OPS):
        op = OPS[name]
        onnx = f"{op.domain + '.' if op.domain else ''}{op.onnx}" if op.onnx else "-"
        versions = ", ".join(map(str, op.since)) or "-"
        outs = ", ".join(o.name + ("?" if o.optional else "") + ("..." if o.variadic else "") for o in op.outputs)
        lines.append(f"| `{name}` | {onnx} | {versions} | {_operands(op)} | {outs} | {_attrs(op).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")

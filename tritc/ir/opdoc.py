"""The op reference (docs/OPS.md), generated from the op table: `python -m tritc.ir.opdoc > docs/OPS.md`."""

from __future__ import annotations

from .casts import RULES
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
    return "\n".join(lines + _casts() + _NAN) + "\n"


_NAN = [  # what every op does with NaN, infinities and denormals (tests/hardening/test_j_numerics.py checks it)
    '',
    '## NaN, infinities, denormals',
    '',
    "Reductions and comparisons propagate NaN as ONNX's reference does (`np.max`, `np.maximum`, `np.argmax`): `Max` /",
    '`Min` with a NaN operand give NaN, `ReduceMax` / `ReduceMin` over a row holding a NaN give NaN, `ArgMax` / `ArgMin`',
    "give the first NaN's index. onnxruntime agrees for elementwise `Max` / `Min` but not for reductions, where its result",
    'depends on where the NaN is (`ReduceMax([NaN, 1, 3, 2])` is NaN, `ReduceMax([1, NaN, 3, 2])` is 3); tritc does not',
    'copy that. `Softmax` over a row of only `-inf` is NaN everywhere, as in both. No fast-math flag is set on any',
    'floating-point instruction at any `--opt-level` (tests/hardening/test_j_numerics.py runs 0 to 3), so NaN handling',
    'is never optimised away. Compiled code never changes MXCSR: denormals are kept (no flush to zero) unless the caller',
    'set FTZ / DAZ, which are then left as they are. Integer accumulators: [INTEGER.md](INTEGER.md).',
]


def _casts() -> list[str]:
    lines = [
        "",
        "## Casts",
        "",
        "What `cast`, `cast_like` and every conversion inside the interpreter (an op's result rounded to its dtype,",
        "constant folding, literals) mean, from `tritc/ir/casts.py`. The rules are tritc's own, written in integer",
        "and exact float arithmetic, not inherited from numpy or ml_dtypes; the compiled code follows them bit for",
        "bit. Where ONNX's Cast speaks, they are ONNX's; where it leaves a case open, the last column says so.",
        "`saturate` and `round_mode` only concern float8 / float4 targets, which tritc does not have.",
        "",
        "| from | to | result | rule from |",
        "|---|---|---|---|",
    ]
    lines += [f"| {src} | {dst} | {rule} | {who} |" for src, dst, rule, who in RULES]
    lines += [
        "",
        "QuantizeLinear (and the requantizing ops) round half to even and saturate like a float -> int cast, except",
        "that NaN quantizes to the type's minimum, as onnxruntime does (ONNX leaves it open).",
    ]
    return lines


if __name__ == "__main__":
    print(render(), end="")

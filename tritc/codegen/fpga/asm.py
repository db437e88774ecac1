"""The accelerator's assembly listing: one instruction per line, round-tripping with the binary encoding.

    LOAD buf=ACT sram_addr=0 dram_addr=0x1000 rows=1 cols=512 dram_rs=0 dram_cs=1 sram_rs=0 !push_next
    GEMM acc_addr=0 act_addr=0 wgt_addr=0 m=1 kw=8 n=16 act_rs=0 acc_rs=0 reset=1 !pop_prev !push_next
    VOP.MUL rows=1 cols=16 depth=0 imm=0x3d800000(0.0625) use_imm=1 dst=VEC:0:16:1 src1=ACC:0:16:1 src2=VEC:0:0:0
    FINISH

An instruction is its opcode (`VOP.<FUNC>` for vector ops), its fields as `name=value`, then its dependency flags
as `!pop_prev` ... `!push_next`. Buffers are named (WGT ACT ACC VEC KV); a vector operand is `BUF:addr:rs:cs`.
The immediate of a float function is its bit pattern in hex followed by the float it holds; on input either part
alone is accepted (`imm=0.5`, `imm=0x3f000000`). REQ's immediate is an integer (the Q31 multiplier). A field left
out is 0. `#` starts a comment. `parse_listing(format_listing(x)) == x` for every valid stream.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ...errors import IRParseError
from .isa import DEP_FLAGS, FIELD_INDEX, FIELDS, Buf, Instr, Op, StreamError, VFunc

BUF_FIELDS = ("buf", "dst_buf", "src1_buf", "src2_buf")
OPERANDS = ("dst", "src1", "src2")
HEX_FIELDS = ("dram_addr",)


def _imm_text(ins: Instr) -> str:
    v = ins.imm
    if ins.func == VFunc.REQ:
        return str(v)
    bits = v & 0xFFFFFFFF
    return f"0x{bits:08x}({np.array(bits, np.uint32).view(np.float32)})"


def format_instr(ins: Instr) -> str:
    """One line of assembly for `ins` (no comment)."""
    f = ins.fields
    if ins.op is Op.VOP:
        parts = [f"VOP.{VFunc(f['func']).name}"]
        parts += [f"{name}={f[name]}" for name in ("rows", "cols", "depth")]
        parts += [f"imm={_imm_text(ins)}", f"use_imm={f['use_imm']}"]
        for p in OPERANDS:
            parts.append(f"{p}={Buf(f[p + '_buf']).name}:{f[p + '_addr']}:{f[p + '_rs']}:{f[p + '_cs']}")
        if f["overlap"]:
            parts.append("overlap=1")
    else:
        parts = [ins.op.name]
        for fld in FIELDS[ins.op]:
            v = f[fld.name]
            if fld.name in BUF_FIELDS:
                parts.append(f"{fld.name}={Buf(v).name}")
            elif fld.name in HEX_FIELDS:
                parts.append(f"{fld.name}={v:#x}")
            else:
                parts.append(f"{fld.name}={v}")
    parts += [f"!{flag}" for flag, v in zip(DEP_FLAGS, ins.flags) if v]
    return " ".join(parts)


def format_listing(instrs: Iterable[Instr], *, index: bool = True) -> str:
    """The listing of a stream, one instruction per line; with `index`, each line ends with `# <index>`."""
    lines = [format_instr(ins) for ins in instrs]
    if index and lines:
        width = max(len(s) for s in lines)
        lines = [f"{s:<{width}}  # {i}" for i, s in enumerate(lines)]
    return "\n".join(lines) + ("\n" if lines else "")


# -- parsing ------------------------------------------------------------------------------------------------

def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}") from None


def _buf(text: str, what: str) -> int:
    try:
        return int(Buf[text.upper()])
    except KeyError:
        raise ValueError(f"{what}: unknown buffer {text!r} (buffers: {', '.join(b.name for b in Buf)})") from None


def _float_bits(text: str) -> int:
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"imm must be a float or a 0x bit pattern, got {text!r}") from None
    with np.errstate(over="ignore"):
        return int(np.array(x, np.float32).view(np.int32))


def _imm(text: str, func: VFunc) -> int:
    if func == VFunc.REQ:
        return _int(text, "imm of REQ")
    if text.lower().startswith(("0x", "-0x", "+0x")):
        hexpart, _, rest = text.partition("(")
        bits = _int(hexpart, "imm")
        if not 0 <= bits <= 0xFFFFFFFF:
            raise ValueError(f"imm bit pattern {hexpart} does not fit 32 bits")
        if rest:
            if not rest.endswith(")"):
                raise ValueError(f"imm {text!r}: the float after the bit pattern must be in parentheses")
            shown = np.array(_float_bits(rest[:-1]), np.int32).view(np.float32)
            held = np.array(bits, np.uint32).view(np.float32)
            if not (shown == held or (np.isnan(shown) and np.isnan(held))):
                raise ValueError(f"imm {text!r}: the bit pattern holds {held}, not {rest[:-1]}")
        return bits - (1 << 32) if bits >> 31 else bits
    return _float_bits(text)


def parse_instr(line: str) -> Instr:
    """One instruction from its text (no comment); ValueError / StreamError with the reason."""
    tokens = line.split()
    head, args = tokens[0], tokens[1:]
    values: dict[str, int] = {}
    flags: dict[str, int] = {}
    opname, _, funcname = head.partition(".")
    try:
        op = Op[opname.upper()]
    except KeyError:
        raise ValueError(f"unknown opcode {opname!r} (opcodes: {', '.join(o.name for o in Op)})") from None
    if op is Op.VOP:
        try:
            func = VFunc[funcname.upper()]
        except KeyError:
            raise ValueError(f"unknown vector function {funcname!r}: write VOP.<FUNC>, FUNC one of "
                             f"{', '.join(f.name for f in VFunc)}") from None
        values["func"] = int(func)
    elif funcname:
        raise ValueError(f"{op.name} takes no .{funcname} suffix")
    known = FIELD_INDEX[op]
    seen: set[str] = set()
    imm_text = None
    for tok in args:
        if tok.startswith("!"):
            flag = tok[1:]
            if flag not in DEP_FLAGS:
                raise ValueError(f"unknown flag {tok!r} (flags: {', '.join('!' + f for f in DEP_FLAGS)})")
            if flag in flags:
                raise ValueError(f"flag {tok} given twice")
            flags[flag] = 1
            continue
        name, eq, text = tok.partition("=")
        if not eq or not text:
            raise ValueError(f"expected name=value or !flag, got {tok!r}")
        if name in seen:
            raise ValueError(f"field {name} given twice")
        seen.add(name)
        if op is Op.VOP and name in OPERANDS:
            parts = text.split(":")
            if len(parts) != 4:
                raise ValueError(f"operand {name} must be BUF:addr:rs:cs, got {text!r}")
            values[f"{name}_buf"] = _buf(parts[0], name)
            for sub, part in zip(("addr", "rs", "cs"), parts[1:]):
                values[f"{name}_{sub}"] = _int(part, f"{name} {sub}")
        elif op is Op.VOP and name == "imm":
            imm_text = text
        elif name == "func" or name not in known or (op is Op.VOP and name.endswith(("_buf", "_addr", "_rs", "_cs"))):
            names = ["rows", "cols", "depth", "imm", "use_imm", *OPERANDS, "overlap"] if op is Op.VOP else list(known)
            raise ValueError(f"{op.name} has no field {name!r} (fields: {', '.join(names) or 'none'})")
        elif name in BUF_FIELDS:
            values[name] = _buf(text, name)
        else:
            values[name] = _int(text, name)
    if imm_text is not None:
        values["imm"] = _imm(imm_text, VFunc(values["func"]))
    return Instr(op, **flags, **values)


def parse_listing(text: str) -> list[Instr]:
    """The instructions of a listing; IRParseError naming the line on anything malformed."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            out.append(parse_instr(line))
        except (ValueError, StreamError) as e:
            raise IRParseError(f"asm line {lineno}: {e}") from None
    return out

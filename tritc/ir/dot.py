"""Graphviz dot output of a Graph, for looking at a model: `tritc dump --format dot model.onnx | dot -Tsvg`.

One box per op, weights and constants as small grey boxes, graph inputs and outputs as ellipses,
and every edge labelled with the type of the value it carries. Node ids are generated (n0, n1,
...); every name from the model appears only inside quoted, escaped labels, so any name is safe.
"""

from __future__ import annotations

from .graph import Graph, Node
from .types import format_type

# Longest name shown in a label; longer ones are cut in the middle so both ends stay readable.
MAX_LABEL = 48


def escape(text: str) -> str:
    """`text` as the body of a dot double-quoted string, shown literally by Graphviz."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")  # a lone backslash would start a Graphviz escape such as \N or \l
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\\\x{ord(ch):02x}")  # control characters (NUL included) shown as \xNN
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\\\u{ord(ch):04x}")  # lone surrogates cannot be written as UTF-8
        else:
            out.append(ch)
    return "".join(out)


def quoted(text: str) -> str:
    return '"' + escape(text) + '"'


def shorten(name: str, limit: int = MAX_LABEL) -> str:
    if len(name) <= limit:
        return name
    half = (limit - 3) // 2
    return name[:half] + "..." + name[-half:]


def _op_label(node: Node) -> str:
    if node.op == "weight":
        return shorten(str(node.attrs.get("ref", node.outputs[0].name)))
    if node.op == "constant":
        return shorten(node.outputs[0].name)
    return node.op if not node.name else f"{node.op}\n{shorten(node.name)}"


def to_dot(graph: Graph) -> str:
    """The graph in the dot language (ends with a newline)."""
    lines = [f"digraph {quoted(shorten(graph.name))} {{",
             "  graph [rankdir=TB, fontname=\"Helvetica\"];",
             "  node [fontname=\"Helvetica\", fontsize=10];",
             "  edge [fontname=\"Helvetica\", fontsize=8];"]
    ids: dict[int, str] = {}  # id(Value) -> dot id of whatever produces it
    for k, v in enumerate(graph.inputs):
        ids[id(v)] = f"in{k}"
        lines.append(f"  in{k} [shape=ellipse, style=filled, fillcolor=\"#dbe9f6\", "
                     f"label={quoted(shorten(v.name) + chr(10) + format_type(v.type))}];")
    for k, node in enumerate(graph):
        nid = f"n{k}"
        for v in node.outputs:
            ids[id(v)] = nid
        if node.op in ("weight", "constant"):
            t = format_type(node.outputs[0].type)
            lines.append(f"  {nid} [shape=box, style=filled, fillcolor=\"#eeeeee\", fontsize=8, height=0.2, "
                         f"margin=\"0.04,0.02\", label={quoted(_op_label(node) + chr(10) + t)}];")
        else:
            lines.append(f"  {nid} [shape=box, style=rounded, label={quoted(_op_label(node))}];")
        for i, v in enumerate(node.inputs):
            if v is None or id(v) not in ids:
                continue
            lines.append(f"  {ids[id(v)]} -> {nid} [label={quoted(format_type(v.type))}, "
                         f"tooltip={quoted(shorten(v.name))}, headlabel=\"{i}\", labelfontsize=7];"
                         if len(node.inputs) > 1 else
                         f"  {ids[id(v)]} -> {nid} [label={quoted(format_type(v.type))}, tooltip={quoted(shorten(v.name))}];")
    for k, v in enumerate(graph.outputs):
        lines.append(f"  out{k} [shape=ellipse, style=filled, fillcolor=\"#e2f0d9\", "
                     f"label={quoted(shorten(v.name) + chr(10) + format_type(v.type))}];")
        if id(v) in ids:
            lines.append(f"  {ids[id(v)]} -> out{k} [label={quoted(format_type(v.type))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"

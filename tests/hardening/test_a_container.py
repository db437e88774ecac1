"""HARDENING.md group A, container and protobuf (cases 1-6), under the harness contract (harness.py).

Each case writes the file into model_dir/ and reads it through the path API (so the message names the file), the
CLI for a representative few; the truncation sweep and the nesting bombs run in an `isolated` child.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tritc
from tritc.errors import ModelFormatError, ModelValidationError, ResourceLimitError, UnsupportedError
from tritc.frontend.onnx import load_model, load_model_bytes

from ..frontend.models import model, relu_model, vi
from .harness import isolated, refuses

# ---- 1: empty file ----------------------------------------------------------------------------------------------


def test_1_empty_file(sb):
    p = sb.save(b"", "empty.onnx")
    refuses(sb, lambda: load_model(p), ModelFormatError, names=["empty.onnx", "empty"])
    refuses(sb, lambda: tritc.compile(str(p)), ModelFormatError, names=["empty.onnx", "empty"])
    refuses(sb, lambda: load_model_bytes(b"", source="mem"), ModelFormatError, names=["mem", "empty"])
    # the CLI on an empty file: test_harness.py::test_cli_checks_exit_and_one_line


# ---- 2: every prefix of a valid model ---------------------------------------------------------------------------

_PREFIXES = """
import warnings
from google.protobuf.message import DecodeError
from tritc.errors import CompilerError
from tritc.frontend.onnx import load_model_bytes
from tests.frontend.models import relu_model, weighted_model

warnings.simplefilter("ignore")
seen = {}
for make in (relu_model, weighted_model):
    data = make().SerializeToString()
    load_model_bytes(data)  # the whole model imports
    for n in range(len(data)):
        try:
            load_model_bytes(data[:n], source=f"prefix{n}")
            raise AssertionError(f"{make.__name__}: prefix {n} of {len(data)} imported")
        except CompilerError as e:
            msg = str(e)
            assert f"prefix{n}" in msg and "\\n" not in msg, msg
            decode = isinstance(e.__cause__, DecodeError)
            # a prefix that is not protobuf at all must say so, with the DecodeError chained
            assert decode or "protobuf" not in msg, msg
            key = type(e).__name__ + (" from DecodeError" if decode else "")
            seen[key] = seen.get(key, 0) + 1
RESULT = seen
"""


def test_2_every_prefix_of_a_valid_model(sb):
    """Exhaustive truncation of two small models (with and without an initializer) in one child: no prefix crashes
    the parser; each is a one-line CompilerError naming its source. Most are ModelFormatError wrapping DecodeError;
    a prefix that ends on a field boundary parses, and is then an incomplete graph (ModelValidationError) or
    missing a header field (ModelFormatError)."""
    out = isolated(sb, _PREFIXES, memory=2 * 2**30)
    assert out.ok, out.stderr
    seen = eval(out.result)  # a dict repr of class names and counts
    assert seen.get("ModelFormatError from DecodeError", 0) > 100, seen
    assert set(seen) <= {"ModelFormatError from DecodeError", "ModelFormatError", "ModelValidationError"}, seen


# ---- 3: not an ONNX file ----------------------------------------------------------------------------------------

NOT_ONNX = {
    "random": (np.random.default_rng(3).integers(0, 256, 64, dtype=np.uint8).tobytes(), "not a valid ONNX model"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(56), "PNG"),
    "elf": (b"\x7fELF\x02\x01\x01" + bytes(57), "ELF"),
    "zip": (b"PK\x03\x04" + bytes(60), "zip"),
    "textproto": (str(relu_model()).encode(), "text"),
}


@pytest.mark.parametrize("kind", NOT_ONNX)
def test_3_not_an_onnx_file(sb, kind):
    data, hint = NOT_ONNX[kind]
    p = sb.save(data, f"{kind}.onnx")
    refuses(sb, lambda: load_model(p), ModelFormatError, names=[f"{kind}.onnx", hint])
    if kind == "png":
        sb.cli("compile", p, "-o", sb.out / "m.tritc", names=[f"{kind}.onnx", hint])


# ---- 4: deeply nested subgraphs ---------------------------------------------------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand: protobuf itself refuses to build the deep models."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_if_model(depth: int) -> bytes:
    """If inside If inside If ... `depth` levels, each three protobuf messages deep."""
    graph = helper.make_graph([], "g", [], [vi("c", (1,), TensorProto.BOOL)]).SerializeToString()
    for _ in range(depth):
        attr = _field(1, b"then_branch") + b"\xa0\x01\x05" + _field(6, graph)  # name, type = GRAPH, g
        node = _field(1, b"c") + _field(2, b"c") + _field(4, b"If") + _field(5, attr)
        graph = _field(1, node) + _field(12, vi("c", (1,), TensorProto.BOOL).SerializeToString())
    return b"\x08\x08" + _field(7, graph) + _field(8, helper.make_opsetid("", 17).SerializeToString())


_DEPTHS = """
from tritc.frontend.onnx import load_model
RESULT = []
for depth in DEPTHS:
    try:
        load_model(f"model_dir/deep{depth}.onnx")
        RESULT.append((depth, "imported", ""))
    except Exception as e:
        RESULT.append((depth, type(e).__name__, str(e)))
"""


def test_4_deeply_nested_subgraphs(sb):
    """40, 200 and 2000 levels of If (a 6000-deep protobuf message) in one child: protobuf's own recursion limit
    refuses them (ModelFormatError naming MaxDepth), never a stack overflow. 20 levels parse and are then refused as
    control flow."""
    depths = [20, 40, 200, 2000]
    for d in depths:
        sb.save(nested_if_model(d), f"deep{d}.onnx")
    out = isolated(sb, f"DEPTHS = {depths}\n" + _DEPTHS, memory=2 * 2**30)
    assert out.ok, out.stderr
    for depth, error, message in eval(out.result):
        assert "\n" not in message and f"deep{depth}.onnx" in message, message
        if depth == 20:
            assert error == "UnsupportedError" and "If" in message, (depth, error, message)
        else:
            assert error == "ModelFormatError" and "MaxDepth" in message, (depth, error, message)


# ---- 5: a single file over 2 GiB --------------------------------------------------------------------------------


def test_5_single_file_over_2_gib(sb):
    """A sparse file of 2 GiB (no disk used): refused from its size alone, before a byte is read, with a pointer to
    external data; the limit is protobuf's 2**31 - 1 bytes."""
    p = sb.model_dir / "huge.onnx"
    with open(p, "wb") as f:
        f.write(relu_model().SerializeToString())
        f.truncate(2**31)
    sb.mark()
    names = ["huge.onnx", "2147483648 bytes", str(2**31 - 1), "external data"]
    refuses(sb, lambda: load_model(p), ResourceLimitError, names=names)
    sb.cli("compile", p, "-o", sb.out / "m.tritc", names=names, memory=2**30)


# ---- 6: IR version and opsets -----------------------------------------------------------------------------------


def _no_ir_version() -> onnx.ModelProto:
    m = relu_model()
    m.ClearField("ir_version")
    return m


def _ir_version(v: int) -> onnx.ModelProto:
    m = relu_model()
    m.ir_version = v
    return m


def _no_opset_import() -> onnx.ModelProto:
    m = relu_model()
    m.ClearField("opset_import")
    return m


def _duplicate_domain() -> onnx.ModelProto:
    m = relu_model()
    m.opset_import.add(domain="ai.onnx", version=13)
    return m


def _unknown_domain() -> onnx.ModelProto:
    return model([helper.make_node("Evil", ["x"], ["y"], name="evil", domain="com.evil")], [vi("x")], [vi("y")],
                 extra_opsets=[("com.evil", 1)])


def _domain_not_imported() -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.evil")], [vi("x")], [vi("y")])


# Where tritc's class differs from the suggestion (UnsupportedError for all), the model is malformed rather than
# unsupported: no ir_version or no opset_import (ModelFormatError, the wording of case 1), an opset below 1 or a node
# in a domain the model never imports (ModelValidationError).
OPSET_CASES = {
    "ir_version_missing": (_no_ir_version, ModelFormatError, ["ir_version"]),
    "ir_version_newer": (lambda: _ir_version(onnx.IR_VERSION + 1), UnsupportedError, [f"IR version {onnx.IR_VERSION + 1}"]),
    "opset_import_missing": (_no_opset_import, ModelFormatError, ["opset_import"]),
    "opset_999": (lambda: relu_model(opset=999), UnsupportedError, ["opset 999", "ai.onnx"]),
    "opset_below_minimum": (lambda: relu_model(opset=3), UnsupportedError, ["Relu version 1", "opset 3", "'relu'"]),
    "opset_0": (lambda: relu_model(opset=0), ModelValidationError, ["opset 0", "ai.onnx"]),
    "duplicate_domain": (_duplicate_domain, UnsupportedError, ["'ai.onnx' twice", "17", "13"]),
    "unknown_domain": (_unknown_domain, UnsupportedError, ["com.evil", "Evil", "'evil'"]),
    "domain_not_imported": (_domain_not_imported, ModelValidationError, ["com.evil", "'r'"]),
}


@pytest.mark.parametrize("case", OPSET_CASES)
def test_6_ir_version_and_opsets(sb, case):
    make, error, names = OPSET_CASES[case]
    p = sb.save(make())
    refuses(sb, lambda: load_model(p), error, names=["model.onnx", *names])

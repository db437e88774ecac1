"""Operator versions: resolved from the model's opset, supported as-is or adapted, or reported by name and version."""

from __future__ import annotations

import warnings

import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper

from tritc.errors import CompilerError, UnsupportedError
from tritc.frontend.adapters import ADAPTERS
from tritc.frontend.onnx import NEWER_OPSET_MARGIN, import_model
from tritc.frontend.opsets import op_version, table_problems
from tritc.ir.ops import BY_ONNX

from .models import model, relu_model, vi

NEWEST = onnx.defs.onnx_opset_version()


def test_version_comes_from_the_schema_active_at_the_opset():
    assert op_version("Relu", "", 11).since == 6
    assert op_version("Relu", "", 13).since == 13
    assert op_version("Relu", "", NEWEST).since == 14
    assert op_version("Add", "ai.onnx", 12).since == 7  # "ai.onnx" is the default domain
    for opset in (11, 13, 14, NEWEST):
        g = import_model(relu_model(opset=opset))
        assert [n.op for n in g] == ["relu"]


def test_old_opset_is_fine_when_its_ops_are():
    """There is no oldest opset: Not has been version 1 since opset 1; Relu 1 differs and is named."""
    nodes = [helper.make_node("Not", ["x"], ["y"], name="n")]
    g = import_model(model(nodes, [vi("x", (2,), TensorProto.BOOL)], [vi("y", (2,), TensorProto.BOOL)], opset=1,
                           ir_version=3))
    assert [n.op for n in g] == ["not"]
    with pytest.raises(UnsupportedError, match=r"Relu version 1 \(ai.onnx opset 5"):
        import_model(relu_model(opset=5))


def test_one_error_lists_every_unsupported_op():
    body = helper.make_graph([], "body", [], [vi("x")])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="fine")]
    nodes += [helper.make_node("If", ["c"], [f"i{k}"], name=f"if{k}", then_branch=body, else_branch=body) for k in range(4)]
    nodes += [helper.make_node("Foo", ["x"], [f"f{k}"], name=f"foo{k}", domain="com.example") for k in range(2)]
    nodes += [helper.make_node("TfIdfVectorizer", ["x"], ["t"], name="tfidf", mode="TF", min_gram_length=1,
                               max_gram_length=1, max_skip_count=0, ngram_counts=[0], ngram_indexes=[0])]
    outputs = [vi(n.output[0], None) for n in nodes]
    m = model(nodes, [vi("x"), vi("c", (), TensorProto.BOOL)], outputs, extra_opsets=[("com.example", 1)])
    with pytest.raises(UnsupportedError) as e:
        import_model(m, source="three.onnx")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("three.onnx: 3 unsupported operators: ")
    assert "Foo (com.example opset 1: no such operator): 2 nodes ['foo0' (Foo), 'foo1' (Foo)]" in msg
    if_version = onnx.defs.get_schema("If", 17).since_version
    assert f"If version {if_version} (ai.onnx opset 17): 4 nodes ['if0' (If), 'if1' (If), 'if2' (If), ...]" in msg
    assert "'if3'" not in msg
    assert "TfIdfVectorizer version 9 (ai.onnx opset 17): 1 node ['tfidf' (TfIdfVectorizer)]" in msg
    assert "Relu" not in msg


def test_unsupported_version_says_which_versions_are_read():
    with pytest.raises(UnsupportedError, match="tritc reads versions 6, 13, 14"):
        import_model(relu_model(opset=5))


@pytest.mark.parametrize("ahead", range(1, NEWER_OPSET_MARGIN + 1))
def test_newer_opset_within_the_margin_is_read_with_a_warning(ahead):
    with pytest.warns(UserWarning, match=f"opset {NEWEST + ahead} of ai.onnx is newer"):
        g = import_model(relu_model(opset=NEWEST + ahead))
    assert [n.op for n in g] == ["relu"]


@pytest.mark.parametrize("opset", [NEWEST + NEWER_OPSET_MARGIN + 1, 999, 2**40])
def test_implausible_opset_is_refused(opset):
    with pytest.raises(UnsupportedError, match=f"opset {opset} of ai.onnx is not a known opset"):
        import_model(relu_model(opset=opset))


def test_table_and_adapters_agree_with_onnx():
    assert table_problems() == []


def _versions_in_use(domain: str, op_type: str) -> list[tuple[int, int]]:
    """(opset, since_version) for every opset 11..28 (and the newest) at which ONNX defines the op."""
    out = []
    for opset in sorted(set(range(11, 29)) | {NEWEST}):
        try:
            out.append((opset, onnx.defs.get_schema(op_type, opset, domain).since_version))
        except onnx.defs.SchemaError:
            pass
    return out


def _walk_cases():
    for domain, op_type in sorted(BY_ONNX):
        seen = set()
        for opset, since in _versions_in_use(domain, op_type):
            if since not in seen:
                seen.add(since)
                yield pytest.param(domain, op_type, opset, since, id=f"{domain or 'ai.onnx'}.{op_type}-v{since}")


@pytest.mark.parametrize("domain, op_type, opset, since", list(_walk_cases()))
def test_every_version_in_use_is_read_or_named(domain, op_type, opset, since):
    """Each (op, version) active at opsets 11..28: imported (as-is or adapted) or named as unsupported, never a crash."""
    opdef = BY_ONNX[(domain, op_type)]
    readable = (since in opdef.since and opdef.onnx == op_type) or (domain, op_type, since) in ADAPTERS
    schema = onnx.defs.get_schema(op_type, opset, domain)
    inputs = [f"in{i}" for i in range(schema.min_input)]
    node = helper.make_node(op_type, inputs, ["out"], name="probe", domain=domain)
    m = model([node], [vi(n) for n in inputs], [vi("out", None)], opset=17 if domain else opset,
              extra_opsets=[(domain, opset)] if domain else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import_model(m)
            error = None
        except CompilerError as e:  # a node built from the schema alone may well be invalid; anything else is a crash
            error = e
    named = isinstance(error, UnsupportedError) and f"{op_type} version {since} " in str(error)
    assert named != readable, (f"{op_type} version {since} at opset {opset}: "
                               + ("reported unsupported, but the table reads it" if named else
                                  "neither in `since` nor adapted, but not reported as unsupported"))

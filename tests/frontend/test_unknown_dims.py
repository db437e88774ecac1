"""Unknown dims as other exporters write them (-1, blank, '?', unk__N, text that is a number): on a graph input each
becomes a symbol of its own, `<input>.<axis>`, shown by `tritc dump` and get_inputs(), bound from the arrays at run
time; elsewhere it is unknown. Every model is also run by onnxruntime, the interpreter and compiled code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import tritc
from tritc import cli
from tritc.frontend.onnx import import_model
from tritc.ir import dims as dimlib
from tritc.ir import parse_graph, print_graph
from tritc.ir.interpreter import Interpreter

from .models import model

F = TensorProto.FLOAT
HERE = Path(__file__).parent

# How each exporter writes "unknown" into a TensorShapeProto dim.
FORMS = {
    "minus_one": lambda d: setattr(d, "dim_value", -1),  # paddle2onnx before 1.0
    "blank": lambda d: None,  # neither dim_value nor dim_param
    "question_mark": lambda d: setattr(d, "dim_param", "?"),
    "onnx_generated": lambda d: setattr(d, "dim_param", "unk__7"),
    "number_text": lambda d: setattr(d, "dim_param", "3"),  # text that names no symbol
    "whitespace": lambda d: setattr(d, "dim_param", " "),
}


def tensor(name: str, dims: list, elem: int = F) -> onnx.ValueInfoProto:
    """A value_info whose dims are ints, dim_param names, or FORMS keys (written that way)."""
    v = onnx.ValueInfoProto(name=name)
    v.type.tensor_type.elem_type = elem
    shape = v.type.tensor_type.shape
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d in FORMS:
            FORMS[d](dim)
        else:
            dim.dim_param = d
    return v


def check_against_ort(m: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp_path: Path) -> tritc.CompiledModel:
    """onnxruntime, the interpreter on the imported graph, and compiled code agree on `feeds`; returns the model."""
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    graph = import_model(m)
    names = [v.name for v in graph.outputs]
    got = Interpreter(graph).run(feeds)
    for name, e in zip(names, expected):
        np.testing.assert_array_equal(got[name], e)
    cm = tritc.compile(path)
    for a, e in zip(cm.run(None, feeds), expected):
        np.testing.assert_array_equal(a, e)
    return cm


@pytest.mark.parametrize("form", FORMS)
def test_each_form_on_an_input_is_its_own_symbol(form):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [form, 3])], [tensor("y", [form, 3])])
    g = import_model(m)
    assert g.inputs[0].type.shape == ("x.0", 3)
    assert g.outputs[0].type.shape == ("x.0", 3)  # the output follows the input; its own unknown dim claims nothing
    text = print_graph(g)
    assert '%x: f32["x.0",3]' in text and print_graph(parse_graph(text, g.weights)) == text
    x = np.linspace(-2, 2, 15, dtype=np.float32).reshape(5, 3)
    expected, = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(Interpreter(g).run({"x": x})["y"], expected)


def test_other_negative_dims_stay_errors():
    from tritc.errors import ModelValidationError

    m = model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [-2, 3])], [tensor("y", [2, 3])])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -2
    with pytest.raises(ModelValidationError, match="graph input 'x' has a negative dim -2"):
        import_model(m)


def test_every_form_compiles_and_binds_from_the_arrays(tmp_path):
    """One input with every form on its axes: six symbols, bound independently at run time (sizes 1 to 3, two
    bindings), against onnxruntime, the interpreter and compiled code."""
    forms = list(FORMS)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", forms)], [tensor("y", forms)])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 1, 2, 3, 1)).astype(np.float32)
    cm = check_against_ort(m, {"x": x}, tmp_path)
    assert [i.shape for i in cm.get_inputs()] == [[f"x.{k}" for k in range(6)]]
    x2 = rng.standard_normal((1, 2, 3, 1, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(cm(x=x2), np.maximum(x2, 0))
    assert [s.key() for s in cm.specializations] == [()] and cm.stats["compilations"] == 1  # one code for every size


def test_two_inputs_with_question_marks_take_different_sizes(tmp_path, capsys):
    """'?' on a and on b does not mean one size: concatenated, they bind 2 and 5."""
    m = model([helper.make_node("Concat", ["a", "b"], ["y"], axis=0)], [tensor("a", ["?", 3]), tensor("b", ["?", 3])],
              [tensor("y", ["?", 3])])
    g = import_model(m)
    assert [v.type.shape for v in g.inputs] == [("a.0", 3), ("b.0", 3)]
    total = g.outputs[0].type.shape[0]
    assert dimlib.evaluate(total, {"a.0": 2, "b.0": 5}) == 7  # the sum of two opaque symbols stays arithmetic
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((2, 3)).astype(np.float32), "b": rng.standard_normal((5, 3)).astype(np.float32)}
    cm = check_against_ort(m, feeds, tmp_path)
    assert [str(i) for i in cm.get_inputs()] == ['a: f32["a.0",3]', 'b: f32["b.0",3]']
    art = tmp_path / "m.tritc"
    cm.save(art)
    loaded = tritc.load(art)
    assert [str(i) for i in loaded.get_inputs()] == ['a: f32["a.0",3]', 'b: f32["b.0",3]']
    np.testing.assert_array_equal(loaded(a=feeds["b"], b=feeds["a"]), np.concatenate([feeds["b"], feeds["a"]]))
    assert cli.main(["inspect", str(art)]) == 0
    assert 'inputs    a: f32["a.0",3], b: f32["b.0",3]\n' in capsys.readouterr().out


def test_question_marks_on_two_axes_of_one_input(tmp_path):
    m = model([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [tensor("x", ["?", "?"])], [tensor("y", ["?", "?"])])
    assert import_model(m).outputs[0].type.shape == ("x.1", "x.0")
    check_against_ort(m, {"x": np.arange(10, dtype=np.float32).reshape(2, 5)}, tmp_path)


def test_named_dims_keep_their_names_and_their_sharing():
    """`n` on a and on b is one size: the run-time check refuses two."""
    m = model([helper.make_node("Add", ["a", "b"], ["y"])], [tensor("a", ["n", 3]), tensor("b", ["n", 3])],
              [tensor("y", ["n", 3])])
    cm = tritc.compile(m)
    assert [i.shape for i in cm.get_inputs()] == [["n", 3], ["n", 3]]
    with pytest.raises(ValueError, match="'n' is 2 in another input"):
        cm.run(None, {"a": np.ones((2, 3), np.float32), "b": np.ones((4, 3), np.float32)})


def test_unknown_dims_of_outputs_and_value_info_claim_nothing():
    """value_info saying t and u are both [?,3] (or [-1,3]) does not make a.0 and b.0 one size, and a -1 there is
    no error: those dims are unknown, and the rules' symbols stand."""
    nodes = [helper.make_node("Relu", ["a"], ["t"]), helper.make_node("Relu", ["b"], ["u"]),
             helper.make_node("Concat", ["t", "u"], ["y"], axis=0)]
    m = model(nodes, [tensor("a", ["?", 3]), tensor("b", ["?", 3])], [tensor("y", ["minus_one", 3])],
              value_info=[tensor("t", ["?", 3]), tensor("u", ["minus_one", "?"])])
    g = import_model(m)
    assert g.value("t").type.shape == ("a.0", 3) and g.value("u").type.shape == ("b.0", 3)


def test_fresh_names_avoid_declared_ones():
    """x's unknown dim would be x.0, but another input declares a dim named x.0; an input name with a comma or
    '=' (which --shape could not spell) gets '_' in its symbol."""
    m = model([helper.make_node("Concat", ["x", "p,q=r"], ["y"], axis=0)],
              [tensor("x", ["?", 2]), tensor("p,q=r", ["x.0", "?"])], [helper.make_tensor_value_info("y", F, None)])
    g = import_model(m)
    assert [v.type.shape for v in g.inputs] == [("x.0_2", 2), ("x.0", "p_q_r.1")]


def test_dump_shows_the_symbols(tmp_path, capsys):
    """`tritc dump` of a paddle2onnx-style model (-1 batch) and a two-'?' model: the text of unknown_dims.ir, which
    tests/test_ir_files.py round-trips."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["r", "bytes"], ["y"], axis=0)]
    m = model(nodes, [tensor("x", ["minus_one", 4]), tensor("bytes", ["?", 4])], [tensor("y", ["minus_one", 4])],
              name="exported")
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    assert cli.main(["dump", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out == (HERE / "unknown_dims.ir").read_text()


def test_a_graph_built_otherwise_names_its_unknown_dim_in_the_error():
    """Only a graph that did not come through the frontend can still have an unknown input dim: the error says which."""
    from tritc.errors import UnsupportedError

    g = parse_graph("graph @g(%x: f32[?,3]) -> (%y: f32[?,3]) {\n  %y = relu(%x) : f32[?,3]\n  return %y\n}\n", {})
    with pytest.raises(UnsupportedError, match=r"dim 0 of input 'x' \(f32\[\?,3\]\) is unknown .* x\.0\)"):
        tritc.compile(g)

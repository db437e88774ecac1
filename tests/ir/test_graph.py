"""Graph editing keeps use lists, order and names right; big graphs stay linear-time."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tritc.errors import VerificationError
from tritc.ir import DType, Graph, TensorType, print_graph, run, verify

F = TensorType(DType.F32, (2,))


def _chain(n: int) -> Graph:
    g = Graph()
    v = g.add_input("x", F)
    for _ in range(n):
        v = g.add("relu", [v], [F]).output
    g.outputs = [v]
    return g


def test_use_lists_follow_edits():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("relu", [x], [F])
    b = g.add("add", [a.output, x], [F])
    g.outputs = [b.output]
    assert [(n.op, i) for n, i in x.uses] == [("relu", 0), ("add", 1)]
    c = g.add("leaky_relu", [x], [F], {"alpha": 0.5}, before=b)
    g.replace_all_uses(a.output, c.output)
    assert a.output.uses == [] and (b, 0) in c.output.uses
    g.erase(a)
    assert [n.op for n in g] == ["leaky_relu", "add"]
    verify(g)


def test_erase_refuses_used_values():
    g = _chain(2)
    with pytest.raises(ValueError, match="still used"):
        g.erase(g.first)


def test_editing_while_iterating_is_safe():
    g = _chain(10)
    for n in g.nodes:
        new = g.add("leaky_relu", list(n.inputs), [F], {"alpha": 0.25}, before=n)
        g.replace_node(n, new.outputs)
    assert [n.op for n in g] == ["leaky_relu"] * 10
    verify(g)


def test_output_names_survive_replacement():
    g = _chain(2)
    out_name = g.outputs[0].name
    first = g.first
    g.replace_node(g.last, [first.output])  # the output's producer is gone, its name is not
    assert [v.name for v in g.outputs] == [out_name] and g.outputs[0] is first.output
    x = g.inputs[0]
    g.replace_all_uses(g.outputs[0], x)  # an input cannot be renamed: an identity keeps the name
    assert g.outputs[0].name == out_name and g.outputs[0].producer.op == "identity"
    g.erase(first)
    verify(g)
    out = run(g, {"x": np.array([1.0, -2.0], np.float32)})
    np.testing.assert_array_equal(out[out_name], [1.0, -2.0])


def test_fresh_names_never_collide():
    g = Graph()
    g.add_input("v", F)
    names = {g.new_value(F, "v").name for _ in range(5)}
    assert len(names) == 5 and "v" not in names


def test_copy_is_independent():
    g = _chain(3)
    h = g.copy()
    assert print_graph(h) == print_graph(g)
    h.add("relu", [h.outputs[0]], [F])
    assert len(h) == 4 and len(g) == 3
    verify(g)
    verify(h)


def test_move_and_reorder():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("relu", [x], [F])
    b = g.add("relu", [x], [F])
    g.outputs = [a.output, b.output]
    g.move_before(a, b)
    assert g.nodes == [b, a]
    g.reorder([a, b])
    assert g.nodes == [a, b] and g.last is b
    verify(g)


def test_verifier_catches_use_before_definition():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("relu", [x], [F])
    b = g.add("relu", [a.output], [F])
    g.outputs = [b.output]
    g.reorder([b, a])
    with pytest.raises(VerificationError, match="before it is defined"):
        verify(g)


def test_verifier_catches_type_clash():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("relu", [x], [TensorType(DType.F16, (2,))])
    g.outputs = [a.output]
    with pytest.raises(VerificationError, match="declared f16"):
        verify(g)


def test_verifier_catches_unknown_op_and_attrs():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("no_such_op", [x], [F])
    b = g.add("relu", [x], [F], {"bogus": 1})
    c = g.add("leaky_relu", [x], [F], {"alpha": 0.1})  # 0.1 is not a float32 value
    g.outputs = [a.output, b.output, c.output]
    with pytest.raises(VerificationError) as e:
        verify(g)
    msg = str(e.value)
    assert "unknown op 'no_such_op'" in msg and "unknown attribute 'bogus'" in msg and "not a float32" in msg


def test_long_chain_is_linear_time():
    t = time.process_time()   # CPU seconds: another process's load on a shared machine does not count
    g = _chain(100_000)
    verify(g)
    text = print_graph(g)
    elapsed = time.process_time() - t
    assert text.count("\n") == 100_003
    assert elapsed < 20, f"100k-node chain took {elapsed:.1f}s"


def _fan(rng: np.random.Generator) -> tuple[Graph, list[int]]:
    """x -> relus, some of them graph outputs (one twice), some feeding adds; the indices of the relus to merge."""
    t = TensorType(DType.F32, (2,))
    g = Graph("fan")
    x = g.add_input("x", t)
    relus = [g.add("relu", [x], [t]).outputs[0] for _ in range(12)]
    adds = [g.add("add", [relus[i], relus[(i + 3) % 12]], [t]).outputs[0] for i in range(0, 12, 2)]
    picked = [relus[i] for i in rng.choice(12, 5, replace=False)]
    g.outputs = picked + [picked[0]] + adds[:3] + [x]
    merge = sorted(int(i) for i in rng.choice(range(1, 12), 6, replace=False))
    return g, merge


@pytest.mark.parametrize("seed", range(6))
def test_replace_nodes_is_replace_node_in_a_batch(seed):
    """The batch gives the same graph (names, naming identities, outputs, uses) as replace_node one at a time."""
    one, merge = _fan(np.random.default_rng(seed))
    batch = one.copy()
    for g, batched in ((one, False), (batch, True)):
        relus = [n for n in g.nodes if n.op == "relu"]
        pairs = [(relus[i], relus[0].outputs) for i in merge]
        if batched:
            g.replace_nodes(pairs)
        else:
            for node, new in pairs:
                g.replace_node(node, new)
        verify(g)
    assert print_graph(batch) == print_graph(one)
    for g in (one, batch):
        for v in [v for n in g.nodes for v in n.outputs] + list(g.inputs):
            assert sorted((id(n), i) for n, i in v.uses) == sorted(
                (id(n), i) for n in g.nodes for i, u in enumerate(n.inputs) if u is v)
    x = np.array([-1.0, 2.0], np.float32)
    assert [r.tolist() for r in run(batch, {"x": x}).values()] == [r.tolist() for r in run(one, {"x": x}).values()]

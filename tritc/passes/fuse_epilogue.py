"""fuse-epilogue: the ops right after a ternary_matmul move into its epilogue (one pass over the output).

    %t = ternary_matmul(%x, %w); %s = mul(%t, %ws); %b = add(%s, %bias); %y = add(%b, %res)
    %y = ternary_matmul(%x, %w', %bias, %res)          (w' = w with its scales times ws)

In order, each only while the later stages are still free: a multiply by a per-tensor or
per-output constant folds into the weight's scales (the rescale), an add of a per-output constant
becomes the bias (a single value, scalar or [1], is spread to one per output: f32[N] is the one
bias form the kernels take), an add of a full-shaped value computed before the matmul becomes the
residual, and relu / silu (x * sigmoid(x)) become the activation. The kernel then writes each
output once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import dims
from ..ir.graph import Graph, Node, Value
from ..ir.ternary import TernaryWeight
from ..ir.types import DType, TensorType
from .fold_constants import make_constant
from .pass_manager import Pass, register


def _sole_user(graph: Graph, v: Value) -> Node | None:
    if len(v.uses) != 1 or any(o is v for o in graph.outputs):
        return None
    return v.uses[0][0]


def _other(node: Node, v: Value) -> Value | None:
    a, b = node.inputs[0], node.inputs[1]
    return b if a is v else a if b is v else None


def _per_output(graph: Graph, c: Value | None, n: int) -> np.ndarray | None:
    """A float32 constant that is one value, or one value per output, broadcast along the last axis."""
    data = graph.const_value(c)
    if not isinstance(data, np.ndarray) or data.dtype != np.float32:
        return None
    if data.size == 1:
        return data.reshape(())
    if data.shape[-1:] == (n,) and data.size == n:
        return data.reshape(n)
    return None


def _same_shape(a: TensorType, b: TensorType) -> bool:
    return (a.shape is not None and b.shape is not None and len(a.shape) == len(b.shape)
            and all(dims.equal(x, y) is True for x, y in zip(a.shape, b.shape)))


@register
@dataclass(frozen=True)
class FuseEpilogue(Pass):
    name = "fuse-epilogue"
    summary = "fold rescale, bias, residual add and relu/silu after a ternary_matmul into it"

    def run(self, graph: Graph) -> bool:
        changed = False
        order = {id(n): i for i, n in enumerate(graph)}
        for node in graph.nodes:
            if node.graph is not graph or node.op != "ternary_matmul":
                continue
            while self._step(graph, node, order):
                changed = True
        if changed:
            graph.prune_weights()
        return changed

    def _step(self, graph: Graph, t: Node, order: dict[int, int]) -> bool:
        out = t.outputs[0]
        if out.type.dtype is not DType.F32:
            return False
        user = _sole_user(graph, out)
        n = t.inputs[1].type.shape[-1] if t.inputs[1] is not None and t.inputs[1].type.shape else None  # type: ignore[index]
        has_bias = len(t.inputs) > 2 and t.inputs[2] is not None
        has_res = len(t.inputs) > 3 and t.inputs[3] is not None
        has_act = t.attrs.get("activation", "none") != "none"
        if user is not None and user.op in ("mul", "add") and not has_act and isinstance(n, int):
            other = _other(user, out)
            if other is None or not _same_shape(user.outputs[0].type, out.type):
                return False
            const = _per_output(graph, other, n)
            if user.op == "mul" and const is not None and not has_bias and not has_res:
                return self._rescale(graph, t, user, const)
            if user.op == "add" and const is not None and not has_bias and not has_res:
                if const.shape != (n,):  # one value for every output: the kernel reads bias[n]
                    other = make_constant(graph, np.full(n, const, np.float32), other, t, other.name + ".per_output")
                elif not self._before(other, t, order):  # a constant has no operands: move it up
                    graph.move_before(t, other.producer)  # type: ignore[arg-type]
                    order[id(other.producer)] = order[id(t)] - 0.5  # type: ignore[assignment]
                self._absorb(graph, t, user, 2, other)
                return True
            if user.op == "add" and not has_res and _same_shape(other.type, out.type) and self._before(other, t, order):
                self._absorb(graph, t, user, 3, other)
                return True
            return False
        if not has_act:
            if user is not None and user.op == "relu":
                self._absorb(graph, t, user, None, None, activation="relu")
                return True
            silu = self._silu(graph, out)
            if silu is not None:
                sig, mul = silu
                self._absorb(graph, t, mul, None, None, activation="silu")
                graph.erase(sig)
                return True
        return False

    @staticmethod
    def _before(v: Value, t: Node, order: dict[int, int]) -> bool:
        """Whether `v` is available where `t` runs (a graph input, or made by an earlier node)."""
        return v.producer is None or order.get(id(v.producer), 1 << 62) < order.get(id(t), -1)

    @staticmethod
    def _silu(graph: Graph, out: Value) -> tuple[Node, Node] | None:
        """out used exactly by s = sigmoid(out) and mul(out, s): SiLU."""
        if len(out.uses) != 2 or any(o is out for o in graph.outputs):
            return None
        users = {id(n): n for n, _ in out.uses}
        sig = next((n for n in users.values() if n.op == "sigmoid"), None)
        mul = next((n for n in users.values() if n.op == "mul"), None)
        if sig is None or mul is None or len(users) != 2 or _sole_user(graph, sig.outputs[0]) is not mul:
            return None
        if {id(x) for x in mul.inputs} != {id(out), id(sig.outputs[0])}:
            return None
        return sig, mul

    @staticmethod
    def _absorb(graph: Graph, t: Node, user: Node, slot: int | None, value: Value | None, activation: str = "") -> None:
        """Move `user`'s work into `t`: operand `slot` becomes `value`, or the activation is set."""
        if slot is not None:
            while len(t.inputs) < slot:
                t.inputs.append(None)
            if len(t.inputs) == slot:
                t.inputs.append(None)
            t.set_input(slot, value)
        if activation:
            t.attrs["activation"] = activation
        graph.replace_all_uses(user.outputs[0], t.outputs[0])
        graph.erase(user)

    @staticmethod
    def _rescale(graph: Graph, t: Node, mul: Node, factor: np.ndarray) -> bool:
        w = t.inputs[1]
        data = graph.const_value(w)
        if not isinstance(data, TernaryWeight) or w is None or w.producer is None:
            return False
        # A per-output factor turns a per-tensor scale into per-channel ones; per-group scales stay per group.
        scale = (data.scale * factor).astype(np.float32)
        try:
            new = TernaryWeight(data.trits, scale, data.group_size)
        except ValueError:
            return False
        key = w.producer.attrs["ref"] + ".rescaled"
        while key in graph.weights:
            key += "_"
        attrs = {k: v for k, v in w.producer.attrs.items() if k != "ref"}
        attrs["scale"] = new.granularity
        nv = graph.add_weight(key, new, w.type, name=key, attrs=attrs, before=t)
        t.set_input(1, nv)
        graph.replace_all_uses(mul.outputs[0], t.outputs[0])
        graph.erase(mul)
        return True

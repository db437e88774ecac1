"""The graph builder of the fuzzer's generator (generate.py): a pool of values of known dtype and shape, and one
method per op family that adds an op the pool can feed, with its weights.

A value is `tame` when it is known finite and moderate: only tame floats are cast to integers (ONNX leaves
out-of-range casts undefined). A value is `exact` when every implementation computes the same bits (no rounding on
its way, or only ops that pick or move values): only exact values feed the ops that are discontinuous (comparisons,
ArgMax, Floor, Sign, casts to integers), where one rounding apart would flip a result. Ops that pick a maximum or
minimum along an axis (ReduceMax, ArgMax, MaxPool, ...) only take tame values: tritc propagates a NaN there, as
ONNX's reference does, where onnxruntime's answer depends on the NaN's place in the row (tritc/ir/ops/reduce.py);
that split is known, not a finding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SYMBOL = "N"
# No huge finite values: whether a sum of them overflows, or cancels, depends on the order of the additions, which
# ONNX leaves open. Overflow still happens, element by element (Exp, Pow, Reciprocal of a denormal).
SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-40, -1e-42], np.float32)
# Sizes at the edges of vector widths and packings (4 and 5 trits a byte, 8 and 16 lanes), taken now and then.
EDGE_SIZES = (7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65)

Dim = int | str
Shape = tuple[Dim, ...]

NP = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
ONNX_TYPE = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "f64": TensorProto.DOUBLE,
             "i32": TensorProto.INT32, "i64": TensorProto.INT64, "bool": TensorProto.BOOL}
FLOATS = ("f32", "f16", "f64")
INTS = ("i32", "i64")

# Unary float ops and whether they keep a tame value tame (finite and moderate).
UNARY = {"Relu": True, "Sigmoid": True, "Tanh": True, "Abs": True, "Neg": True, "Floor": True, "Ceil": True,
         "Round": True, "Sign": True, "Sin": True, "Cos": True, "Erf": True, "Softsign": True, "Softplus": True,
         "Elu": True, "LeakyRelu": True, "Selu": True, "HardSigmoid": True, "HardSwish": True, "Mish": True,
         "Celu": True, "Atan": True, "Asinh": True, "Identity": True,
         "Exp": False, "Log": False, "Sqrt": False, "Reciprocal": False, "Tan": False, "Cosh": False,
         "Sinh": False, "Acos": False, "Asin": False, "Atanh": False, "Acosh": False}
UNARY_F16 = ("Relu", "Abs", "Neg", "Sigmoid", "Tanh", "Exp", "Sqrt", "Floor", "Ceil", "Identity")
BINARY = {"Add": True, "Sub": True, "Mul": True, "Max": True, "Min": True, "Div": False, "Pow": False, "Mod": False,
          "PRelu": True}
COMPARE = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
# Ops whose result is the same bits everywhere when their operands are (they pick, move or compare values).
EXACT = {"Relu", "Abs", "Neg", "Identity", "Max", "Min", "Floor", "Ceil", "Round", "Sign", "Reshape", "Flatten",
         "Squeeze", "Unsqueeze", "Transpose", "Concat", "Slice", "Gather", "GatherElements", "Expand", "Tile", "Where",
         "Clip", "MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "Hardmax", "Equal", "Less",
         "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf", "Cast"}
# Discontinuous unary ops, and those whose derivative has a pole in their domain (tan near pi/2, acos near 1, 1/x
# and log near 0, where a sum that cancels is 0 in one order of additions and 1e-9 in another): only on exact
# operands, where a rounding apart would be amplified without bound. Div's divisor and both of Pow's operands likewise.
DISCONTINUOUS = {"Floor", "Ceil", "Round", "Sign", "Tan", "Acos", "Asin", "Atanh", "Acosh", "Reciprocal", "Log"}
# Where onnxruntime skips a NaN and tritc (and ONNX's reference) propagates it: only tame operands.
NAN_SPLIT = {"ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "MaxPool", "GlobalMaxPool", "Hardmax"}
REDUCE = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSumExp", "ReduceSumSquare", "ReduceLogSum")


@dataclass
class Val:
    name: str
    dtype: str
    shape: Shape
    tame: bool  # finite and moderate (|x| well below the integer ranges)
    exact: bool = True  # the same bits in every implementation (see the module docstring)


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """The broadcast of two shapes (numpy rules; a symbol only meets itself or 1), or None."""
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


def static(shape: Shape) -> bool:
    return all(isinstance(d, int) for d in shape)


class Builder:
    """Grows one graph; every method that adds an op returns False when the pool cannot feed it."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[tuple[Val, bool]] = []  # and whether its feeds hold special values
        self.pool: list[Val] = []
        self.count = 0
        self.ternary = False
        self.ops: list[str] = []
        self.vals: dict[str, Val] = {}

    # ---- helpers ----

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def pick(self, pred: Callable[[Val], bool] = lambda v: True) -> Val | None:
        vals = [v for v in self.pool if pred(v)]
        if not vals:
            return None
        # prefer recent values: deeper graphs
        w = np.arange(1, len(vals) + 1, dtype=np.float64) ** 2
        return vals[int(self.rng.choice(len(vals), p=w / w.sum()))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def data(self, dtype: str, shape: tuple[int, ...], special: bool = False, positive: bool = False) -> np.ndarray:
        r = self.rng
        if dtype in FLOATS:
            a = r.standard_normal(shape).astype(np.float32) * np.float32(r.choice([1.0, 1.0, 0.1, 10.0]))
            if positive:
                a = np.abs(a) + np.float32(0.5)
            if special and a.size:
                k = r.integers(1, max(2, a.size // 3) + 1)
                idx = r.choice(a.size, size=min(k, a.size), replace=False)
                a.reshape(-1)[idx] = r.choice(SPECIALS, size=idx.size)
            return a.astype(NP[dtype])
        if dtype == "bool":
            return r.random(shape) < 0.5
        lo, hi = (1, 6) if positive else (-5, 6)
        return r.integers(lo, hi, shape).astype(NP[dtype])

    def const(self, arr: np.ndarray, stem: str = "c", tame: bool = True, node: bool | None = None) -> Val:
        """A weight: an initializer, or now and then a Constant node."""
        name = self.fresh(stem)
        dtype = next(k for k, v in NP.items() if np.dtype(v) == arr.dtype)
        if node if node is not None else self.chance(0.15):
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        v = Val(name, dtype, tuple(arr.shape), tame)
        self.vals[name] = v
        return v

    def ints(self, values: list[int], stem: str = "k") -> str:
        return self.const(np.array(values, np.int64), stem, node=False).name

    def emit(self, op: str, inputs: list[str], dtype: str, shape: Shape, tame: bool, n_out: int = 1,
             **attrs) -> Val:
        outs = [self.fresh("v") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.fresh(op.lower() + "_"), **attrs))
        self.ops.append(op)
        exact = op in EXACT and all(self.vals[i].exact for i in inputs if i)
        v = Val(outs[0], dtype, shape, tame, exact)
        self.vals[v.name] = v
        self.pool.append(v)
        return v

    def partner(self, x: Val, dtype: str | None = None, exact: bool = False) -> Val:
        """A value broadcastable with x: from the pool, or a new weight of a shape derived from x's."""
        dtype = dtype or x.dtype
        if self.chance(0.4):
            y = self.pick(lambda v: v.dtype == dtype and v is not x and broadcast(x.shape, v.shape) is not None
                          and (v.exact or not exact))
            if y is not None:
                return y
        shape = list(x.shape)[int(self.rng.integers(0, len(x.shape) + 1)) if self.chance(0.3) else 0:]
        shape = [1 if (isinstance(d, str) or self.chance(0.3)) else d for d in shape]
        special = dtype in FLOATS and self.chance(0.1)
        return self.const(self.data(dtype, tuple(shape), special), "w", tame=not special)

    # ---- the ops ----

    def unary(self) -> bool:
        x = self.pick(lambda v: v.dtype in FLOATS)
        if x is None:
            return False
        op = str(self.rng.choice([o for o in (UNARY_F16 if x.dtype == "f16" else UNARY)
                                  if x.exact or o not in DISCONTINUOUS]))
        attrs: dict = {}
        if op in ("Elu", "Celu"):
            attrs["alpha"] = float(self.rng.choice([0.5, 1.0, 2.0]))
        if op == "LeakyRelu":
            attrs["alpha"] = float(self.rng.choice([0.01, 0.2]))
        self.emit(op, [x.name], x.dtype, x.shape, x.tame and UNARY.get(op, False), **attrs)
        return True

    def binary(self) -> bool:
        x = self.pick(lambda v: v.dtype in FLOATS or v.dtype in INTS)
        if x is None:
            return False
        if x.dtype in INTS:
            op = str(self.rng.choice(["Add", "Sub", "Mul", "Max", "Min", "Div", "Mod"]))
            if op in ("Div", "Mod"):  # integer division by zero traps: a nonzero weight divisor
                shape = tuple(1 if isinstance(d, str) else d for d in x.shape[int(self.rng.integers(0, len(x.shape) + 1)):])
                y = self.const(self.data(x.dtype, shape, positive=True) * np.array(self.rng.choice([1, -1]), NP[x.dtype]))
            else:
                y = self.partner(x)
            out = broadcast(x.shape, y.shape)
            self.emit(op, [x.name, y.name], x.dtype, out, True)
            return True
        ops = list(BINARY) if x.dtype != "f16" else ["Add", "Sub", "Mul", "Div", "Max", "Min"]
        op = str(self.rng.choice(ops))
        if op == "PRelu":  # the slope broadcasts to x (unidirectional)
            shape = [1 if isinstance(d, str) or self.chance(0.5) else d for d in x.shape[1:]]
            y = self.const(self.data(x.dtype, tuple(shape)))
            self.emit(op, [x.name, y.name], x.dtype, x.shape, x.tame)
            return True
        y = self.partner(x)
        if self.chance(0.5):
            x, y = y, x
        # Pow of a negative base is NaN unless the exponent is an integer: a discontinuity in the exponent too
        if op in ("Mod", "Pow") and not (x.exact and y.exact) or op == "Div" and not y.exact:
            op = "Add"
        attrs = {"fmod": 1} if op == "Mod" else {}
        self.emit(op, [x.name, y.name], x.dtype, broadcast(x.shape, y.shape), x.tame and y.tame and BINARY[op], **attrs)
        return True

    def variadic(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32")
        if x is None:
            return False
        ys, shape = [], x.shape
        for _ in range(int(self.rng.integers(1, 3))):
            y = self.partner(x)
            if broadcast(shape, y.shape) is not None:  # each partner fits x, not always the one before
                ys.append(y)
                shape = broadcast(shape, y.shape)
        op = str(self.rng.choice(["Sum", "Mean", "Max", "Min"]))
        self.emit(op, [x.name] + [y.name for y in ys], "f32", shape, x.tame and all(y.tame for y in ys))
        return True

    def compare_where(self) -> bool:
        x = self.pick(lambda v: v.dtype in ("f32", "i64", "i32") and v.exact)
        if x is None:
            return False
        y = self.partner(x, exact=True)
        c = self.emit(str(self.rng.choice(COMPARE)), [x.name, y.name], "bool", broadcast(x.shape, y.shape), True)
        if self.chance(0.3):
            other = self.pick(lambda v: v.dtype == "bool" and v is not c and broadcast(c.shape, v.shape) is not None)
            if other is not None:
                c = self.emit(str(self.rng.choice(["And", "Or", "Xor"])), [c.name, other.name], "bool",
                              broadcast(c.shape, other.shape), True)
        if self.chance(0.2):
            c = self.emit("Not", [c.name], "bool", c.shape, True)
        a = self.pick(lambda v: v.dtype == "f32" and broadcast(c.shape, v.shape) is not None)
        if a is None:
            return True
        b = self.partner(a)
        shape = broadcast(a.shape, b.shape)
        shape = broadcast(c.shape, shape) if shape is not None else None
        if shape is None:
            b = a
            shape = broadcast(c.shape, a.shape)
        self.emit("Where", [c.name, a.name, b.name], "f32", shape, a.tame and b.tame)
        return True

    def isnan_isinf(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32")
        if x is None:
            return False
        op = str(self.rng.choice(["IsNaN", "IsInf"]))
        b = self.emit(op, [x.name], "bool", x.shape, True)
        self.emit("Cast", [b.name], "f32", b.shape, True, to=TensorProto.FLOAT)
        return True

    def matmul(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) >= 1 and isinstance(v.shape[-1], int))
        if x is None:
            return False
        k, m = x.shape[-1], int(self.rng.choice((1, 2, 3, 4, 5) + EDGE_SIZES))
        if self.chance(0.5):  # ternary-valued weight: fold-ternary should fire
            scale = self.rng.uniform(0.2, 2.0, (1, m)).astype(np.float32) if self.chance(0.5) else np.float32(
                self.rng.uniform(0.2, 2.0))
            trits = self.rng.integers(-1, 2, (k, m))
            if self.chance(0.15):  # whole columns of zeros (a pruned output), or a single sign
                trits[:, self.rng.random(m) < 0.5] = 0 if self.chance(0.5) else 1
            w = (trits.astype(np.float32) * scale).astype(np.float32)
            wv = self.const(w, "tw", node=False)
            self.ternary = True
        elif self.chance(0.2):
            # a value of the pool as right operand: [..., k] x [k, m]
            wv = self.pick(lambda v: v.dtype == "f32" and len(v.shape) == 2 and v.shape[0] == k
                           and isinstance(v.shape[1], int) and v is not x)
            if wv is None:
                return False
            m = wv.shape[1]
        else:
            special = self.chance(0.1)
            wv = self.const(self.data("f32", (k, m), special), "w", tame=not special)
        y = self.emit("MatMul", [x.name, wv.name], "f32", x.shape[:-1] + (m,) if len(x.shape) > 1 else (m,),
                      x.tame and wv.tame)
        if self.chance(0.4):  # a bias, as exporters write it
            b = self.const(self.data("f32", (m,)), "b")
            self.emit("Add", [y.name, b.name], "f32", y.shape, y.tame)
        return True

    def gemm(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) == 2 and isinstance(v.shape[1], int))
        if x is None:
            return False
        k, m = x.shape[1], int(self.rng.integers(1, 9))
        trans_b = int(self.chance(0.5))
        w = self.data("f32", (m, k) if trans_b else (k, m))
        if self.chance(0.4):
            w = (self.rng.integers(-1, 2, w.shape) * self.rng.uniform(0.3, 2)).astype(np.float32)
            self.ternary = True
        ins = [x.name, self.const(w, "gw", node=False).name]
        if self.chance(0.7):
            ins.append(self.const(self.data("f32", (m,) if self.chance(0.6) else (1, m)), "gb").name)
        attrs = {"transB": trans_b}
        if self.chance(0.3):
            attrs["alpha"] = float(self.rng.choice([0.5, 2.0]))
            attrs["beta"] = float(self.rng.choice([0.0, 1.0, 1.5]))
        self.emit("Gemm", ins, "f32", (x.shape[0], m), x.tame, **attrs)
        return True

    def conv(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) == 4 and static(v.shape[1:]))
        if x is None:
            return False
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        group = int(self.rng.choice([g for g in (1, 2, c) if c % g == 0]))
        co = group * int(self.rng.integers(1, 4))
        kh, kw = int(self.rng.integers(1, min(h, 3) + 1)), int(self.rng.integers(1, min(w, 3) + 1))
        stride = int(self.rng.choice([1, 1, 2]))
        pad = int(self.rng.choice([0, 0, 1]))
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        if oh < 1 or ow < 1:
            return False
        wt = self.data("f32", (co, c // group, kh, kw))
        if self.chance(0.4):
            wt = (self.rng.integers(-1, 2, wt.shape) * self.rng.uniform(0.3, 2)).astype(np.float32)
            self.ternary = True
        ins = [x.name, self.const(wt, "cw", node=False).name]
        if self.chance(0.6):
            ins.append(self.const(self.data("f32", (co,)), "cb").name)
        self.emit("Conv", ins, "f32", (x.shape[0], co, oh, ow), x.tame, group=group, strides=[stride, stride],
                  pads=[pad] * 4, kernel_shape=[kh, kw])
        return True

    def pool2d(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) == 4 and static(v.shape[2:]))
        if x is None:
            return False
        op = str(self.rng.choice([o for o in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
                                  if x.tame or o not in NAN_SPLIT]))
        if op.startswith("Global"):
            self.emit(op, [x.name], "f32", x.shape[:2] + (1, 1), x.tame)
            return True
        h, w = x.shape[2], x.shape[3]
        k = int(self.rng.integers(1, min(h, w, 3) + 1))
        s = int(self.rng.choice([1, 2]))
        self.emit(op, [x.name], "f32", x.shape[:2] + ((h - k) // s + 1, (w - k) // s + 1), x.tame,
                  kernel_shape=[k, k], strides=[s, s])
        return True

    def reduce(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) >= 1)
        if x is None:
            return False
        # a product adds up its factors' relative errors (one of them a sum that nearly cancels): exact operands only
        ops = [o for o in REDUCE if (x.tame or o not in NAN_SPLIT) and (x.exact or o != "ReduceProd")]
        ops += ["ArgMax", "ArgMin"] if x.exact and x.tame else []
        op = str(self.rng.choice(ops))
        r = len(x.shape)
        keep = int(self.chance(0.5))
        if op in ("ArgMax", "ArgMin"):
            axis = int(self.rng.integers(-r, r))
            shape = tuple(1 if i == axis % r else d for i, d in enumerate(x.shape)) if keep else \
                tuple(d for i, d in enumerate(x.shape) if i != axis % r)
            v = self.emit(op, [x.name], "i64", shape, True, axis=axis, keepdims=keep)
            if self.chance(0.5):
                self.emit("Cast", [v.name], "f32", v.shape, True, to=TensorProto.FLOAT)
            return True
        axes = sorted(int(a) for a in self.rng.choice(r, size=int(self.rng.integers(1, r + 1)), replace=False))
        neg = self.chance(0.3)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        ins = [x.name, self.ints([a - r if neg else a for a in axes], "axes")]
        self.emit(op, ins, "f32", shape, x.tame and op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1"),
                  keepdims=keep)
        return True

    def softmax(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) >= 1)
        if x is None:
            return False
        r = len(x.shape)
        op = str(self.rng.choice(["Softmax", "LogSoftmax"] + (["Hardmax"] if x.exact and x.tame else [])))
        self.emit(op, [x.name], "f32", x.shape, x.tame and op != "LogSoftmax", axis=int(self.rng.integers(-r, r)))
        return True

    def normalize(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32" and len(v.shape) >= 2 and isinstance(v.shape[-1], int)
                      and isinstance(v.shape[1], int))
        if x is None:
            return False
        op = str(self.rng.choice(["LayerNormalization", "BatchNormalization", "InstanceNormalization"]))
        if op == "InstanceNormalization" and len(x.shape) < 3:
            op = "LayerNormalization"
        eps = float(self.rng.choice([1e-5, 1e-3]))
        if op == "LayerNormalization":
            r = len(x.shape)
            axis = int(self.rng.integers(max(1, r - 2), r)) if static(x.shape[1:]) else r - 1
            norm = tuple(int(d) for d in x.shape[axis:])
            ins = [x.name, self.const(self.data("f32", norm), "ln_s").name]
            if self.chance(0.7):
                ins.append(self.const(self.data("f32", norm), "ln_b").name)
            self.emit(op, ins, "f32", x.shape, False, axis=axis if self.chance(0.5) else axis - r, epsilon=eps)
            return True
        c = int(x.shape[1])
        ins = [x.name, self.const(self.data("f32", (c,)), "n_s").name, self.const(self.data("f32", (c,)), "n_b").name]
        if op == "BatchNormalization":
            ins += [self.const(self.data("f32", (c,)), "n_m").name,
                    self.const(self.data("f32", (c,), positive=True), "n_v").name]
        self.emit(op, ins, "f32", x.shape, op == "BatchNormalization" and x.tame, epsilon=eps)
        return True

    def clip(self) -> bool:
        x = self.pick(lambda v: v.dtype == "f32")
        if x is None:
            return False
        lo = float(self.rng.uniform(-2, 0))
        ins = [x.name, self.const(np.array(lo, np.float32), "lo").name]
        if self.chance(0.7):
            ins.append(self.const(np.array(lo + float(self.rng.uniform(0, 3)), np.float32), "hi").name)
        self.emit("Clip", ins, "f32", x.shape, x.tame)
        return True

    def cast(self) -> bool:
        x = self.pick()
        if x is None:
            return False
        if x.dtype in FLOATS:
            choices = ["f32", "f16", "f64"] + (["bool"] if x.exact else []) + (["i32", "i64"] if x.tame and x.exact else [])
        else:
            choices = ["f32", "i64", "i32", "f16", "bool"]
        to = str(self.rng.choice([c for c in choices if c != x.dtype]))
        if to == "f16" and x.dtype in INTS:
            to = "f32"
        self.emit("Cast", [x.name], to, x.shape, x.tame or x.dtype not in FLOATS, to=ONNX_TYPE[to])
        return True

    def reshape(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 1)
        if x is None:
            return False
        head = [d for d in x.shape if isinstance(d, str)]
        rest = [int(d) for d in x.shape if isinstance(d, int)]
        if head and x.shape[0] != SYMBOL:
            return False
        total = int(np.prod(rest)) if rest else 1
        # split the static part into 1-3 factors
        dims: list[int] = []
        left = total
        for _ in range(int(self.rng.integers(0, 3))):
            divs = [d for d in range(1, left + 1) if left % d == 0]
            d = int(self.rng.choice(divs))
            dims.append(d)
            left //= d
        dims.append(left)
        spec = ([0] if head else []) + dims
        if self.chance(0.4):  # one dim inferred (not the copied symbol's 0)
            spec[int(self.rng.integers(1 if head else 0, len(spec)))] = -1
        shape = tuple(([SYMBOL] if head else []) + dims)
        self.emit("Reshape", [x.name, self.ints(spec, "shape")], x.dtype, shape, x.tame)
        return True

    def flatten_squeeze(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 1 and len(v.shape) <= 4)
        if x is None:
            return False
        r = len(x.shape)
        kind = str(self.rng.choice(["Flatten", "Unsqueeze", "Squeeze"]))
        if kind == "Flatten" and static(x.shape[1:]):
            axis = int(self.rng.integers(1, r + 1))
            inner = int(np.prod([int(d) for d in x.shape[axis:]])) if axis < r else 1
            outer: Dim = x.shape[0] if axis == 1 else (int(np.prod([int(d) for d in x.shape[:axis]])) if static(x.shape) else -1)
            if outer == -1:
                return False
            self.emit("Flatten", [x.name], x.dtype, (outer, inner), x.tame, axis=axis)
            return True
        if kind == "Squeeze":
            ones = [i for i, d in enumerate(x.shape) if d == 1]
            if not ones:
                kind = "Unsqueeze"
            else:
                axes = sorted(int(a) for a in self.rng.choice(ones, size=int(self.rng.integers(1, len(ones) + 1)),
                                                                  replace=False))
                shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
                self.emit("Squeeze", [x.name, self.ints(axes, "axes")], x.dtype, shape, x.tame)
                return True
        a = int(self.rng.integers(0, r + 1))
        shape = x.shape[:a] + (1,) + x.shape[a:]
        self.emit("Unsqueeze", [x.name, self.ints([a if self.chance(0.6) else a - r - 1], "axes")], x.dtype, shape, x.tame)
        return True

    def transpose(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 2)
        if x is None:
            return False
        perm = [int(p) for p in self.rng.permutation(len(x.shape))]
        self.emit("Transpose", [x.name], x.dtype, tuple(x.shape[p] for p in perm), x.tame, perm=perm)
        return True

    def concat(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 1 and v.dtype in ("f32", "i64", "bool"))
        if x is None:
            return False
        axes = [i for i, d in enumerate(x.shape) if isinstance(d, int)]
        if not axes:
            return False
        axis = int(self.rng.choice(axes))
        same = [v for v in self.pool if v.dtype == x.dtype and len(v.shape) == len(x.shape)
                and all(a == b for i, (a, b) in enumerate(zip(v.shape, x.shape)) if i != axis)
                and isinstance(v.shape[axis], int)]
        others = [same[int(self.rng.integers(len(same)))] for _ in range(int(self.rng.integers(1, 3)))]
        if self.chance(0.3) and static(x.shape):
            shp = list(x.shape)
            shp[axis] = int(self.rng.integers(1, 4))
            others.append(self.const(self.data(x.dtype, tuple(shp)), "cc"))
        size = int(x.shape[axis]) + sum(int(o.shape[axis]) for o in others)
        shape = x.shape[:axis] + (size,) + x.shape[axis + 1:]
        self.emit("Concat", [x.name] + [o.name for o in others], x.dtype, shape,
                  x.tame and all(o.tame for o in others), axis=axis if self.chance(0.5) else axis - len(x.shape))
        return True

    def slice(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 1 and any(isinstance(d, int) and d > 1 for d in v.shape))
        if x is None:
            return False
        axis = int(self.rng.choice([i for i, d in enumerate(x.shape) if isinstance(d, int) and d > 1]))
        n = int(x.shape[axis])
        step = int(self.rng.choice([1, 1, 2, -1]))
        if step > 0:
            start = int(self.rng.integers(0, n))
            end = int(self.rng.integers(start + 1, n + 1))
            size = len(range(start, end, step))
            if self.chance(0.2):
                end = 2**62  # "to the end", clamped
                size = len(range(start, n, step))
        else:
            start = int(self.rng.integers(1, n))
            end = int(self.rng.integers(-1, start))
            size = len(range(start, end, step))
            if end == -1:
                end = -n - 1  # before the first element
        if size < 1:
            return False
        ins = [x.name, self.ints([start]), self.ints([end]), self.ints([axis if self.chance(0.5) else axis - len(x.shape)])]
        if step != 1 or self.chance(0.5):
            ins.append(self.ints([step]))
        self.emit("Slice", ins, x.dtype, x.shape[:axis] + (size,) + x.shape[axis + 1:], x.tame)
        return True

    def gather(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 1 and any(isinstance(d, int) for d in v.shape))
        if x is None:
            return False
        axis = int(self.rng.choice([i for i, d in enumerate(x.shape) if isinstance(d, int)]))
        n = int(x.shape[axis])
        ishape = tuple(int(d) for d in self.rng.integers(1, 4, int(self.rng.integers(0, 3))))
        idx = self.rng.integers(-n, n, ishape).astype(np.int64)
        iv = self.const(idx, "idx")
        if self.chance(0.3):
            op, shape = "GatherElements", None
        else:
            op, shape = "Gather", x.shape[:axis] + ishape + x.shape[axis + 1:]
        if op == "GatherElements":
            if not static(x.shape):
                return False
            ishape = tuple(int(self.rng.integers(1, int(d) + 1)) if i != axis else int(self.rng.integers(1, 4))
                           for i, d in enumerate(x.shape))
            iv = self.const(self.rng.integers(-n, n, ishape).astype(np.int64), "idx")
            shape = ishape
        self.emit(op, [x.name, iv.name], x.dtype, shape, x.tame, axis=axis if self.chance(0.5) else axis - len(x.shape))
        return True

    def expand_tile(self) -> bool:
        x = self.pick(lambda v: len(v.shape) >= 1 and len(v.shape) <= 3)
        if x is None:
            return False
        if self.chance(0.5) and static(x.shape):
            reps = [int(self.rng.integers(1, 3)) for _ in x.shape]
            self.emit("Tile", [x.name, self.ints(reps, "reps")], x.dtype, tuple(int(d) * r for d, r in zip(x.shape, reps)),
                      x.tame)
            return True
        target = [(int(self.rng.integers(2, 4)) if d == 1 and self.chance(0.5) else d) for d in x.shape]
        spec = [1 if isinstance(d, str) else d for d in target]
        lead = [int(self.rng.integers(1, 3))] if self.chance(0.3) else []
        self.emit("Expand", [x.name, self.ints(lead + spec, "shape")], x.dtype, tuple(lead + target), x.tame)
        return True

    def fanin(self) -> bool:
        """An op joining two values of the pool (so that more of the graph is live)."""
        x = self.pick(lambda v: v.dtype == "f32")
        y = self.pick(lambda v: v.dtype == "f32" and v is not x and x is not None and broadcast(x.shape, v.shape) is not None)
        if x is None or y is None:
            return False
        op = str(self.rng.choice(["Add", "Mul", "Sub", "Max"]))
        self.emit(op, [x.name, y.name], "f32", broadcast(x.shape, y.shape), x.tame and y.tame)
        return True


OPS: dict[str, tuple[float, Callable[[Builder], bool]]] = {
    "unary": (3, Builder.unary), "binary": (3, Builder.binary), "variadic": (0.5, Builder.variadic),
    "compare_where": (1, Builder.compare_where), "isnan_isinf": (0.3, Builder.isnan_isinf),
    "matmul": (2.5, Builder.matmul), "gemm": (1, Builder.gemm), "conv": (1, Builder.conv), "pool2d": (0.5, Builder.pool2d),
    "reduce": (1.5, Builder.reduce), "softmax": (1, Builder.softmax), "normalize": (1, Builder.normalize),
    "clip": (0.5, Builder.clip), "cast": (1, Builder.cast), "reshape": (1, Builder.reshape),
    "flatten_squeeze": (1, Builder.flatten_squeeze), "transpose": (1, Builder.transpose), "concat": (1, Builder.concat),
    "slice": (1, Builder.slice), "gather": (1, Builder.gather), "expand_tile": (0.7, Builder.expand_tile),
    "fanin": (1, Builder.fanin),
}

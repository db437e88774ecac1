"""The size function of a code (codegen/llvm/size_function.py) equals symbolic.evaluate on every expression form,
deep ones included, and says when a relation fails; call_sizes refuses sizes that need an unbound symbol."""

from __future__ import annotations

import random

import pytest

from tritc.codegen.llvm.compiler import Specialization
from tritc.codegen.llvm.size_function import call_sizes, size_function
from tritc.codegen.llvm.symbolic import align, evaluate, floordiv, if_one, mod, size, smax, smin
from tritc.ir.types import DType, TensorType

SYMBOLS = ["batch", "seq", "past"]


def random_size(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([size(s) for s in SYMBOLS] + [rng.randint(1, 9), size("2*batch*seq+past")])
    a, b = random_size(rng, depth - 1), random_size(rng, depth - 1)
    form = rng.choice(["add", "sub", "mul", "max", "min", "div", "mod", "align", "if1"])
    if form == "align":
        return align(a, rng.choice([1, 8, 64]))
    if form == "if1":
        return if_one(a, b, random_size(rng, depth - 1))
    try:
        return {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "max": lambda: smax(a, b),
                "min": lambda: smin(a, b), "div": lambda: floordiv(a, b), "mod": lambda: mod(a, b)}[form]()
    except ZeroDivisionError:  # two constants, the second 0: folded at construction, as lowerings never ask
        return a + b


@pytest.mark.parametrize("seed", range(20))
def test_equals_evaluate(seed):
    rng = random.Random(seed)
    exprs = [random_size(rng, 4) for _ in range(6)]
    fn = size_function([exprs[:3], exprs[3:5]], exprs[5], [], SYMBOLS)
    for _ in range(10):
        b = {s: rng.randint(0, 12) for s in SYMBOLS}
        shapes, arena, ok = fn(*(b[s] for s in SYMBOLS))
        assert shapes == (tuple(evaluate(e, b) for e in exprs[:3]), tuple(evaluate(e, b) for e in exprs[3:5]))
        assert arena == evaluate(exprs[5], b) and ok


def test_deep_expressions_compile():
    """An arena is a max over every step of a schedule: deeper than Python's nesting limit for one expression."""
    x = size("seq")
    for i in range(2000):
        x = smax(x, size("past") + i * size("batch") + 1)
    fn = size_function([], x, [], SYMBOLS)
    assert fn(2, 3, 4)[1] == 4 + 1999 * 2 + 1


def code(relations=None, checks=None, arena=0):
    t = TensorType(DType.F32, ("batch", "seq", 8))
    return Specialization(bindings={}, input_types=[t], output_types=[t, TensorType(DType.F32, ("total",))],
                          arena_bytes=arena, object=b"", bitcode=b"", relations=relations or {}, checks=checks or [])


def test_relations_and_checks():
    c = code(relations={"total": "past+seq"}, checks=[("seq", 4, "node n", ">="), ("batch", 1, "node m")])
    order = ["batch", "seq", "past", "total"]
    fn = call_sizes(c, order, set(order))
    assert fn(1, 5, 2, 7) == (((1, 5, 8), (7,)), 0, True)
    assert fn(1, 5, 2, 8)[2] is False   # total != past + seq
    assert fn(1, 3, 2, 5)[2] is False   # seq < 4
    assert fn(2, 5, 2, 7)[2] is False   # batch != 1
    # a relation with an unbound symbol is skipped (check_relations skips it too); sizes that need one: no function
    assert call_sizes(code(relations={"past": "total-seq"}, arena=size("seq")), order, {"batch", "seq", "total"}) \
        is not None
    assert call_sizes(code(), order, {"batch", "seq"}) is None

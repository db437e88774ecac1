"""Neural-network ops: matrix products (matmul, gemm, einsum), normalizations, dropout.

Each function is the op's numpy meaning, following the newest ONNX version of the op. Half
precision inputs (f16, bf16) are computed in f32 and rounded once at the end, as onnxruntime does.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from .. import dims
from ..types import Dim, DType, Shape, TensorType
from . import Float, InferContext, Int, Ints, Str, Type, TypeRuleError, defop
from .rules import broadcast_shapes, norm_axes, norm_axis, require_dtype, same_dtype

# ---- shared helpers --------------------------------------------------------------------------


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic runs in: f16 and bf16 widen to f32, everything else stays."""
    if dtype.kind == "f" and dtype.itemsize < 4 or dtype.name == "bfloat16":
        return np.dtype(np.float32)
    return dtype


def widen(*arrays: np.ndarray | None) -> list[np.ndarray | None]:
    """Arrays in their compute dtype (see compute_dtype); None passes through."""
    return [None if a is None else a.astype(compute_dtype(a.dtype), copy=False) for a in arrays]


def fmt(shape: Shape | None) -> str:
    """A shape as printed in the IR, for messages: [batch,3,224,224]."""
    return "[*]" if shape is None else "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def check_dim(a: Dim, b: Dim, message: str) -> None:
    """TypeRuleError(message) when two dims are provably different."""
    if not dims.assume_equal(a, b):
        raise TypeRuleError(message)


def known(a: Dim, b: Dim) -> Dim:
    """Of two dims that must be equal, the better known one."""
    if isinstance(a, int) or b is None:
        return a
    return b


# ---- matrix products -------------------------------------------------------------------------

_MATMUL_DTYPES = (DType.F16, DType.BF16, DType.F32, DType.F64, DType.I32, DType.I64, DType.U32, DType.U64)


def _matmul_type(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.type(0), ctx.type(1)
    dtype = same_dtype(ctx, [0, 1])
    require_dtype(a, _MATMUL_DTYPES, "MatMul operands")
    if a.shape is None or b.shape is None:
        return [TensorType(dtype, None)]
    if len(a.shape) == 0 or len(b.shape) == 0:
        raise TypeRuleError(f"MatMul operands must have rank >= 1, got {fmt(a.shape)} and {fmt(b.shape)}")
    # numpy rule: a 1-D operand gets a dim of 1 (prepended for A, appended for B), dropped again after.
    sa = (1, *a.shape) if len(a.shape) == 1 else a.shape
    sb = (*b.shape, 1) if len(b.shape) == 1 else b.shape
    check_dim(sa[-1], sb[-2], f"MatMul inner dims differ: A is {fmt(a.shape)}, B is {fmt(b.shape)}")
    try:
        batch = broadcast_shapes(sa[:-2], sb[:-2])
    except TypeRuleError:
        raise TypeRuleError(f"MatMul batch dims do not broadcast: A is {fmt(a.shape)}, B is {fmt(b.shape)}") from None
    assert batch is not None
    out = list(batch) + ([sa[-2]] if len(a.shape) > 1 else []) + ([sb[-1]] if len(b.shape) > 1 else [])
    return [TensorType(dtype, tuple(out))]


@defop("matmul", onnx="MatMul", since=(1, 9, 13), inputs=["A", "B"], infer=_matmul_type)
def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.matmul: batch dims broadcast; a 1-D operand acts as a row (A) or column (B) vector."""
    wa, wb = widen(a, b)
    return np.asarray(np.matmul(wa, wb)).astype(a.dtype, copy=False)


def _gemm_type(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.type(0), ctx.type(1)
    dtype = same_dtype(ctx, [0, 1, 2])
    require_dtype(a, _MATMUL_DTYPES, "Gemm operands")
    if a.shape is not None and len(a.shape) != 2 or b.shape is not None and len(b.shape) != 2:
        raise TypeRuleError(f"Gemm takes 2-D A and B, got {fmt(a.shape)} and {fmt(b.shape)}")
    sa = a.shape or (None, None)
    sb = b.shape or (None, None)
    m, ka = (sa[1], sa[0]) if ctx.attrs["transA"] else sa
    kb, n = (sb[1], sb[0]) if ctx.attrs["transB"] else sb
    check_dim(ka, kb, f"Gemm inner dims differ: A is {fmt(a.shape)}, B is {fmt(b.shape)} "
                      f"(transA={ctx.attrs['transA']}, transB={ctx.attrs['transB']})")
    if ctx.has(2) and ctx.type(2).shape is not None:
        c = ctx.type(2).shape
        # C broadcasts to [M, N] in one direction only.
        ok = len(c) <= 2 and all(d == 1 or dims.assume_equal(d, t) for d, t in zip(c[::-1], (n, m)))
        if not ok:
            raise TypeRuleError(f"Gemm bias C {fmt(c)} does not broadcast to [M,N] = {fmt((m, n))}")
    return [TensorType(dtype, (m, n))]


@defop("gemm", onnx="Gemm", since=(7, 9, 11, 13), inputs=["A", "B", "C?"],
       attrs={"alpha": Float(1.0), "beta": Float(1.0), "transA": Int(0), "transB": Int(0)}, infer=_gemm_type)
def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float, beta: float,
         transA: int, transB: int) -> np.ndarray:
    """alpha * A' @ B' + beta * C, where A' and B' are optionally transposed and C broadcasts to [M, N]."""
    wa, wb, wc = widen(a, b, c)
    y = np.matmul(wa.T if transA else wa, wb.T if transB else wb)
    if alpha != 1.0:
        y = y * alpha
    if wc is not None:
        y = y + (wc * beta if beta != 1.0 else wc)
    return y.astype(a.dtype, copy=False)


# ---- einsum ------------------------------------------------------------------------------------


def _einsum_terms(equation: str, n_inputs: int) -> tuple[list[str], str]:
    """The input terms and the output term of an einsum equation ("..." kept as "."), spaces removed."""
    eq = equation.replace(" ", "").replace("...", ".")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        raise TypeRuleError(f"einsum equation '{equation}' has {len(terms)} operand terms for {n_inputs} inputs")
    for t in [*terms, rhs]:
        if any(not (ch.isalpha() or ch == ".") for ch in t) or t.count(".") > 1:
            raise TypeRuleError(f"einsum equation '{equation}' is malformed")
    if not arrow:  # implicit output: ellipsis, then the labels used once, alphabetically
        letters = "".join(terms).replace(".", "")
        rhs = ("." if "." in lhs else "") + "".join(sorted(ch for ch in set(letters) if letters.count(ch) == 1))
    return terms, rhs


def _einsum_type(ctx: InferContext) -> list[TensorType]:
    n = len(ctx.input_types)
    dtype = same_dtype(ctx, list(range(n)))
    require_dtype(ctx.type(0), "numeric", "Einsum operands")
    terms, rhs = _einsum_terms(ctx.attrs["equation"], n)
    sizes: dict[str, Dim] = {}
    ellipses: list[Shape] = []
    for i, term in enumerate(terms):
        shape = ctx.type(i).shape
        if shape is None:
            return [TensorType(dtype, None)]
        letters = term.replace(".", "")
        if len(letters) > len(shape) or "." not in term and len(letters) != len(shape):
            raise TypeRuleError(f"einsum term '{term}' does not fit operand {i} of shape {fmt(shape)}")
        k = term.find(".")
        n_ell = len(shape) - len(letters)
        if k >= 0:
            ellipses.append(shape[k:k + n_ell])
        own = shape[:k] + shape[k + n_ell:] if k >= 0 else shape
        for ch, d in zip(letters, own):
            if ch in sizes:
                check_dim(sizes[ch], d, f"einsum label '{ch}' has sizes {sizes[ch]} and {d} "
                                        f"(operand {i} of shape {fmt(shape)})")
                sizes[ch] = known(sizes[ch], d)
            else:
                sizes[ch] = d
    ell = broadcast_shapes(*ellipses) if ellipses else ()
    out: list[Dim] = []
    for ch in rhs:
        if ch == ".":
            out.extend(ell or ())
        elif ch not in sizes:
            raise TypeRuleError(f"einsum output label '{ch}' appears in no operand")
        else:
            out.append(sizes[ch])
    return [TensorType(dtype, tuple(out))]


@defop("einsum", onnx="Einsum", since=(12, 28), inputs=["Inputs*"], outputs=["Output"],
       attrs={"equation": Str()}, infer=_einsum_type)
def einsum(*inputs: np.ndarray, equation: str) -> np.ndarray:
    """numpy.einsum of the operands (ellipsis broadcasting; implicit output in alphabetical order)."""
    dtype = inputs[0].dtype
    return np.asarray(np.einsum(equation, *widen(*inputs), optimize=True)).astype(dtype, copy=False)


# ---- normalizations over trailing axes --------------------------------------------------------


def _float_type_of(code: int, what: str) -> DType:
    dtype = DType.from_onnx(code)
    if dtype is None or not dtype.is_float:
        raise TypeRuleError(f"{what} {code} is not a float element type")
    return dtype


def _layer_norm_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    require_dtype(x, "float", "LayerNormalization input")
    stash = _float_type_of(ctx.attrs["stash_type"], "stash_type")
    if x.shape is None:
        return [x] + [TensorType(stash, None)] * (ctx.num_outputs - 1)
    axis = norm_axis(ctx.attrs["axis"], len(x.shape))
    for i in (1, 2):
        if ctx.has(i):
            try:
                broadcast_shapes(ctx.type(i).shape, x.shape)
            except TypeRuleError:
                raise TypeRuleError(f"LayerNormalization operand {i} of shape {fmt(ctx.type(i).shape)} does not "
                                    f"broadcast to X {fmt(x.shape)}") from None
    reduced = tuple(x.shape[:axis]) + (1,) * (len(x.shape) - axis)
    return [x] + [TensorType(stash, reduced)] * (ctx.num_outputs - 1)


@defop("layer_normalization", onnx="LayerNormalization", since=(17,), inputs=["X", "Scale", "B?"],
       outputs=["Y", "Mean?", "InvStdDev?"], attrs={"axis": Int(-1), "epsilon": Float(1e-5), "stash_type": Int(1)},
       infer=_layer_norm_type)
def layer_normalization(x: np.ndarray, scale: np.ndarray, b: np.ndarray | None = None, *, axis: int, epsilon: float,
                        stash_type: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalize over axes [axis, rank) in the stash type: (x - mean) / sqrt(var + epsilon); then
    Y = normalized (in X's type) * Scale + B. Mean and 1/stddev are the optional extra results."""
    stash = DType.from_onnx(stash_type).np_dtype  # type: ignore[union-attr]
    axes = tuple(range(axis % x.ndim if x.ndim else 0, x.ndim))
    xs = x.astype(stash)
    mean = xs.mean(axis=axes, keepdims=True)
    diff = xs - mean
    inv_std = (1 / np.sqrt((diff * diff).mean(axis=axes, keepdims=True) + stash.type(epsilon))).astype(stash)
    normalized = (diff * inv_std).astype(x.dtype)
    wn, ws, wb = widen(normalized, scale, b)
    y = wn * ws
    if wb is not None:
        y = y + wb
    return y.astype(x.dtype, copy=False), mean.astype(stash, copy=False), inv_std


def _rms_norm_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    require_dtype(x, "float", "RMSNormalization input")
    _float_type_of(ctx.attrs["stash_type"], "stash_type")
    if x.shape is not None:
        norm_axis(ctx.attrs["axis"], len(x.shape))
    return [x]


@defop("rms_normalization", onnx="RMSNormalization", since=(23,), inputs=["X", "scale"],
       attrs={"axis": Int(-1), "epsilon": Float(1e-5), "stash_type": Int(1)}, infer=_rms_norm_type)
def rms_normalization(x: np.ndarray, scale: np.ndarray, *, axis: int, epsilon: float, stash_type: int) -> np.ndarray:
    """x / sqrt(mean(x^2 over axes [axis, rank)) + epsilon) * scale, computed in the stash type."""
    stash = DType.from_onnx(stash_type).np_dtype  # type: ignore[union-attr]
    axes = tuple(range(axis % x.ndim if x.ndim else 0, x.ndim))
    xs = x.astype(stash)
    inv_rms = 1 / np.sqrt((xs * xs).mean(axis=axes, keepdims=True) + stash.type(epsilon))
    normalized = (xs * inv_rms).astype(x.dtype)
    wn, ws = widen(normalized, scale)
    return (wn * ws).astype(x.dtype, copy=False)


def _lp_norm_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    require_dtype(x, "float", "LpNormalization input")
    if ctx.attrs["p"] not in (1, 2):
        raise TypeRuleError(f"LpNormalization p must be 1 or 2, got {ctx.attrs['p']}")
    if x.shape is not None:
        norm_axis(ctx.attrs["axis"], len(x.shape))
    return [x]


@defop("lp_normalization", onnx="LpNormalization", since=(1, 22), inputs=["input"], outputs=["output"],
       attrs={"axis": Int(-1), "p": Int(2)}, infer=_lp_norm_type)
def lp_normalization(x: np.ndarray, *, axis: int, p: int) -> np.ndarray:
    """x / ||x||_p along `axis` (p is 1 or 2); where the norm is 0 the result is 0."""
    (wx,) = widen(x)
    norm = np.abs(wx).sum(axis=axis, keepdims=True) if p == 1 else np.sqrt((wx * wx).sum(axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(norm == 0, 0, wx / norm)
    return y.astype(x.dtype, copy=False)


def _mvn_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    require_dtype(x, "float", "MeanVarianceNormalization input")
    if x.shape is not None:
        norm_axes(ctx.attrs["axes"], len(x.shape))
    return [x]


@defop("mean_variance_normalization", onnx="MeanVarianceNormalization", since=(9, 13), inputs=["X"],
       attrs={"axes": Ints([0, 2, 3])}, infer=_mvn_type)
def mean_variance_normalization(x: np.ndarray, *, axes: list[int]) -> np.ndarray:
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over `axes`, as ONNX's function body defines it."""
    (wx,) = widen(x)
    ax = tuple(a % x.ndim for a in axes)
    mean = wx.mean(axis=ax, keepdims=True)
    std = np.sqrt((wx * wx).mean(axis=ax, keepdims=True) - mean * mean)
    return ((wx - mean) / (std + wx.dtype.type(1e-9))).astype(x.dtype, copy=False)


# ---- normalizations over channels --------------------------------------------------------------


def _per_channel_type(op: str, first_param: int, n_params: int, out_dtypes_from: list[int] | None = None):
    """Rule of ops normalizing X [N, C, ...] with per-channel parameters (each of shape [C])."""

    def rule(ctx: InferContext) -> list[TensorType]:
        x = ctx.type(0)
        require_dtype(x, "float", f"{op} input")
        if x.shape is not None and len(x.shape) < 2:
            raise TypeRuleError(f"{op} input must have rank >= 2 ([N, C, ...]), got {fmt(x.shape)}")
        c = x.shape[1] if x.shape is not None else None
        for i in range(first_param, first_param + n_params):
            t = ctx.type(i)
            require_dtype(t, "float", f"{op} operand {i}")
            if t.shape is not None:
                if len(t.shape) != 1:
                    raise TypeRuleError(f"{op} operand {i} must be 1-D [C], got {fmt(t.shape)} for X {fmt(x.shape)}")
                check_dim(t.shape[0], c, f"{op} operand {i} of shape {fmt(t.shape)} does not match the channels "
                                         f"of X {fmt(x.shape)}")
        extra = [ctx.type(i) for i in (out_dtypes_from or [])]
        return ([x] + [TensorType(t.dtype, (c,)) for t in extra])[: ctx.num_outputs]

    return rule


def _channel_view(v: np.ndarray, rank: int) -> np.ndarray:
    """A [C] vector shaped [C, 1, ...] to broadcast against [N, C, D1, ...]."""
    return v.reshape((-1,) + (1,) * (rank - 2))


@defop("instance_normalization", onnx="InstanceNormalization", since=(6, 22), inputs=["input", "scale", "B"],
       outputs=["output"], attrs={"epsilon": Float(1e-5)}, infer=_per_channel_type("InstanceNormalization", 1, 2))
def instance_normalization(x: np.ndarray, scale: np.ndarray, b: np.ndarray, *, epsilon: float) -> np.ndarray:
    """Per sample and channel over the spatial dims: scale * (x - mean) / sqrt(var + epsilon) + B."""
    wx, ws, wb = widen(x, scale, b)
    axes = tuple(range(2, x.ndim))
    mean = wx.mean(axis=axes, keepdims=True)
    var = wx.var(axis=axes, keepdims=True)
    y = _channel_view(ws, x.ndim) * (wx - mean) / np.sqrt(var + wx.dtype.type(epsilon)) + _channel_view(wb, x.ndim)
    return y.astype(x.dtype, copy=False)


def _group_norm_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    g = ctx.attrs["num_groups"]
    c = x.shape[1] if x.shape is not None and len(x.shape) > 1 else None
    if g <= 0 or isinstance(c, int) and c % g:
        raise TypeRuleError(f"GroupNormalization: the {c} channels of X {fmt(x.shape)} do not split into {g} groups")
    return _per_channel_type("GroupNormalization", 1, 2)(ctx)


@defop("group_normalization", onnx="GroupNormalization", since=(21,), inputs=["X", "scale", "bias"],
       attrs={"epsilon": Float(1e-5), "num_groups": Int(), "stash_type": Int(1)}, infer=_group_norm_type)
def group_normalization(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, *, epsilon: float, num_groups: int,
                        stash_type: int) -> np.ndarray:
    """Normalize each group of C / num_groups channels (with the spatial dims) in the stash type, then
    scale and shift per channel."""
    stash = DType.from_onnx(stash_type).np_dtype  # type: ignore[union-attr]
    n = x.shape[0]
    grouped = x.astype(stash).reshape(n, num_groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = grouped.var(axis=2, keepdims=True)
    normalized = ((grouped - mean) / np.sqrt(var + stash.type(epsilon))).reshape(x.shape).astype(x.dtype)
    wn, ws, wb = widen(normalized, scale, bias)
    return (wn * _channel_view(ws, x.ndim) + _channel_view(wb, x.ndim)).astype(x.dtype, copy=False)


@defop("batch_normalization", onnx="BatchNormalization", since=(14, 15),
       inputs=["X", "scale", "B", "input_mean", "input_var"], outputs=["Y", "running_mean?", "running_var?"],
       attrs={"epsilon": Float(1e-5), "momentum": Float(0.9), "training_mode": Int(0)},
       infer=_per_channel_type("BatchNormalization", 1, 4, out_dtypes_from=[3, 4]))
def batch_normalization(x: np.ndarray, scale: np.ndarray, b: np.ndarray, mean: np.ndarray, var: np.ndarray, *,
                        epsilon: float, momentum: float, training_mode: int) -> tuple[np.ndarray, ...]:
    """Inference: scale * (x - mean) / sqrt(var + epsilon) + B per channel. With training_mode the
    batch's own mean and (biased) variance are used instead, and the running statistics are
    updated as running = input * momentum + batch * (1 - momentum)."""
    wx, ws, wb, wm, wv = widen(x, scale, b, mean, var)
    if training_mode:
        axes = (0, *range(2, x.ndim))
        batch_mean, batch_var = wx.mean(axis=axes), wx.var(axis=axes)
        running_mean = (wm * momentum + batch_mean * (1 - momentum)).astype(mean.dtype)
        running_var = (wv * momentum + batch_var * (1 - momentum)).astype(var.dtype)
        wm, wv = batch_mean, batch_var
    else:
        running_mean, running_var = mean, var
    r = x.ndim
    y = _channel_view(ws, r) * (wx - _channel_view(wm, r)) / np.sqrt(_channel_view(wv, r) + epsilon) + _channel_view(wb, r)
    return y.astype(x.dtype, copy=False), running_mean, running_var


# ---- dropout -----------------------------------------------------------------------------------


def _dropout_type(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if ctx.has(1) and ctx.type(1).shape not in (None, ()):
        raise TypeRuleError(f"Dropout ratio must be a scalar, got {fmt(ctx.type(1).shape)}")
    if ctx.has(2) and ctx.type(2).dtype is not DType.BOOL:
        raise TypeRuleError(f"Dropout training_mode must be bool, got {ctx.type(2).dtype}")
    return [x, TensorType(ctx.attrs["mask_dtype"], x.shape)][: ctx.num_outputs]


# mask_dtype is tritc's own attribute: bool since Dropout-10; Dropout-7's mask has the data's dtype.
@defop("dropout", onnx="Dropout", since=(12, 13, 22), inputs=["data", "ratio?", "training_mode?"],
       outputs=["output", "mask?"], attrs={"seed": Int(None), "mask_dtype": Type(DType.BOOL)}, infer=_dropout_type)
def dropout(data: np.ndarray, ratio: np.ndarray | None = None, training_mode: np.ndarray | None = None, *,
            seed: int | None, mask_dtype: DType) -> tuple[np.ndarray, np.ndarray]:
    """Inference: the data unchanged and a mask of all ones (True). Training mode with a ratio
    above 0 draws a random mask, which tritc does not model (its results must be reproducible)."""
    r = 0.5 if ratio is None else float(ratio)
    if training_mode is not None and bool(training_mode) and r > 0:
        raise UnsupportedError(f"Dropout in training mode (ratio {r}) is random; tritc runs inference graphs only")
    return data, np.ones(data.shape, dtype=mask_dtype.np_dtype)

"""QONNX quantisers (`Quant`, `BipolarQuant`): how FINN / Brevitas models mark quantised tensors.

They live in custom domains (qonnx.custom_op.general, and the older finn.custom_op.general and
onnx.brevitas), carry values as float32 and are not versioned (opset version 1). fold-ternary
recognises a 2-bit narrow-range `quant` or a `bipolar_quant` of a constant weight as ternary.
"""

from __future__ import annotations

import numpy as np

from ..types import DType, TensorType
from . import BY_ONNX, InferContext, Int, Str, TypeRuleError, defop
from .rules import broadcast_shapes

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")

ROUNDING = {
    "ROUND": np.round,  # half to even
    "HALF_EVEN": np.round,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "DOWN": np.trunc,
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5),
}


def int_range(signed: bool, narrow: bool, bits: int) -> tuple[int, int]:
    """The integer range of a `bits`-wide quantiser (narrow drops the most negative code)."""
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - (1 if narrow else 0)


def _infer_quant(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if x.dtype is not DType.F32:
        raise TypeRuleError(f"QONNX quantisers take f32, got {x.dtype}")
    shapes = [ctx.type(i).shape for i in range(len(ctx.input_types)) if ctx.has(i) and i != 3]
    return [TensorType(DType.F32, broadcast_shapes(*shapes))]


@defop("quant", onnx="Quant", since=(1,), domain=QONNX_DOMAINS[0], inputs=["X", "scale", "zeropt", "bitwidth"],
       attrs={"signed": Int(1), "narrow": Int(0), "rounding_mode": Str("ROUND")}, infer=_infer_quant)
def quant(x: np.ndarray, scale: np.ndarray, zeropt: np.ndarray, bitwidth: np.ndarray, *,
          signed: int, narrow: int, rounding_mode: str) -> np.ndarray:
    """y = scale * (round(clip(x / scale + zeropt, lo, hi)) - zeropt), as QONNX defines it (clip, then round)."""
    bits = float(np.asarray(bitwidth).reshape(-1)[0]) if np.asarray(bitwidth).size else 0.0
    if bits != int(bits) or bits < 1:
        raise ValueError(f"bitwidth must be a positive integer, got {bits}")
    mode = rounding_mode.upper()
    if mode not in ROUNDING:
        raise ValueError(f"unknown rounding_mode '{rounding_mode}'")
    lo, hi = int_range(bool(signed), bool(narrow), int(bits))
    y = x / scale + zeropt
    y = np.clip(y, lo, hi)
    y = ROUNDING[mode](y)
    return ((y - zeropt) * scale).astype(np.float32)


@defop("bipolar_quant", onnx="BipolarQuant", since=(1,), domain=QONNX_DOMAINS[0], inputs=["X", "scale"],
       infer=_infer_quant)
def bipolar_quant(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """y = scale * (+1 where x >= 0 else -1): binary weights, a special case of ternary."""
    return (np.where(x >= 0, np.float32(1), np.float32(-1)) * scale).astype(np.float32)


for _domain in QONNX_DOMAINS[1:]:
    BY_ONNX[(_domain, "Quant")] = BY_ONNX[(QONNX_DOMAINS[0], "Quant")]
    BY_ONNX[(_domain, "BipolarQuant")] = BY_ONNX[(QONNX_DOMAINS[0], "BipolarQuant")]

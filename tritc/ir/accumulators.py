"""The int32 accumulator bound of the integer kernels: the largest K for which no sum of K products of operands in
their ranges (plus a constant bias) can leave int32. docs/INTEGER.md derives the bound of each kernel; the codegens
call `check_int32_sum` for every integer node and refuse one past its bound at compile time (ResourceLimitError
naming the node, K and the bound), so that compiled code never wraps where the exact sum would differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ResourceLimitError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Span:
    """The values an operand (less its zero point) may take: [lo, hi]."""

    lo: int
    hi: int

    @staticmethod
    def of(values: tuple[int, int], zero: tuple[int, int] = (0, 0)) -> Span:
        """v - z for v in [values], z in [zero]."""
        return Span(int(values[0]) - int(zero[1]), int(values[1]) - int(zero[0]))


def value_range(dtype: np.dtype, const: np.ndarray | None = None) -> tuple[int, int]:
    """The range of an integer operand: its constant's min and max when known, else its dtype's range."""
    if const is not None and const.size:
        return int(const.min()), int(const.max())
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def product_range(a: Span, b: Span) -> tuple[int, int]:
    """The least and greatest a * b for a, b in their spans (one of the four corners)."""
    corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    return min(corners), max(corners)


def int32_k_bound(products: tuple[int, int], bias: tuple[int, int] = (0, 0)) -> int:
    """The largest K with K * product + bias inside int32 for every product and bias in their ranges (every term of
    a sum can take its extreme at once, so this bound is reached); -1 when not even K = 0 fits (the bias alone)."""
    lo, hi = products
    if bias[0] < INT32_MIN or bias[1] > INT32_MAX:
        return -1
    bounds = []
    if hi > 0:  # K * hi + bias_hi <= INT32_MAX
        bounds.append((INT32_MAX - bias[1]) // hi)
    if lo < 0:  # K * lo + bias_lo >= INT32_MIN
        bounds.append((bias[0] - INT32_MIN) // -lo)
    return min(bounds) if bounds else 2**63 - 1


def check_int32_sum(where: str, k: int, products: tuple[int, int], bias: tuple[int, int] = (0, 0),
                    what: str = "products") -> int:
    """ResourceLimitError naming `where` (the node), K and the bound when a sum of `k` terms in `products` (plus a
    bias in `bias`) can leave int32; else the bound. docs/INTEGER.md."""
    bound = int32_k_bound(products, bias)
    with_bias = f" plus a bias in [{bias[0]}, {bias[1]}]" if bias != (0, 0) else ""
    refuse_past(where, k, bound, f"{what} in [{products[0]}, {products[1]}]{with_bias}")
    return bound


# A ternary layer with int8 activations: q in [-128, 127] (act_max may be 128), trits in [-1, 1].
TERNARY_INT8_PRODUCTS = (-128, 128)


def refuse_past(where: str, k: int, bound: int, what: str) -> None:
    """ResourceLimitError naming `where`, K and the bound when k > bound."""
    if k > bound:
        raise ResourceLimitError(f"{where}: K = {k} {what} can leave the int32 accumulator; the proven bound is "
                                 f"K <= {bound} (docs/INTEGER.md)")

"""Resource budgets of the ONNX frontend: an untrusted model hits one of these with a clear error, not a crash."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Budgets in bytes and counts; each breach raises ResourceLimitError naming the limit and the value."""

    max_model_bytes: int = 2**31 - 1  # protobuf's own limit for one serialized message
    max_nodes: int = 1_000_000
    max_tensor_bytes: int = 16 * 2**30
    max_total_weight_bytes: int = 64 * 2**30
    max_rank: int = 32


DEFAULT_LIMITS = Limits()

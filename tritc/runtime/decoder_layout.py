"""How to drive a decoder with a KV cache: which inputs take the tokens, mask, positions and past keys/values, and
which output feeds each past input back. Read from a model's input and output signatures (and its IR, if any).

    input_ids, attention_mask, position_ids, cache_position, past_key_values.N.key|value -> logits, present.N.key|value

docs/GENERATE.md lists the layouts: optimum / transformers names, torch.onnx's dynamo names, GPT-2's stacked
`past_N`, and the native Attention op's past_key / past_value (paired through the graph when names say nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import dims as dimlib
from ..ir.graph import Graph, Value
from ..ir.ops import OPS
from ..ir.types import TensorType

Dim = int | str | None

TOKENS = "input_ids"
MASK = "attention_mask"
POSITIONS = "position_ids"
CACHE_POSITION = "cache_position"
LOGITS = "logits"
KNOWN_INPUTS = (TOKENS, MASK, POSITIONS, CACHE_POSITION)

# A cache input and its output share what follows these prefixes: past_key_values.0.key ~ present.0.key,
# past_key_values_key_cache_0 ~ present_key_cache_0, past_0 ~ present_0, past_key_0 ~ present_key_0.
_PAST = re.compile(r"past(?:_key_values)?(.*)", re.IGNORECASE)
_PRESENT = re.compile(r"present(?:_key_values)?(.*)", re.IGNORECASE)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(bfloat16)": None, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class Port:
    """One model input or output: name, numpy dtype (None if numpy has none) and shape (None if unknown)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class CacheSlot:
    """A past input fed back from a present output; `shape` has the cache's length at `seq_axis` (None there)."""

    input: str
    output: str
    dtype: np.dtype
    shape: tuple[int | None, ...]
    seq_axis: int

    def shape_for(self, length: int) -> tuple[int, ...]:
        return tuple(length if i == self.seq_axis else int(d) for i, d in enumerate(self.shape))  # type: ignore[arg-type]


@dataclass(frozen=True)
class DecoderLayout:
    """The feeds and fetches of one decoding step."""

    tokens: Port
    logits: Port
    slots: tuple[CacheSlot, ...]
    mask: Port | None = None
    positions: Port | None = None
    cache_position: Port | None = None
    vocab: int | None = None  # logits' last dim, else the rows of the token embedding
    positions_limit: int | None = None  # rows of a position table the positions index: the model's maximum context
    positions_table: str | None = None  # its name, for messages


# ---- signatures --------------------------------------------------------------------------------------------


def port_of(spec: Any) -> Port:
    """A Port from a tritc IOSpec / Value (TensorType) or an onnxruntime NodeArg ('tensor(float)', shape list)."""
    t = spec.type
    if isinstance(t, TensorType):
        return Port(spec.name, t.dtype.np_dtype, None if t.shape is None else tuple(t.shape))
    dtype = _ORT_DTYPES.get(str(t))
    shape = getattr(spec, "shape", None)
    return Port(spec.name, None if dtype is None else np.dtype(dtype),
                None if shape is None else tuple(d if isinstance(d, (int, str)) else None for d in shape))


def graph_of(model: Any) -> Graph | None:
    g = getattr(model, "graph", None)
    return g if isinstance(g, Graph) else None


# ---- the layout ----------------------------------------------------------------------------------------------


def decoder_layout(inputs: Sequence[Port], outputs: Sequence[Port], graph: Graph | None = None) -> DecoderLayout:
    """Match the model's inputs and outputs to a decoding step; UnsupportedError naming what is missing."""
    by_in = {p.name: p for p in inputs}
    by_out = {p.name: p for p in outputs}
    names_in = ", ".join(by_in) or "none"
    if TOKENS not in by_in:
        raise UnsupportedError(f"the model has no input '{TOKENS}' to take the tokens (its inputs: {names_in})")
    tokens = by_in[TOKENS]
    if tokens.dtype not in (np.dtype(np.int64), np.dtype(np.int32)) or (tokens.shape is not None and len(tokens.shape) != 2):
        raise UnsupportedError(f"input {tokens.describe()} is not a [batch, seq] tensor of int64 or int32 token ids")
    if LOGITS not in by_out:
        raise UnsupportedError(f"the model has no output '{LOGITS}' (its outputs: {', '.join(by_out) or 'none'})")
    logits = by_out[LOGITS]
    for name in (MASK, POSITIONS, CACHE_POSITION):
        p = by_in.get(name)
        if p is not None and p.dtype not in (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.bool_), np.dtype(np.float32)):
            raise UnsupportedError(f"input {p.describe()} has a dtype tritc generate cannot fill")
    batch = tokens.shape[0] if tokens.shape is not None and isinstance(tokens.shape[0], str) else None
    candidates = [p for p in inputs if p.name not in KNOWN_INPUTS]
    for p in candidates:
        if p.dtype is None or p.dtype.kind != "f":
            raise UnsupportedError(f"input {p.describe()} is not one tritc generate knows how to feed: it takes "
                                   f"{', '.join(KNOWN_INPUTS)} and past key/value caches (float tensors fed back from "
                                   f"outputs)")
    free = [p for p in outputs if p.name != LOGITS]
    pairs = _pair(candidates, free, graph)
    slots = tuple(_slot(p, by_out[pairs[p.name]], batch) for p in candidates)
    if not slots:
        raise UnsupportedError(f"the model has no past key/value inputs: it cannot be run with a KV cache (its inputs: "
                               f"{names_in})")
    limit, table = _positions_limit(graph)
    return DecoderLayout(tokens=tokens, logits=logits, slots=slots, mask=by_in.get(MASK), positions=by_in.get(POSITIONS),
                         cache_position=by_in.get(CACHE_POSITION), vocab=_vocab(logits, graph), positions_limit=limit,
                         positions_table=table)


def _key(pattern: re.Pattern[str], name: str) -> str | None:
    m = pattern.fullmatch(name)
    return None if m is None else m.group(1).replace(".", "_").strip("_").lower()


def _pair(candidates: Sequence[Port], outputs: Sequence[Port], graph: Graph | None) -> dict[str, str]:
    """Each cache input's output: by name (past... ~ present...), else through the graph (a Concat, or an attention
    node's past_* slot and its present_* result); one output serves one input."""
    out_keys: dict[str, list[str]] = {}
    for p in outputs:
        k = _key(_PRESENT, p.name)
        if k is not None:
            out_keys.setdefault(k, []).append(p.name)
    taken: set[str] = set()
    pairs: dict[str, str] = {}
    for p in candidates:
        k = _key(_PAST, p.name)
        found = out_keys.get(k, []) if k is not None else []
        if len(found) != 1 and graph is not None:
            found = _structural_match(graph, p.name, {o.name for o in outputs})
        if len(found) == 1 and found[0] not in taken:
            pairs[p.name] = found[0]
            taken.add(found[0])
    missing = [p.name for p in candidates if p.name not in pairs]
    if missing:
        left = [o.name for o in outputs if o.name not in taken]
        raise UnsupportedError(f"input {missing[0]} has no matching output"
                               f"{f' (nor do {len(missing) - 1} more inputs: ' + ', '.join(missing[1:]) + ')' if len(missing) > 1 else ''}"
                               f": tritc generate feeds each past key/value input from the present output of the same "
                               f"name (past_key_values.N.key from present.N.key) or from the node that extends it; "
                               f"outputs left: {', '.join(left) or 'none'}")
    return pairs


def _structural_match(graph: Graph, name: str, outputs: set[str]) -> list[str]:
    if not graph.has_value(name):
        return []
    v: Value = graph.value(name)
    graph_outputs = {o.name for o in graph.outputs} & outputs
    found: list[str] = []
    for node, slot in v.uses:
        results = [o for o in node.outputs if o.name in graph_outputs]
        if node.op == "concat":
            found += [o.name for o in results]
            continue
        opdef = OPS.get(node.op)
        if opdef is None or slot >= len(opdef.inputs):
            continue
        want = _key(_PAST, opdef.inputs[slot].name)
        if want is None:
            continue
        for i, out in enumerate(node.outputs):
            if i < len(opdef.outputs) and _key(_PRESENT, opdef.outputs[i].name) == want and out.name in graph_outputs:
                found.append(out.name)
    return found


def _same(a: Dim, b: Dim) -> bool:
    return a is not None and b is not None and dimlib.equal(a, b) is True


def _slot(past: Port, present: Port, batch: str | None) -> CacheSlot:
    where = f"input {past.describe()} and its output {present.describe()}"
    if past.shape is None:
        raise UnsupportedError(f"input {past.describe()} has no known rank: tritc generate cannot size the cache")
    if past.dtype != present.dtype or (present.shape is not None and len(present.shape) != len(past.shape)):
        raise UnsupportedError(f"{where} differ in dtype or rank")
    symbolic = [i for i, d in enumerate(past.shape) if not isinstance(d, int)]
    batch_axes = [i for i in symbolic if batch is not None and past.shape[i] == batch]
    if not batch_axes and len(symbolic) >= 2 and symbolic[0] == 0:
        batch_axes = [0]  # an unnamed leading dim: the batch
    rest = [i for i in symbolic if i not in batch_axes]
    differ = [] if present.shape is None else [i for i in range(len(past.shape)) if not _same(past.shape[i], present.shape[i])]
    if len(differ) == 1 and differ[0] not in batch_axes:
        seq = differ[0]
    elif len(rest) == 1:
        seq = rest[0]
    else:
        raise UnsupportedError(f"{where}: cannot tell which dim is the cache's length (the dims that differ are "
                               f"{differ or 'none'}; symbolic dims other than the batch: {rest or 'none'})")
    others = [i for i in rest if i != seq]
    if others:
        raise UnsupportedError(f"{where}: dim {others[0]} ('{past.shape[others[0]]}') is neither the batch nor the "
                               f"cache's length, so tritc generate cannot size it")
    if isinstance(past.shape[seq], int):
        raise UnsupportedError(f"{where}: the cache length (dim {seq}) is fixed at {past.shape[seq]}; a static cache "
                               f"is not supported")
    shape = tuple(None if i == seq else (1 if i in batch_axes else d) for i, d in enumerate(past.shape))
    return CacheSlot(past.name, present.name, past.dtype, shape, seq)  # type: ignore[arg-type]


def _vocab(logits: Port, graph: Graph | None) -> int | None:
    if logits.shape and isinstance(logits.shape[-1], int):
        return logits.shape[-1]
    rows, _ = _gathered_rows(graph, TOKENS)
    return rows


def _positions_limit(graph: Graph | None) -> tuple[int | None, str | None]:
    return _gathered_rows(graph, POSITIONS)


def _gathered_rows(graph: Graph | None, input_name: str) -> tuple[int | None, str | None]:
    """Rows of a table that a `gather` (axis 0) indexes with this graph input: the token embedding, a position
    table."""
    if graph is None or not graph.has_value(input_name):
        return None, None
    for node, slot in graph.value(input_name).uses:
        if node.op == "gather" and slot == 1 and node.attrs.get("axis", 0) == 0:
            table = node.inputs[0]
            shape = table.type.shape if table is not None else None
            if shape and isinstance(shape[0], int) and table.producer is not None and table.producer.op in ("weight", "constant"):
                return shape[0], table.name
    return None, None


__all__ = ["CacheSlot", "DecoderLayout", "Port", "decoder_layout", "graph_of", "port_of"]

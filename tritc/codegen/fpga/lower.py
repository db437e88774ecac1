"""The lowering of IR nodes with concrete shapes to an instruction stream of the accelerator (docs/FPGA.md).

    image = build_weight_image(graph, config)            # packed ternary weights, scales, float constants
    dram = DramMap(base, config.dram_bytes); dram.place(...)   # the region's inputs (the caller's)
    instrs = lower_nodes(region_nodes, graph, config, dram, image, sizes=bindings)   # ends in FINISH, tokens balanced

Each node reads its inputs from DRAM and writes its results to DRAM (placed here, in `dram`, under their value
names); within a node everything is tiled to the buffers, double-buffered, and the tokens between the engines
come from the hazards of a sequential program (lower_stream.py). The op lowerings: lower_gemm.py (ternary
matmul), lower_vector.py (elementwise, reductions, softmax, norms), lower_move.py (reshape, transpose, slice,
concat, split, expand), lower_attention.py (activation matmuls, fused attention, rotary embedding).
`device_support` says, per node, why it cannot run on the device (None when it can): the partition's question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...ir.graph import Graph, Node
from ...ir.ternary import TernaryWeight
from ...ir.types import DType
from . import lower_attention, lower_conv, lower_gemm, lower_matmul, lower_move, lower_rows, lower_vector  # noqa: F401 - register their lowerings
from .config import FpgaConfig
from .isa import Instr
from .lower_ctx import LOWERINGS, LowerCtx, LoweringError
from .lower_image import DramMap, ImageWriter, Placement, WeightEntry, WeightImage, dense_entry, ternary_entry

__all__ = ["DramMap", "LoweringError", "Placement", "WeightEntry", "WeightImage", "bind_size_inputs",
           "build_weight_image", "device_support", "lower_nodes"]

DATA_OPS = ("weight", "constant")
DEVICE_DTYPES = (DType.F32,)          # what device values are (booleans only as masks / conditions)
HOST_OPS = {
    "gather": "gather: the embedding lookup runs on the host",
    "gather_nd": "gather_nd: index arithmetic runs on the host",
    "shape": "int64 shape arithmetic",
    "range": "int64 shape arithmetic",
}


def build_weight_image(graph: Graph, config: FpgaConfig, base: int = 0) -> WeightImage:
    """Every ternary weight (packed 64-trit words in the ISA v3 weight layout, and its fp32 scales) and every float
    or boolean constant that a node with an FPGA lowering reads, as one DRAM image to be written at `base`; entries
    by value name. Constants only host ops read (an embedding table) stay out."""
    out = ImageWriter(base)
    entries: dict[str, WeightEntry] = {}
    by_data: dict[int, WeightEntry] = {}
    for node in graph:
        if node.op not in DATA_OPS:
            continue
        v = node.output
        if not any(u.op in LOWERINGS for u in v.users):
            continue
        data = graph.const_value(v)
        if data is None:
            continue
        if id(data) in by_data:
            entries[v.name] = by_data[id(data)]
            continue
        if isinstance(data, TernaryWeight):
            e = ternary_entry(v.name, data, config, out)
        elif v.type.dtype in (DType.F32, DType.BOOL) and isinstance(data, np.ndarray) and data.size > 1:
            e = dense_entry(v.name, data, v.type.dtype, out)
        else:
            continue  # one-element constants are immediates
        entries[v.name] = by_data[id(data)] = e
    return out.image(entries)


def bind_size_inputs(graph: Graph, sizes: Mapping[str, int]) -> list[str]:
    """In a graph being specialised for `sizes`: every use of an input that gives a bound size (Graph.value_symbols:
    the capacity form's `past_len` holds `past`) reads a constant of that value instead, so that the shape
    arithmetic on it folds (a host region's `range` gets its length) and fused_attention's past_len is known. The
    input stays (the runtime feeds it and binds the size from it); the names of the inputs bound are returned."""
    bound = []
    for v in graph.inputs:
        symbol = graph.value_symbols.get(v.name)
        if symbol is None or symbol not in sizes or not v.uses:
            continue
        value = np.full(tuple(int(d) for d in v.type.shape or ()), int(sizes[symbol]), v.type.dtype.np_dtype)
        graph.replace_all_uses(v, graph.add_constant(value, v.type, graph.fresh_name(f"{v.name}.c")))
        bound.append(v.name)
    return bound


def device_support(node: Node, graph: Graph, config: FpgaConfig, sizes: Mapping[str, int] | None = None) -> str | None:
    """None if lower_nodes can run `node` on the device with its concrete types, else a short reason. `sizes`: the
    binding the graph was specialised for; it gives the value of inputs that hold a size (the capacity form's
    past_len), without which an in-place cache is refused."""
    if node.op in DATA_OPS:
        return None
    if node.op in HOST_OPS:
        return HOST_OPS[node.op]
    if node.op not in LOWERINGS:
        return f"op {node.op} has no FPGA lowering"
    values = [v for v in (*node.inputs, *node.outputs) if v is not None]
    if not all(v.type.is_static for v in values):
        return "dims not static"
    for v in node.outputs:
        if v.type.dtype is DType.I64:
            return "int64 shape arithmetic"
        if v.type.dtype not in DEVICE_DTYPES:
            return f"{v.type.dtype} results: the vector unit computes fp32"
    check = LOWERINGS[node.op].support
    return check(node, graph, config, sizes or {}) if check is not None else None


def lower_nodes(nodes: Sequence[Node], graph: Graph, config: FpgaConfig, dram: DramMap, weights: WeightImage,
                *, double_buffer: bool = True, sizes: Mapping[str, int] | None = None) -> list[Instr]:
    """The stream of a device region: `nodes` in execution order, every type concrete, their inputs from outside
    the region already in `dram`. Every result is placed in `dram` under its value name (an in-place cache's present
    output at its past input's bytes). `sizes`: the binding the graph was specialised for (device_support). Ends in
    FINISH."""
    ctx = LowerCtx(graph, config, dram, weights, double_buffer, sizes)
    for node in nodes:
        if node.op in DATA_OPS:
            continue
        reason = device_support(node, graph, config, sizes)
        if reason is not None:
            raise LoweringError(f"{node.describe()} cannot run on the FPGA: {reason}")
        ctx.begin(node)
        LOWERINGS[node.op].lower(ctx, node)
    return ctx.s.finish()

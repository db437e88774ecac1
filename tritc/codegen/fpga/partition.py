"""Which nodes run on the accelerator and which on the host: the partition of a graph into ordered regions.

A node runs on the device when the lowering can run it (`lower.device_support` returns no reason); otherwise on
the host, through the LLVM backend, with the reason kept for `tritc dump --pipeline fpga` and the compile report.
Consecutive nodes of the same side form a region; host nodes that depend only on graph inputs and constants
(mask and position arithmetic, the embedding lookup) are moved to the front first, so that a decoder is one host
region (the embedding), one device region (every layer), and the host again only for what the device cannot do
(a float LM head, sampling outside the graph).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...ir.graph import Graph, Node, Value

DATA_OPS = ("weight", "constant")  # values, not work: placed in DRAM (device) or copied into host graphs

Support = Callable[[Node, Graph], "str | None"]


@dataclass
class Region:
    """A run of nodes on one side: inputs it reads from outside, outputs read after it (or graph outputs)."""

    kind: str                                   # "device" | "host"
    nodes: list[Node]
    reasons: dict[str, str] = field(default_factory=dict)   # host: node description -> why not on the device
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)

    def describe(self) -> str:
        ops: dict[str, int] = {}
        for n in self.nodes:
            ops[n.op] = ops.get(n.op, 0) + 1
        counts = ", ".join(f"{op} x{c}" if c > 1 else op for op, c in sorted(ops.items(), key=lambda kv: -kv[1]))
        return f"{self.kind} region: {len(self.nodes)} node{'s' * (len(self.nodes) != 1)} ({counts})"


def partition(graph: Graph, support: Support) -> list[Region]:
    """The graph's work nodes in regions, in an order that respects every dependency."""
    work = [n for n in graph if n.op not in DATA_OPS]
    reason = {id(n): support(n, graph) for n in work}
    order = _hoist_host_prologue(graph, work, reason)
    regions: list[Region] = []
    for node in order:
        kind = "host" if reason[id(node)] else "device"
        if not regions or regions[-1].kind != kind:
            regions.append(Region(kind, []))
        regions[-1].nodes.append(node)
        if reason[id(node)]:
            regions[-1].reasons[node.describe()] = reason[id(node)]  # type: ignore[assignment]
    _connect(graph, regions)
    return regions


def _hoist_host_prologue(graph: Graph, work: Sequence[Node], reason: dict[int, str | None]) -> list[Node]:
    """Host nodes whose inputs come only from graph inputs, data nodes and other such host nodes go first."""
    early: set[int] = set()
    for node in work:
        if reason[id(node)] and all(v is None or v.producer is None or v.producer.op in DATA_OPS
                                    or id(v.producer) in early for v in node.inputs):
            early.add(id(node))
    return [n for n in work if id(n) in early] + [n for n in work if id(n) not in early]


def _connect(graph: Graph, regions: list[Region]) -> None:
    where: dict[int, int] = {}   # value -> its region
    node_region: dict[int, int] = {}
    for i, r in enumerate(regions):
        for n in r.nodes:
            node_region[id(n)] = i
            for v in n.outputs:
                where[id(v)] = i
    graph_outputs = {id(v) for v in graph.outputs}
    for i, r in enumerate(regions):
        seen: set[int] = set()
        for n in r.nodes:
            for v in n.inputs:
                if v is None or id(v) in seen:
                    continue
                if v.producer is not None and v.producer.op in DATA_OPS:
                    continue
                if where.get(id(v)) != i:
                    seen.add(id(v))
                    r.inputs.append(v)
        for n in r.nodes:
            for v in n.outputs:
                used_later = any(node_region.get(id(u), i) != i for u in v.users)
                if id(v) in graph_outputs or used_later:
                    r.outputs.append(v)


def extract_subgraph(graph: Graph, region: Region, name: str) -> Graph:
    """A graph of the region's nodes: its inputs become graph inputs, the data nodes it reads are copied along
    (weights shared, not copied), its outputs are the graph's outputs. Value names are kept."""
    from ...ir.graph import Node as IRNode
    from ...ir.graph import Value as IRValue

    sub = Graph(name)
    vmap: dict[int, Value] = {}
    for v in region.inputs:
        vmap[id(v)] = sub.add_input(v.name, v.type)
    data_nodes: list[Node] = []
    for n in region.nodes:
        for v in n.inputs:
            if v is not None and id(v) not in vmap and v.producer is not None and v.producer.op in DATA_OPS \
                    and v.producer not in data_nodes:
                data_nodes.append(v.producer)
    for n in [*data_nodes, *region.nodes]:
        outs = [IRValue(v.name, v.type) for v in n.outputs]
        for old, new in zip(n.outputs, outs):
            vmap[id(old)] = new
        ins = [None if v is None else vmap[id(v)] for v in n.inputs]
        sub.append(IRNode(n.op, ins, outs, dict(n.attrs), n.name))
        if n.op == "weight":
            sub.weights[n.attrs["ref"]] = graph.weights[n.attrs["ref"]]
    sub.outputs = [vmap[id(v)] for v in region.outputs]
    return sub


def partition_comments(regions: Sequence[Region]) -> list[str]:
    """The partition as IR comments for `tritc dump --pipeline fpga`."""
    host = [r for r in regions if r.kind == "host"]
    device_nodes = sum(len(r.nodes) for r in regions if r.kind == "device")
    lines = [f"// fpga partition: {len(regions)} region(s); {device_nodes} node(s) on the device, "
             f"{sum(len(r.nodes) for r in host)} on the host"]
    for i, r in enumerate(regions, 1):
        lines.append(f"//   {i}. {r.describe()}")
        for what, why in r.reasons.items():
            lines.append(f"//      host: {what}: {why}")
    return lines

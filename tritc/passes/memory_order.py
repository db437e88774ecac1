"""schedule-memory's node order: a topological order that frees big values early (docs/MEMORY.md, "The order").

    order = memory_order(graph, sizes)   # sizes: bytes per value at the reference binding; the graph is not touched

Greedy list scheduling: of the nodes whose operands are ready, run the one that adds the fewest bytes to what is live
(its new results minus the operands it is the last reader of), the earlier node of the current order on a tie. The
result is kept only when its peak of live bytes is lower than the current order's, so the order never gets worse and
a second run changes nothing (the greedy order reproduces itself).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from ..ir.graph import Graph, Node, Value
from ..ir.memory import NO_STORAGE_OPS, VIEW_OPS

ValueBytes = Callable[[Value], int]  # bytes of a value at the reference binding (0: outside the arena)


class _Storage:
    """Which values share storage regardless of the order (views with their operand) and who reads it."""

    def __init__(self, graph: Graph, nbytes: ValueBytes):
        outputs = {id(v) for v in graph.outputs}
        self.root: dict[int, int] = {}
        self.bytes: dict[int, int] = {}
        readers: dict[int, dict[int, Node]] = {}
        for node in graph:
            for v in node.outputs:
                src = node.inputs[0] if node.op in VIEW_OPS and node.inputs and node.inputs[0] is not None else None
                if src is not None and id(v) not in outputs:
                    self.root[id(v)] = self.root.get(id(src), id(src))
                else:
                    self.root[id(v)] = id(v)
                    arena = node.op not in NO_STORAGE_OPS and id(v) not in outputs
                    self.bytes[id(v)] = nbytes(v) if arena else 0
            for r in self.roots(node.inputs):
                readers.setdefault(r, {})[id(node)] = node
        self.readers = readers
        self.readers_left = {r: len(n) for r, n in readers.items()}

    def roots(self, values: Sequence[Value | None]) -> set[int]:
        return {self.root.get(id(v), id(v)) for v in values if v is not None}

    def net(self, node: Node) -> int:
        """Bytes live after `node` minus before: its new storage, less the storage it reads last (and dead results)."""
        new = [id(v) for v in node.outputs if self.root[id(v)] == id(v)]
        grow = sum(self.bytes[r] for r in new)
        freed = sum(self.bytes.get(r, 0) for r in self.roots(node.inputs) if self.readers_left.get(r) == 1)
        dead = sum(self.bytes[r] for r in new if r not in self.readers_left)
        return grow - freed - dead

    def run(self, node: Node) -> None:
        for r in self.roots(node.inputs):
            self.readers_left[r] -= 1


def peak_bytes(graph: Graph, order: Sequence[Node], nbytes: ValueBytes) -> int:
    """The most bytes live at once when the nodes run in `order` (a node's results and operands live together)."""
    storage = _Storage(graph, nbytes)
    live = peak = 0
    for node in order:
        grow = sum(storage.bytes[id(v)] for v in node.outputs if storage.root[id(v)] == id(v))
        peak = max(peak, live + grow)
        live += storage.net(node)
        storage.run(node)
    return peak


def greedy_order(graph: Graph, nbytes: ValueBytes) -> list[Node]:
    """Data first (weights, constants, in their order), then the greedy list schedule of everything else."""
    nodes = graph.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    storage = _Storage(graph, nbytes)
    data = [n for n in nodes if n.op in NO_STORAGE_OPS and not n.inputs]
    waiting: dict[int, int] = {}  # node -> operands' producers not yet run
    consumers: dict[int, list[Node]] = {}
    done = {id(n) for n in data}
    ready: list[Node] = []
    for n in nodes:
        if id(n) in done:
            continue
        producers = {id(v.producer) for v in n.inputs if v is not None and v.producer is not None} - done
        waiting[id(n)] = len(producers)
        for p in producers:
            consumers.setdefault(p, []).append(n)
        if not producers:
            ready.append(n)
    order = list(data)
    # The ready nodes in a heap keyed (net, index). A node's net only falls, when a storage it reads gets down to its
    # last reader; that reader is then pushed again with its new key, and the entry left behind (a higher key) is
    # skipped once the node has run. The same order as taking the minimum of the ready list each time, in
    # O(n log n) rather than O(n * ready): a 10 000-wide fan-out has 10 000 ready nodes.
    heap = [(storage.net(n), index[id(n)], n) for n in ready]
    heapq.heapify(heap)
    while heap:
        _, _, best = heapq.heappop(heap)
        if id(best) in done:
            continue
        done.add(id(best))
        order.append(best)
        storage.run(best)
        for r in storage.roots(best.inputs):
            if storage.readers_left.get(r) == 1:
                for last in storage.readers[r].values():
                    if id(last) not in done and not waiting[id(last)]:
                        heapq.heappush(heap, (storage.net(last), index[id(last)], last))
        for c in consumers.get(id(best), ()):
            waiting[id(c)] -= 1
            if not waiting[id(c)]:
                heapq.heappush(heap, (storage.net(c), index[id(c)], c))
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle")  # verify() rules this out: a bug if it happens
    return order


def memory_order(graph: Graph, nbytes: ValueBytes) -> list[Node]:
    """The greedy order if it lowers the peak of live bytes, else the graph's own order."""
    current = graph.nodes
    greedy = greedy_order(graph, nbytes)
    if peak_bytes(graph, greedy, nbytes) < peak_bytes(graph, current, nbytes):
        return greedy
    return current

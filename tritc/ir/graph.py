"""The graph IR: SSA `Value`s, `Node`s that produce them, and the `Graph` that owns both.

A Value has one producer (a Node, or None for a graph input) and a use list of (node, operand
index). Nodes live in a doubly linked list kept in topological order, so inserting before or
after a node and erasing one are O(1); `Graph.nodes` returns a snapshot, so a pass may edit the
graph while it walks it. Weights are values produced by `weight` nodes whose data lives in
`Graph.weights`, keyed by name, not inside the IR.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .types import TensorType


class Value:
    """An SSA value: a name unique in its graph, a type, one producer and a list of uses."""

    __slots__ = ("name", "type", "producer", "index", "uses", "graph")

    def __init__(self, name: str, type: TensorType):
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.index = 0  # which output of the producer this is
        self.uses: list[tuple[Node, int]] = []
        self.graph: Graph | None = None

    @property
    def users(self) -> list[Node]:
        """The distinct nodes that use this value, in use order."""
        seen: dict[int, Node] = {}
        for n, _ in self.uses:
            seen.setdefault(id(n), n)
        return list(seen.values())

    @property
    def is_graph_input(self) -> bool:
        return self.producer is None

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.type})"


class Node:
    """One operation: op name, operand values (None for an omitted optional), results, attributes."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "name", "graph", "_prev", "_next")

    def __init__(self, op: str, inputs: Sequence[Value | None], outputs: Sequence[Value],
                 attrs: Mapping[str, Any] | None = None, name: str | None = None):
        self.op = op
        self.inputs: list[Value | None] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.name = name  # the source location (ONNX node name), kept for messages
        self.graph: Graph | None = None
        self._prev: Node | None = None
        self._next: Node | None = None
        for i, v in enumerate(self.outputs):
            v.producer = self
            v.index = i

    @property
    def output(self) -> Value:
        """The single result of a one-result node."""
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.describe()} has {len(self.outputs)} results, not 1")
        return self.outputs[0]

    @property
    def next(self) -> Node | None:
        return self._next

    @property
    def prev(self) -> Node | None:
        return self._prev

    def describe(self) -> str:
        """How error messages name this node: op and location, or its first result."""
        where = self.name if self.name else (f"%{self.outputs[0].name}" if self.outputs else "?")
        return f"'{where}' ({self.op})"

    def set_input(self, i: int, value: Value | None) -> None:
        """Point operand i at `value`, keeping both use lists right."""
        old = self.inputs[i]
        if old is not None:
            old.uses.remove((self, i))
        self.inputs[i] = value
        if value is not None:
            value.uses.append((self, i))

    def __repr__(self) -> str:
        ins = ", ".join("none" if v is None else f"%{v.name}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"Node({outs} = {self.op}({ins}))"


class Graph:
    """A function: inputs, nodes in topological order, outputs, and the weights they reference."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.weights: dict[str, Any] = {}
        self._values: dict[str, Value] = {}
        self._first: Node | None = None
        self._last: Node | None = None
        self._count = 0
        self._fresh: dict[str, int] = {}
        # The memory schedule (ir/memory.py) schedule-memory attached; stale once the graph changes (current_schedule)
        self.memory: Any = None
        # What the source model implies about its input symbols, found before passes rewrote the ops that imply it
        # (driver.source_constraints): relations (symbol -> the dim it equals) and assumed equalities [a, b, where]
        self.source_relations: dict[str, Any] = {}
        self.source_checks: list[list[Any]] = []
        # Inputs whose one value is the size of a symbol (input name -> symbol): the runtime binds the symbol from
        # the value as it binds others from input dims, and shape arithmetic reads the value as that symbol. The
        # capacity form of a KV cache (passes/kv_cache_in_place.py) gives `past_len` the old length `past` this way.
        self.value_symbols: dict[str, str] = {}

    # ---- values -----------------------------------------------------------------------------

    def fresh_name(self, hint: str = "v") -> str:
        """A value name not yet used in this graph, derived from `hint`."""
        hint = hint or "v"
        if hint not in self._values:
            return hint
        k = self._fresh.get(hint, 0)
        while True:
            k += 1
            name = f"{hint}.{k}"
            if name not in self._values:
                self._fresh[hint] = k
                return name

    def new_value(self, type: TensorType, name: str | None = None) -> Value:
        """A new, not yet produced value with a unique name (the hint is suffixed if taken)."""
        v = Value(self.fresh_name(name or "v"), type)
        self._register(v)
        return v

    def _register(self, v: Value) -> None:
        if v.name in self._values and self._values[v.name] is not v:
            raise ValueError(f"value name '%{v.name}' is defined twice")
        self._values[v.name] = v
        v.graph = self

    def value(self, name: str) -> Value:
        return self._values[name]

    def has_value(self, name: str) -> bool:
        return name in self._values

    def values(self) -> Iterator[Value]:
        return iter(self._values.values())

    def add_input(self, name: str, type: TensorType) -> Value:
        if name in self._values:
            raise ValueError(f"graph input '%{name}' is defined twice")
        v = Value(name, type)
        self._register(v)
        self.inputs.append(v)
        return v

    def rename(self, v: Value, name: str) -> None:
        """Give `v` a new name that must be unused."""
        if name in self._values:
            raise ValueError(f"value name '%{name}' is already used")
        del self._values[v.name]
        if v.name in self.value_symbols:
            self.value_symbols[name] = self.value_symbols.pop(v.name)
        v.name = name
        self._values[name] = v

    # ---- nodes ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Node]:
        n = self._first
        while n is not None:
            nxt = n._next
            yield n
            n = nxt

    @property
    def nodes(self) -> list[Node]:
        """A snapshot of the nodes in order: safe to edit the graph while iterating over it."""
        return list(self)

    @property
    def first(self) -> Node | None:
        return self._first

    @property
    def last(self) -> Node | None:
        return self._last

    def make_node(self, op: str, inputs: Sequence[Value | None], output_types: Sequence[TensorType],
                  attrs: Mapping[str, Any] | None = None, name: str | None = None,
                  output_names: Sequence[str | None] | None = None) -> Node:
        """A new node with fresh result values, not yet placed in the node list."""
        names = list(output_names) if output_names is not None else [None] * len(output_types)
        outs = [self.new_value(t, names[i] or (name and _hint(name)) or op) for i, t in enumerate(output_types)]
        return Node(op, inputs, outs, attrs, name)

    def add(self, op: str, inputs: Sequence[Value | None], output_types: Sequence[TensorType],
            attrs: Mapping[str, Any] | None = None, name: str | None = None, *,
            before: Node | None = None, after: Node | None = None,
            output_names: Sequence[str | None] | None = None) -> Node:
        """Create a node and place it at the end, or before / after an existing node."""
        node = self.make_node(op, inputs, output_types, attrs, name, output_names)
        if before is not None:
            self.insert_before(before, node)
        elif after is not None:
            self.insert_after(after, node)
        else:
            self.append(node)
        return node

    def _attach(self, node: Node) -> None:
        if node.graph is not None:
            raise ValueError(f"node {node.describe()} is already in a graph")
        node.graph = self
        self._count += 1
        for v in node.outputs:
            self._register(v)
            v.producer = node
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses.append((node, i))

    def append(self, node: Node) -> Node:
        self._attach(node)
        node._prev, node._next = self._last, None
        if self._last is None:
            self._first = node
        else:
            self._last._next = node
        self._last = node
        return node

    def insert_before(self, anchor: Node, node: Node) -> Node:
        if anchor.graph is not self:
            raise ValueError(f"anchor {anchor.describe()} is not in this graph")
        self._attach(node)
        node._prev, node._next = anchor._prev, anchor
        if anchor._prev is None:
            self._first = node
        else:
            anchor._prev._next = node
        anchor._prev = node
        return node

    def insert_after(self, anchor: Node, node: Node) -> Node:
        if anchor._next is None:
            if anchor.graph is not self:
                raise ValueError(f"anchor {anchor.describe()} is not in this graph")
            return self.append(node)
        return self.insert_before(anchor._next, node)

    def erase(self, node: Node) -> None:
        """Remove a node whose results are unused (and not graph outputs)."""
        if node.graph is not self:
            raise ValueError(f"node {node.describe()} is not in this graph")
        outs = {id(v) for v in self.outputs}
        for v in node.outputs:
            if v.uses or id(v) in outs:
                raise ValueError(f"cannot erase {node.describe()}: result %{v.name} is still used")
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses.remove((node, i))
        for v in node.outputs:
            del self._values[v.name]
            v.graph = None
        if node._prev is None:
            self._first = node._next
        else:
            node._prev._next = node._next
        if node._next is None:
            self._last = node._prev
        else:
            node._next._prev = node._prev
        node._prev = node._next = None
        node.graph = None
        self._count -= 1

    def move_before(self, anchor: Node, node: Node) -> None:
        """Move an already placed node so that it sits just before `anchor`."""
        if node is anchor:
            return
        self._unlink(node)
        node._prev, node._next = anchor._prev, anchor
        if anchor._prev is None:
            self._first = node
        else:
            anchor._prev._next = node
        anchor._prev = node

    def _unlink(self, node: Node) -> None:
        if node._prev is None:
            self._first = node._next
        else:
            node._prev._next = node._next
        if node._next is None:
            self._last = node._prev
        else:
            node._next._prev = node._prev
        node._prev = node._next = None

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every use of `old` use `new` instead.

        Graph output names are the model's public interface and never change: if `old` is an
        output, `new` takes over its name, or, when `new` is a graph input or already another
        output, an `identity` node gives the output its name."""
        if old is new:
            return
        for node, i in list(old.uses):
            node.set_input(i, new)
        if not any(v is old for v in self.outputs):
            return
        new = self._takes_output_name(old, new, any(v is new for v in self.outputs))
        self.outputs = [new if v is old else v for v in self.outputs]

    def _takes_output_name(self, old: Value, new: Value, new_is_output: bool) -> Value:
        """`new` replaces the graph output `old`, whose name is public: `old` is renamed aside and `new` takes its
        name, or, when `new` is a graph input or already an output, an `identity` named so is added and returned."""
        name = old.name
        self.rename(old, self.fresh_name(name + ".old"))
        if new.producer is not None and not new_is_output:
            self.rename(new, name)
            return new
        ident = Node("identity", [new], [Value(name, new.type)])
        if new.producer is None:
            self.insert_before(self._first, ident) if self._first is not None else self.append(ident)
        else:
            self.insert_after(new.producer, ident)
        return ident.outputs[0]

    def replace_node(self, node: Node, new_values: Sequence[Value]) -> None:
        """Replace each result of `node` by the matching value, then erase `node`."""
        if len(new_values) != len(node.outputs):
            raise ValueError(f"{node.describe()} has {len(node.outputs)} results, got {len(new_values)} replacements")
        for old, new in zip(node.outputs, new_values):
            self.replace_all_uses(old, new)
        self.erase(node)

    def replace_nodes(self, pairs: Sequence[tuple[Node, Sequence[Value]]]) -> None:
        """replace_node for each (node, new values) in order, in one pass over the uses and the outputs: the same
        graph as the calls one by one, in time linear in what changes and the outputs (one at a time rescans the
        outputs per node). A new value must not be a result of a node replaced here."""
        gone = {id(node) for node, _ in pairs}
        for node, new_values in pairs:
            if node.graph is not self:
                raise ValueError(f"node {node.describe()} is not in this graph")
            if len(new_values) != len(node.outputs):
                raise ValueError(f"{node.describe()} has {len(node.outputs)} results, got {len(new_values)} replacements")
            for old, new in zip(node.outputs, new_values):
                if old is new or (new.producer is not None and id(new.producer) in gone):
                    raise ValueError(f"cannot replace {node.describe()}: %{new.name} is replaced too")
        positions: dict[int, list[int]] = {}
        for i, v in enumerate(self.outputs):
            positions.setdefault(id(v), []).append(i)
        outputs = list(self.outputs)
        touched: dict[int, Value] = {}    # operands of the replaced nodes: their use lists are filtered once
        for node, new_values in pairs:
            for v in node.inputs:
                if v is not None:
                    touched[id(v)] = v
            for old, new in zip(node.outputs, new_values):
                for user, i in old.uses:
                    user.inputs[i] = new
                    if id(user) not in gone:
                        new.uses.append((user, i))
                old.uses = []
                at = positions.pop(id(old), None)
                if at is None:
                    continue
                new = self._takes_output_name(old, new, id(new) in positions)
                for i in at:
                    outputs[i] = new
                positions.setdefault(id(new), []).extend(at)
        self.outputs = outputs
        for v in touched.values():
            v.uses = [(n, i) for n, i in v.uses if id(n) not in gone]
        for node, _ in pairs:
            for v in node.outputs:
                del self._values[v.name]
                v.graph = None
            self._unlink(node)
            node.graph = None
        self._count -= len(pairs)

    def reorder(self, order: Iterable[Node]) -> None:
        """Relink the node list in the given order (which must hold exactly this graph's nodes)."""
        order = list(order)
        if len(order) != self._count or any(n.graph is not self for n in order):
            raise ValueError("reorder needs exactly the nodes of this graph")
        prev = None
        for n in order:
            n._prev = prev
            if prev is None:
                self._first = n
            else:
                prev._next = n
            prev = n
        if prev is not None:
            prev._next = None
        self._last = prev

    # ---- weights ----------------------------------------------------------------------------

    def add_weight(self, key: str, data: Any, type: TensorType, name: str | None = None,
                   attrs: Mapping[str, Any] | None = None, *, before: Node | None = None) -> Value:
        """Store `data` under `key` and add the `weight` node that makes it a value."""
        if key in self.weights and self.weights[key] is not data:
            raise ValueError(f"weight '{key}' is defined twice")
        self.weights[key] = data
        anchor = before if before is not None else self._first
        node = self.make_node("weight", [], [type], {"ref": key, **(attrs or {})}, None, [name or key])
        if anchor is None:
            self.append(node)
        else:
            self.insert_before(anchor, node)
        return node.outputs[0]

    def add_constant(self, array: Any, type: TensorType, name: str | None = None, *,
                     before: Node | None = None) -> Value:
        """A small inline constant (printed in the IR text), placed at the top unless `before`."""
        anchor = before if before is not None else self._first
        node = self.make_node("constant", [], [type], {"value": array}, None, [name or "const"])
        if anchor is None:
            self.append(node)
        else:
            self.insert_before(anchor, node)
        return node.outputs[0]

    def const_value(self, v: Value | None) -> Any:
        """The data of `v` if a `constant` or `weight` node produces it, else None."""
        if v is None or v.producer is None:
            return None
        p = v.producer
        if p.op == "constant":
            return p.attrs["value"]
        if p.op == "weight":
            return self.weights.get(p.attrs["ref"])
        return None

    def unused_weights(self) -> list[str]:
        refs = {n.attrs["ref"] for n in self if n.op == "weight"}
        return [k for k in self.weights if k not in refs]

    def prune_weights(self) -> int:
        """Drop stored weights no `weight` node references any more; returns how many."""
        dead = self.unused_weights()
        for k in dead:
            del self.weights[k]
        return len(dead)

    # ---- whole-graph helpers ----------------------------------------------------------------

    def copy(self) -> Graph:
        """A structural deep copy; weight data is shared, not copied."""
        g = Graph(self.name)
        g.weights = dict(self.weights)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            vmap[id(v)] = g.add_input(v.name, v.type)
        for n in self:
            outs = [Value(v.name, v.type) for v in n.outputs]
            for old, new in zip(n.outputs, outs):
                vmap[id(old)] = new
            ins = [None if v is None else vmap[id(v)] for v in n.inputs]
            g.append(Node(n.op, ins, outs, _copy_attrs(n.attrs), n.name))
        g.outputs = [vmap[id(v)] for v in self.outputs]
        g.memory = self.memory  # immutable, keyed by value names: it describes the copy as well
        g.source_relations, g.source_checks = dict(self.source_relations), [list(c) for c in self.source_checks]
        g.value_symbols = dict(self.value_symbols)
        return g

    def __repr__(self) -> str:
        return f"Graph(@{self.name}: {len(self.inputs)} inputs, {self._count} nodes, {len(self.outputs)} outputs)"


def _copy_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in attrs.items()}


def _hint(node_name: str) -> str:
    """A value-name hint from a node name: its last path component."""
    tail = node_name.rstrip("/").rsplit("/", 1)[-1]
    return tail or "v"

"""The IR: types, the graph, the op table, the text format, the verifier and the interpreter.

Imports nothing from tritc but the leaf `tritc.errors` module.
"""

from .graph import Graph, Node, Value
from .interpreter import Interpreter, run
from .ops import OPS, OpDef, get_op
from .text import parse_graph, print_graph
from .types import Dim, DType, TensorType
from .verify import verify

__all__ = ["DType", "Dim", "Graph", "Interpreter", "Node", "OPS", "OpDef", "TensorType", "Value",
           "get_op", "parse_graph", "print_graph", "run", "verify"]

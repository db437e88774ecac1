"""The ONNX frontend: an ONNX model (file, bytes or ModelProto) in, a verified tritc Graph out.

    load_model("model.onnx") -> Graph

Steps, in order: read and parse the protobuf (with limits), check the IR version, the text fields
and the opsets, resolve every node's operator version from the model's opset and report every
unsupported (op, version) at once, check the graph's structure (names defined once, inputs
defined, no cycle; nodes re-sorted if out of order), load every tensor (external data confined
to the model's folder), run ONNX shape inference for types and symbolic dims, then build IR nodes
one by one (older op versions go through an adapter), check each against its type rule, and
verify the whole graph. docs/FRONTEND.md has the rules.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ..errors import CompilerError, InternalError, ModelFormatError, ModelValidationError, UnsupportedError, VerificationError
from ..ir.graph import Graph, Value
from ..ir.ops import OPS, InferContext, OpDef, TypeRuleError, check_attr_value, onnx_op
from ..ir.types import DType, TensorType, format_type
from ..ir.verify import compatible, verify
from .adapters import ImportNode, find_adapter
from .constants import attr_kind, constant_value, refine
from .limits import DEFAULT_LIMITS, Limits
from .opsets import NEWER_OPSET_MARGIN, canonical_domain, read_opsets, resolve_versions
from .structure import check_text, node_label, topological_order
from .tensors import TensorReader, onnx_type_name
from .unknown_dims import UNKNOWN_DIM_VALUE, SymbolNamer, declared_names, for_inference, symbol_name

__all__ = ["DEFAULT_LIMITS", "NEWER_OPSET_MARGIN", "ImportReport", "Limits", "import_model", "load_model",
           "load_model_bytes", "parse_model"]

# Tensors with at most this many elements are written inline in the IR as `constant`;
# larger ones become `weight` nodes that reference Graph.weights.
INLINE_MAX_ELEMENTS = 8
# Initializers bigger than this are handed to ONNX shape inference without their data.
_INFERENCE_MAX_TENSOR_BYTES = 4096


@dataclass
class ImportReport:
    """What the frontend noticed that is worth telling a user (newer opsets, re-sorted nodes, ignored fields)."""

    warnings: list[str] = field(default_factory=list)


# ---- entry points -------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Read an .onnx file (and its external data, next to it) into a verified Graph."""
    p = Path(path)
    where = str(p)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ModelFormatError(f"{where}: no such file") from None
    except OSError as e:
        raise ModelFormatError(f"{where}: cannot read: {e.strerror}") from None
    if p.is_dir():
        raise ModelFormatError(f"{where}: is a directory, not an ONNX model")
    if not p.is_file():
        raise ModelFormatError(f"{where}: is not a regular file")
    if st.st_size == 0:
        raise ModelFormatError(f"{where}: empty file, not an ONNX model")
    if st.st_size > limits.max_model_bytes:
        raise limits.exceeded("max_model_bytes", st.st_size, f"{where}: the file has",
                              hint="store the weights as external data")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{where}: cannot read: {e.strerror}") from None
    # Parsed here and `data` dropped, so the file's bytes are not held while the weights are converted.
    model = parse_model(data, where)
    del data
    return import_model(model, base_dir=p.resolve().parent, source=where, limits=limits)


def load_model_bytes(data: bytes, *, base_dir: str | os.PathLike[str] | None = None, source: str = "<bytes>",
                     limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Parse a serialized model. External data is refused unless `base_dir` is given."""
    if len(data) > limits.max_model_bytes:
        raise limits.exceeded("max_model_bytes", len(data), f"{source}: the model has",
                              hint="store the weights as external data")
    return import_model(parse_model(data, source), base_dir=base_dir, source=source, limits=limits)


def parse_model(data: bytes, source: str = "<bytes>") -> onnx.ModelProto:
    """A ModelProto from its binary encoding, or ModelFormatError saying what the bytes look like instead."""
    if not data:
        raise ModelFormatError(f"{source}: empty input, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFormatError(f"{source}: not a valid ONNX model ({_sniff(data)}protobuf decoding failed: "
                               f"{_one_line(str(e))})") from e
    if not model.HasField("graph"):
        raise ModelFormatError(f"{source}: not an ONNX model ({_sniff(data)}no graph in it)")
    return model


def import_model(model: onnx.ModelProto, *, base_dir: str | os.PathLike[str] | None = None,
                 source: str = "<model>", limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Convert a parsed ModelProto to a verified Graph (the proto is not modified)."""
    return _Importer(model, Path(base_dir) if base_dir is not None else None, source, limits).run()


# ---- the importer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    """An OpDef's operand and attribute counts, computed once per op per import."""

    min_inputs: int
    max_inputs: int | None
    required_inputs: tuple[int, ...]
    min_outputs: int
    max_outputs: int | None
    required_attrs: tuple[str, ...]


class _Importer:
    def __init__(self, model: onnx.ModelProto, base_dir: Path | None, source: str, limits: Limits):
        self.model = model
        self.source = source
        self.limits = limits
        self.report = ImportReport()
        self.tensors = TensorReader(source, base_dir, limits, self.report.warnings)
        self.graph = Graph(model.graph.name if isinstance(model.graph.name, str) and model.graph.name else "main")
        self.env: dict[str, Value] = {}
        self.node_tensors: dict[tuple[int, str], np.ndarray] = {}  # (node index, attribute) -> data
        self.constants: dict[int, np.ndarray] = {}  # node index of a Constant -> its value
        self.signatures: dict[str, _Signature] = {}

    def fail(self, cls: type[CompilerError], msg: str) -> CompilerError:
        return cls(f"{self.source}: {msg}")

    def run(self) -> Graph:
        g = self.model.graph
        self._check_header()
        check_text(self.model, self.source)
        opsets = read_opsets(self.model, self.source, self.report.warnings)
        if len(g.node) > self.limits.max_nodes:
            raise self.limits.exceeded("max_nodes", len(g.node), f"{self.source}: the graph has", "nodes")
        self._check_nesting()
        versions = resolve_versions(g.node, opsets, self.source, node_label)
        order = topological_order(self.model.graph, self.source, self.report.warnings)
        input_types = self._input_types()
        initial = self._load_tensors()
        value_types = self._value_types(order, input_types)
        self._import_inputs(initial, input_types)
        for idx in order:
            self._import_node(idx, versions[idx], value_types)
        self.graph.outputs = [self.env[o.name] for o in g.output]
        try:
            verify(self.graph)
        except VerificationError as e:
            raise self.fail(ModelValidationError, _one_line(str(e))) from e
        for w in self.report.warnings:
            warnings.warn(f"{self.source}: {w}", stacklevel=3)
        return self.graph

    # -- header and structure -----------------------------------------------------------------

    def _check_header(self) -> None:
        m = self.model
        if not m.HasField("graph"):
            raise self.fail(ModelFormatError, "not an ONNX model (no graph)")
        if m.ir_version <= 0:
            raise self.fail(ModelFormatError, "not an ONNX model (ir_version is not set)")
        if m.ir_version > onnx.IR_VERSION:
            raise self.fail(UnsupportedError, f"IR version {m.ir_version} is newer than the newest this onnx "
                                              f"({onnx.__version__}) reads, {onnx.IR_VERSION}")

    def _check_nesting(self) -> None:
        """Subgraphs within subgraphs no deeper than the limit, walked without recursion (protobuf's own depth
        limit stops at about 33 levels; this one is ours to set)."""
        A = onnx.AttributeProto
        stack = [(self.model.graph, 0)]
        while stack:
            graph, depth = stack.pop()
            for idx, node in enumerate(graph.node):
                for a in node.attribute:
                    subs = [a.g] if a.type == A.GRAPH else list(a.graphs) if a.type == A.GRAPHS else []
                    if subs and depth + 1 > self.limits.max_nesting_depth:
                        raise self.limits.exceeded("max_nesting_depth", depth + 1, f"{self.source}: node "
                                                   f"{node_label(node, idx)} holds subgraphs nested",
                                                   "levels deep")
                    stack.extend((g, depth + 1) for g in subs)

    # -- tensors and types --------------------------------------------------------------------

    def _load_tensors(self) -> dict[str, np.ndarray]:
        """Every tensor's data, before any type work: initializers, sparse ones, and node attributes."""
        g = self.model.graph
        initial: dict[str, np.ndarray] = {}
        for t in g.initializer:
            initial[t.name] = self.tensors.read(t, f"initializer '{t.name}'")
        for sp in g.sparse_initializer:
            initial[sp.values.name] = self.tensors.read_sparse(sp, f"sparse initializer '{sp.values.name}'")
        A = onnx.AttributeProto
        for idx, node in enumerate(g.node):
            for a in node.attribute:
                kind = attr_kind(a)
                if kind == A.TENSOR:
                    self.node_tensors[(idx, a.name)] = self.tensors.read(a.t, f"attribute '{a.name}' of node "
                                                                               f"{node_label(node, idx)}")
                elif kind == A.SPARSE_TENSOR:
                    self.node_tensors[(idx, a.name)] = self.tensors.read_sparse(
                        a.sparse_tensor, f"attribute '{a.name}' of node {node_label(node, idx)}")
            if node.op_type == "Constant" and canonical_domain(node.domain) == "":
                self.constants[idx] = constant_value(node, node_label(node, idx), self.node_tensors, idx, self.source)
        return initial

    def _input_types(self) -> dict[str, TensorType]:
        """The declared type of every graph input that is not an initializer (those are weights). Each unknown dim
        becomes a symbol of its own, `<input>.<axis>` (unknown_dims.py), which the arrays bind at run time."""
        g = self.model.graph
        weights = {t.name for t in g.initializer} | {sp.values.name for sp in g.sparse_initializer}
        namer = SymbolNamer(declared_names(g))
        types: dict[str, TensorType] = {}
        for vi in g.input:
            if vi.name not in weights:
                t = self._type_of(vi.type, f"graph input '{vi.name}'", strict=True,
                                  fresh=lambda axis, name=vi.name: namer.fresh(name, axis))
                assert t is not None
                types[vi.name] = t
        return types

    def _value_types(self, order: list[int], input_types: Mapping[str, TensorType]) -> dict[str, TensorType]:
        """Types ONNX shape inference finds (symbolic dims from dim_param kept by name). It sees the graph inputs with
        tritc's symbols for their unknown dims, and every other unknown dim blank (unknown_dims.for_inference)."""
        m = self.model
        # A copy for inference without the weights' data: inference needs only their types and shapes
        # (small ones keep their data for shape arithmetic), and copying big weights would cost memory.
        lean = onnx.ModelProto(ir_version=m.ir_version)
        lean.opset_import.extend(m.opset_import)
        lg = lean.graph
        lg.name = "lean"
        lg.node.extend(m.graph.node[i] for i in order)  # ONNX inference needs topological order
        lg.input.extend(for_inference(vi, input_types[vi.name].shape if vi.name in input_types else None)
                        for vi in m.graph.input)
        lg.output.extend(for_inference(vi) for vi in m.graph.output)
        lg.value_info.extend(for_inference(vi) for vi in m.graph.value_info)
        for t in m.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL and t.ByteSize() <= _INFERENCE_MAX_TENSOR_BYTES:
                lg.initializer.append(t)
            else:
                lg.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
        for sp in m.graph.sparse_initializer:
            lg.initializer.add(name=sp.values.name, data_type=sp.values.data_type, dims=sp.dims)
        # ONNX inference supplies what our rules cannot know (value_info, data-dependent dims); our
        # rules, not it, judge validity: strict inference also fails on valid models (function
        # bodies such as MeanVarianceNormalization's), so it falls back to lenient inference.
        # ONNX data propagation writes out ConstantOfShape's value, one TensorShapeProto dim per element, before any
        # limit: ConstantOfShape([2**44]) would allocate without bound inside onnx (HARDENING.md 19), so it is off for a
        # graph with one. Our rules fold such values themselves, within the folding budget.
        data_prop = not any(nd.op_type == "ConstantOfShape" and canonical_domain(nd.domain) == "" for nd in lg.node)
        try:
            inferred = onnx.shape_inference.infer_shapes(lean, check_type=True, strict_mode=True, data_prop=data_prop)
        except Exception as strict_error:  # noqa: BLE001 - onnx raises assorted errors on odd models
            try:
                inferred = onnx.shape_inference.infer_shapes(lean, check_type=False, strict_mode=False,
                                                             data_prop=data_prop)
            except Exception:  # noqa: BLE001
                inferred = lean
            self.report.warnings.append(f"ONNX shape inference: {_one_line(str(strict_error))[:300]}")
        types: dict[str, TensorType] = {}
        ig = inferred.graph
        producer = {o: idx for idx in order for o in m.graph.node[idx].output if o}
        for kind, vis in (("graph output", ig.output), ("value", ig.value_info)):
            for vi in vis:
                idx = producer.get(vi.name)
                by = f" (from node {node_label(m.graph.node[idx], idx)})" if idx is not None else ""
                t = self._type_of(vi.type, f"{kind} '{vi.name}'{by}", strict=False)
                if t is not None:
                    types.setdefault(vi.name, t)
        return types

    def _type_of(self, tp: onnx.TypeProto, what: str, strict: bool,
                 fresh: Callable[[int], str] | None = None) -> TensorType | None:
        """The tensor type of `tp`. A dim that names no symbol (unknown_dims.py) becomes `fresh(axis)` when given
        (graph inputs), else an unknown dim."""
        kind = tp.WhichOneof("value")
        if kind != "tensor_type":
            if strict and kind is None:
                raise self.fail(ModelValidationError, f"{what} has no type")
            if strict:
                raise self.fail(UnsupportedError, f"{what} is a {kind.replace('_type', '')}, not a tensor; "
                                                  f"tritc supports tensors only")
            return None
        tt = tp.tensor_type
        dtype = DType.from_onnx(tt.elem_type)
        if dtype is None:
            if strict or tt.elem_type:
                raise self.fail(UnsupportedError, f"{what} has element type {onnx_type_name(tt.elem_type)}, "
                                                  f"which tritc does not support")
            return None
        if not tt.HasField("shape"):
            return TensorType(dtype, None)
        if len(tt.shape.dim) > self.limits.max_rank:
            raise self.tensors.fail_limit("max_rank", len(tt.shape.dim), f"{what} has rank", "")
        shape: list[Any] = []
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value != UNKNOWN_DIM_VALUE:
                if d.dim_value < 0 and strict:
                    raise self.fail(ModelValidationError, f"{what} has a negative dim {d.dim_value}")
                # A negative dim ONNX inference computed (Pad removing more than there is) is left to our rule, whose
                # error names the node.
                shape.append(int(d.dim_value) if d.dim_value >= 0 else None)
            else:
                name = symbol_name(d)
                shape.append(name if name is not None else fresh(axis) if fresh is not None else None)
        return TensorType(dtype, tuple(shape))

    # -- values -------------------------------------------------------------------------------

    def _import_inputs(self, initial: Mapping[str, np.ndarray], input_types: Mapping[str, TensorType]) -> None:
        # An initializer listed as an input (required before IR 4, an overridable default after) is
        # compiled as the weight it holds (docs/FRONTEND.md), so it is not in input_types.
        for name, t in input_types.items():
            self.env[name] = self.graph.add_input(name, t)
        for name, array in initial.items():
            self.env[name] = self._const_value(array, name)

    def _const_value(self, array: np.ndarray, name: str) -> Value:
        t = TensorType(DType.from_numpy(array.dtype), tuple(array.shape))
        if array.size <= INLINE_MAX_ELEMENTS:
            node = self.graph.make_node("constant", [], [t], {"value": array}, None, [name])
        else:
            key = name
            while key in self.graph.weights:
                key += "_"
            self.graph.weights[key] = array
            node = self.graph.make_node("weight", [], [t], {"ref": key}, None, [name])
        self.graph.append(node)
        self._claim(node.outputs[0], name)
        return node.outputs[0]

    def _claim(self, v: Value, name: str) -> None:
        """Give `v` its ONNX name, which the frontend may have lent to a helper value (an adapter's
        constant, an unused output): ONNX names are unique (checked), so the holder is ours to rename."""
        if v.name == name:
            return
        holder = self.graph.value(name)
        self.graph.rename(holder, self.graph.fresh_name(name))
        self.graph.rename(v, name)

    # -- nodes --------------------------------------------------------------------------------

    def _import_node(self, idx: int, version: int, value_types: Mapping[str, TensorType]) -> None:
        node = self.model.graph.node[idx]
        out_names = list(node.output)
        if idx in self.constants:
            self.env[out_names[0]] = self._const_value(self.constants[idx], out_names[0])
            return
        op_type, domain, node_name = node.op_type, canonical_domain(node.domain), node.name or None
        label = node_label(node, idx)
        opdef = onnx_op(op_type, domain)
        assert opdef is not None  # resolve_versions has checked it
        env = self.env
        inputs: list[Value | None] = [env[name] if name else None for name in node.input]
        attrs = self._attributes(node, idx, label) if len(node.attribute) else {}
        imp = ImportNode(opdef.name, inputs, attrs, node_name, op_type, version, self.graph)
        adapt = find_adapter(domain, op_type, version) if version not in opdef.since or opdef.onnx != op_type else None
        if adapt is not None:
            imp.pad_inputs(1)  # an adapter reads the data operand as inputs[0], None when the node has none
            try:
                adapt(imp)
            except (TypeRuleError, ValueError) as e:  # how an adapter refuses a node
                raise self.fail(ModelValidationError, f"node {label}: {e}") from e
            except CompilerError:
                raise
            except Exception as e:  # a bug in the adapter, not a problem with the model
                raise InternalError(f"{self.source}: the adapter of {op_type}-{version} failed on node {label}: "
                                    f"{type(e).__name__}: {e}") from e
        opdef = OPS[imp.op]
        while imp.inputs and imp.inputs[-1] is None:
            imp.inputs.pop()
        sig = self._signature(opdef)
        self._check_signature(opdef, sig, imp, label)
        attrs = self._typed_attrs(opdef, imp.attrs, label) if imp.attrs or sig.required_attrs else {}
        while out_names and not out_names[-1]:
            out_names.pop()
        if len(out_names) < sig.min_outputs:
            raise self.fail(ModelValidationError, f"node {label} has {len(out_names)} outputs, {op_type} needs "
                                                  f"at least {sig.min_outputs}")
        if sig.max_outputs is not None and len(out_names) > sig.max_outputs:
            raise self.fail(ModelValidationError, f"node {label} has {len(out_names)} outputs, {op_type} gives "
                                                  f"at most {sig.max_outputs}")
        types = self._output_types(opdef, imp, attrs, out_names, value_types, label)
        names = [n or f"{_hint(label)}.unused{i}" for i, n in enumerate(out_names)]
        created = self.graph.add(opdef.name, imp.inputs, types, attrs, node_name, output_names=names)
        for n, v in zip(out_names, created.outputs):
            if n:
                if v.name != n:
                    self._claim(v, n)
                env[n] = v

    def _signature(self, opdef: OpDef) -> _Signature:
        sig = self.signatures.get(opdef.name)
        if sig is None:
            required = tuple(i for i, o in enumerate(opdef.inputs) if not o.optional and not o.variadic)
            sig = _Signature(opdef.min_inputs(), opdef.max_inputs(), required, opdef.min_outputs(), opdef.max_outputs(),
                             tuple(k for k, a in opdef.attrs.items() if a.required))
            self.signatures[opdef.name] = sig
        return sig

    def _attributes(self, node: onnx.NodeProto, idx: int, label: str) -> dict[str, Any]:
        A = onnx.AttributeProto
        attrs: dict[str, Any] = {}
        for a in node.attribute:
            if a.name in attrs:
                raise self.fail(ModelValidationError, f"node {label} sets attribute '{a.name}' twice")
            if a.ref_attr_name:
                raise self.fail(UnsupportedError, f"node {label}: attribute references (functions) are not supported")
            kind = attr_kind(a)
            if kind == A.FLOAT:
                attrs[a.name] = float(np.float32(a.f))
            elif kind == A.INT:
                attrs[a.name] = int(a.i)
            elif kind == A.STRING:
                attrs[a.name] = self._utf8(a.s, a.name, label)
            elif kind in (A.TENSOR, A.SPARSE_TENSOR):
                attrs[a.name] = self.node_tensors[(idx, a.name)]
            elif kind == A.FLOATS:
                attrs[a.name] = [float(np.float32(x)) for x in a.floats]
            elif kind == A.INTS:
                attrs[a.name] = [int(x) for x in a.ints]
            elif kind == A.STRINGS:
                attrs[a.name] = [self._utf8(x, a.name, label) for x in a.strings]
            elif kind in (A.GRAPH, A.GRAPHS):
                raise self.fail(UnsupportedError, f"node {label} has a subgraph (attribute '{a.name}'); control flow "
                                                  f"is not supported")
            else:
                name = A.AttributeType.Name(kind) if kind in A.AttributeType.values() else str(kind)
                raise self.fail(UnsupportedError, f"node {label}: attribute '{a.name}' has type {name}, "
                                                  f"which tritc does not support")
        return attrs

    def _utf8(self, raw: bytes, attr: str, label: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(ModelValidationError, f"node {label}: attribute '{attr}' is not UTF-8 text") from None

    def _check_signature(self, opdef: OpDef, sig: _Signature, imp: ImportNode, label: str) -> None:
        n = len(imp.inputs)
        lo, hi = sig.min_inputs, sig.max_inputs
        if n < lo or (hi is not None and n > hi):
            takes = f"{lo}" + ("" if hi == lo else f" to {hi}" if hi is not None else " or more")
            raise self.fail(ModelValidationError, f"node {label} has {n} inputs, {imp.onnx_type} takes {takes}")
        for i in sig.required_inputs:
            if i < n and imp.inputs[i] is None:
                raise self.fail(ModelValidationError, f"node {label}: required input {opdef.inputs[i].name} is empty")

    def _typed_attrs(self, opdef: OpDef, attrs: dict[str, Any], label: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in attrs.items():
            spec = opdef.attrs.get(k)
            if spec is None:
                raise self.fail(ModelValidationError, f"node {label}: unknown attribute '{k}'")
            if spec.kind == "dtype" and isinstance(v, int):
                dt = DType.from_onnx(v)
                if dt is None:
                    raise self.fail(UnsupportedError, f"node {label}: attribute '{k}' names element type "
                                                      f"{onnx_type_name(v)}, which tritc does not support")
                v = dt
            elif spec.kind == "float" and isinstance(v, int) and not isinstance(v, bool):
                v = float(np.float32(v))
            elif spec.kind == "floats" and isinstance(v, list) and all(isinstance(x, int) for x in v):
                v = [float(np.float32(x)) for x in v]
            if not check_attr_value(spec.kind, v):
                raise self.fail(ModelValidationError, f"node {label}: attribute '{k}' should be {spec.kind}, "
                                                      f"got {type(v).__name__}")
            out[k] = v
        for k, spec in opdef.attrs.items():
            if spec.required and k not in out:
                raise self.fail(ModelValidationError, f"node {label}: missing required attribute '{k}'")
        return out

    def _output_types(self, opdef: OpDef, imp: ImportNode, attrs: dict[str, Any], out_names: list[str],
                      value_types: Mapping[str, TensorType], label: str) -> list[TensorType]:
        """Each output's type: our type rule's, refined by what ONNX inference and the model's value_info say."""
        ctx = InferContext(opdef.name, [None if v is None else v.type for v in imp.inputs], opdef.with_defaults(attrs),
                           [self.graph.const_value(v) for v in imp.inputs], len(out_names), imp.name)
        try:
            ours = opdef.infer(ctx)
        except TypeRuleError as e:
            shapes = ", ".join(format_type(v.type) if v is not None else "none" for v in imp.inputs)
            raise self.fail(ModelValidationError, f"node {label}: {e} (inputs: {shapes})") from e
        types = []
        for i, name in enumerate(out_names):
            theirs = value_types.get(name) if name else None
            mine = ours[i] if i < len(ours) else None
            if mine is not None and mine == theirs:
                types.append(mine)
            elif mine is not None and theirs is not None:
                if mine.dtype != theirs.dtype:
                    raise self.fail(ModelValidationError, f"node {label}: output '{name}' is {format_type(theirs)} "
                                                          f"in the model, but {imp.onnx_type} gives {format_type(mine)}")
                if not compatible(mine, theirs):
                    self.report.warnings.append(f"node {label}: output '{name}' is declared {format_type(theirs)}, "
                                                f"but {imp.onnx_type} gives {format_type(mine)}; using the latter")
                types.append(refine(mine, theirs))
            elif mine is not None:
                types.append(mine)
            elif theirs is not None:
                types.append(theirs)
            else:
                raise self.fail(ModelValidationError, f"node {label}: cannot determine the type of output '{name}'")
        return types


# ---- helpers ----------------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    """What non-ONNX bytes look like, as a hint at the start of an error message."""
    head = data[:16]
    for magic, kind in ((b"\x89PNG", "a PNG image"), (b"\x7fELF", "an ELF binary"), (b"PK\x03\x04", "a zip archive"),
                        (b"\x1f\x8b", "gzip data"), (b"GIF8", "a GIF image"), (b"\xff\xd8\xff", "a JPEG image"),
                        (b"%PDF", "a PDF")):
        if head.startswith(magic):
            return f"it looks like {kind}; "
    sample = data[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "it looks like text (tritc reads binary .onnx files, not textproto); "
    return ""


def _hint(label: str) -> str:
    return "".join(ch for ch in label if ch.isalnum() or ch in "_./") or "out"


def _one_line(text: str) -> str:
    return " ".join(text.split())

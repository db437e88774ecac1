"""The ONNX frontend: an ONNX model (file, bytes or ModelProto) in, a verified tritc Graph out.

    load_model("model.onnx") -> Graph

Steps, in order: read and parse the protobuf (with limits), check IR version and opsets,
resolve every node's operator version from the model's opset (the schema's since_version) and
report every unsupported (op, version) at once, load initializers (external data confined to
the model's folder), sort the nodes topologically, run ONNX shape inference for types and
symbolic dims, then build IR nodes one by one (older op versions go through an adapter), check
each against its type rule, and verify the whole graph.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.defs
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ..errors import (
    CompilerError,
    ModelFormatError,
    ModelValidationError,
    ResourceLimitError,
    UnsupportedError,
    VerificationError,
)
from ..ir import dims as dimlib
from ..ir.graph import Graph, Value
from ..ir.ops import OPS, InferContext, OpDef, TypeRuleError, check_attr_value, onnx_op
from ..ir.types import DType, TensorType, format_type
from ..ir.verify import compatible, verify
from .adapters import ImportNode, find_adapter
from .external_data import read_external

# Tensors with at most this many elements are written inline in the IR as `constant`;
# larger ones become `weight` nodes that reference Graph.weights.
INLINE_MAX_ELEMENTS = 8
# The oldest opset of the default domain accepted (the light model zoo uses opset 8 and 9;
# everything from opset 11 up is covered by the op table and the adapters).
MIN_OPSET = 7
# Opsets newer than the installed onnx knows are accepted up to this margin, each op resolved to
# its newest known version, with a warning; beyond it the stamp is refused as implausible.
NEWER_OPSET_MARGIN = 3


@dataclass(frozen=True)
class Limits:
    """Resource budgets for untrusted models (bytes, counts); each has a clear error."""

    max_model_bytes: int = 2**31 - 1  # protobuf's own limit for a single file
    max_nodes: int = 1_000_000
    max_tensor_bytes: int = 16 * 2**30
    max_total_weight_bytes: int = 64 * 2**30
    max_rank: int = 32


DEFAULT_LIMITS = Limits()


@dataclass
class ImportReport:
    """What the frontend noticed that is worth telling a user (newer opsets, ignored fields)."""

    warnings: list[str] = field(default_factory=list)


# ---- entry points -------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Read an .onnx file (and its external data, next to it) into a verified Graph."""
    p = Path(path)
    where = str(p)
    if not p.exists():
        raise ModelFormatError(f"{where}: no such file")
    if p.is_dir():
        raise ModelFormatError(f"{where}: is a directory, not an ONNX model")
    size = p.stat().st_size
    if size == 0:
        raise ModelFormatError(f"{where}: empty file, not an ONNX model")
    if size > limits.max_model_bytes:
        raise ResourceLimitError(f"{where}: {size} bytes is over the {limits.max_model_bytes}-byte limit of a single "
                                 f"ONNX file; store the weights as external data")
    data = p.read_bytes()
    return load_model_bytes(data, base_dir=p.resolve().parent, source=where, limits=limits)


def load_model_bytes(data: bytes, *, base_dir: str | os.PathLike[str] | None = None, source: str = "<bytes>",
                     limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Parse a serialized model. External data is refused unless `base_dir` is given."""
    if not data:
        raise ModelFormatError(f"{source}: empty input, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFormatError(f"{source}: not a valid ONNX model (protobuf decode failed: {e})") from e
    return import_model(model, base_dir=base_dir, source=source, limits=limits)


def import_model(model: onnx.ModelProto, *, base_dir: str | os.PathLike[str] | None = None,
                 source: str = "<model>", limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Convert a parsed ModelProto to a verified Graph."""
    return _Importer(model, Path(base_dir) if base_dir is not None else None, source, limits).run()


# ---- the importer -----------------------------------------------------------------------------


class _Importer:
    def __init__(self, model: onnx.ModelProto, base_dir: Path | None, source: str, limits: Limits):
        self.model = model
        self.base_dir = base_dir
        self.source = source
        self.limits = limits
        self.report = ImportReport()
        self.graph = Graph(_graph_name(model.graph.name))
        self.env: dict[str, Value] = {}
        self.weight_bytes = 0

    def fail(self, cls: type[CompilerError], msg: str) -> CompilerError:
        return cls(f"{self.source}: {msg}")

    def run(self) -> Graph:
        m = self.model
        self._check_header()
        opsets = self._opsets()
        g = m.graph
        if len(g.node) > self.limits.max_nodes:
            raise self.fail(ResourceLimitError, f"{len(g.node)} nodes is over the limit of {self.limits.max_nodes}")
        versions = self._resolve_versions(opsets)
        order = self._topological_order()
        value_types = self._value_types()
        self._import_inputs_and_initializers(value_types)
        for idx in order:
            self._import_node(g.node[idx], versions[idx], value_types)
        outputs = []
        seen_out: set[str] = set()
        for o in g.output:
            if o.name in seen_out:
                raise self.fail(ModelValidationError, f"graph output '{o.name}' is listed twice")
            seen_out.add(o.name)
            if o.name not in self.env:
                raise self.fail(ModelValidationError, f"graph output '{o.name}' is never produced")
            outputs.append(self.env[o.name])
        self.graph.outputs = outputs
        try:
            verify(self.graph)
        except VerificationError as e:
            raise self.fail(ModelValidationError, str(e)) from e
        for w in self.report.warnings:
            warnings.warn(f"{self.source}: {w}", stacklevel=3)
        return self.graph

    # -- header and opsets --------------------------------------------------------------------

    def _check_header(self) -> None:
        m = self.model
        if not m.HasField("graph"):
            raise self.fail(ModelFormatError, "not an ONNX model (no graph)")
        if m.ir_version <= 0:
            raise self.fail(ModelFormatError, "not an ONNX model (ir_version is not set)")
        if m.ir_version > onnx.IR_VERSION:
            raise self.fail(UnsupportedError, f"IR version {m.ir_version} is newer than the newest this onnx "
                                              f"({onnx.__version__}) reads, {onnx.IR_VERSION}")

    def _opsets(self) -> dict[str, int]:
        opsets: dict[str, int] = {}
        for entry in self.model.opset_import:
            domain = "" if entry.domain == "ai.onnx" else entry.domain
            if domain in opsets:
                raise self.fail(UnsupportedError, f"opset_import lists domain '{domain or 'ai.onnx'}' twice")
            opsets[domain] = entry.version
        if not self.model.opset_import:
            if self.model.ir_version >= 3:
                raise self.fail(UnsupportedError, "the model has no opset_import")
            opsets[""] = 1
        newest = onnx.defs.onnx_opset_version()
        v = opsets.get("")
        if v is not None:
            if v < MIN_OPSET:
                raise self.fail(UnsupportedError, f"opset {v} of ai.onnx is older than the oldest tritc supports ({MIN_OPSET})")
            if v > newest + NEWER_OPSET_MARGIN:
                raise self.fail(UnsupportedError, f"opset {v} of ai.onnx is newer than anything known (onnx "
                                                  f"{onnx.__version__} knows up to {newest})")
            if v > newest:
                self.report.warnings.append(f"opset {v} is newer than the newest this onnx knows ({newest}); "
                                            f"each op is read as its newest known version")
        return opsets

    def _resolve_versions(self, opsets: Mapping[str, int]) -> list[int]:
        """The since_version of every node; one error listing every unsupported op."""
        newest = onnx.defs.onnx_opset_version()
        versions: list[int] = []
        unsupported: dict[tuple[str, str, int, int | None], list[str]] = defaultdict(list)
        for i, node in enumerate(self.model.graph.node):
            domain = "" if node.domain == "ai.onnx" else node.domain
            if domain not in opsets:
                raise self.fail(ModelValidationError, f"node {_node_label(node, i)} uses domain "
                                                      f"'{domain}', which opset_import does not list")
            opset = opsets[domain]
            if node.op_type == "Constant" and domain == "":
                versions.append(0)
                continue
            try:
                schema = onnx.defs.get_schema(node.op_type, min(opset, newest) if domain == "" else opset, domain)
                since = schema.since_version
            except onnx.defs.SchemaError:
                since = None
            opdef = onnx_op(node.op_type, domain)
            ok = (since is not None and opdef is not None
                  and (since in opdef.since or find_adapter(domain, node.op_type, since) is not None))
            if not ok:
                unsupported[(domain, node.op_type, opset, since)].append(_node_label(node, i))
            versions.append(since or 0)
        if unsupported:
            parts = []
            for (domain, op, opset, since), names in sorted(unsupported.items(), key=lambda kv: (kv[0][0], kv[0][1])):
                ver = f"version {since}" if since is not None else "no such op at this opset"
                first = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                parts.append(f"{op} (domain {domain or 'ai.onnx'}, opset {opset}, {ver}): "
                             f"{len(names)} node{'s' if len(names) > 1 else ''} [{first}]")
            raise self.fail(UnsupportedError, f"{len(unsupported)} unsupported op{'s' if len(unsupported) > 1 else ''}: "
                                              + "; ".join(parts))
        return versions

    # -- structure -----------------------------------------------------------------------------

    def _topological_order(self) -> list[int]:
        """Node indices in a stable topological order, or an error for undefined inputs / cycles."""
        g = self.model.graph
        available = {i.name for i in g.input} | {t.name for t in g.initializer}
        available |= {t.values.name for t in g.sparse_initializer}
        producer: dict[str, int] = {}
        for idx, node in enumerate(g.node):
            for o in node.output:
                if not o:
                    continue
                if o in producer or o in available:
                    raise self.fail(ModelValidationError, f"value '{o}' is defined twice (again by node "
                                                          f"{_node_label(node, idx)})")
                producer[o] = idx
        waiting = [0] * len(g.node)
        consumers: dict[int, list[int]] = defaultdict(list)
        for idx, node in enumerate(g.node):
            deps = set()
            for name in node.input:
                if not name or name in available:
                    continue
                if name not in producer:
                    raise self.fail(ModelValidationError, f"node {_node_label(node, idx)} uses '{name}', "
                                                          f"which no node, input or initializer defines")
                deps.add(producer[name])
            waiting[idx] = len(deps)
            for d in deps:
                consumers[d].append(idx)
        ready = [i for i in range(len(g.node)) if waiting[i] == 0]
        ready.reverse()
        order: list[int] = []
        while ready:
            i = ready.pop()
            order.append(i)
            for c in sorted(consumers[i], reverse=True):
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.append(c)
            ready.sort(reverse=True)
        if len(order) != len(g.node):
            stuck = next(i for i in range(len(g.node)) if waiting[i] > 0)
            raise self.fail(ModelValidationError, f"the graph has a cycle through node {_node_label(g.node[stuck], stuck)}")
        if order != sorted(order):
            self.report.warnings.append("nodes were not in topological order; they were re-sorted")
        return order

    def _value_types(self) -> dict[str, TensorType]:
        """Types ONNX shape inference finds (symbolic dims from dim_param kept by name)."""
        stripped = onnx.ModelProto()
        stripped.CopyFrom(self.model)
        # Shape inference needs no weight data; dropping it keeps big models cheap here.
        for t in stripped.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL or t.ByteSize() > 4096:
                shape, dt, name = list(t.dims), t.data_type, t.name
                t.Clear()
                t.name, t.data_type = name, dt
                t.dims.extend(shape)
                t.data_location = onnx.TensorProto.DEFAULT
        try:
            inferred = onnx.shape_inference.infer_shapes(stripped, check_type=True, strict_mode=True, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            raise self.fail(ModelValidationError, f"shape inference failed: {_one_line(str(e))}") from e
        except Exception:  # noqa: BLE001 - fall back to non-strict inference, our own rules check the rest
            try:
                inferred = onnx.shape_inference.infer_shapes(stripped, check_type=False, strict_mode=False, data_prop=True)
            except Exception:  # noqa: BLE001
                inferred = stripped
        types: dict[str, TensorType] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            t = self._type_of(vi.type, vi.name, strict=False)
            if t is not None:
                types.setdefault(vi.name, t)
        return types

    def _type_of(self, tp: onnx.TypeProto, name: str, strict: bool) -> TensorType | None:
        if not tp.HasField("tensor_type"):
            if strict:
                raise self.fail(UnsupportedError, f"value '{name}' is not a tensor ({tp.WhichOneof('value')})")
            return None
        tt = tp.tensor_type
        dtype = DType.from_onnx(tt.elem_type)
        if dtype is None:
            if strict or tt.elem_type:
                raise self.fail(UnsupportedError, f"value '{name}' has element type "
                                                  f"{_onnx_type_name(tt.elem_type)}, which tritc does not support")
            return None
        if not tt.HasField("shape"):
            return TensorType(dtype, None)
        if len(tt.shape.dim) > self.limits.max_rank:
            raise self.fail(ResourceLimitError, f"value '{name}' has rank {len(tt.shape.dim)}, over the limit of {self.limits.max_rank}")
        shape: list[Any] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                if d.dim_value < 0:
                    raise self.fail(ModelValidationError, f"value '{name}' has a negative dim {d.dim_value}")
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param and not d.dim_param.startswith("unk__"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
        return TensorType(dtype, tuple(shape))

    # -- values -------------------------------------------------------------------------------

    def _import_inputs_and_initializers(self, value_types: Mapping[str, TensorType]) -> None:
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        seen: set[str] = set()
        for t in g.initializer:
            if t.name in seen:
                raise self.fail(ModelValidationError, f"initializer '{t.name}' is defined twice")
            seen.add(t.name)
        for vi in g.input:
            if vi.name in inits:
                continue  # an initializer listed as an input (IR < 4): a weight, not an input
            if vi.name in self.env:
                raise self.fail(ModelValidationError, f"graph input '{vi.name}' is listed twice")
            t = self._type_of(vi.type, vi.name, strict=True)
            assert t is not None
            self.env[vi.name] = self.graph.add_input(vi.name, t)
        for t in g.initializer:
            array = self._tensor(t, f"initializer '{t.name}'")
            self.env[t.name] = self._const_value(array, t.name)
        if len(g.sparse_initializer):
            raise self.fail(UnsupportedError, f"sparse initializers are not supported "
                                              f"('{g.sparse_initializer[0].values.name}')")

    def _const_value(self, array: np.ndarray, name: str) -> Value:
        dtype = DType.from_numpy(array.dtype)
        t = TensorType(dtype, tuple(array.shape))
        if array.size <= INLINE_MAX_ELEMENTS:
            node = self.graph.make_node("constant", [], [t], {"value": array}, None, [name])
            self.graph.append(node)
            return node.outputs[0]
        key = name
        while key in self.graph.weights:
            key += "_"
        self.graph.weights[key] = array
        node = self.graph.make_node("weight", [], [t], {"ref": key}, None, [name])
        self.graph.append(node)
        return node.outputs[0]

    def _tensor(self, t: onnx.TensorProto, what: str) -> np.ndarray:
        """A TensorProto as a numpy array, with sizes checked before anything is allocated."""
        dtype = DType.from_onnx(t.data_type)
        if dtype is None:
            raise self.fail(UnsupportedError, f"{what} has element type {_onnx_type_name(t.data_type)}, "
                                              f"which tritc does not support")
        shape = [int(d) for d in t.dims]
        if any(d < 0 for d in shape):
            raise self.fail(ModelValidationError, f"{what} has a negative dim in {shape}")
        if len(shape) > self.limits.max_rank:
            raise self.fail(ResourceLimitError, f"{what} has rank {len(shape)}, over the limit of {self.limits.max_rank}")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        if nbytes > self.limits.max_tensor_bytes:
            raise self.fail(ResourceLimitError, f"{what} of shape {shape} needs {nbytes} bytes, over the "
                                                f"{self.limits.max_tensor_bytes}-byte tensor limit")
        self.weight_bytes += nbytes
        if self.weight_bytes > self.limits.max_total_weight_bytes:
            raise self.fail(ResourceLimitError, f"weights exceed the {self.limits.max_total_weight_bytes}-byte "
                                                f"limit at {what}")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raw = read_external(t, self.base_dir, what, self.source, nbytes)
            return np.frombuffer(raw, dtype=dtype.np_dtype).reshape(shape).copy()
        fields = [f.name for f, _ in t.ListFields() if f.name.endswith("_data") and f.name != "raw_data"]
        if t.HasField("raw_data"):
            if fields:
                raise self.fail(ModelValidationError, f"{what} sets both raw_data and {fields[0]}")
            if len(t.raw_data) != nbytes:
                raise self.fail(ModelValidationError, f"{what} of shape {shape} ({dtype}) needs {nbytes} bytes "
                                                      f"of raw_data, it has {len(t.raw_data)}")
        else:
            count = sum(len(getattr(t, f)) for f in fields)
            if count != numel:
                raise self.fail(ModelValidationError, f"{what} of shape {shape} needs {numel} values, it holds {count}")
        try:
            array = numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001 - onnx raises a variety of errors for bad tensors
            raise self.fail(ModelValidationError, f"{what} cannot be decoded: {_one_line(str(e))}") from e
        if array.dtype != dtype.np_dtype:
            array = array.astype(dtype.np_dtype)
        return np.ascontiguousarray(array)

    # -- nodes --------------------------------------------------------------------------------

    def _import_node(self, node: onnx.NodeProto, version: int, value_types: Mapping[str, TensorType]) -> None:
        label = _node_label(node, None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            self._import_constant(node)
            return
        domain = "" if node.domain == "ai.onnx" else node.domain
        opdef = onnx_op(node.op_type, domain)
        assert opdef is not None  # checked by _resolve_versions
        inputs: list[Value | None] = []
        for name in node.input:
            inputs.append(self.env[name] if name else None)
        attrs = self._attributes(node, label)
        imp = ImportNode(opdef.name, inputs, attrs, node.name or None, node.op_type, version, self.graph)
        adapt = find_adapter(domain, node.op_type, version) if version not in opdef.since else None
        if adapt is not None:
            try:
                adapt(imp)
            except (TypeRuleError, ValueError, KeyError, IndexError) as e:
                raise self.fail(ModelValidationError, f"node {label}: {e}") from e
        opdef = OPS[imp.op]
        while imp.inputs and imp.inputs[-1] is None:
            imp.inputs.pop()
        self._check_signature(opdef, imp, label)
        attrs = self._typed_attrs(opdef, imp.attrs, label)
        out_names = list(node.output)
        while out_names and not out_names[-1]:
            out_names.pop()
        if len(out_names) < opdef.min_outputs():
            raise self.fail(ModelValidationError, f"node {label} has {len(out_names)} outputs, {node.op_type} needs "
                                                  f"at least {opdef.min_outputs()}")
        types = self._output_types(opdef, imp, attrs, out_names, value_types, label)
        names = [n or f"{_hint(label)}.unused{i}" for i, n in enumerate(out_names)]
        created = self.graph.add(opdef.name, imp.inputs, types, attrs, node.name or None, output_names=names)
        for n, v in zip(out_names, created.outputs):
            if n:
                if v.name != n:
                    raise self.fail(ModelValidationError, f"value '{n}' is defined twice")
                self.env[n] = v

    def _import_constant(self, node: onnx.NodeProto) -> None:
        label = _node_label(node, None)
        if len(node.output) != 1 or len(node.attribute) != 1:
            raise self.fail(ModelValidationError, f"Constant node {label} needs exactly one output and one value attribute")
        a = node.attribute[0]
        if a.name == "value":
            array = self._tensor(a.t, f"Constant {label}")
        elif a.name == "value_float":
            array = np.array(a.f, dtype=np.float32)
        elif a.name == "value_floats":
            array = np.array(list(a.floats), dtype=np.float32)
        elif a.name == "value_int":
            array = np.array(a.i, dtype=np.int64)
        elif a.name == "value_ints":
            array = np.array(list(a.ints), dtype=np.int64)
        elif a.name in ("value_string", "value_strings"):
            raise self.fail(UnsupportedError, f"Constant {label} holds strings, which tritc does not support")
        elif a.name == "sparse_value":
            raise self.fail(UnsupportedError, f"Constant {label} holds a sparse tensor, which tritc does not support")
        else:
            raise self.fail(ModelValidationError, f"Constant {label} has an unknown attribute '{a.name}'")
        out = node.output[0]
        if out in self.env:
            raise self.fail(ModelValidationError, f"value '{out}' is defined twice")
        self.env[out] = self._const_value(array, out)

    def _attributes(self, node: onnx.NodeProto, label: str) -> dict[str, Any]:
        A = onnx.AttributeProto
        attrs: dict[str, Any] = {}
        for a in node.attribute:
            if a.name in attrs:
                raise self.fail(ModelValidationError, f"node {label} sets attribute '{a.name}' twice")
            if a.ref_attr_name:
                raise self.fail(UnsupportedError, f"node {label}: attribute references (functions) are not supported")
            if a.type == A.FLOAT:
                attrs[a.name] = float(np.float32(a.f))
            elif a.type == A.INT:
                attrs[a.name] = int(a.i)
            elif a.type == A.STRING:
                try:
                    attrs[a.name] = a.s.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.fail(ModelValidationError, f"node {label}: attribute '{a.name}' is not UTF-8") from None
            elif a.type == A.TENSOR:
                attrs[a.name] = self._tensor(a.t, f"attribute '{a.name}' of node {label}")
            elif a.type == A.FLOATS:
                attrs[a.name] = [float(np.float32(x)) for x in a.floats]
            elif a.type == A.INTS:
                attrs[a.name] = [int(x) for x in a.ints]
            elif a.type == A.STRINGS:
                try:
                    attrs[a.name] = [x.decode("utf-8") for x in a.strings]
                except UnicodeDecodeError:
                    raise self.fail(ModelValidationError, f"node {label}: attribute '{a.name}' is not UTF-8") from None
            elif a.type in (A.GRAPH, A.GRAPHS):
                raise self.fail(UnsupportedError, f"node {label} ({node.op_type}) has a subgraph; control flow "
                                                  f"is not supported")
            else:
                raise self.fail(UnsupportedError, f"node {label}: attribute '{a.name}' has type "
                                                  f"{A.AttributeType.Name(a.type)}, which tritc does not support")
        return attrs

    def _check_signature(self, opdef: OpDef, imp: ImportNode, label: str) -> None:
        n = len(imp.inputs)
        hi = opdef.max_inputs()
        if n < opdef.min_inputs() or (hi is not None and n > hi):
            takes = f"{opdef.min_inputs()}" + ("" if hi == opdef.min_inputs() else f" to {hi}" if hi is not None else " or more")
            raise self.fail(ModelValidationError, f"node {label} has {n} inputs, {imp.onnx_type} takes {takes}")
        for i, o in enumerate(opdef.inputs):
            if not o.optional and not o.variadic and i < n and imp.inputs[i] is None:
                raise self.fail(ModelValidationError, f"node {label}: required input {o.name} is empty")

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
                                                      f"{_onnx_type_name(v)}, which tritc does not support")
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
        ctx = InferContext(opdef.name, [None if v is None else v.type for v in imp.inputs], opdef.with_defaults(attrs),
                           [self.graph.const_value(v) for v in imp.inputs], len(out_names), imp.name)
        try:
            ours: list[TensorType] | None = opdef.infer(ctx)
        except TypeRuleError as e:
            shapes = ", ".join(format_type(v.type) if v is not None else "none" for v in imp.inputs)
            raise self.fail(ModelValidationError, f"node {label}: {e} (inputs: {shapes})") from e
        except Exception as e:  # noqa: BLE001 - a rule that cannot decide leaves the type to ONNX
            ours = None
            self.report.warnings.append(f"node {label}: type rule failed ({e})")
        types = []
        for i, name in enumerate(out_names):
            theirs = value_types.get(name) if name else None
            mine = ours[i] if ours is not None and i < len(ours) else None
            if mine is not None and theirs is not None:
                if not compatible(mine, theirs) or not compatible(theirs, mine):
                    if mine.dtype != theirs.dtype:
                        raise self.fail(ModelValidationError, f"node {label}: output '{name}' is {format_type(theirs)} "
                                                              f"in the model, but {imp.onnx_type} gives {format_type(mine)}")
                types.append(_refine(mine, theirs))
            elif mine is not None:
                types.append(mine)
            elif theirs is not None:
                types.append(theirs)
            else:
                raise self.fail(ModelValidationError, f"node {label}: cannot determine the type of output '{name}'")
        return types


# ---- helpers ----------------------------------------------------------------------------------


def _refine(mine: TensorType, theirs: TensorType) -> TensorType:
    """The more precise of two compatible types, dim by dim (static beats named beats unknown)."""
    if mine.shape is None:
        return theirs.with_dtype(mine.dtype)
    if theirs.shape is None or len(theirs.shape) != len(mine.shape):
        return mine
    out = []
    for a, b in zip(mine.shape, theirs.shape):
        if isinstance(a, int):
            out.append(a)
        elif isinstance(b, int):
            out.append(b)
        elif a is None:
            out.append(b)
        elif b is None:
            out.append(a)
        else:
            # Two symbolic forms: prefer ours (canonical polynomial) unless it is opaque.
            out.append(a if dimlib.to_poly(a) is not None else b)
    return TensorType(mine.dtype, tuple(out))


def _node_label(node: onnx.NodeProto, index: int | None) -> str:
    if node.name:
        return f"'{node.name}' ({node.op_type})"
    if node.output and node.output[0]:
        return f"{node.op_type} -> '{node.output[0]}'"
    return f"#{index} ({node.op_type})" if index is not None else f"({node.op_type})"


def _hint(label: str) -> str:
    return "".join(ch for ch in label if ch.isalnum() or ch in "_./") or "out"


def _graph_name(name: str) -> str:
    return name if name else "main"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _onnx_type_name(code: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return str(code)

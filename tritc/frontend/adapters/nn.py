"""Adapters for older versions of the nn and cnn ops (see tritc/frontend/adapters/__init__.py).

Dropout's ratio became an input, BatchNormalization lost `spatial`, GroupNormalization-18 took
per-group scales, and Resize-10 / Upsample had fixed coordinate rules that Resize-11 names.
"""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedError
from . import ImportNode, adapter


@adapter("Dropout", 7, 10)
def dropout_ratio_attribute(node: ImportNode) -> None:
    """Dropout-7,10 take the ratio as an attribute (and have no training_mode: they run as
    inference); Dropout-12 takes it as input 1. Dropout-7's mask has the data's dtype, not bool."""
    node.attr_to_input("ratio", 1, np.float32)
    data = node.inputs[0]
    if node.version == 7 and data is not None:
        node.attrs["mask_dtype"] = data.type.dtype


@adapter("BatchNormalization", 7, 9)
def batch_norm_spatial(node: ImportNode) -> None:
    """BatchNormalization-7 has `spatial` (1: statistics per channel, the only form later versions
    keep); 7 and 9 decide training from the number of outputs, which the op's rule checks."""
    spatial = node.attrs.pop("spatial", 1)
    if spatial != 1:
        raise UnsupportedError(f"node {node.name or node.onnx_type}: BatchNormalization with spatial={spatial} "
                               f"(per-activation statistics) is not supported")


@adapter("GroupNormalization", 18)
def group_norm_per_group_params(node: ImportNode) -> None:
    """GroupNormalization-18 takes scale and bias per group, 21 per channel: repeat each group's
    value for its C / num_groups channels (the parameters must be constants)."""
    groups = node.attrs.get("num_groups")
    x = node.inputs[0]
    channels = x.type.shape[1] if x is not None and x.type.shape is not None and len(x.type.shape) > 1 else None
    if groups is None or not isinstance(channels, int) or groups <= 0 or channels % groups:
        raise ValueError(f"GroupNormalization-18 needs a static channel count divisible by num_groups "
                         f"(channels {channels}, num_groups {groups})")
    if groups == channels:
        return  # one channel per group: per-group and per-channel parameters are the same
    for i, name in ((1, "scale"), (2, "bias")):
        value = node.graph.const_value(node.inputs[i]) if i < len(node.inputs) else None
        if value is None:
            raise UnsupportedError(f"node {node.name or 'GroupNormalization'}: GroupNormalization-18 with a "
                                   f"non-constant {name} is not supported")
        node.inputs[i] = node.const(np.repeat(np.asarray(value), channels // groups), name)


def _legacy_nearest_rounding(node: ImportNode) -> str:
    """Resize-10 and Upsample round source coordinates down when upsampling and up when
    downsampling (onnxruntime's behaviour for these versions); one rule per node."""
    scales = node.graph.const_value(node.inputs[2]) if len(node.inputs) > 2 else None
    if scales is None or all(s >= 1 for s in np.asarray(scales).reshape(-1)):
        return "floor"
    if all(s <= 1 for s in np.asarray(scales).reshape(-1)):
        return "ceil"
    raise UnsupportedError(f"node {node.name or node.onnx_type}: nearest {node.onnx_type}-{node.version} that "
                           f"upsamples some axes and downsamples others is not supported")


def _as_legacy_resize(node: ImportNode) -> None:
    node.op = "resize"
    node.attrs["coordinate_transformation_mode"] = "asymmetric"
    if node.attrs.get("mode", "nearest") == "nearest":
        node.attrs["nearest_mode"] = _legacy_nearest_rounding(node)


@adapter("Resize", 10)
@adapter("Upsample", 9)
def resize_scales_input(node: ImportNode) -> None:
    """Resize-10 / Upsample-9 (X, scales) -> Resize-11 (X, roi=none, scales), asymmetric coordinates."""
    node.pad_inputs(2)
    node.inputs = [node.inputs[0], None, node.inputs[1]]
    _as_legacy_resize(node)


@adapter("Upsample", 7)
def upsample_scales_attribute(node: ImportNode) -> None:
    """Upsample-7 takes the scales as an attribute."""
    if "scales" not in node.attrs:
        raise ValueError("Upsample-7 needs the scales attribute")
    node.attr_to_input("scales", 2, np.float32)
    _as_legacy_resize(node)

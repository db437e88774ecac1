"""Adapters for old versions of shape ops whose operands were attributes (Squeeze/Unsqueeze axes,
Split sizes, Slice bounds, Pad pads and value): each becomes the constant input the IR op takes.
"""

from __future__ import annotations

import numpy as np

from ...ir.casts import convert
from . import ImportNode, adapter


@adapter("Squeeze", 1, 11)
@adapter("Unsqueeze", 1, 11)
def axes_attribute(node: ImportNode) -> None:
    """Squeeze/Unsqueeze-1,11 take `axes` as an attribute; 13 takes it as input 1."""
    node.attr_to_input("axes", 1)


@adapter("Split", 2, 11)
def split_attribute(node: ImportNode) -> None:
    """Split-2,11 take the sizes as the `split` attribute; 13 takes them as input 1."""
    node.attr_to_input("split", 1)


@adapter("Slice", 1)
def slice_attributes(node: ImportNode) -> None:
    """Slice-1 takes starts, ends and axes as attributes (steps are always 1); 10 takes inputs."""
    if "starts" not in node.attrs or "ends" not in node.attrs:
        raise ValueError("Slice-1 needs the starts and ends attributes")
    node.attr_to_input("starts", 1)
    node.attr_to_input("ends", 2)
    node.attr_to_input("axes", 3)


@adapter("Pad", 2)
def pad_attributes(node: ImportNode) -> None:
    """Pad-2 takes `pads` and the float `value` as attributes; 11 takes inputs, the value in the
    data's dtype."""
    if "pads" not in node.attrs:
        raise ValueError("Pad-2 needs the pads attribute")
    value = node.attrs.pop("value", 0.0)
    node.attr_to_input("pads", 1)
    data = node.inputs[0]
    if data is None:
        raise ValueError("Pad-2 has no data input")
    node.pad_inputs(3)
    node.inputs[2] = node.const(convert(np.array(value, np.float64), data.type.dtype), "value")  # Pad-2's float, cast

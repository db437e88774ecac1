"""Adapters for older versions of the elementwise ops (see tritc/frontend/adapters/__init__.py).

Only Clip changed its signature within the supported opsets; the other elementwise ops' older
versions differ from the newest in the types they accept, which the IR op covers as it is.
"""

from __future__ import annotations

import numpy as np

from . import ImportNode, adapter

_FLT_MAX = float(np.finfo(np.float32).max)


@adapter("Clip", 6)
def clip_bounds_to_inputs(imp: ImportNode) -> None:
    """Clip-6 takes `min`/`max` as float attributes defaulting to -FLT_MAX/FLT_MAX; Clip-11 takes
    them as optional inputs of the input's type, missing meaning no bound."""
    x = imp.inputs[0]
    if x is None:
        raise ValueError("Clip has no input")
    dtype = x.type.dtype.np_dtype
    for index, name, default in ((1, "min", -_FLT_MAX), (2, "max", _FLT_MAX)):
        value = imp.attrs.pop(name, None)
        if value is None and dtype != np.float64:
            continue  # the default bound is no bound for float32, and inf for float16
        with np.errstate(over="ignore"):  # a float16 bound beyond its range is +-inf, as in a cast
            bound = np.array(default if value is None else value, dtype=dtype)
        imp.pad_inputs(index + 1)
        imp.inputs[index] = imp.const(bound, name)

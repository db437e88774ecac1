"""Model inputs and outputs on the command line: `.npy` files (never pickles), random inputs that respect each
input's dtype and shape, sizes for the symbolic dims (that the model admits), and output files whose names cannot
leave their folder."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OptionError
from ..ir import dims as dimlib
from ..ir.casts import convert, int_range
from ..ir.types import DType, TensorType, format_type
from ..limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from ..ir.graph import Graph

DEFAULT_DIM = 4  # size verify and bench give a symbolic dim nobody gave a size for, if the model admits it
SIZES_HELP = "other dims: sizes the model records, else 4 if the model admits it, else the smallest sizes it admits"
INT_HIGH = 32  # random integer inputs are in [0, INT_HIGH): token ids below any vocabulary, valid indices


# ---- .npy files ---------------------------------------------------------------------------------


def load_npy(path: str, what: str, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """An array from a .npy file. Pickled object arrays are refused, and a header that promises more data
    than the file holds, or more than `limits.max_input_bytes`, is caught before anything of that size is allocated."""
    p = Path(path)
    if not p.exists():
        raise OptionError(f"{what}: {path}: no such file")
    if not p.is_file():
        raise OptionError(f"{what}: {path}: not a file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            raise OptionError(f"{what}: {path}: not a .npy file (no NumPy magic; save arrays with numpy.save)") from None
        try:
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, dtype = None, None
        except ValueError as e:
            raise OptionError(f"{what}: {path}: bad .npy header ({_first_line(e)})") from None
        if dtype is not None:
            if dtype.hasobject:
                raise OptionError(f"{what}: {path}: holds Python objects (a pickle), which tritc never loads")
            need = math.prod(shape) * dtype.itemsize
            if need > limits.max_input_bytes:
                raise limits.exceeded("max_input_bytes", need, f"{what}: {path}: the array of shape {list(shape)} "
                                                               f"({dtype}) needs")
            if size - f.tell() < need:
                raise OptionError(f"{what}: {path}: truncated (the header promises {need} bytes of data, "
                                  f"the file has {size - f.tell()})")
        f.seek(0)
        try:
            arr = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise OptionError(f"{what}: {path}: unreadable .npy file ({_first_line(e)})") from None
    if not isinstance(arr, np.ndarray):  # pragma: no cover - .npz has no .npy magic and is refused above
        raise OptionError(f"{what}: {path}: not a single array")
    return arr


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def parse_input_files(items: Sequence[str], limits: Limits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """--input NAME=FILE.npy ... -> arrays by input name, each within limits.max_input_bytes."""
    out: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise OptionError(f"bad --input '{item}' (expected NAME=FILE.npy, e.g. input_ids=ids.npy)")
        if name in out:
            raise OptionError(f"--input {name} is given twice")
        out[name] = load_npy(path, f"--input {name}", limits)
    return out


def check_names(given: Mapping[str, object], inputs: Sequence[tuple[str, TensorType]], *, all_required: bool) -> None:
    names = [n for n, _ in inputs]
    unknown = [n for n in given if n not in names]
    if unknown:
        raise OptionError(f"unknown input name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          f"the model takes {', '.join(f'{n}: {format_type(t)}' for n, t in inputs) or 'no inputs'}")
    missing = [n for n in names if n not in given]
    if all_required and missing:
        raise OptionError(f"missing --input for {', '.join(missing)} (the model takes "
                          f"{', '.join(f'{n}: {format_type(t)}' for n, t in inputs)})")


# ---- symbolic dims and random inputs --------------------------------------------------------------


@dataclass
class Bindings:
    sizes: dict[str, int]
    source: dict[str, str]  # symbol -> "--shape", "from --input NAME", "imgsz in the model's metadata", "default", ...
    note: str = ""  # why the search ran, when it did

    def describe(self) -> str:
        """One line: every size, where it came from, and why the preferred sizes were not used if they were not."""
        if not self.sizes:
            return "static shapes"
        parts = []
        for k, v in self.sizes.items():
            why = self.source[k]
            parts.append(f"{k}={v}" + ("" if why == "--shape" else f" ({why})"))
        return ", ".join(parts) + (f"; {self.note}" if self.note else "")


SEARCHED = "smallest that fits"


def choose_bindings(inputs: Sequence[tuple[str, TensorType]], given: Mapping[str, int],
                    files: Mapping[str, np.ndarray], default: int = DEFAULT_DIM, *, graph: Graph | None = None,
                    recorded: Mapping[str, tuple[int, str]] | None = None,
                    max_input_bytes: int | None = None) -> Bindings:
    """Sizes for every symbol of the inputs: --shape first, then the shapes of input files, then the sizes the model
    records (`recorded`: symbol -> (size, where from)), then `default`. With `graph`, sizes other than the first two
    that its shape rules do not admit are replaced by the smallest that they do (codegen/llvm/sizes.py). The inputs
    to generate must fit in `max_input_bytes` (default: Limits.max_input_bytes), else ResourceLimitError."""
    from ..codegen.llvm.sizes import choose_sizes, input_bytes  # LLVM: only in commands that compile
    from ..runtime.model import value_specialised_inputs

    max_input_bytes = DEFAULT_LIMITS.max_input_bytes if max_input_bytes is None else max_input_bytes
    symbols: dict[str, None] = {}
    for _, t in inputs:
        for d in t.shape or ():
            for s in sorted(dimlib.symbols(d)):
                symbols.setdefault(s, None)
    unknown = [k for k in given if k not in symbols]
    if unknown:
        raise OptionError(f"--shape names unknown dim(s) {', '.join(unknown)} (the model's dims: "
                          f"{', '.join(symbols) or 'none, all static'})")
    sizes = {k: int(v) for k, v in given.items()}
    source = {k: "--shape" for k in given}
    for name, t in inputs:
        arr = files.get(name)
        if arr is None or t.shape is None or arr.ndim != len(t.shape):
            continue  # a rank mismatch is reported when the inputs are checked
        for d, n in zip(t.shape, arr.shape):
            if isinstance(d, str) and dimlib.symbols(d) == {d}:
                if d in sizes and sizes[d] != n:
                    raise OptionError(f"dim '{d}' is {sizes[d]} ({source[d]}) but {n} in --input {name} "
                                      f"(shape {list(arr.shape)})")
                if d not in sizes:
                    sizes[d], source[d] = int(n), f"from --input {name}"
    preferred: dict[str, int] = {}
    for s in symbols:
        if s not in sizes:
            size, why = (recorded or {}).get(s, (default, "default"))
            preferred[s], source[s] = size, why
    note = ""
    if graph is not None and preferred and not value_specialised_inputs(graph):
        choice = choose_sizes(graph, sizes, preferred, max_input_bytes=max_input_bytes)
        if choice.searched:
            verb = "do not fit" if len(choice.searched) > 1 else "does not fit"
            note = f"{', '.join(f'{s}={preferred[s]}' for s in choice.searched)} {verb}: {(choice.misfit or '')[:240]}"
            source.update((s, SEARCHED) for s in choice.searched)
        preferred = {s: choice.sizes[s] for s in preferred}
    sizes.update(preferred)
    bindings = Bindings({s: sizes[s] for s in symbols}, source, note)
    made = [(name, t) for name, t in inputs if name not in files]
    need = input_bytes((t for _, t in made), bindings.sizes)
    if need > max_input_bytes:
        at = f" at {', '.join(f'{k}={v}' for k, v in bindings.sizes.items())}" if bindings.sizes else ""
        name, t = max(made, key=lambda item: input_bytes([item[1]], bindings.sizes))
        raise Limits(max_input_bytes=max_input_bytes).exceeded(
            "max_input_bytes", need, f"the inputs to generate{at} (the largest: '{name}' {format_type(t)}) would take",
            hint="give smaller sizes with --shape NAME=SIZE or the inputs with --input NAME=FILE.npy")
    return bindings


def concrete_shape(name: str, t: TensorType, bindings: Mapping[str, int]) -> tuple[int, ...]:
    if t.shape is None:
        raise OptionError(f"input '{name}' has an unknown rank; give it with --input {name}=FILE.npy")
    shape = []
    for d in t.shape:
        n = d if isinstance(d, int) else (dimlib.evaluate(d, dict(bindings)) if isinstance(d, str) else None)
        if n is None:
            raise OptionError(f"input '{name}' ({format_type(t)}) has a dim of unknown size; give it with "
                              f"--input {name}=FILE.npy")
        shape.append(int(n))
    return tuple(shape)


def random_input(name: str, t: TensorType, bindings: Mapping[str, int], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(array, how it was made): masks all ones, integers in [0, INT_HIGH), floats standard normal."""
    shape = concrete_shape(name, t, bindings)
    dt = t.dtype
    if dt is DType.T2:
        raise OptionError(f"input '{name}' is ternary (t2); give it with --input {name}=FILE.npy")
    if "mask" in name.lower():
        return np.ones(shape, dt.np_dtype), "all ones (a mask)"
    if dt is DType.BOOL:
        return rng.integers(0, 2, size=shape).astype(np.bool_), "random booleans"
    if dt.is_int:
        high = min(INT_HIGH, int_range(dt)[1] + 1)  # 4- and 2-bit ints hold less
        return convert(rng.integers(0, high, size=shape), dt), f"random integers in [0, {high})"
    return rng.standard_normal(size=shape).astype(dt.np_dtype), "random normal"


def make_inputs(inputs: Sequence[tuple[str, TensorType]], bindings: Mapping[str, int], files: Mapping[str, np.ndarray],
                seed: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One array per input: from its file, or random. Also how each was made, for the report."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    how: dict[str, str] = {}
    for name, t in inputs:
        if name in files:
            feeds[name], how[name] = files[name], "from file"
        else:
            feeds[name], how[name] = random_input(name, t, bindings, rng)
    return feeds, how


def describe_array(a: np.ndarray) -> str:
    return f"{DType.from_numpy(a.dtype).ir_name if _known(a.dtype) else a.dtype}[{','.join(map(str, a.shape))}]"


def _known(dt: np.dtype) -> bool:
    try:
        DType.from_numpy(dt)
        return True
    except (KeyError, ValueError, TypeError):
        return False


# ---- outputs --------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_NAME = 120


def output_file_names(names: Sequence[str]) -> list[str]:
    """A distinct, safe file name per output name: only [A-Za-z0-9_.-], no leading dot (no '..', no hidden
    files), bounded length; collisions (also ignoring case) get a numeric suffix."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = _UNSAFE.sub("_", name).lstrip(".")[:MAX_NAME] or "output"
        stem, i = base, 1
        while stem.lower() in taken:
            i += 1
            stem = f"{base}_{i}"
        taken.add(stem.lower())
        out.append(stem + ".npy")
    return out


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def summarize(a: np.ndarray) -> str:
    """shape, dtype, min/max/mean (finite values; NaN and inf counted)."""
    head = describe_array(a)
    if a.size == 0:
        return f"{head}  (empty)"
    if a.dtype == np.bool_:
        return f"{head}  true {int(np.count_nonzero(a))} of {a.size}"
    x = a.astype(np.float64)
    finite = np.isfinite(x)
    parts = [head]
    if finite.any():
        v = x[finite]
        parts.append(f"min {_num(v.min())}  max {_num(v.max())}  mean {_num(v.mean())}")
    bad = a.size - int(np.count_nonzero(finite))
    if bad:
        parts.append(f"non-finite {bad} (nan {int(np.count_nonzero(np.isnan(x)))})")
    return "  ".join(parts)


def _num(x: float) -> str:
    return f"{x:.6g}"

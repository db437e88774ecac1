"""One differential check: a model and its feeds, compiled by tritc and run, against onnxruntime.

Outcomes: "pass"; "unsupported" (tritc refused the model with an UnsupportedError: not a finding); "invalid"
(onnxruntime refused the model or a feed: the generator's fault, not a finding); "split" (tritc differs from
onnxruntime but agrees with onnx's own reference implementation, onnx.reference: where ONNX leaves a case open, as
NaN in ArgMax or ReduceMin, the two references disagree, and tritc follows numpy's rule); and the findings: "mismatch"
(outputs differ beyond tolerance, NaN positions differ, integers differ), "error" (tritc refused with another
CompilerError a model onnxruntime runs), "bug" (any other exception from tritc), "fpga" (the FPGA simulator
disagrees with the interpreter on a ternary graph). The campaign adds "timeout" and "crash", and "generator" (the
generator failed on a seed: its bug, said but not a finding).

Tolerances, those of the ONNX backend tests (tests/conformance) with an absolute floor for cancellation: floats
within rtol 1e-3 and atol 1e-5 (f16: rtol 4e-3, two of its ulps), NaN and +-Inf in the same places; integers and
bools exact; dtype and shape equal. The FPGA target against the interpreter of its final IR: rtol 1e-4,
atol 1e-4 (tests/runtime/test_fpga_model.py; the int8 x trit sums are exact, the fp32 rescale may round apart).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import CompilerError, UnsupportedError

RTOL, ATOL = 1e-3, 1e-5
RTOL_F16 = 4e-3
FPGA_RTOL, FPGA_ATOL = 1e-4, 1e-4
FINDINGS = ("mismatch", "error", "bug", "fpga", "timeout", "crash")


@dataclass
class Outcome:
    kind: str  # pass, unsupported, invalid, or one of FINDINGS
    message: str = ""
    phase: str = ""  # where a finding showed: reference, compile, run, compare, fpga-compile, fpga-run

    @property
    def finding(self) -> bool:
        return self.kind in FINDINGS


def compare(actual: list[np.ndarray], expected: list[np.ndarray], names: list[str], rtol: float = RTOL,
            atol: float = ATOL) -> str | None:
    """None when the outputs agree; else what differs, on one line."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for name, a, e in zip(names, actual, expected):
        a, e = np.asarray(a), np.asarray(e)
        if a.dtype != e.dtype:
            return f"output {name}: dtype {a.dtype}, expected {e.dtype}"
        if a.shape != e.shape:
            return f"output {name}: shape {a.shape}, expected {e.shape}"
        if e.dtype.kind == "f":
            r = RTOL_F16 if e.dtype == np.float16 else rtol
            a64, e64 = a.astype(np.float64), e.astype(np.float64)
            with np.errstate(all="ignore"):
                close = np.abs(a64 - e64) <= atol + r * np.abs(e64)
            nan_a, nan_e = np.isnan(a64), np.isnan(e64)
            if (nan_a != nan_e).any():
                i = int(np.flatnonzero(nan_a != nan_e)[0])
                return f"output {name}: NaN positions differ (first at flat index {i}: {a64.flat[i]} vs {e64.flat[i]})"
            ok = nan_e | (a64 == e64) | close
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                return (f"output {name}: {int((~ok).sum())} of {ok.size} elements differ (first at flat index {i}: "
                        f"{a64.flat[i]!r} vs {e64.flat[i]!r}; rtol {r}, atol {atol})")
        elif not np.array_equal(a, e):
            i = int(np.flatnonzero(a.reshape(-1) != e.reshape(-1))[0])
            return f"output {name}: {int((a != e).sum())} elements differ (first at flat index {i}: {a.flat[i]} vs {e.flat[i]})"
    return None


def _ort(model: onnx.ModelProto) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def _describe(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:2000]


def check(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], fpga: bool = False,
          phase: Callable[[str], None] = lambda _p: None, threads: int = 1, reload: bool = False) -> Outcome:
    """Compile `model` with tritc (on `threads` threads; saved and loaded back first when `reload`), run every feed,
    compare with onnxruntime (and the FPGA target with the interpreter when `fpga`). `phase(name)` is called as each
    stage starts (the campaign's watchdog reports it)."""
    import tritc

    phase("reference")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ref = _ort(model)
            expected = [ref(f) for f in feeds]
    except Exception as e:  # noqa: BLE001 - onnxruntime refusing the model is the generator's miss
        return Outcome("invalid", _describe(e), "reference")
    names = [o.name for o in model.graph.output]
    phase("compile")
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = tritc.compile(model, threads=threads)
            if reload:
                phase("save-load")
                with tempfile.TemporaryDirectory(prefix="tritc-fuzz-") as d:
                    cm.save(f"{d}/model.tritc")
                    cm = tritc.load(f"{d}/model.tritc")
    except UnsupportedError as e:
        return Outcome("unsupported", _describe(e), "compile")
    except CompilerError as e:
        return Outcome("error", _describe(e), "compile")
    except Exception as e:  # noqa: BLE001 - a bug in tritc is what we look for
        return Outcome("bug", _describe(e), "compile")
    for k, (feed, want) in enumerate(zip(feeds, expected)):
        phase("run")
        try:
            with np.errstate(all="ignore"):
                got = cm.run(None, feed)
        except UnsupportedError as e:
            return Outcome("unsupported", _describe(e), "run")
        except Exception as e:  # noqa: BLE001
            return Outcome("bug" if not isinstance(e, CompilerError) else "error", _describe(e), "run")
        phase("compare")
        diff = compare(got, want, names)
        if diff:
            kind = "split" if _agrees_with_onnx_reference(model, feed, got, names) else "mismatch"
            return Outcome(kind, f"feed {k} ({_sizes(feed)}): {diff}", "compare")
    if fpga:
        return check_fpga(model, feeds, phase)
    return Outcome("pass")


def check_fpga(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
               phase: Callable[[str], None] = lambda _p: None) -> Outcome:
    """The FPGA target (simulator) against the interpreter of its final IR, which is what the device must compute."""
    import tritc

    from ..ir import interpreter

    phase("fpga-compile")
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fm = tritc.compile(model, target="fpga")
    except UnsupportedError as e:
        return Outcome("unsupported", "fpga: " + _describe(e), "fpga-compile")
    except CompilerError as e:
        return Outcome("fpga", _describe(e), "fpga-compile")
    except Exception as e:  # noqa: BLE001
        return Outcome("bug", "fpga: " + _describe(e), "fpga-compile")
    names = [o.name for o in fm.outputs]
    for k, feed in enumerate(feeds):
        phase("fpga-run")
        try:
            with np.errstate(all="ignore"):
                got = fm.run(None, feed)
                want_map = interpreter.run(fm.graph, feed)
        except UnsupportedError as e:
            return Outcome("unsupported", "fpga: " + _describe(e), "fpga-run")
        except Exception as e:  # noqa: BLE001
            return Outcome("fpga" if isinstance(e, CompilerError) else "bug", "fpga: " + _describe(e), "fpga-run")
        diff = compare(got, [want_map[n] for n in names], names, FPGA_RTOL, FPGA_ATOL)
        if diff:
            return Outcome("fpga", f"feed {k} ({_sizes(feed)}): simulator vs interpreter: {diff}", "fpga-run")
    return Outcome("pass")


def _agrees_with_onnx_reference(model: onnx.ModelProto, feed: dict[str, np.ndarray], got: list[np.ndarray],
                                names: list[str]) -> bool:
    from onnx.reference import ReferenceEvaluator

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ref = ReferenceEvaluator(model).run(None, feed)
    except Exception:  # noqa: BLE001 - no second opinion: the mismatch stands
        return False
    return compare(got, [np.asarray(r) for r in ref], names) is None


def _sizes(feed: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())

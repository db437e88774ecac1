"""tritc: a compiler for ternary neural networks (ONNX in, native CPU code or FPGA streams out).

    import tritc
    model = tritc.compile("model.onnx")            # passes + LLVM, for this CPU
    model.save("model.tritc"); model = tritc.load("model.tritc")
    outputs = model.run(None, {"x": x})             # like onnxruntime.InferenceSession.run
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .runtime.model import CompiledModel


def compile(model: Any, target: str = "cpu", **options: Any) -> CompiledModel:  # noqa: A001 - the public name
    """Compile an ONNX model (path, bytes, ModelProto or tritc Graph); see tritc.driver.compile_model."""
    from .driver import compile_model

    return compile_model(model, target=target, **options)


def load(path: Any, **options: Any) -> CompiledModel:
    """Load a compiled artifact (every section verified; rebuilt for this CPU if needed)."""
    from .runtime.serialize import load_model

    return load_model(path, **options)


__all__ = ["__version__", "compile", "load"]

"""tritc: a compiler for ternary neural networks (ONNX in, native CPU code or FPGA streams out).

    import tritc
    model = tritc.compile("model.onnx")            # passes + LLVM, for this CPU
    model.save("model.tritc"); model = tritc.load("model.tritc")
    outputs = model.run(None, {"x": x})             # like onnxruntime.InferenceSession.run
    result = tritc.generate("decoder.onnx", [1, 2, 3], max_new_tokens=32)   # a decoder with a KV cache
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .limits import Limits  # the resource budgets: tritc.compile(m, limits=tritc.Limits(max_tensor_bytes=...))

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Iterable

    from .runtime.generate import Generation, GenerationResult
    from .runtime.model import CompiledModel


def compile(model: Any, target: str = "cpu", **options: Any) -> CompiledModel:  # noqa: A001 - the public name
    """Compile an ONNX model (path, bytes, ModelProto or tritc Graph); see tritc.driver.compile_model."""
    from .driver import compile_model

    return compile_model(model, target=target, **options)


def load(path: Any, *, key: bytes | None = None, **options: Any) -> CompiledModel:
    """Load a compiled artifact (every section verified; rebuilt for this CPU if needed). `key`: the artifact must be
    signed with this key (HMAC-SHA256, `model.save(path, sign_key=key)`); see docs/ARTIFACT.md, "Security": an
    artifact holds native code, so loading one is running its author's program."""
    from .runtime.serialize import load_model

    return load_model(path, key=key, **options)


def read_key(path: Any) -> bytes:
    """The signing key in a file (its bytes, without a trailing newline), for tritc.load(key=) and model.save(sign_key=)."""
    from .runtime.artifact import read_key as read

    return read(path)


def generate(model: Any, input_ids: Any, max_new_tokens: int, *, temperature: float = 0.0, top_k: int | None = None,
             top_p: float = 1.0, seed: int | None = None, stop_ids: int | Iterable[int] | None = None,
             max_context: int | None = None, on_token: Callable[[int], None] | None = None, stream: bool = False,
             threads: int | None = None, **compile_options: Any) -> GenerationResult | Generation:
    """Generate up to `max_new_tokens` token ids after the prompt `input_ids` with a decoder that has a KV cache.

    model: an .onnx path (compiled, `compile_options` as for tritc.compile), a .tritc path (loaded), a compiled model,
    or any object with onnxruntime's session interface (`key=`: the key a .tritc path must be signed with, as for
    tritc.load). Greedy by default (temperature 0); temperature > 0 samples,
    within top_k / top_p, reproducibly for a `seed`. Stops after a token in `stop_ids`, or when the cache holds
    `max_context` tokens (default: the model's position table, if it has one). on_token(token) is called as each
    token comes; stream=True returns an iterator of the tokens (its `.result` once done) instead of the result.
    The result has the new tokens, the stop reason and timings (prefill and decode tokens/s, time to first token).
    docs/GENERATE.md describes the layouts, sampling and cache."""
    from .runtime.generate import generate as run_generation

    return run_generation(model, input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          stop_ids=stop_ids, max_context=max_context, on_token=on_token, stream=stream, threads=threads,
                          **compile_options)


__all__ = ["Limits", "__version__", "compile", "generate", "load", "read_key"]

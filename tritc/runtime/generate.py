"""Text generation: the decoding loop over a compiled decoder and its KV cache (tritc.generate, `tritc generate`).

    prefill: run(prompt, empty cache) -> first token;  decode: run(last token, cache) -> next token, until
    max_new_tokens, a stop token or the maximum context

The loop only calls the model's `run` (it compiles nothing itself); decoder_layout.py decides what to feed,
kv_cache.py holds the cache, sampling.py picks tokens. docs/GENERATE.md is the user's page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError, RunError
from .decoder_layout import DecoderLayout, decoder_layout, graph_of, port_of
from .kv_cache import MIN_CAPACITY, KVCache
from .sampling import Sampler, Sampling

STOP_MAX_NEW_TOKENS = "max_new_tokens"
STOP_TOKEN = "stop_token"
STOP_MAX_CONTEXT = "max_context"


@dataclass(frozen=True)
class GenerationStats:
    """Timings of one generation. Prefill is the run over the prompt (with the choice of the first token); decode
    the runs that follow, one token each; neither counts time spent by the caller between tokens."""

    prompt_tokens: int
    new_tokens: int
    # compiling (.onnx) or loading (.tritc) the model given as a path, and compiling a tritc model's capacity form
    # (the first generation with it; 0 after, and for other sessions)
    load_seconds: float
    prefill_seconds: float
    decode_seconds: float
    time_to_first_token: float  # load + prefill
    cache_capacity: int  # positions the KV cache buffers had at the end
    cache_grows: int  # reallocations after the first (growth by doubling)
    cache_in_place: bool = False  # the compiled code appended to the cache buffers (no per-step copy of the cache)
    cache_reason: str = ""  # why not, when not

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else float("inf")

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens after the first over their time; None when only one token was generated."""
        n = self.new_tokens - 1
        if n <= 0:
            return None
        return n / self.decode_seconds if self.decode_seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prefill_tokens_per_second": self.prefill_tokens_per_second,
                "decode_tokens_per_second": self.decode_tokens_per_second}


@dataclass(frozen=True)
class GenerationResult:
    """The new tokens (a stop token that ended the generation included), why it stopped, and the timings."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    stop_reason: str  # "max_new_tokens", "stop_token" or "max_context"
    stats: GenerationStats


class Generation:
    """The tokens of a generation as they come (an iterator); `result` once it is over (iterating to the end first
    if needed)."""

    def __init__(self, steps: Iterator[int], finish: Callable[[], GenerationResult]):
        self._steps = steps
        self._finish = finish
        self._result: GenerationResult | None = None

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> int:
        if self._result is not None:
            raise StopIteration
        try:
            return next(self._steps)
        except StopIteration:
            self._result = self._finish()
            raise

    @property
    def result(self) -> GenerationResult:
        for _ in self:
            pass
        assert self._result is not None
        return self._result


# ---- arguments -------------------------------------------------------------------------------------------------


def prompt_ids(input_ids: Any, name: str = "input_ids") -> tuple[int, ...]:
    """The prompt as token ids: a sequence of ints, or an integer array of shape [n] or [1, n]."""
    a = np.asarray(input_ids)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1:
        raise OptionError(f"{name} must be one prompt, a sequence of token ids (or an array of shape [1, n]), not "
                          f"an array of shape {list(a.shape)}")
    if a.size == 0:
        raise OptionError("the prompt is empty: give at least one token id")
    if a.dtype.kind not in "iu" and not (a.dtype == object and all(_is_int(x) for x in a)):
        raise OptionError(f"{name} must be integer token ids, not {a.dtype} values")
    return tuple(int(x) for x in a)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def stop_set(stop_ids: int | Iterable[int] | None, name: str = "stop_ids") -> frozenset[int]:
    if stop_ids is None:
        return frozenset()
    items = [stop_ids] if _is_int(stop_ids) else list(stop_ids)  # type: ignore[arg-type]
    for x in items:
        if not _is_int(x):
            raise OptionError(f"{name} must be integer token ids, not {x!r}")
    return frozenset(int(x) for x in items)


def check_count(max_new_tokens: Any, name: str = "max_new_tokens") -> int:
    if not _is_int(max_new_tokens) or max_new_tokens <= 0:
        raise OptionError(f"{name} must be an integer >= 1, not {max_new_tokens!r}")
    return int(max_new_tokens)


def check_in_vocab(ids: Iterable[int], vocab: int | None, what: str) -> None:
    for i, t in enumerate(ids):
        if t < 0 or (vocab is not None and t >= vocab):
            where = f"{what} {t}" + (f" (position {i} of the prompt)" if what == "token id" else "")
            raise OptionError(f"{where} is outside the vocabulary [0, {vocab if vocab is not None else '?'})")


@dataclass(frozen=True)
class Request:
    """The checked arguments of a generation, before any model is involved."""

    prompt: tuple[int, ...]
    count: int
    stops: frozenset[int]
    sampling: Sampling
    max_context: int | None


def check_arguments(input_ids: Any, max_new_tokens: Any, *, temperature: float = 0.0, top_k: int | None = None,
                    top_p: float = 1.0, seed: int | None = None, stop_ids: int | Iterable[int] | None = None,
                    max_context: int | None = None, names: Mapping[str, str] | None = None) -> Request:
    """OptionError for the first argument that is wrong on its own (the vocabulary and context come with the model);
    `names` spells the parameters in messages (the CLI's flags)."""
    n = names or {}
    count = check_count(max_new_tokens, n.get("max_new_tokens", "max_new_tokens"))
    prompt = prompt_ids(input_ids, n.get("input_ids", "input_ids"))
    stops = stop_set(stop_ids, n.get("stop_ids", "stop_ids"))
    sampling = Sampling(temperature, top_k, top_p, seed)
    sampling.check(n)
    if max_context is not None and (not _is_int(max_context) or max_context < 1):
        raise OptionError(f"{n.get('max_context', 'max_context')} must be an integer >= 1, not {max_context!r}")
    return Request(prompt, count, stops, sampling, max_context)


def context_limit(layout: DecoderLayout, max_context: int | None) -> tuple[int | None, str]:
    """The most tokens the cache may hold, and where that comes from: the caller's max_context, within the rows of
    the model's position table (if the positions index one)."""
    model = layout.positions_limit
    source = f"the rows of the model's position table '{layout.positions_table}'"
    if max_context is None:
        return model, source
    if model is not None and max_context > model:
        raise OptionError(f"a maximum context of {max_context} tokens is more than the model's {model} positions "
                          f"({source})")
    return int(max_context), "as asked"


def resolve_model(model: Any, threads: int | None = None, **compile_options: Any) -> tuple[Any, bool]:
    """A model to run, and whether it was compiled or loaded here: an .onnx path, a ModelProto or bytes are compiled,
    any other path loaded as a .tritc artifact; a CompiledModel or any object with onnxruntime's session interface is
    used as it is."""
    import onnx

    import tritc

    path = isinstance(model, (str, os.PathLike))
    key = compile_options.pop("key", None)  # the signing key of a .tritc artifact (docs/ARTIFACT.md, "Security")
    if key is not None and (not path or Path(model).suffix.lower() == ".onnx"):
        raise OptionError("key= checks the signature of a .tritc artifact; the model given is not one")
    if (path and Path(model).suffix.lower() == ".onnx") or isinstance(model, (bytes, bytearray, onnx.ModelProto)):
        # lazy: no code yet; generation compiles the capacity form, or this one at its first run if it cannot
        return tritc.compile(model, threads=threads, lazy=True, **compile_options), True
    if compile_options:
        raise OptionError(f"compile options ({', '.join(sorted(compile_options))}) apply to an .onnx model, not to "
                          f"{model if path else 'a model object (' + type(model).__name__ + ')'}")
    if path:
        return tritc.load(model, threads=threads, key=key), True
    if hasattr(model, "run") and hasattr(model, "get_inputs") and hasattr(model, "get_outputs"):
        return model, False
    raise TypeError(f"cannot generate with a {type(model).__name__}: give a path (.onnx or .tritc), a compiled model "
                    f"or an onnxruntime-like session")


def layout_of(session: Any) -> DecoderLayout:
    return decoder_layout([port_of(p) for p in session.get_inputs()], [port_of(p) for p in session.get_outputs()],
                          graph_of(session))


# ---- one step ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InPlace:
    """The capacity form of a tritc model (CompiledModel.with_cache_in_place): what runs, and its input that says
    how many positions the cache buffers hold."""

    model: Any
    length_input: str


def cache_in_place(session: Any, layout: DecoderLayout) -> tuple[InPlace | None, str]:
    """The capacity form to generate with, compiled (once per model), or None and why the cache is copied instead:
    a session that is not a tritc model, a model that cannot take the form, or a form whose interface does not carry
    the layout's caches as buffers along their length."""
    derive = getattr(session, "with_cache_in_place", None)
    if derive is None:
        return None, f"the model is not compiled by tritc ({type(session).__name__})"
    model, reason = derive()
    if model is None:
        return None, reason
    graph = graph_of(model)
    lengths = list(graph.value_symbols) if graph is not None else []
    if len(lengths) != 1:
        return None, f"its capacity form has {len(lengths)} inputs giving a length, not one"
    ins = {p.name: p for p in map(port_of, model.get_inputs())}
    outs = {p.name: p for p in map(port_of, model.get_outputs())}
    for s in layout.slots:
        past, present = ins.get(s.input), outs.get(s.output)
        if past is None or present is None or past.shape is None or present.shape != past.shape \
                or len(past.shape) != len(s.shape) or isinstance(past.shape[s.seq_axis], int):
            return None, f"its capacity form does not make '{s.input}' a buffer bound to '{s.output}'"
    return InPlace(model, lengths[0]), ""


class DecoderStep:
    """Runs the model on some tokens after what the cache holds, has their keys and values added to the cache, and
    returns the logits of the last token. With `in_place`, the capacity form runs: the cache buffers are its past
    inputs and its present outputs, and the code writes the new positions into them."""

    def __init__(self, session: Any, layout: DecoderLayout, in_place: InPlace | None = None):
        self.session = session
        self.layout = layout
        self.in_place = in_place
        self.fetch = [layout.logits.name] + ([] if in_place else [s.output for s in layout.slots])

    def __call__(self, tokens: Sequence[int], cache: KVCache) -> np.ndarray:
        lay = self.layout
        past, n = cache.length, len(tokens)
        feed: dict[str, np.ndarray] = {lay.tokens.name: np.asarray([tokens], dtype=lay.tokens.dtype)}
        if lay.mask is not None:
            feed[lay.mask.name] = np.ones((1, past + n), dtype=lay.mask.dtype)
        positions = np.arange(past, past + n)
        if lay.positions is not None:
            feed[lay.positions.name] = positions[None].astype(lay.positions.dtype)
        if lay.cache_position is not None:
            rank = len(lay.cache_position.shape) if lay.cache_position.shape is not None else 1
            feed[lay.cache_position.name] = positions.reshape((1,) * (rank - 1) + (n,)).astype(lay.cache_position.dtype)
        if self.in_place is None:
            feed.update(cache.feeds())
            results = self.session.run(self.fetch, feed)
            cache.append(dict(zip(self.fetch[1:], results[1:])), n)
        else:
            cache.reserve(past + n)
            feed.update(cache.buffer_feeds(self.in_place.length_input))
            results = self.in_place.model.run(self.fetch, feed, outputs=cache.bindings())
            cache.advance(n)
        logits = np.asarray(results[0])
        if logits.ndim == 3 and logits.shape[:2] in ((1, n), (1, 1)):
            return logits[0, -1]
        if logits.ndim == 2 and logits.shape[0] == 1:
            return logits[0]
        raise RunError(f"output '{lay.logits.name}' has shape {list(logits.shape)}; expected [1, {n}, vocab] or [1, vocab]")


# ---- the loop ----------------------------------------------------------------------------------------------------


def initial_capacity(prompt: int, most: int, preallocate: bool) -> int:
    """Positions to allocate first: the most the generation can use (`most`) when a maximum context was chosen,
    else a power of two covering the prompt (at least MIN_CAPACITY), grown by doubling as tokens come."""
    if preallocate:
        return most
    return min(max(MIN_CAPACITY, 1 << (prompt - 1).bit_length()), most)


def generate(model: Any, input_ids: Any, max_new_tokens: int, *, temperature: float = 0.0, top_k: int | None = None,
             top_p: float = 1.0, seed: int | None = None, stop_ids: int | Iterable[int] | None = None,
             max_context: int | None = None, on_token: Callable[[int], None] | None = None, stream: bool = False,
             threads: int | None = None, **compile_options: Any) -> GenerationResult | Generation:
    """Generate up to `max_new_tokens` tokens after the prompt `input_ids`; see tritc.generate."""
    t_call = time.perf_counter()
    req = check_arguments(input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          stop_ids=stop_ids, max_context=max_context)
    prompt, count, stops = req.prompt, req.count, req.stops
    sampler = Sampler(req.sampling)
    session, loaded = resolve_model(model, threads, **compile_options)
    load_seconds = time.perf_counter() - t_call if loaded else 0.0
    layout = layout_of(session)
    check_in_vocab(prompt, layout.vocab, "token id")
    check_in_vocab(sorted(stops), layout.vocab, "stop id")
    limit, source = context_limit(layout, max_context)
    if limit is not None and len(prompt) > limit:
        raise OptionError(f"the prompt has {len(prompt)} tokens, more than the maximum context of {limit} ({source})")
    t_form = time.perf_counter()
    in_place, cache_reason = cache_in_place(session, layout)  # compiles the capacity form, once per model
    if in_place is None and loaded and hasattr(session, "compile_generic") and not session.program.value_inputs:
        session.compile_generic()  # compiled lazily above: its code now, as part of loading
    load_seconds += time.perf_counter() - t_form
    needed = len(prompt) + count - 1  # positions fed to the model: the last new token is never fed back
    most = needed if limit is None else min(needed, limit)
    cache = KVCache(layout.slots, initial_capacity(len(prompt), most, max_context is not None), most)
    step = DecoderStep(session, layout, in_place)
    new: list[int] = []
    times = {"prefill": 0.0, "decode": 0.0}
    stop = [STOP_MAX_NEW_TOKENS]

    def steps() -> Iterator[int]:
        feed: Sequence[int] = prompt
        while True:
            t0 = time.perf_counter()
            token = sampler(step(feed, cache), len(new))
            times["prefill" if not new else "decode"] += time.perf_counter() - t0
            new.append(token)
            if on_token is not None:
                on_token(token)
            yield token
            if token in stops:
                stop[0] = STOP_TOKEN
                return
            if len(new) >= count:
                return
            if limit is not None and cache.length >= limit:
                stop[0] = STOP_MAX_CONTEXT
                return
            feed = (token,)

    def finish() -> GenerationResult:
        stats = GenerationStats(prompt_tokens=len(prompt), new_tokens=len(new), load_seconds=load_seconds,
                                prefill_seconds=times["prefill"], decode_seconds=times["decode"],
                                time_to_first_token=load_seconds + times["prefill"], cache_capacity=cache.capacity,
                                cache_grows=cache.grows, cache_in_place=in_place is not None, cache_reason=cache_reason)
        return GenerationResult(prompt, tuple(new), stop[0], stats)

    generation = Generation(steps(), finish)
    return generation if stream else generation.result


__all__ = ["Generation", "GenerationResult", "GenerationStats", "Request", "check_arguments", "generate"]

"""Fuzz targets for tritc's readers of untrusted bytes: the IR text parser, the artifact reader and the FPGA stream
decoder. Each target takes bytes and may only end normally or with a CompilerError; anything else is a finding.

    ir_text(data)    parse_graph; what parses is verified and must print back to text that parses to the same
    artifact(data)   tritc.load of the bytes as a file, after `reseal` made the hashes of the manifest and of every
                     section but code (object.*, bitcode.*) match, so that mutations reach the loader behind them
    stream(data)     decode_stream then check_stream; every word that decodes encodes back to the same bytes

`seeds(target)` gives valid inputs to mutate (dumps of generated graphs, a CPU and an FPGA artifact, their streams);
`mutate(data, rng)` is the campaign's own byte mutator (atheris's, when installed, is used instead).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import CompilerError


class TargetFindingError(AssertionError):
    """A fuzz target broke its contract (not a CompilerError, or a round trip that does not hold)."""


# ---- the targets ------------------------------------------------------------------------------------------------

def ir_text(data: bytes) -> None:
    from ..ir import parse_graph, print_graph, verify

    text = data.decode("utf-8", errors="replace")
    try:
        g = parse_graph(text, _weights())
        verify(g)
    except CompilerError:
        return
    printed = print_graph(g)
    try:
        again = print_graph(parse_graph(printed, _weights()))
    except CompilerError as e:
        raise TargetFindingError(f"a parsed graph prints to text that does not parse: {e}") from e
    if again != printed:
        raise TargetFindingError("print(parse(print(g))) differs from print(g)")


def artifact(data: bytes) -> None:
    import tritc

    fd, name = tempfile.mkstemp(suffix=".tritc", dir=_scratch())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(reseal(data))
        try:
            tritc.load(name)
        except CompilerError:
            return
    finally:
        os.unlink(name)


def stream(data: bytes) -> None:
    from ..codegen.fpga.config import PRESETS
    from ..codegen.fpga.isa import INSTR_BYTES, decode_stream, encode, read_stream_header
    from ..codegen.fpga.verify import check_stream

    data = reseal_stream(data)
    try:
        head = read_stream_header(data)
        instrs = decode_stream(data)
    except CompilerError:
        return
    body = data[head.size:]
    for i, ins in enumerate(instrs):
        if encode(ins) != body[i * INSTR_BYTES:(i + 1) * INSTR_BYTES]:
            raise TargetFindingError(f"instruction {i} decodes to {ins!r}, which encodes to other bytes")
    try:
        check_stream(instrs, PRESETS["edge"])
    except CompilerError:
        return


def reseal_stream(data: bytes) -> bytes:
    """A mutated stream with its header's hash made right again, so that mutations reach the decoder and the checks
    behind the hash (a wrong hash is refused first, and a mutation of the words would stop there)."""
    import hashlib

    from ..codegen.fpga.isa import MAGIC, STREAM_HEADER

    if len(data) < STREAM_HEADER.size or data[:len(MAGIC)] != MAGIC:
        return data
    return data[:STREAM_HEADER.size - 32] + hashlib.sha256(data[STREAM_HEADER.size:]).digest() + \
        data[STREAM_HEADER.size:]


TARGETS: dict[str, Callable[[bytes], None]] = {"ir-text": ir_text, "artifact": artifact, "stream": stream}


def run_target(name: str, data: bytes) -> str | None:
    """None when the target kept its contract on `data`; else what went wrong, on one line."""
    try:
        TARGETS[name](data)
    except TargetFindingError as e:
        return f"TargetFindingError: {e}"
    except RecursionError as e:  # a MemoryError or a RecursionError is a finding too: they are not CompilerErrors
        return f"RecursionError: {e}"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
    return None


# ---- artifacts: the resealer ------------------------------------------------------------------------------------

_HEADER = struct.Struct("<8sIIQ32s8s")
_CODE_PREFIXES = ("object.", "bitcode.")


def reseal(data: bytes) -> bytes:
    """`data` with the manifest's hash in the header, and each non-code section's hash in the manifest, made to match
    the bytes (when the header and manifest parse at all): the mutated artifact passes the integrity checks and
    reaches the parsing behind them. Code sections keep their hashes: a loader trusts code whose hash matches, so
    re-hashing mutated code would test the linker, not tritc."""
    if len(data) < _HEADER.size:
        return data
    magic, version, flags, mlen, _mhash, reserved = _HEADER.unpack_from(data)
    mend = _HEADER.size + mlen
    if mlen > len(data):
        return data
    mbytes, rest = data[_HEADER.size:mend], data[mend:]
    try:
        manifest = json.loads(mbytes)
    except (UnicodeDecodeError, ValueError, RecursionError):
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("sections"), list):
        for e in manifest["sections"]:
            try:
                name, off, length = str(e["name"]), int(e["offset"]), int(e["length"])
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            if not name.startswith(_CODE_PREFIXES) and 0 <= off and 0 <= length and off + length <= len(rest):
                e["sha256"] = hashlib.sha256(rest[off:off + length]).hexdigest()
        mbytes = json.dumps(manifest, sort_keys=True).encode()
    return _HEADER.pack(magic, version, flags, len(mbytes), hashlib.sha256(mbytes).digest(), reserved) + mbytes + rest


# ---- seeds ------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _scratch() -> str:
    return tempfile.mkdtemp(prefix="tritc-fuzz-")


@functools.lru_cache(maxsize=1)
def _weights() -> dict[str, np.ndarray]:
    """The weights the IR seeds refer to (by key), so that mutated dumps resolve them."""
    return dict(_seed_graphs()[1])


@functools.lru_cache(maxsize=1)
def _seed_graphs() -> tuple[list[str], dict[str, np.ndarray]]:
    """Dumps of the imported, and of the compiled, form of a few generated models; and their weights."""
    import tritc

    from ..frontend.onnx import import_model
    from ..ir import print_graph
    from .generate import generate

    texts, weights = [], {}
    for seed in (3, 7, 11, 19):
        case = generate(seed)
        try:
            g = import_model(case.model)
            texts.append(print_graph(g))
            weights.update(g.weights)
            m = tritc.compile(case.model, lazy=True)
            texts.append(m.ir_text)
            weights.update(m.graph.weights)
        except CompilerError:
            continue
    return texts, {k: v for k, v in weights.items() if isinstance(v, np.ndarray)}


@functools.lru_cache(maxsize=1)
def _seed_artifacts() -> list[bytes]:
    import tritc

    from .generate import generate

    out = []
    folder = Path(_scratch())
    for seed, target in ((3, "cpu"), (4, "fpga")):
        case = generate(seed)
        model = tritc.compile(case.model, target=target)
        path = folder / f"seed-{target}.tritc"
        model.save(path)
        out.append(path.read_bytes())
        path.unlink()
    return out


@functools.lru_cache(maxsize=1)
def _seed_streams() -> list[bytes]:
    from ..codegen.fpga.isa import MAGIC, decode_stream
    from ..runtime.artifact import read_artifact

    out = []
    folder = Path(_scratch())
    for i, data in enumerate(_seed_artifacts()):
        path = folder / f"streams-{i}.tritc"
        path.write_bytes(data)
        art = read_artifact(path)
        path.unlink()
        out += [b for k, b in art.sections.items() if k.startswith("stream.")]
    # a hand-written one too: every opcode, so that mutations start from all of them
    from ..codegen.fpga.isa import Instr, Op, encode_stream

    out.append(encode_stream([Instr(op) for op in Op if op is not Op.FINISH] + [Instr(Op.FINISH)]))
    assert all(s.startswith(MAGIC) and decode_stream(s) is not None for s in out[:-1])
    return out


def seeds(target: str) -> list[bytes]:
    if target == "ir-text":
        return [t.encode() for t in _seed_graphs()[0]]
    if target == "artifact":
        return _seed_artifacts()
    return _seed_streams()


# ---- the built-in mutator ---------------------------------------------------------------------------------------

_TOKENS = [b"%", b"@", b"(", b")", b"{", b"}", b"[", b"]", b",", b":", b"=", b"->", b"\"", b"f32", b"i64", b"bool", b"t2",
           b"0", b"-1", b"1e400", b"nan", b"-inf", b"9223372036854775808", b"batch", b"?", b"weight", b"constant",
           b"return", b"loc", b"\\u0000", b"null", b"true", b"[]", b"{}", b"\"\"", b"1e308", b"-0", b"4294967295"]


def mutate(data: bytes, rng: np.random.Generator, max_len: int = 1 << 20) -> bytes:
    """A few random edits of `data`: bit flips, byte sets, deletes, inserts of tokens, chunk copies, integer bumps."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        n = len(b)
        kind = int(rng.integers(0, 7))
        i = int(rng.integers(0, n + 1)) if n else 0
        if kind == 0 and n:
            b[min(i, n - 1)] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and n:
            b[min(i, n - 1)] = int(rng.choice([0, 0xFF, 0x7F, 0x80, ord("9"), ord("-")]))
        elif kind == 2 and n:
            del b[i:i + int(rng.integers(1, 17))]
        elif kind == 3:
            b[i:i] = _TOKENS[int(rng.integers(len(_TOKENS)))]
        elif kind == 4 and n:
            j = int(rng.integers(0, n))
            b[i:i] = b[j:j + int(rng.integers(1, 65))]
        elif kind == 5 and n:  # a 4-byte little-endian integer nudged or set to an extreme
            j = min(i, max(n - 4, 0))
            v = int(rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, int(rng.integers(0, 1 << 16))]))
            b[j:j + 4] = v.to_bytes(4, "little")[:len(b[j:j + 4])]
        elif kind == 6 and n:  # a digit run replaced
            j = min(i, n - 1)
            b[j:j + int(rng.integers(1, 4))] = str(int(rng.choice([0, -1, 2**31, 2**63, 10**30]))).encode()
    return bytes(b[:max_len])


# ---- atheris (coverage-guided), when it is installed ------------------------------------------------------------

def run_atheris(target: str, seconds: int, out: Path, timeout: float = 10.0, seed: int = 0) -> None:
    """libFuzzer through atheris on one target, for `seconds`: the target's modules instrumented for coverage, the
    seeds as the starting corpus (OUT/corpus-<target>/), a crashing input written as OUT/<target>-crash-<hash>.
    libFuzzer prints its execution count (`#N DONE`) and exits the process."""
    import sys

    import atheris

    with atheris.instrument_imports(include=["tritc"]):
        import tritc.codegen.fpga.verify  # noqa: F401 - imported to be instrumented
        import tritc.ir.text  # noqa: F401
        import tritc.runtime.serialize  # noqa: F401
    corpus = out / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(data)

    def one(data: bytes) -> None:
        problem = run_target(target, data)
        if problem:
            raise TargetFindingError(problem)

    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-timeout={int(timeout)}", "-rss_limit_mb=4096",
                   f"-artifact_prefix={out}/{target}-", "-print_final_stats=1", f"-seed={seed % 2**31 or 1}", str(corpus)], one)
    atheris.Fuzz()

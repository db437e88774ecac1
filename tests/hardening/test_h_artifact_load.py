"""HARDENING.md group H, artifact load (cases 38-44), and the artifact's versions and keyed signature (issue 10).

The artifact under test sits in the sandbox's model_dir/ (the input); every refusal must come before any native
code of the file is mapped, name the file and what is wrong, and leave the sandbox as it was. Cases that load code
that may not be ours run `isolated` (a subprocess under limits). docs/ARTIFACT.md ("Loading", "Security") is what
these tests hold the loader to.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import tritc
from tritc.errors import (
    ArtifactCompatibilityError,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    OptionError,
)
from tritc.runtime import artifact as art

from .artifacts import compile_small, reference, rewrite
from .harness import isolated, refuses

X = np.ones((2, 4), np.float32)


@pytest.fixture(scope="module")
def model():
    return compile_small()


@pytest.fixture(scope="module")
def other():
    return compile_small(last=-5.0)


@pytest.fixture()
def saved(sb, model) -> Path:
    p = sb.model_dir / "m.tritc"
    model.save(p)
    sb.mark()
    return p


@pytest.fixture()
def key(sb) -> Path:
    p = sb.model_dir / "tritc.key"
    p.write_bytes(os.urandom(32))
    sb.mark()
    return p


def load_and_run(path: Path, **kw):
    return tritc.load(path, **kw)(x=X)


# ---- 38: truncated, bit-flipped, empty, bad hash: refused before any code is mapped ------------------------------

@pytest.fixture()
def no_code_mapped(monkeypatch):
    """Fails the test if any object code is mapped (LoadedObject created) during it."""
    from tritc.runtime import cpu

    def refuse(*a, **k):
        raise AssertionError("native code was mapped")

    monkeypatch.setattr(cpu, "LoadedObject", refuse)


def test_38_every_truncation_is_refused(sb, saved, no_code_mapped):
    data = saved.read_bytes()
    bad = sb.model_dir / "short.tritc"
    for n in sorted({0, 1, 10, 63, 64, 65, 200, len(data) // 2, len(data) - 64, len(data) - 1}):
        bad.write_bytes(data[:n])
        sb.mark()
        refuses(sb, lambda: load_and_run(bad), ArtifactIntegrityError, names=["short.tritc"])


def test_38_every_flipped_byte_is_refused(sb, saved, no_code_mapped):
    data = saved.read_bytes()
    bad = sb.model_dir / "flipped.tritc"
    step = max(1, len(data) // 97)
    for pos in range(0, len(data), step):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        bad.write_bytes(bytes(flipped))
        sb.mark()
        refuses(sb, lambda: load_and_run(bad), ArtifactError, names=["flipped.tritc"])


def test_38_zero_length_and_bad_manifest_hash(sb, saved, no_code_mapped):
    empty = sb.model_dir / "empty.tritc"
    empty.write_bytes(b"")
    data = bytearray(saved.read_bytes())
    data[32] ^= 1  # inside the header's manifest SHA-256
    badhash = sb.model_dir / "badhash.tritc"
    badhash.write_bytes(bytes(data))
    sb.mark()
    refuses(sb, lambda: tritc.load(empty), ArtifactIntegrityError, names=["empty.tritc", "truncated (0 bytes"])
    refuses(sb, lambda: tritc.load(badhash), ArtifactIntegrityError, names=["badhash.tritc", "manifest hash mismatch"])


EVIL_C = r"""
#include <stdio.h>
static void pwn(void) { FILE *f = fopen("%(marker)s", "w"); if (f) { fputs("pwned", f); fclose(f); } }
__attribute__((constructor)) static void at_load(void) { pwn(); }
int tritc_abi_version = 3;
int %(entry)s(void *a, void *b, void *c, void *d, void *e) { pwn(); return 0; }
"""


def evil_object(tmp: Path, entry: str, marker: Path) -> bytes:
    """An object file with an .init_array constructor and an entry point that both write `marker`; built with the C
    compiler, else (no cc) with llvmlite from the same program in LLVM IR."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc:
        src = tmp / "evil.c"
        src.write_text(EVIL_C % {"marker": marker, "entry": entry})
        subprocess.run([cc, "-c", "-fPIC", "-O1", str(src), "-o", str(tmp / "evil.o")], check=True)
        return (tmp / "evil.o").read_bytes()
    from tritc.codegen.llvm.jit import emit_object, parse
    from tritc.codegen.llvm.target import host_target

    path = str(marker).encode() + b"\0"
    escaped = "".join(f"\\{b:02X}" for b in path)
    ir = f"""
@path = private constant [{len(path)} x i8] c"{escaped}"
@mode = private constant [2 x i8] c"w\\00"
@tritc_abi_version = global i32 3
@llvm.global_ctors = appending global [1 x {{ i32, ptr, ptr }}] [{{ i32, ptr, ptr }} {{ i32 65535, ptr @pwn, ptr null }}]
declare ptr @fopen(ptr, ptr)
declare i32 @fclose(ptr)
define internal void @pwn() {{
  %f = call ptr @fopen(ptr @path, ptr @mode)
  %c = icmp eq ptr %f, null
  br i1 %c, label %done, label %close
close:
  call i32 @fclose(ptr %f)
  br label %done
done:
  ret void
}}
define i32 @{entry}(ptr %a, ptr %b, ptr %c, ptr %d, ptr %e) {{
  call void @pwn()
  ret i32 0
}}
"""
    t = host_target()
    return emit_object(parse(ir), t)


def test_38_tampered_code_never_runs(sb, saved, tmp_path_factory, key):
    """An object with a constructor and an entry that write a marker file, put in place of the model's code:
    with the hashes left as they were, refused before the object is mapped (the marker never appears). With the
    hashes fixed up (anyone can) and a key given, refused too (not signed / signed by another key), again before
    anything runs. The control: the re-hashed file loaded without a key runs, and writes the marker: an artifact is
    a program, the hashes only detect corruption. (MCJIT does not run an object's .init_array; the entry point is
    enough.) One isolated child runs the four loads in turn, the control last."""
    tmp = tmp_path_factory.mktemp("evil")
    marker = tmp / "pwned"
    a = art.read_artifact(saved)
    specs = a.manifest["specializations"]
    evil = {s["object"]: evil_object(tmp, s["entry"], marker) for s in specs}  # whichever code the call picks

    data = bytearray(saved.read_bytes())  # 1. in place of the objects, hashes as they were
    for s in a.manifest["sections"]:
        if s["name"] in evil:
            start = a.data_start + s["offset"]
            patch = evil[s["name"]][:s["length"]]
            data[start:start + len(patch)] = patch
    tampered = sb.model_dir / "tampered.tritc"
    tampered.write_bytes(bytes(data))
    rehashed = rewrite(saved, sb.model_dir / "rehashed.tritc", sections=lambda s: s.update(evil))  # 2. valid, unsigned
    resigned = rewrite(rehashed, sb.model_dir / "resigned.tritc", key=os.urandom(32))  # 3. signed by someone else
    sb.mark()
    cases = [("tampered", tampered, None), ("rehashed+key", rehashed, key), ("resigned+key", resigned, key),
             ("control", rehashed, None)]
    code = f"""
import os, numpy as np, tritc
RESULT = {{}}
for name, path, key in {[(n, str(p), str(k) if k else None) for n, p, k in cases]!r}:
    try:
        tritc.load(path, key=tritc.read_key(key) if key else None)(x=np.ones((2, 4), np.float32))
        RESULT[name] = ("ran", "", os.path.exists({str(marker)!r}))
    except tritc.errors.CompilerError as e:
        RESULT[name] = (type(e).__name__, str(e), os.path.exists({str(marker)!r}))
"""
    import ast

    out = isolated(sb, code)
    assert out.ok, out.stderr
    result = ast.literal_eval(out.result)
    assert result["tampered"][:2] == ("ArtifactIntegrityError", f"{tampered}: section '{specs[0]['object']}' hash "
                                                                 f"mismatch (corrupted or tampered)")
    assert "not signed, but a key was given" in result["rehashed+key"][1]
    assert "signature does not match the key" in result["resigned+key"][1]
    assert not any(r[2] for name, r in result.items() if name != "control"), f"the tampered code ran: {result}"
    assert result["control"] == ("ran", "", True), "the control: a re-hashed artifact's code does run"


# ---- 39: the manifest's references -----------------------------------------------------------------------------

def _raw(manifest: dict, body: bytes = b"", *, mlen: int | None = None) -> bytes:
    mbytes = json.dumps(manifest).encode()
    header = art.HEADER.pack(art.MAGIC, art.FORMAT_VERSION, 0, len(mbytes) if mlen is None else mlen,
                             hashlib.sha256(mbytes).digest(), b"\0" * 8)
    return header + mbytes + body


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "a/../../b", "IR", "ir\0x", ""])
def test_39_section_names_are_not_paths(sb, name):
    p = sb.model_dir / "names.tritc"
    p.write_bytes(_raw({"format_version": art.FORMAT_VERSION,
                        "sections": [{"name": name, "offset": 0, "length": 0, "sha256": hashlib.sha256(b"").hexdigest()}]}))
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactIntegrityError, names=["names.tritc", "bad or repeated section name"])


def test_39_an_extra_section_is_refused(sb, saved):
    """A section nothing in the manifest uses (a payload riding along, a pickle) is refused, not ignored."""
    p = rewrite(saved, sb.model_dir / "extra.tritc", sections=lambda s: s.update({"payload.pkl": b"\x80\x04."}))
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactIntegrityError, names=["extra.tritc", "payload.pkl", "not part of"])


def test_39_a_missing_section_is_refused(sb, saved):
    p = rewrite(saved, sb.model_dir / "missing.tritc", sections=lambda s: s.pop("bitcode.0"))
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactError, names=["missing.tritc", "bitcode.0"])
    p2 = rewrite(saved, sb.model_dir / "noir.tritc", sections=lambda s: s.pop("ir"))
    sb.mark()
    refuses(sb, lambda: tritc.load(p2), ArtifactError, names=["noir.tritc", "'ir'"])


def test_39_bytes_outside_every_section_are_refused(sb, saved):
    p = sb.model_dir / "trailing.tritc"
    p.write_bytes(saved.read_bytes() + b"\0\0\0\0")
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactIntegrityError, names=["trailing.tritc", "4 unexpected bytes"])


def test_39_non_json_manifest(sb):
    p = sb.model_dir / "j.tritc"
    body = b"{not json"
    p.write_bytes(art.HEADER.pack(art.MAGIC, art.FORMAT_VERSION, 0, len(body), hashlib.sha256(body).digest(),
                                  b"\0" * 8) + body)
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactIntegrityError, names=["j.tritc", "not valid JSON"])


def test_39_manifest_over_the_size_limit(sb):
    """The header claims a 1 TiB manifest: refused from the header alone, nothing of that size allocated."""
    p = sb.model_dir / "huge.tritc"
    p.write_bytes(_raw({"format_version": art.FORMAT_VERSION, "sections": []}, mlen=2**40))
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactIntegrityError,
            names=["huge.tritc", f"{2**40} bytes is over the {art.MAX_MANIFEST_BYTES}-byte limit"])


# ---- 40: versions ----------------------------------------------------------------------------------------------

def test_40_newer_format_is_refused(sb, saved):
    data = bytearray(saved.read_bytes())
    struct.pack_into("<I", data, 8, art.FORMAT_VERSION + 1)
    p = sb.model_dir / "new.tritc"
    p.write_bytes(bytes(data))
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactVersionError,
            names=["new.tritc", f"artifact format {art.FORMAT_VERSION + 1} > supported {art.FORMAT_VERSION}"])


def test_40_format_2_still_loads_and_format_1_is_refused(sb, saved):
    """Format 2 (before signatures; no abi_version: its code is ABI 3) reads as it is. Format 1 holds code of the
    4-argument entry: refused with the reason and what to do."""
    def as_format_2(m):
        m.pop("abi_version")

    old = rewrite(saved, sb.model_dir / "f2.tritc", manifest=as_format_2, version=2)
    sb.mark()
    assert art.read_artifact(old).manifest["format_version"] == 2
    np.testing.assert_array_equal(load_and_run(old), reference(X))
    f1 = rewrite(saved, sb.model_dir / "f1.tritc", manifest=as_format_2, version=1)
    sb.mark()
    refuses(sb, lambda: tritc.load(f1), ArtifactVersionError, names=["f1.tritc", "artifact format 1", "compile the model again"])


@pytest.mark.parametrize("abi", [2, 4])
def test_40_another_code_abi_is_refused_before_code_is_mapped(sb, saved, no_code_mapped, abi):
    p = rewrite(saved, sb.model_dir / "abi.tritc", manifest=lambda m: m.update(abi_version=abi))
    sb.mark()
    from tritc.codegen.llvm.lower import ABI_VERSION

    refuses(sb, lambda: tritc.load(p), ArtifactVersionError,
            names=["abi.tritc", f"ABI {abi}", f"ABI {ABI_VERSION}", "compile the model again"])


def test_40_tritc_version(sb, saved):
    """Written by a newer tritc: refused. By an older one (same format and ABI): loads, with a warning that says so.
    Missing or not a version: refused."""
    newer = rewrite(saved, sb.model_dir / "newer.tritc", manifest=lambda m: m.update(tritc_version="99.0.0"))
    older = rewrite(saved, sb.model_dir / "older.tritc", manifest=lambda m: m.update(tritc_version="0.0.1"))
    junk = rewrite(saved, sb.model_dir / "junk.tritc", manifest=lambda m: m.update(tritc_version={"x": 1}))
    sb.mark()
    refuses(sb, lambda: tritc.load(newer), ArtifactVersionError,
            names=["newer.tritc", "tritc 99.0.0", f"this tritc {tritc.__version__}"])
    with pytest.warns(RuntimeWarning, match="written by tritc 0.0.1"):
        np.testing.assert_array_equal(load_and_run(older), reference(X))
    refuses(sb, lambda: tritc.load(junk), ArtifactError, names=["junk.tritc", "tritc_version"])


# ---- item 3: the keyed signature -------------------------------------------------------------------------------

def test_40_signed_round_trip_and_every_refusal(sb, model, key, monkeypatch):
    """Signed with a key: loads with it (the comparison is hmac.compare_digest); without a key it loads with a
    warning that the signature was not checked; a wrong key, a re-signed or edited file, or a key given for an
    unsigned file are refused before anything is parsed."""
    k = tritc.read_key(key)
    signed = sb.model_dir / "signed.tritc"
    model.save(signed, sign_key=k)
    unsigned = sb.model_dir / "unsigned.tritc"
    model.save(unsigned)
    data = bytearray(signed.read_bytes())
    data[art.HEADER.size + 5] ^= 1  # inside the signature
    forged = sb.model_dir / "forged.tritc"
    forged.write_bytes(bytes(data))
    sb.mark()

    calls = []
    real = art.hmac.compare_digest
    monkeypatch.setattr(art.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    np.testing.assert_array_equal(load_and_run(signed, key=k), reference(X))
    assert calls, "the signature was not compared with hmac.compare_digest"
    assert art.read_artifact(signed, key=k).signature_checked
    with pytest.warns(RuntimeWarning, match="signed, but no key was given: its signature was not checked"):
        np.testing.assert_array_equal(load_and_run(signed), reference(X))
    refuses(sb, lambda: tritc.load(signed, key=os.urandom(32)), ArtifactIntegrityError,
            names=["signed.tritc", "signature does not match the key"])
    refuses(sb, lambda: tritc.load(forged, key=k), ArtifactIntegrityError, names=["forged.tritc", "signature does not match"])
    refuses(sb, lambda: tritc.load(unsigned, key=k), ArtifactIntegrityError, names=["unsigned.tritc", "not signed"])
    refuses(sb, lambda: tritc.generate(signed, [1], 1, key=os.urandom(32)), ArtifactIntegrityError,
            names=["signed.tritc", "signature does not match"])
    refuses(sb, lambda: tritc.load(signed, key=b"short"), OptionError, names=["16", "5"])
    refuses(sb, lambda: tritc.load(signed, key=str(key)), OptionError, names=["bytes", "str"])


def test_40_cli_sign_and_key(sb, key, capsys):
    """compile --sign-key; run / inspect / generate --key: a wrong or missing signature is a one-line error, exit 2.
    (verify and bench take an ONNX model, never an artifact: there is no signature for them to check.) One command
    runs as a subprocess (sb.cli); the rest through tritc.cli.main in this process, to keep the test fast."""
    from onnx import TensorProto, helper

    from tritc.cli import main

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    np.save(sb.model_dir / "x.npy", -X)
    src = sb.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    out = sb.out / "m.tritc"
    assert main(["compile", str(src), "-o", str(out), "--sign-key", str(key), "-q"]) == 0
    wrong = sb.model_dir / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    sb.mark()
    assert art.read_artifact(out, key=tritc.read_key(key)).signature_checked
    sb.cli("run", out, "--key", wrong, "--input", "x=model_dir/x.npy", names=["m.tritc", "signature does not match"])

    def cli(*args, status: int = 2, names=()) -> str:
        capsys.readouterr()
        assert main([str(a) for a in args]) == status
        err = capsys.readouterr().err
        if status:
            (line,) = [ln for ln in err.splitlines() if ln.startswith("tritc: error:")]
            for n in names:
                assert n in line, f"{n!r} not in {line}"
        sb.check([err])
        return err

    cli("run", out, "--key", key, "--input", f"x={sb.model_dir / 'x.npy'}", status=0)
    assert "signature was not checked" in cli("run", out, "--input", f"x={sb.model_dir / 'x.npy'}", status=0)
    cli("inspect", out, "--key", key, status=0)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "not checked (no --key)" in capsys.readouterr().out
    for cmd in (("inspect", out), ("generate", out, "--prompt-ids", "1")):
        cli(*cmd, "--key", wrong, names=["m.tritc", "signature does not match the key"])
    cli("generate", src, "--prompt-ids", "1", "--key", key, names=["--key", "ONNX model"])
    cli("compile", src, "-o", out, "--sign-key", sb.model_dir / "nokey", names=["nokey", "cannot read"])
    short = sb.model_dir / "short.key"
    short.write_bytes(b"1234\n")
    sb.mark()
    cli("compile", src, "-o", out, "--sign-key", short, names=["short.key", "this one 4"])


# ---- 41: another target ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("triple", ["aarch64-unknown-linux-gnu", "x86_64-pc-windows-msvc", "x86_64-apple-darwin"])
def test_41_another_triple_or_object_format(sb, saved, no_code_mapped, triple):
    from tritc.codegen.llvm.target import host_target

    if triple.split("-")[0] == host_target().triple.split("-")[0] == "aarch64":
        pytest.skip("the host is aarch64")
    p = rewrite(saved, sb.model_dir / "other.tritc", manifest=lambda m: m["target"].update(triple=triple))
    sb.mark()
    refuses(sb, lambda: tritc.load(p), ArtifactCompatibilityError, names=["other.tritc", triple])


# ---- 42: CPU features ------------------------------------------------------------------------------------------

def test_42_missing_cpu_features_are_rebuilt_never_run(sb, monkeypatch):
    """Built with AVX-512 for a host (mocked) without it: the stored objects are never mapped; the code is rebuilt
    for the host, with a warning naming the features, and computes the same. (tritc's answer to 42 is a rebuild
    rather than ArtifactCompatibilityError: the artifact carries bitcode and IR for exactly this.)"""
    from tritc.codegen.llvm import target as target_mod
    from tritc.runtime import cpu

    m = tritc.compile(compile_small().graph, pipeline="none", shapes={"batch": 2}, threads=1, cpu_features="+avx512f")
    p = sb.model_dir / "avx512.tritc"
    m.save(p)
    sb.mark()
    stored = {s.object for s in m.specializations}
    fake = {k: (False if k.startswith("avx512") else v) for k, v in target_mod.host_features().items()}
    monkeypatch.setattr(target_mod, "host_features", lambda: fake)
    mapped = []
    real = cpu.LoadedObject
    monkeypatch.setattr(cpu, "LoadedObject", lambda obj, *a, **k: mapped.append(obj) or real(obj, *a, **k))
    with pytest.warns(RuntimeWarning, match="avx512f"):
        loaded = tritc.load(p)
    assert "avx512f" not in loaded.target.feature_set
    np.testing.assert_array_equal(loaded(x=X), reference(X))
    assert mapped and not stored & set(mapped), "an object built for AVX-512 was mapped on a host without it"
    sb.check()


def test_42_generic_builds_load_everywhere(sb, monkeypatch):
    from tritc.codegen.llvm import target as target_mod

    m = tritc.compile(compile_small().graph, pipeline="none", shapes={"batch": 2}, threads=1, cpu_features="generic")
    p = sb.model_dir / "generic.tritc"
    m.save(p)
    sb.mark()
    bare = dict.fromkeys(target_mod.host_features(), False)
    monkeypatch.setattr(target_mod, "host_features", lambda: bare)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_and_run(p), reference(X))


# ---- 43: no pickle ---------------------------------------------------------------------------------------------

# The two places the runtime compiles Python it wrote itself (a call's input binder and its size function): their
# text is made of argument names (a<i>, v<i>, s<i>, t<i>), operators and int() literals, never a string taken from a
# model or an artifact; test_43_generated_code_holds_no_model_text checks that with hostile names and dims.
GENERATED = {"feeds.py": '<tritc feed>', "size_function.py": '<tritc sizes>'}


def test_43_no_pickle_marshal_eval_or_exec_in_the_load_path():
    import re

    code = re.compile(r"\bimport (pickle|marshal|dill|joblib)\b|\b(pickle|marshal)\.|\beval\(|\bexec\(")
    root = Path(tritc.__file__).parent
    files = [*(root / "runtime").glob("*.py"), *(root / "codegen" / "llvm").glob("*.py"), *(root / "codegen" / "fpga").glob("*.py")]
    for f in files:
        for line in f.read_text().splitlines():
            if f.name in GENERATED and line.strip().startswith(f'exec(compile(source, "{GENERATED[f.name]}", "exec"), scope)'):
                continue
            assert not code.search(line), f"{f.name}: {line.strip()}"


def test_43_generated_code_holds_no_model_text():
    """Symbols and names that would be code if pasted into Python stay out of the generated binder and size function."""
    from tritc.codegen.llvm.size_function import size_function
    from tritc.codegen.llvm.symbolic import size
    from tritc.ir import DType, TensorType
    from tritc.runtime.feeds import shape_binder
    from tritc.runtime.model import IOSpec

    evil = "__import__('os').system('touch pwned')"
    specs = [IOSpec(name=evil, type=TensorType(DType.F32, (evil, 3)))]
    bind, names = shape_binder(specs)
    assert names == [evil] and bind((7, 3)) == (7,) and bind((7, 4)) is None
    fn = size_function([[size(evil)]], size(evil), [], [evil])
    assert "import" not in fn.source and "os" not in fn.source.replace("pos", "")
    assert fn(5) == (((5,),), 5, True)


def test_43_a_pickle_beside_the_artifact_is_never_read(sb, saved, tmp_path_factory):
    canary = tmp_path_factory.mktemp("pickle") / "pwned"
    (sb.model_dir / "weights.pkl").write_bytes(b"\x80\x04cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR.")
    (sb.model_dir / "m.tritc.pkl").write_bytes(b"\x80\x04cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR.")
    sb.mark()
    np.testing.assert_array_equal(load_and_run(saved), reference(X))
    sb.check()
    assert not canary.exists()


# ---- 44: lifetime ----------------------------------------------------------------------------------------------

def test_44_outputs_outlive_the_model(sb, saved):
    m = tritc.load(saved)
    y = m(x=X)
    first = m.run(None, {"x": X})
    del m
    gc.collect()
    np.testing.assert_array_equal(y, reference(X))
    np.testing.assert_array_equal(first[0] + 1, reference(X) + 1)
    sb.check()


def test_44_two_artifacts_with_the_same_symbols(sb, model, other):
    """Both hold tritc_main, tritc_abi_version and the same node function names: each runs its own code."""
    a, b = sb.model_dir / "a.tritc", sb.model_dir / "b.tritc"
    model.save(a)
    other.save(b)
    sb.mark()
    ma, mb = tritc.load(a), tritc.load(b)
    for _ in range(3):
        np.testing.assert_array_equal(ma(x=X), reference(X))
        np.testing.assert_array_equal(mb(x=X), reference(X, -5.0))
    sb.check()


RSS_BOUND_FIXED_MIB = 2.0       # allocator noise
RSS_BOUND_PER_CYCLE_KIB = 16.0  # => at most 17.6 MiB over 1000 cycles (docs/ARTIFACT.md, "Lifetime"; measured ~0.2)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reload_many(sb, saved, cycles: int) -> None:
    """Load, run (which maps the object: one MCJIT engine per load) and drop the model `cycles` times, after a
    warm-up (the LLVM worker, the allocator's first growth); RSS may grow by at most the stated bound. In this
    process: a child would pay seconds of imports."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("RSS is read from /proc/self/statm (Linux)")
    for _ in range(50):
        tritc.load(saved)(x=X)
    gc.collect()
    before = rss_mib()
    for _ in range(cycles):
        m = tritc.load(saved)
        m(x=X)
        del m
    gc.collect()
    growth = rss_mib() - before
    bound = RSS_BOUND_FIXED_MIB + RSS_BOUND_PER_CYCLE_KIB * cycles / 1024
    assert growth <= bound, f"RSS grew {growth:.1f} MiB over {cycles} load/run/drop cycles (bound {bound:.1f} MiB)"
    sb.check()


def test_44_reload_200_times_within_the_memory_bound(sb, saved):
    _reload_many(sb, saved, 200)


@pytest.mark.slow
def test_44_reload_1000_times_within_the_memory_bound(sb, saved):
    _reload_many(sb, saved, 1000)

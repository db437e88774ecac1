"""Turn an llvmlite module into machine code: verify, optimise (new pass manager), emit, load.

    obj = emit_object(optimize(parse(module), target), target)
    lib = LoadedObject(obj, target); fn = lib.function("name", None, [c_void_p, ...])

The object file is what the artifact stores; LoadedObject maps it into this process with an
MCJIT engine (symbols such as expf come from the process: libm is loaded by numpy).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ...errors import CompilerError
from .target import Target, init_llvm


@functools.cache
def _load_libm() -> None:
    path = ctypes.util.find_library("m")
    if path:
        llvm.load_library_permanently(path)
    # libgcc's f16 conversions (__extendhfsf2, __truncsfhf2, __truncdfhf2), which LLVM calls for half
    # arithmetic on targets without F16C (e.g. a "generic" build): unresolved, they would be null calls
    gcc = ctypes.util.find_library("gcc_s")
    if gcc:
        llvm.load_library_permanently(gcc)


def parse(module: ir.Module | str, name: str = "module") -> llvm.ModuleRef:
    """Parse and verify LLVM IR; a verification failure is a CompilerError naming the function."""
    init_llvm()
    text = str(module)
    try:
        ref = llvm.parse_assembly(text)
        ref.name = name
        ref.verify()
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise CompilerError(f"LLVM IR verify failed in {_culprit(str(e), text)}: {msg[:400]}") from e
    return ref


def _culprit(msg: str, text: str) -> str:
    """The function a verifier message is about: one it names, else the one holding an instruction it quotes (a
    dominance error quotes only instructions)."""
    quoted = {ln.strip() for ln in msg.splitlines()[1:] if ln.strip()}
    fn = None
    for line in text.splitlines():
        if line.startswith("define ") and "@" in line:
            fn = line.split("@", 1)[1].split("(", 1)[0]
            if fn in " ".join(msg.split()):
                return f"function {fn}"
        elif line.startswith("}"):
            fn = None
        elif fn is not None and line.strip() in quoted:
            return f"function {fn}"
    return "the module"


def optimize(ref: llvm.ModuleRef, target: Target) -> llvm.ModuleRef:
    """Run LLVM's default O{1,2,3} pipeline with the new pass manager, for `target`."""
    tm = target.machine()
    ref.triple = target.triple
    ref.data_layout = str(tm.target_data)
    level = max(0, min(target.opt_level, 3))
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = level >= 2
    pto.slp_vectorization = level >= 2
    # LLVM's own unroller stays on: without it, LLVM 22's loop vectoriser miscompiles short min/max
    # reductions (maxnum over 5..10 elements loses the tail) and can abort on an assertion
    # (tests/codegen/test_llvm_pitfalls.py). Compile time is kept down by keeping node functions
    # out of line instead.
    pto.loop_interleaving = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(ref, pb)
    return ref


def emit_object(ref: llvm.ModuleRef, target: Target) -> bytes:
    return target.machine().emit_object(ref)


def emit_assembly(ref: llvm.ModuleRef, target: Target) -> str:
    return target.machine().emit_assembly(ref)


class LoadedObject:
    """An object file mapped into this process; keeps the engine alive as long as it lives."""

    def __init__(self, obj: bytes, target: Target, link_pool: bool = True):
        init_llvm()
        _load_libm()
        if link_pool and b"tritc_parallel_for" in obj:
            # Kernels declare the pool's entry extern_weak. Left unresolved, MCJIT's RuntimeDyld (LLVM 22) also
            # leaves the next external symbol's GOT slot null (a generic build's roundevenf: a call to address 0),
            # so the pool's symbols are always defined before such an object is linked (workers start later).
            from .kernels.threads import register_pool

            register_pool()
        backing = llvm.parse_assembly("")
        backing.triple = target.triple
        self._engine = llvm.create_mcjit_compiler(backing, target.machine())
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self._engine.finalize_object()
        self._engine.run_static_constructors()

    def address(self, name: str) -> int:
        addr = self._engine.get_function_address(name)
        if not addr:
            raise CompilerError(f"symbol '{name}' is not in the compiled object")
        return addr

    def function(self, name: str, restype: Any, argtypes: list[Any]) -> Any:
        proto = ctypes.CFUNCTYPE(restype, *argtypes)
        fn = proto(self.address(name))
        fn._owner = self  # the engine must outlive every function pointer taken from it
        return fn


def compile_and_load(module: ir.Module | str, target: Target, link_pool: bool = True) -> tuple[LoadedObject, bytes]:
    """parse -> optimise -> object -> loaded (for kernels and tests); link_pool=False only for the pool itself."""
    ref = optimize(parse(module), target)
    obj = emit_object(ref, target)
    return LoadedObject(obj, target, link_pool), obj

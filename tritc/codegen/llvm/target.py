"""The CPU target: triple, CPU name and features, and the LLVM TargetMachine built from them.

One long-lived Target per compilation, separate from each module it compiles (as numba does).
Features default to the host's and can be overridden (``TRITC_CPU_FEATURES``, or `features=`),
e.g. ``-avx512vnni`` to build the AVX2 path on an AVX-512 host, or ``generic`` for a portable build.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import llvmlite.binding as llvm

# Feature sets the kernels are written for, best first.
ISA_LEVELS = ("avx512vnni", "avx2", "portable")


@functools.cache
def init_llvm() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


def host_features() -> dict[str, bool]:
    init_llvm()
    return {k: v for k, v in llvm.get_host_cpu_features().items()}


def parse_features(text: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item[0] in "+-":
            out[item[1:]] = item[0] == "+"
        else:
            out[item] = True
    return out


def format_features(features: dict[str, bool]) -> str:
    return ",".join(f"{'+' if on else '-'}{name}" for name, on in sorted(features.items()))


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    features: str  # LLVM's flattened "+a,-b" string: part of every cache key
    opt_level: int = 3

    @property
    def feature_set(self) -> frozenset[str]:
        return frozenset(n for n, on in parse_features(self.features).items() if on)

    def has(self, *names: str) -> bool:
        return all(n in self.feature_set for n in names)

    @property
    def isa(self) -> str:
        """Which kernel family this target gets: avx512vnni, avx2 or portable."""
        if self.has("avx512f", "avx512bw", "avx512vnni"):
            return "avx512vnni"
        if self.has("avx2", "fma"):
            return "avx2"
        return "portable"

    def machine(self) -> llvm.TargetMachine:
        init_llvm()
        t = llvm.Target.from_triple(self.triple)
        # pic: the object is loaded at an arbitrary address by the runtime.
        return t.create_target_machine(cpu=self.cpu, features=self.features, opt=min(self.opt_level, 3),
                                       reloc="pic", codemodel="default")

    def missing_on_host(self) -> list[str]:
        """Features this target uses that the host CPU lacks."""
        host = host_features()
        return sorted(f for f in self.feature_set if not host.get(f, False))


def host_target(features: str | None = None, cpu: str | None = None, opt_level: int = 3) -> Target:
    """The host's target, with `features` (or $TRITC_CPU_FEATURES) applied on top of the host's.

    `features` is a comma list of +name / -name; the special value "generic" asks for a
    baseline x86-64 build that loads anywhere."""
    init_llvm()
    override = features if features is not None else os.environ.get("TRITC_CPU_FEATURES", "")
    if override.strip() == "generic":
        return Target(llvm.get_process_triple(), "x86-64" if "x86_64" in llvm.get_process_triple() else "generic",
                      "", opt_level)
    feats = host_features()
    feats.update(parse_features(override))
    # Turning a feature off turns off what depends on it, so LLVM never emits it.
    if not feats.get("avx512f", False):
        for k in list(feats):
            if k.startswith("avx512"):
                feats[k] = False
    if not feats.get("avx2", False):
        for k in ("avx512f", "avx512bw", "avx512vnni", "avx512vl", "avx512dq", "avxvnni"):
            feats[k] = False
    cpu_name = cpu or (llvm.get_host_cpu_name() if not override.strip() else "x86-64-v2")
    return Target(llvm.get_process_triple(), cpu_name, format_features(feats), opt_level)

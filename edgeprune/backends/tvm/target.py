"""The TVM target: which CPU the code is for, and whether this machine can build and run it.

``mcpu: auto`` in a target YAML means "this host's CPU", resolved at run time because the CI
machines differ (AMD Zen 4/5, Intel Xeon seen): hard-coding one would emit code that is slow or
illegal on the next. A foreign ``mtriple`` (a board) changes two things: the ``.so`` must be
linked by ``<triple>-g++``, and MetaSchedule cannot tune, since it measures candidates here.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Mapping
from typing import Any

from edgeprune.profilers.host import cpu_flags

# /proc/cpuinfo flag -> LLVM feature, for hosts whose CPU LLVM cannot name (mcpu: auto fallback).
_CPUINFO_FEATURES = {
    "sse4_2": "+sse4.2", "avx": "+avx", "avx2": "+avx2", "fma": "+fma", "f16c": "+f16c",
    "avx512f": "+avx512f", "avx512cd": "+avx512cd", "avx512bw": "+avx512bw",
    "avx512dq": "+avx512dq", "avx512vl": "+avx512vl", "avx512_vnni": "+avx512vnni",
    "avx_vnni": "+avxvnni", "asimd": "+neon",
}


def resolve_target(compiler_target: Mapping[str, Any], threads: int | None = None) -> dict:
    """The TVM target dict with ``mcpu: auto`` replaced by this host's CPU.

    For the host CPU ``num-cores`` is set (``threads``, else the YAML's value, else every usable
    core): MetaSchedule sizes parallel loops by it, and it is part of the tuning-database key.
    """
    target = {"kind": "llvm", **compiler_target}
    if target.get("mcpu") == "auto":
        del target["mcpu"]
        target.update(host_cpu_attrs())
    if target["kind"] == "llvm" and is_host_target(target):
        target["num-cores"] = int(threads or target.get("num-cores") or usable_cores())
    return target


def host_cpu_attrs() -> dict:
    """``{"mcpu": <LLVM's name for this CPU>}`` (e.g. ``znver5``), or, when LLVM cannot name
    it, the SIMD features from ``/proc/cpuinfo`` as ``mattr``."""
    try:
        from tvm.target import codegen

        cpu = str(codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001 - an LLVM-less build or a missing API: use cpuinfo
        cpu = ""
    if cpu and cpu != "generic":
        return {"mcpu": cpu}
    features = sorted({_CPUINFO_FEATURES[f] for f in _cpuinfo_flags() if f in _CPUINFO_FEATURES})
    return {"mattr": features} if features else {}


_cpuinfo_flags = cpu_flags  # one definition: edgeprune.profilers.host


def target_arch(target: Mapping[str, Any]) -> str:
    """The CPU architecture the code is for: the ``mtriple``'s first field, else this host's."""
    triple = target.get("mtriple")
    return str(triple).split("-")[0] if triple else platform.machine()


def is_host_target(target: Mapping[str, Any]) -> bool:
    """True when the target's code runs on this machine (no ``mtriple`` for another arch)."""
    return target_arch(target) == platform.machine()


def usable_cores() -> int:
    """CPUs this process may run on (the affinity mask, which ``os.cpu_count`` ignores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cross_compiler(target: Mapping[str, Any]) -> str | None:
    """The C++ compiler that links a foreign target's ``.so`` (``aarch64-linux-gnu-g++``), or
    None for host code (TVM links it with the default compiler)."""
    return None if is_host_target(target) else f"{target['mtriple']}-g++"


def missing_cross_compiler_reason(target: Mapping[str, Any]) -> str | None:
    """One line naming the missing cross compiler and the command that installs it, or None.

    Checked before anything is built: without it TVM fails only at the very end, after export,
    lowering and code generation, with "No such file or directory: 'aarch64-linux-gnu-g++'".
    """
    compiler = cross_compiler(target)
    if compiler is None or shutil.which(compiler):
        return None
    return (f"the cross compiler {compiler} (links TVM's {target_arch(target)} library) is not on "
            f"PATH; install it: apt-get install g++-{target['mtriple']} (Debian/Ubuntu)")


def foreign_tuning_reason(target: Mapping[str, Any]) -> str | None:
    """Why this machine cannot tune for ``target`` (one sentence), or None when it can.

    MetaSchedule ranks candidate schedules by running them, so tuning for a board needs the
    board; edgeprune builds such a target untuned rather than failing.
    """
    if is_host_target(target):
        return None
    return (f"tuning measures candidates and this {platform.machine()} machine cannot run "
            f"{target_arch(target)} code: untuned (tuning on the board over RPC is not "
            "implemented yet)")

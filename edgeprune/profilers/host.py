"""Facts about the local CPU that every local profiler reports: its name and its power counters."""

from __future__ import annotations

import os
import platform
from pathlib import Path

RAPL_ENERGY = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def cpu_description(threads: int | None) -> str:
    """``AMD EPYC 9xx4 (x86_64), 2 threads`` — enough to tell two hosts' numbers apart."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    used = threads or os.cpu_count() or 1
    return f"{model} ({platform.machine()}), {used} threads"


def rapl_unavailable_reason() -> str | None:
    """``None`` when the package energy counter is readable, else why energy is not measurable."""
    if not RAPL_ENERGY.exists():
        return "not measurable: this host exposes no RAPL/powercap energy counter"
    try:
        int(RAPL_ENERGY.read_text().strip())
    except (OSError, ValueError) as exc:
        return f"not measurable: RAPL counter unreadable ({exc.__class__.__name__})"
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``); empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()

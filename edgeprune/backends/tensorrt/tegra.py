"""Jetson board facts around a timed run: input-rail power from tegrastats, power mode, clocks.

A figure from a Jetson means little without its power mode (``nvpmodel``) and whether
``jetson_clocks`` pinned the clocks, so both are recorded with every measurement. Power lines are
parsed by :mod:`edgeprune.profilers.energy` (one parser for every tegrastats format); this module
only adds rail sums, because AGX Orin has no whole-board ``VDD_IN`` rail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeprune.errors import DeviceError
from edgeprune.profilers import energy

AGX_ORIN_INPUT = "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0"
"""AGX Orin prints no VDD_IN; its input power is the sum of these rails (REFERENCE.md section 3)."""


def rail_names(spec: str) -> tuple[str, ...]:
    """``VDD_IN`` -> one rail; ``A+B+C`` -> rails summed per tegrastats line."""
    names = tuple(n.strip() for n in spec.split("+") if n.strip())
    if not names:
        raise DeviceError(f"power rail {spec!r} names no rail")
    return names


def input_power_w(lines: list[str], spec: str) -> list[float]:
    """Instantaneous input power in watts, one value per tegrastats line that reports every rail
    of ``spec`` (a line missing one of them would undercount, so it is skipped)."""
    names = rail_names(spec)
    seen: set[str] = set()
    power = []
    for line in lines:
        rails = energy.parse_tegrastats_line(line)
        seen.update(rails)
        if all(n in rails for n in names):
            power.append(sum(rails[n][0] for n in names) / 1e3)
    if not power:
        raise DeviceError(f"tegrastats reported no rail {spec!r}; rails seen: {', '.join(sorted(seen)) or '(none)'}")
    return power


@dataclass(frozen=True)
class BoardState:
    """Power mode and clock state as the board reported them (raw text kept for the report)."""

    power_mode: str
    jetson_clocks: str  # "on", "off" or "unknown: <why>"
    nvpmodel_raw: str
    clocks_raw: str

    def to_json(self) -> dict[str, str]:
        return {"power_mode": self.power_mode, "jetson_clocks": self.jetson_clocks,
                "nvpmodel": self.nvpmodel_raw.strip(), "jetson_clocks_show": self.clocks_raw.strip()}


_MODE = re.compile(r"NV Power Mode:\s*(\S+)")
_GPU = re.compile(r"^GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", re.MULTILINE)


def power_mode(nvpmodel_q: str) -> str:
    """``NV Power Mode: MAXN`` -> ``MAXN``; anything else -> ``unknown`` (nvpmodel missing/failed)."""
    m = _MODE.search(nvpmodel_q)
    return m.group(1) if m else "unknown"


def clocks_state(show: str) -> str:
    """jetson_clocks pins the GPU's minimum to its maximum, so ``GPU MinFreq == MaxFreq`` in
    ``jetson_clocks --show`` means on. It needs root: without sudo the reason is kept instead."""
    m = _GPU.search(show)
    if not m:
        first = show.strip().splitlines()[0] if show.strip() else "no output"
        return f"unknown: {first[:100]}"
    return "on" if m.group(1) == m.group(2) else "off"

"""Measurement settings, shared by every profiler and the timing helper."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeasureSettings:
    """How hard to measure. Defaults: enough repeats for a stable median on a quiet CPU."""

    warmup: int = 10
    repeats: int = 50
    min_repeat_ms: float = 20.0  # each sample times >= this long (several calls averaged)
    threads: int | None = None  # None: the runtime's default for the device

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")

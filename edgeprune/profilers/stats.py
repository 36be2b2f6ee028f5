"""Latency statistics: the one place that turns raw timing samples into reported figures."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from edgeprune.profilers.base_settings import MeasureSettings


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings in milliseconds, with where they came from.

    ``source`` is a provenance label such as ``measured:tvm-local`` or ``estimate:roofline``;
    every latency edgeprune prints carries one.
    """

    median: float
    p90: float
    mean: float
    std: float
    min: float
    max: float
    repeats: int
    warmup: int
    source: str

    @classmethod
    def from_samples(cls, samples_ms: "list[float] | np.ndarray", warmup: int, source: str) -> "LatencyStats":
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no timing samples")
        return cls(
            median=float(np.median(arr)),
            p90=float(np.percentile(arr, 90)),
            mean=float(arr.mean()),
            std=float(arr.std()),
            min=float(arr.min()),
            max=float(arr.max()),
            repeats=int(arr.size),
            warmup=warmup,
            source=source,
        )

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def estimated(self) -> bool:
        return self.source.startswith("estimate")

    def short(self) -> str:
        """``1.234 ms (p90 1.300, n=50)`` for tables and logs; an estimate says so instead."""
        if self.estimated:
            return f"{self.median:.3f} ms ({self.source}, not measured)"
        return f"{self.median:.3f} ms (p90 {self.p90:.3f}, n={self.repeats})"


def time_callable(fn: Callable[[], object], settings: MeasureSettings) -> list[float]:
    """Per-call milliseconds: warm up, then ``repeats`` samples, each averaging enough calls to
    last ``min_repeat_ms`` (the same discipline as TVM's ``time_evaluator``)."""
    for _ in range(settings.warmup):
        fn()
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(settings.min_repeat_ms / 1e3 / one))
    samples = []
    for _ in range(settings.repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) * 1e3 / number)
    return samples

"""Measure a candidate interleaved with its reference, so a busy machine cannot fake a speed-up.

On a shared machine the same model measured 0.99 ms and 2.05 ms in two runs, and a candidate
with fewer MACs measured slower than its parent three times in one run. Absolute figures drift
with the load; the *ratio* of two artifacts timed in alternating rounds in the same process
drifts far less. Each round times the reference, then the candidate (then the order flips); the
verdict uses the median ratio and is re-measured with more rounds while the ratios' spread
straddles the goal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edgeprune.artifact import Artifact
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.stats import LatencyStats

MeasureFn = Callable[[Artifact], Measurement]


@dataclass(frozen=True)
class Paired:
    """Per-round medians of a candidate and its reference, timed alternately."""

    candidate_ms: tuple[float, ...]
    reference_ms: tuple[float, ...]
    candidate: Measurement  # the rounds summarised (median of round medians)
    reference: Measurement

    @property
    def ratios(self) -> np.ndarray:
        return np.asarray(self.candidate_ms) / np.asarray(self.reference_ms)

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    def spread(self) -> tuple[float, float]:
        """The ratios' interquartile range (min/max when there are fewer than four rounds)."""
        r = self.ratios
        return (float(r.min()), float(r.max())) if len(r) < 4 else (float(np.percentile(r, 25)), float(np.percentile(r, 75)))

    def decided(self, goal_ratio: float) -> bool:
        """True when the spread lies wholly on one side of the goal."""
        lo, hi = self.spread()
        return hi <= goal_ratio or lo > goal_ratio

    def stability(self) -> float:
        """How much the reference moved between rounds: (max - min) / median of its round medians."""
        ref = np.asarray(self.reference_ms)
        return float((ref.max() - ref.min()) / np.median(ref))

    def to_json(self) -> dict:
        lo, hi = self.spread()
        return {"ratio_to_reference": self.ratio, "ratio_spread": [lo, hi], "rounds": len(self.ratios),
                "candidate_round_ms": list(self.candidate_ms), "reference_round_ms": list(self.reference_ms),
                "reference_variation": self.stability()}


def _summary(rounds: list[Measurement]) -> Measurement:
    """One Measurement for several rounds: statistics over the round medians, labelled as such."""
    medians = [m.latency.median for m in rounds]
    first = rounds[0]
    stats = LatencyStats.from_samples(medians, first.latency.warmup, first.latency.source)
    details = {**first.details, "rounds": len(rounds), "repeats_per_round": first.latency.repeats}
    return replace(first, latency=stats, details=details)


def measure_paired(measure: MeasureFn, candidate: Artifact, reference: Artifact, goal_ratio: float | None,
                   rounds: int, max_rounds: int) -> Paired:
    """Alternate reference and candidate for ``rounds`` rounds; while the verdict against
    ``goal_ratio`` is undecided, add rounds up to ``max_rounds``."""
    cand: list[Measurement] = []
    ref: list[Measurement] = []
    while True:
        while len(cand) < rounds:
            first_ref = len(cand) % 2 == 0  # flip the order every round: neither side always goes first
            order = ((reference, ref), (candidate, cand)) if first_ref else ((candidate, cand), (reference, ref))
            for artifact, sink in order:
                sink.append(measure(artifact))
        paired = Paired(tuple(m.latency.median for m in cand), tuple(m.latency.median for m in ref),
                        _summary(cand), _summary(ref))
        if goal_ratio is None or paired.decided(goal_ratio) or rounds >= max_rounds:
            return paired
        rounds = min(max_rounds, rounds * 2)

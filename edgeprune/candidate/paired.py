"""Measure a candidate interleaved with its reference, so a busy machine cannot fake a speed-up.

On a shared machine the same model measured 0.99 ms and 2.05 ms in two runs, and a candidate
with fewer MACs measured slower than its parent three times in one run. Absolute figures drift
with the load; the *ratio* of two artifacts timed in alternating rounds in the same process
drifts far less. Each round times the reference, then the candidate (then the order flips); the
verdict uses the median ratio and is re-measured with more rounds while the ratios' spread
straddles the goal.

Every round loads both artifacts afresh. Two ONNX Runtime sessions kept loaded gave ratios that
agreed to 1 % round after round, yet the same two files loaded again measured 0.41, 0.49, 0.49,
0.43 (demo net, 2 threads, quiet machine): where the runtime's threads land is decided when a
session is created and then holds. Rounds that each create new sessions show that variation in
the spread, so the re-measure rule sees it and the median averages over it (docs/measurement.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edgeprune.artifact import Artifact
from edgeprune.profilers.base import Measurement, MeasureSettings
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


def _calls_per_sample(call: Callable[[], object], min_ms: float) -> int:
    """Enough calls that one timed sample lasts ``min_ms`` (as time_evaluator does)."""
    start = time.perf_counter()
    call()
    one = max(time.perf_counter() - start, 1e-7)
    return max(1, int(min_ms / 1e3 / one))


def _sample(call: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) * 1e3 / number


def _round(cand: Callable[[], object], ref: Callable[[], object], numbers: tuple[int, int],
           repeats: int) -> tuple[float, float]:
    """One round: ``repeats`` samples of each, alternating call block by call block (the order
    flips every sample), so both see the same moment of the machine's load."""
    c, r = [], []
    for i in range(repeats):
        pairs = ((ref, numbers[1], r), (cand, numbers[0], c))
        for call, number, sink in (pairs if i % 2 == 0 else pairs[::-1]):
            sink.append(_sample(call, number))
    return float(np.median(c)), float(np.median(r))


Timer = tuple[Callable[[], object], str, str]  # (one inference, source label, device description)


def measure_interleaved(cand: Callable[[], Timer], ref: Callable[[], Timer], settings: MeasureSettings,
                        goal_ratio: float | None, rounds: int, max_rounds: int) -> Paired:
    """Like :func:`measure_paired`, but within every round the two artifacts alternate sample by
    sample: the tightest comparison a shared machine allows. ``cand``/``ref`` load an artifact
    and return its timer; they are called again for every round (see the module's docstring)."""
    c_ms: list[float] = []
    r_ms: list[float] = []
    numbers: tuple[int, int] | None = None
    source = device = ""
    while True:
        while len(c_ms) < rounds:
            (c_call, source, device), (r_call, _, _) = cand(), ref()
            for _ in range(settings.warmup if numbers is None else max(2, settings.warmup // 4)):
                c_call()
                r_call()
            if numbers is None:  # the same calls per sample in every round
                numbers = (_calls_per_sample(c_call, settings.min_repeat_ms),
                           _calls_per_sample(r_call, settings.min_repeat_ms))
            c, r = _round(c_call, r_call, numbers, settings.repeats)
            c_ms.append(c)
            r_ms.append(r)
            del c_call, r_call  # release the sessions before the next round loads new ones
        paired = Paired(tuple(c_ms), tuple(r_ms), _stats(c_ms, settings, source, device),
                        _stats(r_ms, settings, source, device))
        if goal_ratio is None or paired.decided(goal_ratio) or rounds >= max_rounds:
            return paired
        rounds = min(max_rounds, rounds * 2)


def _stats(round_ms: list[float], settings: MeasureSettings, source: str, device: str) -> Measurement:
    stats = LatencyStats.from_samples(round_ms, settings.warmup, source)
    return Measurement(stats, device, details={"rounds": len(round_ms), "repeats_per_round": settings.repeats,
                                               "interleaved": "call blocks alternate within each round; both loaded afresh every round"})

"""Paired (interleaved) measurement: ratios from alternating rounds, more rounds while undecided."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.artifact import Artifact
from edgeprune.candidate.paired import measure_paired
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.stats import LatencyStats


def _artifact(name: str) -> Artifact:
    return Artifact("onnxruntime", "host", (Path(f"{name}.onnx"),), (1, 1, 8, 8))


class DriftingMachine:
    """Timings from a machine that slows down by 10 % per call (load rising): absolute figures
    drift, the candidate is always 0.5x the reference timed right beside it."""

    def __init__(self, noise: list[float] | None = None) -> None:
        self.calls: list[str] = []
        self.noise = noise or []

    def __call__(self, artifact: Artifact) -> Measurement:
        self.calls.append(artifact.path.stem)
        slow = 1.1 ** len(self.calls)
        base = 1.0 if artifact.path.stem == "ref" else 0.5
        jitter = self.noise[len(self.calls) % len(self.noise)] if self.noise else 1.0
        return Measurement(LatencyStats.from_samples([base * slow * jitter], 0, "measured:test"), "test")


def test_rounds_alternate_and_the_ratio_survives_drift():
    machine = DriftingMachine()
    paired = measure_paired(machine, _artifact("cand"), _artifact("ref"), goal_ratio=0.7, rounds=4, max_rounds=16)
    assert machine.calls[:4] == ["ref", "cand", "cand", "ref"]  # the order flips every round
    assert len(paired.ratios) == 4
    assert 0.45 < paired.ratio < 0.56  # absolute figures grew ~1.5x over the rounds
    assert paired.decided(0.7)
    assert paired.candidate.latency.repeats == 4 and paired.candidate.details["rounds"] == 4


def test_undecided_verdicts_get_more_rounds():
    noisy = DriftingMachine(noise=[1.0, 1.9, 0.6, 1.4, 0.8])  # ratios scatter around the goal
    paired = measure_paired(noisy, _artifact("cand"), _artifact("ref"), goal_ratio=0.5, rounds=3, max_rounds=12)
    assert len(paired.ratios) > 3  # re-measured because the spread straddled 0.5
    lo, hi = paired.spread()
    assert lo <= paired.ratio <= hi


def test_no_goal_means_no_extra_rounds():
    paired = measure_paired(DriftingMachine([1.0, 1.9, 0.6]), _artifact("cand"), _artifact("ref"), None, 3, 12)
    assert len(paired.ratios) == 3
    assert paired.stability() > 0
    assert paired.to_json()["rounds"] == 3


@pytest.mark.parametrize("spread,goal,decided", [((0.4, 0.45), 0.5, True), ((0.55, 0.6), 0.5, True),
                                                  ((0.45, 0.55), 0.5, False)])
def test_decided_means_the_spread_is_on_one_side(spread, goal, decided):
    from edgeprune.candidate.paired import Paired

    m = Measurement(LatencyStats.from_samples([1.0], 0, "measured:test"), "test")
    paired = Paired(spread, (1.0, 1.0), m, m)
    assert paired.decided(goal) is decided


def test_interleaved_timing_alternates_calls_and_finds_the_ratio():
    """Two loaded callables timed block by block: a loop a quarter as long measures far shorter."""
    from edgeprune.candidate.paired import measure_interleaved
    from edgeprune.profilers.base import MeasureSettings

    order: list[str] = []

    loads: list[str] = []

    def work(n: int, tag: str):
        def load():
            loads.append(tag)

            def call() -> int:
                order.append(tag)
                return sum(range(n))
            return call, "measured:test", "cpu"
        return load

    settings = MeasureSettings(warmup=1, repeats=6, min_repeat_ms=2.0)
    paired = measure_interleaved(work(10_000, "c"), work(40_000, "r"), settings, goal_ratio=None, rounds=3,
                                 max_rounds=3)
    assert 0.1 < paired.ratio < 0.7 and len(paired.ratios) == 3  # 0.25 on a quiet machine
    assert loads == ["c", "r"] * 3  # each round loads both afresh: session placement varies per load
    timed = order[4:]  # after warm-up and the calls-per-sample probe
    switches = sum(1 for a, b in zip(timed, timed[1:]) if a != b)
    assert switches >= 3 * 6  # the two alternate within every round, not one round each
    assert paired.candidate.details["repeats_per_round"] == 6

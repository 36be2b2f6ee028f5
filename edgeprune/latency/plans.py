"""What a lookup-table build measures: its settings and the kept counts of each phase.

Pure functions of the group sizes, the device's channel multiple and a seed, so the measuring
plan of a build is reproducible (a resumed build asks for exactly the blocks its side file
holds) and testable without compiling anything. :mod:`edgeprune.latency.build` measures them.

Staircases: compilers compute channels in vector-width blocks, so latency often moves only at
multiples of a period. A few groups are first scanned one channel multiple at a time to find that
period (:func:`scan_plan`; 16 on the dev host: ONNX Runtime's NCHWc block on AVX-512); the grid
(:func:`grid_for`) is then measured at counts the device computes, and random whole models
(:func:`calibration_counts`) calibrate the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.latency.costmodel import LayerTerm
from edgeprune.latency.curves import effective_count, round_count
from edgeprune.latency.measure import Statistic


@dataclass(frozen=True)
class ProfileConfig:
    """How much to measure. Defaults: 8 grid points per group, 16 random whole models, 3 rounds."""

    grid: int = 8
    calibration: int = 16
    rounds: int = 3
    statistic: Statistic = "min"
    scan_groups: int = 3  # groups scanned channel by channel to find the staircase period
    max_period: int = 8  # largest staircase period tried, in channel multiples
    refine_steps: int = 3  # bisection measurements per detected staircase
    max_refined_steps: int = 2  # staircases refined per group
    step_factor: float = 3.0
    min_fraction: float = 0.25  # calibration models keep at least this share of each group
    block_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.grid < 2 or self.calibration < 0 or self.rounds < 1 or self.block_size < 1:
            raise ConfigError("grid >= 2, calibration >= 0, rounds >= 1 and block_size >= 1 required")
        if not 0 < self.min_fraction <= 1 or self.max_period < 1 or self.scan_groups < 0:
            raise ConfigError("min_fraction in (0, 1], max_period >= 1 and scan_groups >= 0 required")
        if self.statistic not in ("min", "median"):  # else it would fail only after the first block
            raise ConfigError(f"latency statistic {self.statistic!r} is not min or median")


def grid_for(channels: int, points: int, multiple: int, period: int) -> tuple[int, ...]:
    """Kept counts to measure: fractions 1/points .. (points-1)/points rounded to the channel
    multiple, then to the count the device computes (the period); the full count is the base.

    Counts below one period are not rounded up (see ``effective_count``): the device may run them
    on another code path, so where the grid reaches below the period every multiple there is
    measured.
    """
    counts = {effective_count(round_count(channels, i / points, multiple), channels, period) for i in range(1, points)}
    m = multiple if channels >= 2 * multiple else 1
    if period > m and min(counts, default=channels) < period:
        counts |= {k for k in range(m, period, m) if k * points >= channels}
    return tuple(sorted(c for c in counts if c < channels))


def group_weights(terms: tuple[LayerTerm, ...]) -> dict[str, float]:
    """Share of the model's MACs plus share of its weights in the layers each group touches."""
    macs = sum(t.macs for t in terms) or 1
    params = sum(t.params for t in terms) or 1
    weights: dict[str, float] = {}
    for t in terms:
        for g in {t.in_group, t.out_group} - {None}:
            weights[g] = weights.get(g, 0.0) + t.macs / macs + t.params / params
    return weights


def scan_plan(channels: dict[str, int], weights: dict[str, float], n: int, multiple: int,
              max_period: int) -> dict[str, tuple[int, ...]]:
    """Groups to scan one multiple at a time over the top ``max_period`` channels, and the counts.

    The staircase is easiest to see where one channel costs the most, so the ``n`` groups with the
    largest share per channel are scanned (only groups at least twice ``max_period``).
    """
    eligible = [g for g, c in channels.items() if c >= 2 * max_period]
    chosen = sorted(eligible, key=lambda g: -weights.get(g, 0.0) / channels[g])[:n]
    return {g: tuple(range(channels[g] - max_period, channels[g], multiple)) for g in chosen}


def calibration_counts(channels: dict[str, int], n: int, multiple: int, min_fraction: float,
                       seed: int) -> list[dict[str, int]]:
    """``n`` random whole-model plans, reproducible from ``seed`` (so a resumed profile measures
    the same ones). Alternates independent per-group fractions with one shared fraction plus
    jitter, the shape a global-ranking planner produces."""
    rng = np.random.default_rng(seed)
    plans = []
    for i in range(n):
        if i % 2 == 0:
            fracs = rng.uniform(min_fraction, 1.0, size=len(channels))
        else:
            fracs = np.clip(rng.uniform(min_fraction, 1.0) + rng.normal(0, 0.1, size=len(channels)), min_fraction, 1.0)
        plans.append({g: round_count(c, float(f), multiple) for (g, c), f in zip(channels.items(), fracs)})
    return plans

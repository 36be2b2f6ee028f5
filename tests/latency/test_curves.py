"""The pure rules of a lookup table, on synthetic numbers: staircases, period, smoothing, noise,
the cost-model fit, and what a build plans to measure. Nothing here compiles or measures."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.errors import ConfigError
from edgeprune.latency.costmodel import FEATURES, LayerTerm, features, fit_cost_model
from edgeprune.latency.curves import (Step, candidate_periods, cheap_counts, effective_count, find_steps,
                                      infer_period, isotonic_increasing, residual_noise)
from edgeprune.latency.plans import ProfileConfig, calibration_counts, grid_for, scan_plan


def test_step_detection_finds_an_injected_step() -> None:
    rng = np.random.default_rng(1)
    counts = list(range(4, 132, 4))
    noise = 0.01
    clean = [1.0 + 0.02 * c + rng.normal(0, noise) for c in counts]
    stepped = [v + (0.15 if c > 48 else 0.0) for v, c in zip(clean, counts)]
    assert find_steps(counts, clean, noise) == []
    steps = find_steps(counts, stepped, noise)
    assert [(s.lo, s.hi) for s in steps] == [(48, 52)]
    assert steps[0].jump_ms == pytest.approx(0.15, abs=5 * noise)
    assert 48 in cheap_counts(steps, 128)

def test_staircase_period_and_effective_counts() -> None:
    rng = np.random.default_rng(2)
    counts = list(range(96, 128, 4))
    stairs = [0.5 + 0.01 * effective_count(c, 128, 16) + rng.normal(0, 0.004) for c in counts]
    linear = [0.5 + 0.01 * c + rng.normal(0, 0.004) for c in counts]
    periods = candidate_periods(4, 32)
    assert periods == (4, 8, 16, 32)
    assert infer_period([(counts, stairs, 128)], periods) == 16
    assert infer_period([(counts, linear, 128)], periods) == 4
    assert effective_count(20, 24, 16) == 24 and effective_count(12, 24, 16) == 12  # below a period: as is
    assert cheap_counts([Step(40, 44, 1.0)], 64, 16) == (16, 32, 40, 48, 64)

def test_isotonic_smoothing() -> None:
    assert isotonic_increasing([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert isotonic_increasing([1.0, 3.0, 2.0, 4.0], [1.0, 1.0, 3.0, 1.0]) == [1.0, 2.25, 2.25, 4.0]

def test_residual_noise_recovers_the_noise_of_a_curve() -> None:
    rng = np.random.default_rng(3)
    curves = []
    for _ in range(20):
        counts = list(range(8, 72, 8))
        curves.append((counts, [0.02 * c + rng.normal(0, 0.05) for c in counts]))
    assert residual_noise(curves) == pytest.approx(0.05, rel=0.25)

def test_cost_model_fit_recovers_known_coefficients() -> None:
    """Two groups meeting in a layer: the product a*b is in the features, so the fit recovers the
    device's costs from random (fractions, ratio) points."""
    terms = (LayerTerm("conv1", None, "g", False, 1000, 100, 300, 400),
             LayerTerm("dw", None, "g", True, 50, 10, 400, 400),
             LayerTerm("conv2", "g", "h", False, 4000, 800, 400, 200),
             LayerTerm("fc", "h", None, False, 20, 20, 50, 10))
    truth = np.array([0.5, 0.2, 0.1, 0.15, 0.05])
    rng = np.random.default_rng(4)
    samples = []
    for _ in range(30):
        fractions = {"g": float(rng.uniform(0.2, 1)), "h": float(rng.uniform(0.2, 1))}
        samples.append((fractions, float(features(terms, fractions) @ truth)))
    model = fit_cost_model(terms, samples)
    assert np.allclose(model.coefficients, truth, atol=1e-6)
    assert model.ratio(terms, {}) == pytest.approx(1.0)
    half = {"g": 0.5, "h": 0.5}
    assert model.ratio(terms, half) == pytest.approx(float(features(terms, half) @ truth))
    assert len(FEATURES) == len(truth)


def test_calibration_models_are_reproducible_multiples_within_bounds() -> None:
    """A resumed build must ask for exactly the whole models it measured before."""
    channels = {"a": 64, "b": 32, "small": 6}
    plans = calibration_counts(channels, 6, 4, 0.25, seed=3)
    assert plans == calibration_counts(channels, 6, 4, 0.25, seed=3)
    assert plans != calibration_counts(channels, 6, 4, 0.25, seed=4)
    for plan in plans:
        assert set(plan) == set(channels)
        assert all(plan[g] % 4 == 0 and 0.25 * c - 2 <= plan[g] <= c for g, c in channels.items() if g != "small")
        assert 1 <= plan["small"] <= 6  # smaller than two multiples: rounded to single channels


def test_grid_and_scan_plans() -> None:
    grid = grid_for(64, 4, 4, 16)
    assert grid == tuple(sorted(grid)) and 64 not in grid  # the full count is the base, not a grid point
    assert all(k % 16 == 0 or k < 16 for k in grid)  # above one period: counts the device computes
    scans = scan_plan({"wide": 128, "heavy": 64, "tiny": 8}, {"wide": 1.0, "heavy": 1.0, "tiny": 5.0}, 1, 4, 16)
    assert scans == {"heavy": tuple(range(48, 64, 4))}  # the most cost per channel; "tiny" is too small
    with pytest.raises(ConfigError, match="statistic"):
        ProfileConfig(statistic="mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ProfileConfig(grid=1)

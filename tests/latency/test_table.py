"""Latency lookup tables: built for real on a tiny model with ONNX Runtime, plus the pure curve rules.

Latencies on a shared CI CPU are noisy, so tests on measured numbers check structure (round
trip, grid points, monotonicity, resume counts) and the base within a wide tolerance; the
numerical rules (staircases, period, interpolation, fit) are tested on synthetic curves.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.latency.table import (Profile, ProfileConfig, build_profile, load_profile, profile_filename, profile_to_file,
                           side_file)
from edgeprune.latency.curves import (Step, candidate_periods, cheap_counts, effective_count, find_steps,
                                  infer_period, interpolate, isotonic_increasing, residual_noise)
from edgeprune.latency.measure import PROFILE_SETTINGS, CompiledMeter, MeasurementCache
from edgeprune.latency.costmodel import FEATURES, LayerTerm, features, fit_cost_model
from edgeprune.models.demo_net import build_demo_net
from edgeprune.profilers.stats import LatencyStats
from edgeprune.targets import get_target

SETTINGS = dataclasses.replace(PROFILE_SETTINGS, warmup=2, repeats=12, threads=1)
CONFIG = ProfileConfig(grid=3, calibration=2, rounds=2, max_period=2, scan_groups=1)  # small period: scan runs
EXAMPLE_SHAPE = (1, 1, 32, 32)


class CountingMeter:
    """A real :class:`CompiledMeter` that counts its measurements and can stop after ``stop_after``
    (an interruption at a known point, as Ctrl-C would)."""

    def __init__(self, meter: CompiledMeter, stop_after: int | None = None) -> None:
        self.meter = meter
        self.stop_after = stop_after
        self.calls = 0

    def __call__(self, model: torch.nn.Module) -> LatencyStats:
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.meter(model)

    def describe(self) -> dict:
        return self.meter.describe()


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_demo_net(width=8).eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Profile, Path, CountingMeter]:
    """One profile of the width-8 demo net on the host with ONNX Runtime, saved to disk."""
    root = tmp_path_factory.mktemp("lut")
    example = torch.rand(EXAMPLE_SHAPE)
    meter = CountingMeter(CompiledMeter(get_target("host"), "onnxruntime", example, root / "work", SETTINGS))
    out = root / "host" / profile_filename("tests.nets:tiny_demo", EXAMPLE_SHAPE)
    profile = profile_to_file(tiny(), example, get_target("host"), "onnxruntime", model_name="tests.nets:tiny_demo",
                              out=out, config=CONFIG, settings=SETTINGS, measure=meter)
    return profile, out, meter


def test_profile_json_round_trips_and_carries_provenance(built) -> None:
    profile, out, _ = built
    loaded = load_profile(out)
    assert loaded.to_json() == profile.to_json()
    assert loaded.predict({}) == pytest.approx(profile.predict({}))
    assert not side_file(out).exists()  # the partial measurements were removed once the table was written
    prov = json.loads(out.read_text())["provenance"]
    assert "threads" in prov["device"] and prov["runtime"] == "onnxruntime"
    assert prov["versions"]["torch"] != "not installed"
    assert prov["date"].startswith("20") and prov["compiler"]["target"] == "host"
    assert prov["measure"]["repeats_per_figure"] == SETTINGS.repeats * CONFIG.rounds
    assert prov["grid"] == {**prov["grid"], "points": 3, "channel_multiple": 4}
    assert loaded.source == f"estimate:profile:host/{out.name}"
    assert loaded.estimate({}).source == loaded.source


def test_interpolation_returns_measured_values_at_grid_points(built) -> None:
    profile, _, _ = built
    for curve in profile.groups.values():
        for count, saving in zip(curve.counts, curve.saving_ms):
            assert curve.saving(count) == pytest.approx(max(saving, 0.0), abs=1e-12)
    assert interpolate([4, 8, 16], [3.0, 2.0, 0.0], 8) == 2.0
    assert interpolate([4, 8, 16], [3.0, 2.0, 0.0], 12) == pytest.approx(1.0)
    assert interpolate([4, 8, 16], [3.0, 2.0, 0.0], 2) == pytest.approx(3.5)  # first segment extended


def test_unpruned_prediction_equals_measured_base(built, tmp_path) -> None:
    profile, _, meter = built
    assert profile.predict({}) == pytest.approx(profile.base_ms, rel=1e-12)
    example = torch.rand(EXAMPLE_SHAPE)
    fresh = CompiledMeter(get_target("host"), "onnxruntime", example, tmp_path, SETTINGS)
    measured = min(fresh(tiny()).min for _ in range(3))
    # the base is the median over every block of the build; a CPU shared with other jobs moves
    # the fastest call by a few percent, so the tolerance is wide but far below any pruning effect
    assert abs(profile.base_ms - measured) / measured < 0.25


def test_predictions_never_rise_as_channels_are_removed(built) -> None:
    profile, _, _ = built
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = {g: int(rng.integers(1, c.channels + 1)) for g, c in profile.groups.items()}
        for g in profile.groups:
            previous = profile.predict(counts)
            while counts[g] > 1:
                counts[g] -= 1
                now = profile.predict(counts)
                assert now <= previous + 1e-12
                previous = now
    assert profile.predict({g: 1 for g in profile.groups}) < profile.base_ms
    assert all(c >= 0 for c in profile.fit.model.coefficients)
    for curve in profile.groups.values():
        assert list(curve.saving_ms) == sorted(curve.saving_ms, reverse=True)


def test_cheap_counts_of_the_built_profile(built) -> None:
    profile, _, _ = built
    for name, curve in profile.groups.items():
        cheap = profile.cheap_counts(name)
        assert cheap[-1] == curve.channels and list(cheap) == sorted(set(cheap))


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


def test_resume_after_interruption_reuses_cached_measurements(tmp_path) -> None:
    target = get_target("host")
    example = torch.rand(EXAMPLE_SHAPE)
    config = dataclasses.replace(CONFIG, grid=2, rounds=1, calibration=1, refine_steps=0)
    settings = dataclasses.replace(SETTINGS, repeats=8)
    cache = tmp_path / ".tiny.json.partial"
    first = CountingMeter(CompiledMeter(target, "onnxruntime", example, tmp_path / "a", settings), stop_after=6)
    with pytest.raises(KeyboardInterrupt):
        build_profile(tiny(), example, target, "onnxruntime", model_name="tiny", measure=first, config=config,
                      settings=settings, cache_path=cache)
    done = json.loads(cache.read_text())["blocks"]
    assert done, "blocks finished before the interruption are in the side file"
    second = CountingMeter(CompiledMeter(target, "onnxruntime", example, tmp_path / "b", settings))
    profile = build_profile(tiny(), example, target, "onnxruntime", model_name="tiny", measure=second,
                            config=config, settings=settings, cache_path=cache)
    every = json.loads(cache.read_text())["blocks"]
    assert {k: every[k] for k in done} == done  # reused as they were, not measured again
    fresh = [k for k in every if k not in done]
    assert second.calls == sum(len(every[k]["values_ms"]) + 1 for k in fresh) * config.rounds
    assert first.calls >= sum(len(v["values_ms"]) + 1 for v in done.values())
    assert profile.provenance["measurements"]["blocks_reused"] == len(done)
    restarted = MeasurementCache(cache, "another setup")
    assert restarted.blocks == {}  # a different fingerprint never mixes in old numbers


def test_cli_profile_writes_the_table(tmp_path) -> None:
    out = tmp_path / "tiny.json"
    args = ["profile", "--model", "tests.nets:tiny_demo", "--input-shape", "1x1x32x32", "--grid", "2",
            "--calibration", "0", "--rounds", "1", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "estimate:profile:" in result.output and out.is_file()
    assert load_profile(out).input_shape == EXAMPLE_SHAPE
    bad = CliRunner().invoke(app, ["profile", "--model", "tests.nets:tiny_demo", "--input-shape", "1x1x32",
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "input shape" in bad.output


def test_residual_noise_recovers_the_noise_of_a_curve() -> None:
    rng = np.random.default_rng(3)
    curves = []
    for _ in range(20):
        counts = list(range(8, 72, 8))
        curves.append((counts, [0.02 * c + rng.normal(0, 0.05) for c in counts]))
    assert residual_noise(curves) == pytest.approx(0.05, rel=0.25)

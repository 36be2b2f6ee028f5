"""Latency lookup tables built for real on a tiny model with ONNX Runtime (and with a custom,
noise-free measure), saved, read back and used for prediction.

Latencies on a shared CI CPU are noisy, so tests on measured numbers check structure (round
trip, grid points, monotonicity, resume counts) and the base within a wide tolerance; the
numerical rules are tested on synthetic curves in ``test_curves.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.latency.build import build_profile, profile_to_file
from edgeprune.latency.curves import interpolate
from edgeprune.latency.measure import PROFILE_SETTINGS, CompiledMeter, Describable, MeasurementCache
from edgeprune.latency.plans import ProfileConfig
from edgeprune.latency.table import Profile, load_profile, profile_filename, side_file
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
    profile, out, meter = built
    assert isinstance(meter, Describable)  # so its description below is the provenance's device
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
    lines = out.read_text().splitlines()
    assert any(line.strip().startswith('"coefficients": [') and line.rstrip(",").endswith("]") for line in lines)


def test_a_profile_from_another_version_or_malformed_is_refused(built, tmp_path) -> None:
    profile, out, _ = built
    data = json.loads(out.read_text())
    for broken, message in (({**data, "version": 2}, "version"), ({**data, "groups": {"g": {}}}, "malformed")):
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match=message):
            load_profile(path)
    with pytest.raises(ConfigError, match="cannot read profile"):
        load_profile(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="no group"):
        profile.predict({"no-such-group": 1})


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


def weight_latency(model: torch.nn.Module) -> LatencyStats:
    """A custom, noise-free measure: 0.05 ms plus 1 us per conv/linear weight (a memory-bound
    device). Plain function, no ``describe``: the provenance must not invent a device for it."""
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    ms = 0.05 + 1e-3 * weights / 1000
    return LatencyStats(ms, ms, ms, 0.0, ms, ms, 1, 0, "estimate:weights")


def test_custom_measure_without_describe_builds_an_exact_table() -> None:
    """Weights scale with the product of the two groups a layer joins, which the cost model's
    ``params`` feature carries exactly: the fit must reproduce the whole models it never saw as
    single-group points, and no staircase may be found in a linear curve."""
    assert not isinstance(weight_latency, Describable)
    target = get_target("host")
    config = dataclasses.replace(CONFIG, calibration=4, rounds=1)
    profile = build_profile(tiny(), torch.rand(EXAMPLE_SHAPE), target, "onnxruntime", model_name="tiny",
                            measure=weight_latency, config=config)
    assert profile.provenance["device"] == "unknown (custom measure)"
    assert profile.provenance["measure"]["settings"] == dataclasses.asdict(PROFILE_SETTINGS)
    assert profile.base_ms == pytest.approx(weight_latency(tiny()).min)
    assert profile.period == target.channel_multiple
    assert len(profile.fit.whole_counts) == 4 and profile.fit.whole_max_abs_rel_error < 0.01
    for counts, measured in zip(profile.fit.whole_counts, profile.fit.whole_measured_ms):
        assert profile.predict(counts) == pytest.approx(measured, rel=0.01)

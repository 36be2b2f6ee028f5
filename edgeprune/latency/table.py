"""Latency lookup tables: per-group latency as a function of kept channels, measured on the target.

``build_profile`` measures, on the target's own compiler and device, how the *whole model's*
latency changes when one dependency group keeps fewer channels, at a grid of kept counts, plus a
few random whole models; a :class:`Profile` then predicts any pruned variant's latency without
compiling it, and is saved as ``profiles/<target>/<model>_<shape>.json``. A figure from it is an
estimate, labelled ``estimate:profile:<file>``; only a compiled artifact measured on the device
is ``measured:``.

Why in context, not isolated layers (HALP's per-layer table, nn-Meter's kernels): the quantity a
planner needs is the compiled whole model's latency, and a compiler fuses a conv with its
BatchNorm, activation and residual add, picks layouts and kernels per shape, and a group's
channels reach several layers (producer outputs, consumer inputs, the adds between). Pruning the
group inside the real model and comparing with the unpruned model measures exactly what changes,
fusion and framework overhead included, with one compile per grid point; isolated layers would
each need compiling, and their sum misses everything between them.

How a whole model is predicted: not by adding up the per-group deltas. Two groups meeting in a
layer save ``1 - a*b`` of it together, not ``(1 - a) + (1 - b)``, and when most channels go the
weights start fitting in cache; on the dev host the plain sum was off by 16-42% (median) for
random variants of resnet18 and mobilenet_v2 (bench/bench_lut.py). :mod:`edgeprune.latency.costmodel` fits a per-layer cost model (MACs, weights, activations,
constant, squared weights: each with the product structure built in) by least squares on every
in-context measurement; the table keeps the per-group curves themselves (:meth:`Profile.additive`
is their plain sum, kept for comparison) for staircases and cheap counts.

Staircases: compilers compute channels in vector-width blocks, so latency often moves only at
multiples of a period. A few groups are first scanned one channel multiple at a time to find that
period (16 on the dev host: ONNX Runtime's NCHWc block on AVX-512); the grid is then measured at
counts the device computes, and a count above one period costs as the next multiple up. Larger
jumps between grid points (beyond the curve's slope by more than noise) are bisected with a few
extra measurements. :meth:`Profile.cheap_counts` lists the counts at the top of each plateau.

Noise: every figure is a ratio to the unpruned model measured in the same block (rounds in
rotating order), times the profile's base; see :mod:`edgeprune.latency.measure`.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.graph import GroupedModel
from edgeprune.latency.curves import (Step, candidate_periods, cheap_counts, effective_count, find_steps, infer_period,
                                  interpolate, isotonic_increasing, residual_noise, round_count)
from edgeprune.latency.measure import (PROFILE_SETTINGS, CompiledMeter, LatencyFn, MeasurementCache, Statistic,
                                   fingerprint, measure_block, structure_key)
from edgeprune.latency.costmodel import FEATURES, CostModel, LayerTerm, fit_cost_model, layer_terms
from edgeprune.plan import GroupPlan, PruningPlan
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.stats import LatencyStats
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.prune import prune_between
from edgeprune.targets import TargetSpec, data_dir

PROFILE_VERSION = 1


@dataclass(frozen=True)
class GroupCurve:
    """One group's measured curve: kept counts (ascending, ending at the full count) and the
    whole-model latency saved at each (only this group pruned), smoothed to be monotone;
    ``raw_saving_ms`` as measured."""

    channels: int
    counts: tuple[int, ...]
    saving_ms: tuple[float, ...]
    raw_saving_ms: tuple[float, ...]
    steps: tuple[Step, ...] = ()
    period: int = 1  # staircase period: counts above it compute as its next multiple

    def computed(self, count: int) -> int:
        """The count the device computes for ``count`` kept channels (see ``effective_count``)."""
        if not 1 <= count <= self.channels:
            raise ConfigError(f"kept count {count} outside 1..{self.channels}")
        return effective_count(count, self.channels, self.period)

    def saving(self, count: int) -> float:
        """Saving at ``count`` kept channels: the measured value at a grid point, linear between."""
        return max(0.0, interpolate(self.counts, self.saving_ms, self.computed(count)))

    def cheap_counts(self) -> tuple[int, ...]:
        return cheap_counts(self.steps, self.channels, self.period)


@dataclass(frozen=True)
class Fit:
    """The fitted cost model and how well it reproduces the measurements it was fitted on."""

    model: CostModel
    points: int
    singles_median_abs_rel_error: float
    singles_max_abs_rel_error: float
    whole_median_abs_rel_error: float  # on the random whole models (NaN when none)
    whole_max_abs_rel_error: float
    whole_counts: tuple[dict[str, int], ...] = ()
    whole_measured_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A latency lookup table for one model, input shape, target and runtime."""

    model: str
    target: str
    runtime: str
    input_shape: tuple[int, ...]
    base_ms: float
    noise_ms: float
    statistic: str
    groups: dict[str, GroupCurve]
    layers: tuple[LayerTerm, ...]
    fit: Fit
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def period(self) -> int:
        """The staircase period found on this device (1 or the channel multiple: none)."""
        return max((g.period for g in self.groups.values()), default=1)

    @property
    def source(self) -> str:
        """The label every figure from this table carries."""
        name = f"{self.path.parent.name}/{self.path.name}" if self.path else "unsaved"
        return f"estimate:profile:{name}"

    def kept_counts(self, plan_or_counts: PruningPlan | Mapping[str, int]) -> dict[str, int]:
        """Per-group kept counts; groups a mapping leaves out are unpruned."""
        if isinstance(plan_or_counts, PruningPlan):
            if tuple(plan_or_counts.input_shape) != tuple(self.input_shape):
                raise ConfigError(f"plan is for input {plan_or_counts.input_shape}, the profile for "
                                  f"{self.input_shape}")
            given = {name: len(g.kept) for name, g in plan_or_counts.groups.items()}
        else:
            given = {name: int(k) for name, k in plan_or_counts.items()}
        unknown = sorted(set(given) - set(self.groups))
        if unknown:
            raise ConfigError(f"the profile has no group {unknown[0]!r}")
        return {name: given.get(name, g.channels) for name, g in self.groups.items()}

    def fractions(self, plan_or_counts: PruningPlan | Mapping[str, int]) -> dict[str, float]:
        """Kept fraction of each group as the device computes it (staircase period applied)."""
        counts = self.kept_counts(plan_or_counts)
        return {name: g.computed(counts[name]) / g.channels for name, g in self.groups.items()}

    def predict(self, plan_or_counts: PruningPlan | Mapping[str, int]) -> float:
        """Estimated latency in ms of the model pruned to these kept counts (label: :attr:`source`).

        Monotone non-increasing as channels are removed; exactly the measured base for the
        unpruned model."""
        return self.base_ms * self.fit.model.ratio(self.layers, self.fractions(plan_or_counts))

    def additive(self, plan_or_counts: PruningPlan | Mapping[str, int]) -> float:
        """The plain table sum: base minus every group's measured saving (no product, no fit)."""
        counts = self.kept_counts(plan_or_counts)
        saved = sum(g.saving(counts[name]) for name, g in self.groups.items())
        return max(self.base_ms - saved, 0.0)

    def estimate(self, plan_or_counts: PruningPlan | Mapping[str, int]) -> LatencyStats:
        """:meth:`predict` as a one-sample :class:`LatencyStats`, labelled as an estimate."""
        ms = self.predict(plan_or_counts)
        return LatencyStats(ms, ms, ms, 0.0, ms, ms, 1, 0, self.source)

    def cheap_counts(self, group: str) -> tuple[int, ...]:
        """Kept counts at the top of each measured latency plateau of ``group`` (ascending, the
        full count last): a planner rounding to these gets the most channels per millisecond."""
        if group not in self.groups:
            raise ConfigError(f"the profile has no group {group!r}")
        return self.groups[group].cheap_counts()

    def to_json(self) -> dict[str, Any]:
        f = self.fit
        return {
            "version": PROFILE_VERSION, "model": self.model, "target": self.target, "runtime": self.runtime,
            "input_shape": list(self.input_shape), "statistic": self.statistic,
            "base_ms": self.base_ms, "noise_ms": self.noise_ms, "period": self.period,
            "provenance": self.provenance,
            "fit": {"features": list(FEATURES), "coefficients": [round(v, 6) for v in f.model.coefficients],
                    "points": f.points,
                    "singles_median_abs_rel_error": _finite(f.singles_median_abs_rel_error),
                    "singles_max_abs_rel_error": _finite(f.singles_max_abs_rel_error),
                    "whole_median_abs_rel_error": _finite(f.whole_median_abs_rel_error),
                    "whole_max_abs_rel_error": _finite(f.whole_max_abs_rel_error),
                    "whole_counts": [list(k.values()) for k in f.whole_counts],
                    "whole_measured_ms": [round(v, 6) for v in f.whole_measured_ms]},
            "groups": {name: {"channels": g.channels, "period": g.period, "counts": list(g.counts),
                              "saving_ms": [round(v, 6) for v in g.saving_ms],
                              "raw_saving_ms": [round(v, 6) for v in g.raw_saving_ms],
                              "steps": [[s.lo, s.hi, round(s.jump_ms, 6)] for s in g.steps],
                              "cheap_counts": list(g.cheap_counts())}
                       for name, g in self.groups.items()},
            "layers": [[t.name, t.in_group, t.out_group, t.depthwise, t.macs, t.params, t.in_act, t.out_act]
                       for t in self.layers],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> "Profile":
        if data.get("version") != PROFILE_VERSION:
            raise ConfigError(f"profile version {data.get('version')!r} is not {PROFILE_VERSION}")
        try:
            groups = {name: GroupCurve(int(g["channels"]), tuple(int(x) for x in g["counts"]),
                                       tuple(float(x) for x in g["saving_ms"]),
                                       tuple(float(x) for x in g["raw_saving_ms"]),
                                       tuple(Step(int(lo), int(hi), float(j)) for lo, hi, j in g["steps"]),
                                       int(g["period"]))
                      for name, g in data["groups"].items()}
            names = list(groups)
            f = data["fit"]
            if list(f["features"]) != list(FEATURES):
                raise ConfigError(f"profile features {f['features']} are not {list(FEATURES)}")
            fit = Fit(CostModel(tuple(float(v) for v in f["coefficients"])), int(f["points"]),
                      _nan_if_none(f["singles_median_abs_rel_error"]), _nan_if_none(f["singles_max_abs_rel_error"]),
                      _nan_if_none(f["whole_median_abs_rel_error"]), _nan_if_none(f["whole_max_abs_rel_error"]),
                      tuple(dict(zip(names, (int(v) for v in k))) for k in f["whole_counts"]),
                      tuple(float(v) for v in f["whole_measured_ms"]))
            layers = tuple(LayerTerm(str(n), i, o, bool(d), int(m), int(p), int(ia), int(oa))
                           for n, i, o, d, m, p, ia, oa in data["layers"])
            return cls(data["model"], data["target"], data["runtime"], tuple(int(v) for v in data["input_shape"]),
                       float(data["base_ms"]), float(data["noise_ms"]), data["statistic"], groups, layers, fit,
                       dict(data.get("provenance", {})), path)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed profile: {exc!r}") from None

    def save(self, path: Path) -> "Profile":
        """Write atomically; returns the profile with its path set (so :attr:`source` names it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_compact_json_atomic(path, self.to_json())
        return replace(self, path=path)


_SCALAR_LIST = re.compile(r"\[\s*((?:[-\w.\"|:?=+]+,\s*)*[-\w.\"|:?=+]+)\s*\]")


def write_compact_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Like ``write_json_atomic`` but with each list of numbers/strings on one line: profiles ship
    in the wheel and are read in reviews, one value per line made them ten times longer."""
    text = json.dumps(data, indent=1)
    text = _SCALAR_LIST.sub(lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _finite(value: float) -> float | None:
    """JSON has no NaN: an error that was never computed (no whole models measured) is null."""
    return None if math.isnan(value) else value


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def load_profile(path: Path) -> Profile:
    try:
        return Profile.from_json(json.loads(Path(path).read_text()), Path(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read profile {path}: {exc}") from None


def profile_filename(model: str, input_shape: tuple[int, ...]) -> str:
    """``torchvision:resnet18?num_classes=10`` at 1x3x64x64 -> ``resnet18-num_classes-10_1x3x64x64.json``:
    a table holds only for the input shape it was measured at, so the shape is in the name."""
    name = model.split(":", 1)[1] if model.startswith("torchvision:") else model
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.") or "model"
    return f"{slug}_{'x'.join(str(d) for d in input_shape)}.json"


def default_profile_path(target: str, model: str, input_shape: tuple[int, ...]) -> Path:
    """``profiles/<target>/<file>`` in the checkout; in ``./profiles`` when running from a wheel
    (the packaged folder is read-only data)."""
    root = data_dir("profiles")
    if "_data" in root.parts:
        root = Path.cwd() / "profiles"
    return root / target / profile_filename(model, input_shape)


def side_file(out: Path) -> Path:
    """Where partial measurements of ``out`` are kept until the profile is written."""
    return out.with_name(f".{out.name}.partial")


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


class _Builder:
    """State of one profile build: the model, the meter, the side-file cache, the progress bar."""

    def __init__(self, grouped: GroupedModel, example: torch.Tensor, model_name: str, measure: LatencyFn,
                 config: ProfileConfig, cache: MeasurementCache, progress: ProgressSink) -> None:
        self.model = grouped.model
        self.example = example
        self.model_name = model_name
        self.measure = measure
        self.config = config
        self.cache = cache
        self.progress = progress
        self.task: object = None
        self.channels = {name: g.channels for name, g in grouped.groups.items()}
        self.measured = 0

    def pruned(self, counts: Mapping[str, int]) -> nn.Module:
        """A pruned copy with each named group keeping its first ``count`` channels (which ones
        does not change the latency, only how many). Same as ``apply_plan`` minus its re-trace
        of the unpruned model, whose groups are already known here."""
        plan = PruningPlan.identity(self.model_name, tuple(self.example.shape), "profile", self.channels)
        groups = dict(plan.groups)
        for name, k in counts.items():
            if k < self.channels[name]:
                groups[name] = GroupPlan(self.channels[name], tuple(range(k)))
        return prune_between(copy.deepcopy(self.model).eval(), self.example, plan, plan.with_groups(groups))

    def block(self, key: str, variants: list[dict[str, int]], counted: bool = True) -> list[float]:
        """Ratios variant / unpruned for ``variants``, measured together (or from the side file);
        ``counted`` blocks advance the progress bar (refinements are not known in advance). The
        key names the variants too, so a cached block is only reused for exactly these models."""
        key = f"{key}|{fingerprint(variants)[:10]}"
        cached = self.cache.get(key)
        if cached is None:
            models = [self.model] + [self.pruned(c) for c in variants]
            values = measure_block(self.measure, models, self.config.rounds, self.config.statistic)
            self.measured += len(models) * self.config.rounds
            cached = {"base_ms": values[0], "values_ms": values[1:]}
            self.cache.put(key, cached)
        for _ in variants if counted else ():
            self.progress.advance(self.task)
        return [v / cached["base_ms"] for v in cached["values_ms"]]

    def chunked(self, prefix: str, variants: list[dict[str, int]]) -> list[float]:
        """Measure ``variants`` in blocks of ``block_size``, each with its own reference."""
        size = self.config.block_size
        out: list[float] = []
        for i in range(0, len(variants), size):
            out.extend(self.block(f"{prefix}:{i}", variants[i:i + size]))
        return out

    def ratios(self, prefix: str, group: str, counts: tuple[int, ...]) -> dict[int, float]:
        return dict(zip(counts, self.chunked(f"{prefix}:{group}", [{group: k} for k in counts])))

    def block_bases(self) -> list[float]:
        return [b["base_ms"] for b in self.cache.blocks.values()]


def _drift_ms(bases: list[float]) -> float:
    """Spread of the unpruned model's figure across blocks (MAD as a standard deviation): how
    much the machine's load moved during the build, which the per-block ratios cancel."""
    arr = np.asarray(bases, dtype=np.float64)
    return float(np.median(np.abs(arr - np.median(arr)))) * 1.4826 if arr.size else 0.0


def _noise_ms(ratios: dict[str, dict[int, float]], channels: dict[str, int], base_ms: float) -> float:
    """Noise of one measured point (see ``residual_noise``), floored at 0.2% of base."""
    curves = [(sorted(r) + [channels[g]], [r[k] for k in sorted(r)] + [1.0]) for g, r in ratios.items() if r]
    return max(residual_noise(curves) * base_ms, 0.002 * base_ms)


def _curve(channels: int, ratios: dict[int, list[float]], base_ms: float, noise_ms: float, period: int,
           factor: float) -> GroupCurve:
    """Average repeated measurements of one computed count, smooth (monotone, full count pinned
    at base), find steps, and turn latencies into savings."""
    points = {k: float(np.mean(v)) * base_ms for k, v in ratios.items()}
    points[channels] = base_ms
    counts = sorted(points)
    latency = [points[c] for c in counts]
    smooth = isotonic_increasing(latency, [1e6 if c == channels else float(len(ratios.get(c, [1]))) for c in counts])
    steps = tuple(find_steps(counts, latency, noise_ms, factor))
    return GroupCurve(channels, tuple(counts), tuple(base_ms - v for v in smooth),
                      tuple(base_ms - v for v in latency), steps, period)


def fit_profile(draft: Profile, samples: list[tuple[dict[str, int], float]],
                whole: list[tuple[dict[str, int], float]]) -> Fit:
    """Fit the cost model on single-group ``samples`` and ``whole`` models (kept counts, ratio to
    the unpruned model) and say how well it reproduces each."""
    data = [(draft.fractions(c), r) for c, r in samples + whole]
    model = fit_cost_model(draft.layers, data)
    fitted = replace(draft, fit=replace(draft.fit, model=model))

    def errors(points: list[tuple[dict[str, int], float]]) -> tuple[float, float]:
        if not points:
            return math.nan, math.nan
        err = [abs(fitted.predict(c) / draft.base_ms - r) / r for c, r in points]
        return float(np.median(err)), float(np.max(err))

    singles, whole_err = errors(samples), errors(whole)
    return Fit(model, len(data), *singles, *whole_err, tuple(c for c, _ in whole),
               tuple(draft.base_ms * r for _, r in whole))


def _refine(builder: _Builder, name: str, ratios: dict[int, float], noise: float, multiple: int) -> None:
    """Bisect the largest staircases of ``name`` down to ``multiple`` channels (adds to ``ratios``,
    which hold the full count at 1.0; ``noise`` is relative to the base)."""
    cfg = builder.config
    counts = sorted(ratios)
    steps = find_steps(counts, [ratios[c] for c in counts], noise, cfg.step_factor)
    for step in sorted(steps, key=lambda s: -s.jump_ms)[: cfg.max_refined_steps]:
        lo, hi = step.lo, step.hi
        for _ in range(cfg.refine_steps):
            mid = lo + max(1, round((hi - lo) / 2 / multiple)) * multiple
            if hi - lo <= multiple or mid >= hi:
                break
            if mid not in ratios:
                (ratios[mid],) = builder.block(f"refine:{name}:{mid}", [{name: mid}], counted=False)
            if ratios[mid] - ratios[lo] > ratios[hi] - ratios[mid]:
                hi = mid
            else:
                lo = mid


def build_profile(model: nn.Module, example: torch.Tensor, target: TargetSpec, runtime: str, *,
                  model_name: str, measure: LatencyFn | None = None, config: ProfileConfig = ProfileConfig(),
                  settings: MeasureSettings = PROFILE_SETTINGS, cache_path: Path | None = None,
                  resume: bool = True, progress: ProgressSink = null_progress) -> Profile:
    """Measure ``model``'s latency table on ``target`` with ``runtime`` (see the module docstring).

    Phases, each in interleaved blocks against the unpruned model: (1) scan a few groups one
    channel multiple at a time to find the staircase period; (2) the grid of every group at counts
    the device computes; (3) bisect large steps; (4) random whole models; then fit the cost model.
    ``measure`` compiles and measures one model (default: a :class:`CompiledMeter` on this
    machine with ``settings``); pass a remote one to profile a board (a ``describe() -> dict``
    method, if it has one, goes into the provenance). ``cache_path`` names the side file that
    makes an interrupted build resumable. The profile is returned unsaved.
    """
    if measure is None:
        with tempfile.TemporaryDirectory(prefix="edgeprune-profile-") as tmp:
            meter = CompiledMeter(target, runtime, example, Path(tmp), settings)
            return build_profile(model, example, target, runtime, model_name=model_name, measure=meter,
                                 config=config, settings=settings, cache_path=cache_path, resume=resume,
                                 progress=progress)
    start = time.perf_counter()
    grouped = GroupedModel(model.eval(), example)
    channels = {name: g.channels for name, g in grouped.groups.items()}
    m = target.channel_multiple
    key = fingerprint({"model": structure_key(model), "shape": list(example.shape), "target": target.name,
                       "runtime": runtime, "config": config.__dict__, "channels": channels,
                       "settings": settings.__dict__, "multiple": m})
    cache = MeasurementCache(cache_path, key, resume)
    builder = _Builder(grouped, example, model_name, measure, config, cache, progress)
    terms = layer_terms(grouped, example)
    scans = scan_plan(channels, group_weights(terms), config.scan_groups, m, config.max_period * m)
    plans = calibration_counts(channels, config.calibration, m, config.min_fraction, config.seed)
    builder.task = progress.start(f"profiling {model_name}: staircase scan", sum(len(v) for v in scans.values()))
    try:
        scanned = {g: builder.ratios("scan", g, counts) for g, counts in scans.items()}
        period = infer_period([(list(r) + [channels[g]], list(r.values()) + [1.0], channels[g])
                               for g, r in scanned.items()], candidate_periods(m, config.max_period * m))
        progress.finish(builder.task)
        progress.log(f"staircase period: {period} channels" + (" (none)" if period == m else ""))
        grids = {g: grid_for(c, config.grid, m, period) for g, c in channels.items()}
        builder.task = progress.start(f"profiling {model_name}: grid + whole models",
                                      sum(len(v) for v in grids.values()) + len(plans))
        ratios = {g: builder.ratios("grid", g, counts) for g, counts in grids.items()}
        base_ms = float(np.median(builder.block_bases()))
        noise_ms = _noise_ms(ratios, channels, base_ms)
        for g, r in ratios.items():
            if r:
                full = {**r, channels[g]: 1.0}
                _refine(builder, g, full, noise_ms / base_ms, period if channels[g] >= 2 * period else m)
                r.update({k: v for k, v in full.items() if k != channels[g]})
        whole = list(zip(plans, builder.chunked("calibration", plans)))
    finally:
        progress.finish(builder.task)
    singles = [({g: k}, v) for source in (ratios, scanned) for g, r in source.items() for k, v in r.items()]
    merged: dict[str, dict[int, list[float]]] = {g: {} for g in channels}
    for (counts, v) in singles:
        ((g, k),) = counts.items()
        merged[g].setdefault(effective_count(k, channels[g], period), []).append(v)
    curves = {g: _curve(channels[g], merged[g], base_ms, noise_ms, period, config.step_factor) for g in channels}
    draft = Profile(model_name, target.name, runtime, tuple(example.shape), base_ms, noise_ms, config.statistic,
                    curves, terms, Fit(CostModel((0.0, 0.0, 0.0, 1.0, 0.0)), 0, *[math.nan] * 4))
    provenance = _provenance(measure, config, settings, target, builder, cache, time.perf_counter() - start)
    provenance.update(scanned_groups=sorted(scans), drift_ms=_drift_ms(builder.block_bases()))
    return replace(draft, fit=fit_profile(draft, singles, whole), provenance=provenance)


def _provenance(measure: LatencyFn, config: ProfileConfig, settings: MeasureSettings, target: TargetSpec,
                builder: _Builder, cache: MeasurementCache, wall_s: float) -> dict[str, Any]:
    """Where the numbers came from: device, software, date, compiler options, grid, repeats."""
    from edgeprune import __version__
    from edgeprune.report.publish import versions

    described = dict(measure.describe()) if hasattr(measure, "describe") else {"device": "unknown (custom measure)"}
    meter_settings = described.pop("settings", settings.__dict__)
    return {
        **described,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {**versions(), "edgeprune": __version__},
        "target_description": target.description,
        "measure": {"settings": meter_settings, "statistic": config.statistic, "rounds": config.rounds,
                    "repeats_per_figure": settings.repeats * config.rounds,
                    "interleaved": f"each block: the unpruned model + up to {config.block_size} variants, "
                                   "measured in rounds in rotating order; figures are ratios to the block's "
                                   "unpruned model times the profile's base"},
        "grid": {"points": config.grid, "channel_multiple": target.channel_multiple,
                 "max_period": config.max_period * target.channel_multiple, "scan_groups": config.scan_groups,
                 "refine_steps": config.refine_steps, "step_factor": config.step_factor},
        "calibration_models": config.calibration, "seed": config.seed,
        "measurements": {"this_run": builder.measured, "blocks_reused": cache.reused},
        "build_wall_s": round(wall_s, 1),
    }


def profile_to_file(model: nn.Module, example: torch.Tensor, target: TargetSpec, runtime: str, *,
                    model_name: str, out: Path | None = None, config: ProfileConfig = ProfileConfig(),
                    settings: MeasureSettings = PROFILE_SETTINGS, resume: bool = True,
                    progress: ProgressSink = null_progress, measure: LatencyFn | None = None,
                    keep_measurements: bool = False) -> Profile:
    """Build, then write ``out`` (default :func:`default_profile_path`) atomically; partial
    measurements live in :func:`side_file` until then, and are reused by a rerun. Returns the
    table as read back from ``out``, so what the caller uses is exactly what was written.
    ``keep_measurements`` leaves the side file in place: a rebuild then measures nothing and only
    recomputes the table (for work on the model, not the measurements)."""
    out = out or default_profile_path(target.name, model_name, tuple(example.shape))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = side_file(out)
    profile = build_profile(model, example, target, runtime, model_name=model_name, measure=measure,
                            config=config, settings=settings, cache_path=partial, resume=resume, progress=progress)
    profile.save(out)
    if not keep_measurements:
        partial.unlink(missing_ok=True)
    return load_profile(out)


def local_runtime(target: TargetSpec, runtime: str | None) -> str:
    """The runtime ``edgeprune profile`` measures with (default: the target's first), refusing
    a target this machine cannot stand in for: a board reached over RPC/SSH needs a remote
    ``measure`` passed to :func:`build_profile`, which the command does not wire up yet."""
    chosen = runtime or target.runtimes[0]
    if chosen not in target.runtimes:
        raise ConfigError(f"target {target.name} runs {', '.join(target.runtimes)}, not {chosen!r}")
    if target.reach.mode != "local":
        raise ConfigError(f"target {target.name} is reached over {target.reach.mode}; `edgeprune profile` "
                          "measures on this machine only (build_profile takes a remote measure callable)")
    return chosen

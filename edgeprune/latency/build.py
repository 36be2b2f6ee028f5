"""Building a latency lookup table: measure on the target, fit, record where the numbers came from.

:func:`build_profile` measures, on the target's own compiler and device, how the *whole model's*
latency changes when one dependency group keeps fewer channels, at a grid of kept counts, plus a
few random whole models (what is measured: :mod:`edgeprune.latency.plans`), then fits the cost
model and returns a :class:`~edgeprune.latency.table.Profile`; :func:`profile_to_file` also
writes it, resumably.

Why in context, not isolated layers (HALP's per-layer table, nn-Meter's kernels): the quantity a
planner needs is the compiled whole model's latency, and a compiler fuses a conv with its
BatchNorm, activation and residual add, picks layouts and kernels per shape, and a group's
channels reach several layers (producer outputs, consumer inputs, the adds between). Pruning the
group inside the real model and comparing with the unpruned model measures exactly what changes,
fusion and framework overhead included, with one compile per grid point; isolated layers would
each need compiling, and their sum misses everything between them.

Staircases: after the period scan, larger jumps between grid points (beyond the curve's slope by
more than noise) are bisected with a few extra measurements (:func:`_refine`).

Noise: every figure is a ratio to the unpruned model measured in the same block (rounds in
rotating order), times the profile's base; see :mod:`edgeprune.latency.measure`.
"""

from __future__ import annotations

import copy
import datetime
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.graph import GroupedModel
from edgeprune.graph.units import keep_first
from edgeprune.io import fingerprint, versions
from edgeprune.latency.costmodel import CostModel, LayerTerm, fit_cost_model, layer_terms
from edgeprune.latency.curves import (candidate_periods, effective_count, find_steps, infer_period,
                                      isotonic_increasing, residual_noise)
from edgeprune.latency.measure import (PROFILE_SETTINGS, CompiledMeter, Describable, LatencyFn, MeasurementCache,
                                       measure_block, structure_key)
from edgeprune.latency.plans import ProfileConfig, calibration_counts, grid_for, group_weights, scan_plan
from edgeprune.latency.table import Fit, GroupCurve, Profile, default_profile_path, load_profile, side_file
from edgeprune.plan import GroupPlan, PruningPlan
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.prune import prune_between
from edgeprune.targets import TargetSpec

Counts = dict[str, int]
Ratios = dict[str, dict[int, float]]  # group -> kept count -> latency / unpruned latency


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
        self.couplings = grouped.couplings()
        self.measured = 0

    def pruned(self, counts: Mapping[str, int]) -> nn.Module:
        """A pruned copy with each named group keeping its first ``count`` channels (which ones
        does not change the latency, only how many). Same as ``apply_plan`` minus its re-trace
        of the unpruned model, whose groups are already known here."""
        plan = PruningPlan.identity(self.model_name, tuple(self.example.shape), "profile", self.channels)
        groups = dict(plan.groups)
        for name, k in counts.items():
            if k < self.channels[name] and name in self.couplings:  # whole units, balanced chunks
                groups[name] = GroupPlan(self.channels[name], keep_first(self.couplings[name], self.channels[name], k))
            elif k < self.channels[name]:
                groups[name] = GroupPlan(self.channels[name], tuple(range(k)))
        return prune_between(copy.deepcopy(self.model).eval(), self.example, plan, plan.with_groups(groups))

    def block(self, key: str, variants: list[Counts], counted: bool = True) -> list[float]:
        """Ratios variant / unpruned for ``variants``, measured together (or from the side file);
        ``counted`` blocks advance the progress bar (refinements are not known in advance). The
        key names the variants too, so a cached block is only reused for exactly these models."""
        key = f"{key}|{fingerprint(variants, length=10)}"
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

    def chunked(self, prefix: str, variants: list[Counts]) -> list[float]:
        """Measure ``variants`` in blocks of ``block_size``, each with its own reference."""
        size = self.config.block_size
        out: list[float] = []
        for i in range(0, len(variants), size):
            out.extend(self.block(f"{prefix}:{i}", variants[i:i + size]))
        return out

    def ratios(self, prefix: str, group: str, counts: tuple[int, ...]) -> dict[int, float]:
        """One group's ratio at each of ``counts`` (the other groups unpruned)."""
        return dict(zip(counts, self.chunked(f"{prefix}:{group}", [{group: k} for k in counts])))

    def block_bases(self) -> list[float]:
        """The unpruned model's figure in every block measured or reused so far."""
        return [b["base_ms"] for b in self.cache.blocks.values()]

    def phase(self, title: str, total: int) -> None:
        """Start the progress bar of the next phase (the previous one is finished)."""
        self.close()
        self.task = self.progress.start(f"profiling {self.model_name}: {title}", total)

    def close(self) -> None:
        """Finish the current phase's bar, once (a sink may refuse an unknown or finished task)."""
        if self.task is not None:
            self.progress.finish(self.task)
            self.task = None


@dataclass(frozen=True)
class _Measured:
    """Everything one build measured, before any smoothing or fitting."""

    scanned: Ratios  # the period scan, per scanned group
    grid: Ratios  # the grid plus refinements, per group
    whole: tuple[tuple[Counts, float], ...]  # random whole models
    period: int
    base_ms: float
    noise_ms: float

    def singles(self) -> list[tuple[Counts, float]]:
        """Every single-group point, grid and scan alike, as (kept counts, ratio)."""
        return [({g: k}, v) for source in (self.grid, self.scanned) for g, r in source.items() for k, v in r.items()]


def _drift_ms(bases: list[float]) -> float:
    """Spread of the unpruned model's figure across blocks (MAD as a standard deviation): how
    much the machine's load moved during the build, which the per-block ratios cancel."""
    arr = np.asarray(bases, dtype=np.float64)
    return float(np.median(np.abs(arr - np.median(arr)))) * 1.4826 if arr.size else 0.0


def _noise_ms(ratios: Ratios, channels: Counts, base_ms: float) -> float:
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


def _curves(measured: _Measured, channels: Counts, step_factor: float) -> dict[str, GroupCurve]:
    """One curve per group from every single-group point, pooled by the count the device computes."""
    merged: dict[str, dict[int, list[float]]] = {g: {} for g in channels}
    for counts, v in measured.singles():
        ((g, k),) = counts.items()
        merged[g].setdefault(effective_count(k, channels[g], measured.period), []).append(v)
    return {g: _curve(channels[g], merged[g], measured.base_ms, measured.noise_ms, measured.period, step_factor)
            for g in channels}


def fit_profile(draft: Profile, samples: list[tuple[Counts, float]], whole: list[tuple[Counts, float]]) -> Fit:
    """Fit the cost model on single-group ``samples`` and ``whole`` models (kept counts, ratio to
    the unpruned model) and say how well it reproduces each."""
    data = [(draft.fractions(c), r) for c, r in samples + whole]
    model = fit_cost_model(draft.layers, data)
    fitted = replace(draft, fit=replace(draft.fit, model=model))

    def errors(points: list[tuple[Counts, float]]) -> tuple[float, float]:
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


def _scan_period(builder: _Builder, scans: dict[str, tuple[int, ...]], multiple: int) -> tuple[Ratios, int]:
    """Phase 1: the scanned groups' ratios one multiple at a time, and the staircase period."""
    channels, cfg = builder.channels, builder.config
    builder.phase("staircase scan", sum(len(v) for v in scans.values()))
    scanned = {g: builder.ratios("scan", g, counts) for g, counts in scans.items()}
    period = infer_period([(list(r) + [channels[g]], list(r.values()) + [1.0], channels[g])
                           for g, r in scanned.items()], candidate_periods(multiple, cfg.max_period * multiple))
    builder.progress.log(f"staircase period: {period} channels" + (" (none)" if period == multiple else ""))
    return scanned, period


def _measure(builder: _Builder, terms: tuple[LayerTerm, ...], multiple: int) -> tuple[_Measured, list[str]]:
    """Phases 1-4 (scan, grid, bisect steps, whole models), every one in interleaved blocks;
    returns the measurements and the names of the scanned groups."""
    channels, cfg = builder.channels, builder.config
    scans = scan_plan(channels, group_weights(terms), cfg.scan_groups, multiple, cfg.max_period * multiple)
    plans = calibration_counts(channels, cfg.calibration, multiple, cfg.min_fraction, cfg.seed)
    try:
        scanned, period = _scan_period(builder, scans, multiple)
        grids = {g: grid_for(c, cfg.grid, multiple, period) for g, c in channels.items()}
        builder.phase("grid + whole models", sum(len(v) for v in grids.values()) + len(plans))
        ratios = {g: builder.ratios("grid", g, counts) for g, counts in grids.items()}
        base_ms = float(np.median(builder.block_bases()))
        noise_ms = _noise_ms(ratios, channels, base_ms)
        for g, r in ratios.items():
            if r:
                full = {**r, channels[g]: 1.0}
                _refine(builder, g, full, noise_ms / base_ms, period if channels[g] >= 2 * period else multiple)
                r.update({k: v for k, v in full.items() if k != channels[g]})
        whole = tuple(zip(plans, builder.chunked("calibration", plans)))
    finally:
        builder.close()
    return _Measured(scanned, ratios, whole, period, base_ms, noise_ms), sorted(scans)


def build_profile(model: nn.Module, example: torch.Tensor, target: TargetSpec, runtime: str, *,
                  model_name: str, measure: LatencyFn | None = None, config: ProfileConfig = ProfileConfig(),
                  settings: MeasureSettings = PROFILE_SETTINGS, cache_path: Path | None = None,
                  resume: bool = True, progress: ProgressSink = null_progress) -> Profile:
    """Measure ``model``'s latency table on ``target`` with ``runtime`` (see the module docstring).

    Phases, each in interleaved blocks against the unpruned model: (1) scan a few groups one
    channel multiple at a time to find the staircase period; (2) the grid of every group at counts
    the device computes; (3) bisect large steps; (4) random whole models; then fit the cost model.
    ``measure`` compiles and measures one model (default: a :class:`CompiledMeter` on this
    machine with ``settings``); pass a remote one to profile a board (if it is
    :class:`~edgeprune.latency.measure.Describable`, its description goes into the provenance).
    ``cache_path`` names the side file that makes an interrupted build resumable. The profile is
    returned unsaved.
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
    multiple = target.channel_multiple
    key = fingerprint({"model": structure_key(model), "shape": list(example.shape), "target": target.name,
                       "runtime": runtime, "config": config.__dict__, "channels": channels,
                       "settings": settings.__dict__, "multiple": multiple}, length=20)
    cache = MeasurementCache(cache_path, key, resume)
    builder = _Builder(grouped, example, model_name, measure, config, cache, progress)
    terms = layer_terms(grouped, example)
    measured, scanned_groups = _measure(builder, terms, multiple)
    draft = Profile(model_name, target.name, runtime, tuple(example.shape), measured.base_ms, measured.noise_ms,
                    config.statistic, _curves(measured, channels, config.step_factor), terms,
                    Fit(CostModel((0.0, 0.0, 0.0, 1.0, 0.0)), 0, *[math.nan] * 4))
    provenance = _provenance(measure, config, settings, target, builder, time.perf_counter() - start)
    provenance.update(scanned_groups=scanned_groups, drift_ms=_drift_ms(builder.block_bases()))
    return replace(draft, fit=fit_profile(draft, measured.singles(), list(measured.whole)), provenance=provenance)


def _provenance(measure: LatencyFn, config: ProfileConfig, settings: MeasureSettings, target: TargetSpec,
                builder: _Builder, wall_s: float) -> dict[str, Any]:
    """Where the numbers came from: device, software, date, compiler options, grid, repeats."""
    from edgeprune import __version__

    described = dict(measure.describe()) if isinstance(measure, Describable) else {"device": "unknown (custom measure)"}
    meter_settings = described.pop("settings", asdict(settings))
    return {
        **described,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {**versions(), "edgeprune": __version__},  # also when run from a checkout
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
        "measurements": {"this_run": builder.measured, "blocks_reused": builder.cache.reused},
        "build_wall_s": round(wall_s, 1),
    }


def profile_to_file(model: nn.Module, example: torch.Tensor, target: TargetSpec, runtime: str, *,
                    model_name: str, out: Path | None = None, config: ProfileConfig = ProfileConfig(),
                    settings: MeasureSettings = PROFILE_SETTINGS, resume: bool = True,
                    progress: ProgressSink = null_progress, measure: LatencyFn | None = None,
                    keep_measurements: bool = False) -> Profile:
    """Build, then write ``out`` (default :func:`~edgeprune.latency.table.default_profile_path`)
    atomically; partial measurements live in :func:`~edgeprune.latency.table.side_file` until
    then, and are reused by a rerun. Returns the table as read back from ``out``, so what the
    caller uses is exactly what was written. ``keep_measurements`` leaves the side file in place:
    a rebuild then measures nothing and only recomputes the table (for work on the model, not
    the measurements)."""
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

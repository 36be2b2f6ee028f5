"""Latency lookup tables: the :class:`Profile` datatypes, their file format, and prediction.

A profile says, for one model, input shape, target and runtime, how the *whole compiled model's*
latency changes when each dependency group keeps fewer channels (measured in context by
:mod:`edgeprune.latency.build`), and predicts any pruned variant's latency without compiling it.
It is saved as ``profiles/<target>/<model>_<shape>.json``. A figure from it is an estimate,
labelled ``estimate:profile:<file>``; only a compiled artifact measured on the device is
``measured:``.

How a whole model is predicted: not by adding up the per-group deltas. Two groups meeting in a
layer save ``1 - a*b`` of it together, not ``(1 - a) + (1 - b)``, and when most channels go the
weights start fitting in cache; on the dev host the plain sum was off by 16-42% (median) for
random variants of resnet18 and mobilenet_v2 (bench/bench_lut.py). :mod:`edgeprune.latency.costmodel`
fits a per-layer cost model (MACs, weights, activations, constant, squared weights: each with the
product structure built in) by least squares on every in-context measurement; the table keeps the
per-group curves themselves (:meth:`Profile.additive` is their plain sum, kept for comparison) for
staircases and cheap counts (:meth:`Profile.cheap_counts`).

This module only reads, writes and evaluates tables; nothing here measures or compiles.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeprune.errors import ConfigError
from edgeprune.io import write_json_atomic
from edgeprune.latency.costmodel import FEATURES, CostModel, LayerTerm
from edgeprune.latency.curves import Step, cheap_counts, effective_count, interpolate
from edgeprune.plan import PruningPlan
from edgeprune.profilers.stats import LatencyStats
from edgeprune.targets import data_dir

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
        """Counts at the top of each plateau (see :func:`edgeprune.latency.curves.cheap_counts`)."""
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
        """The file format (``version`` 1): rounded to a microsecond, so a table is reviewable."""
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
        """Parse :meth:`to_json`'s format; a different version or feature set is refused rather
        than misread (the coefficients only mean something over the same features)."""
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
        write_json_atomic(path, self.to_json(), compact_lists=True)
        return replace(self, path=path)


def _finite(value: float) -> float | None:
    """JSON has no NaN: an error that was never computed (no whole models measured) is null."""
    return None if math.isnan(value) else value


def _nan_if_none(value: float | None) -> float:
    """The inverse of :func:`_finite`."""
    return math.nan if value is None else float(value)


def load_profile(path: Path) -> Profile:
    """Read a profile written by :meth:`Profile.save`; any unreadable or malformed file is a
    one-line ConfigError (exit 2), never a traceback."""
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

"""How the lookup-table builder measures: a model in, a latency out, in interleaved blocks.

The builder only needs ``measure(model) -> LatencyStats`` (:data:`LatencyFn`). The one here,
:class:`CompiledMeter`, compiles with the target's backend and measures with a profiler: this
machine's by default, or any object with ``measure(artifact, settings) -> Measurement`` (the TVM
RPC and SSH profilers), so a profile for a remote board is the same code with another profiler.

Latencies drift while other work shares the CPU, so models are never compared across minutes:
:func:`measure_block` measures a few models together with the unpruned reference, in rounds and in
rotating order, and the builder uses each model's ratio to the reference measured in its block.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from edgeprune.artifact import Artifact
from edgeprune.candidate.candidate import Candidate
from edgeprune.candidate.evaluator import CompileConfig, Evaluator
from edgeprune.errors import ConfigError
from edgeprune.io import write_json_atomic
from edgeprune.plan import PruningPlan
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.stats import LatencyStats
from edgeprune.targets import TargetSpec

LatencyFn = Callable[[nn.Module], LatencyStats]
"""Compile ``model`` for the target and measure it on the device."""

Statistic = Literal["min", "median"]

PROFILE_SETTINGS = MeasureSettings(warmup=3, repeats=40, min_repeat_ms=0.0, threads=None)
"""Per-call samples (``min_repeat_ms=0``), so ``min`` is the fastest single inference: on a CPU
shared with other work, contention only ever adds time, and the fastest call is the most
repeatable figure (coefficient of variation ~1% where the median's was ~8% on the dev host)."""


@runtime_checkable
class Describable(Protocol):
    """A :data:`LatencyFn` that can say where its numbers come from (device, runtime, compiler
    options, settings). Optional: a custom measure without it still builds a profile, whose
    provenance then says the device is unknown rather than guessing."""

    def describe(self) -> dict[str, Any]: ...


class ArtifactProfiler(Protocol):
    """What :class:`CompiledMeter` needs from a profiler (local backend, TVM RPC, SSH)."""

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement: ...


def statistic_of(stats: LatencyStats, statistic: Statistic) -> float:
    """The figure the table is built on: ``min`` (robust to contention) or ``median``."""
    if statistic == "min":
        return stats.min
    if statistic == "median":
        return stats.median
    raise ConfigError(f"unknown latency statistic {statistic!r} (min | median)")


def aggregate(values: Sequence[float], statistic: Statistic) -> float:
    """Combine one model's per-round figures the same way each round combined its samples."""
    return float(np.min(values)) if statistic == "min" else float(np.median(values))


def measure_block(measure: LatencyFn, models: Sequence[nn.Module], rounds: int,
                  statistic: Statistic) -> list[float]:
    """Each model's latency, measured ``rounds`` times in rotating order, aggregated.

    Rotating the order puts every model early and late in a round, so a trend within the block
    (another job starting) biases none of them; the caller divides by the reference (model 0)
    measured in the same block.
    """
    if rounds < 1 or not models:
        raise ValueError("need at least one round and one model")
    per_model: list[list[float]] = [[] for _ in models]
    n = len(models)
    for r in range(rounds):
        for j in range(n):
            i = (j + r) % n
            per_model[i].append(statistic_of(measure(models[i]), statistic))
    return [aggregate(v, statistic) for v in per_model]


def structure_key(model: nn.Module) -> str:
    """Same parameter names and shapes -> same compiled program -> same latency."""
    text = ";".join(f"{name}:{tuple(p.shape)}" for name, p in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CompiledMeter:
    """``measure(model)`` through the target's compiler: compile (cached by structure), measure.

    Artifacts are kept for the ``keep`` most recently used structures and deleted after, so a
    profile of hundreds of variants does not fill the disk; the unpruned model, measured in every
    block, stays compiled. ``profiler`` defaults to this machine's profiler for the runtime (the
    TVM RPC and SSH profilers measure on a board instead).
    """

    def __init__(self, target: TargetSpec, runtime: str, example: torch.Tensor, work_dir: Path,
                 settings: MeasureSettings = PROFILE_SETTINGS, tune_trials: int = 0,
                 profiler: ArtifactProfiler | None = None, keep: int = 16) -> None:
        from edgeprune.devices import DeviceOptions, Reach, profiler_for

        self.runtime = runtime
        self.example = example
        self.settings = settings
        self.keep = keep
        chosen = profiler or profiler_for(Reach(mode="local"), runtime, target, DeviceOptions())
        self.evaluator = Evaluator(target, work_dir, work_dir / "cache", CompileConfig(tune_trials, settings.threads),
                                   settings, {runtime: chosen})
        self.evaluator.check(runtime, "fp32")
        # the profile measures fp32 channel counts; the plan only names the precision
        self._plan = PruningPlan.identity("profile", tuple(example.shape), "profile", {})
        self._artifacts: OrderedDict[str, tuple[Artifact, Candidate]] = OrderedDict()
        self.device: str | None = None
        self.source: str | None = None
        self.compiles = 0
        self.measurements = 0

    def __call__(self, model: nn.Module) -> LatencyStats:
        artifact, candidate = self._artifact(model)
        measurement = self.evaluator.measure(artifact, candidate)
        self.device = measurement.device
        self.source = measurement.latency.source
        self.measurements += 1
        return measurement.latency

    def _artifact(self, model: nn.Module) -> tuple[Artifact, Candidate]:
        key = structure_key(model)
        if key in self._artifacts:
            self._artifacts.move_to_end(key)
            return self._artifacts[key]
        candidate = Candidate(model, self._plan, self.example, key)
        self._artifacts[key] = (self.evaluator.compile(candidate, self.runtime), candidate)
        self.compiles += 1
        while len(self._artifacts) > self.keep:
            old, _ = self._artifacts.popitem(last=False)
            shutil.rmtree(self.evaluator.work_dir / old, ignore_errors=True)
        return self._artifacts[key]

    def describe(self) -> dict[str, Any]:
        """Provenance for the profile: device, runtime, compiler options, measurement settings."""
        options = self.evaluator.options(self._plan.precision.get("default", "fp32"))
        return {
            "device": self.device or "not measured yet",
            "runtime": self.runtime,
            "source": self.source,
            "compiler": {"target": options.target_name, "compiler_target": options.compiler_target,
                         "tune_trials": options.tune_trials, "threads": options.threads},
            "settings": asdict(self.settings),
        }


class MeasurementCache:
    """Finished blocks in a side file, so an interrupted profile continues where it stopped.

    The file is tied to a fingerprint of everything that changes the numbers (model structure,
    input shape, runtime, grid, settings); a different fingerprint starts afresh rather than mix
    two setups. Every block is written atomically as soon as it is measured.
    """

    def __init__(self, path: Path | None, fingerprint: str, resume: bool = True) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.blocks: dict[str, Any] = {}
        self.reused = 0
        if path is not None and resume and path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                data = {}
            if data.get("fingerprint") == fingerprint:
                self.blocks = dict(data.get("blocks", {}))

    def get(self, key: str) -> Any | None:
        if key in self.blocks:
            self.reused += 1
            return self.blocks[key]
        return None

    def put(self, key: str, value: Any) -> None:
        self.blocks[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"fingerprint": self.fingerprint, "blocks": self.blocks})


"""Compile a model for the target on one runtime and measure the compiled artifact.

The one place the search loop and deploy go through to learn what a candidate costs, so every
latency edgeprune prints comes from a compiled artifact, never from a MAC count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeprune.artifact import Artifact
from edgeprune.backends import CompileOptions, Session, get_backend
from edgeprune.errors import ToolchainMissingError
from edgeprune.profilers.base import Measurement, MeasureSettings, Profiler
from edgeprune.devices.registry import estimates_from_model, remote_session
from edgeprune.targets import TargetSpec


@dataclass(frozen=True)
class RuntimeResult:
    artifact: Artifact
    measurement: Measurement

    @property
    def median_ms(self) -> float:
        return self.measurement.latency.median


@dataclass(frozen=True)
class Evaluator:
    """Compiles into ``work_dir/<tag>/<runtime>`` and measures on the device: with the board's
    profiler when ``profilers`` names one for the runtime (``--device``), else locally."""

    target: TargetSpec
    work_dir: Path
    cache_dir: Path
    tune_trials: int
    settings: MeasureSettings
    profilers: dict[str, Profiler] = field(default_factory=dict)

    def options(self, runtime: str) -> CompileOptions:
        trials = self.tune_trials if runtime == "tvm" else 0
        return CompileOptions(self.target.name, dict(self.target.compiler_target), self.cache_dir,
                              trials, self.settings.threads)

    def check(self, runtime: str) -> None:
        reason = get_backend(runtime).unavailable_reason()
        if reason:
            raise ToolchainMissingError(reason)

    def compile(self, model: nn.Module, example: torch.Tensor, runtime: str, tag: str) -> Artifact:
        backend = get_backend(runtime)
        return backend.compile(model.eval(), example, self.work_dir / tag / runtime, self.options(runtime))

    def measure(self, artifact: Artifact) -> Measurement:
        remote = self.profilers.get(artifact.runtime)
        if remote is not None:
            return remote.measure(artifact, self.settings)
        return get_backend(artifact.runtime).measure(artifact, self.settings)

    def session(self, artifact: Artifact) -> tuple[Session, str]:
        """Run the artifact where it is measured: on the board if it can run it there (the
        stronger check), under qemu when it is built for another architecture and no board is
        reachable, else on this machine. Returns the session and where it runs."""
        on_board = remote_session(self.profilers.get(artifact.runtime), artifact)
        if on_board is not None:
            return on_board, "board"
        if is_foreign(artifact):
            from edgeprune.emulation.qemu import run_under_qemu

            return (lambda x: run_under_qemu(artifact, x, self.cache_dir)), "qemu"
        return get_backend(artifact.runtime).load(artifact), "host"

    def run(self, model: nn.Module, example: torch.Tensor, runtime: str, tag: str) -> RuntimeResult:
        artifact = self.compile(model, example, runtime, tag)
        profiler = self.profilers.get(runtime)
        if estimates_from_model(profiler):
            return RuntimeResult(artifact, profiler.estimate_model(model, example))
        return RuntimeResult(artifact, self.measure(artifact))


def is_foreign(artifact: Artifact) -> bool:
    """A TVM library built for another CPU architecture (cannot be loaded on this machine)."""
    if artifact.runtime != "tvm":
        return False
    from edgeprune.backends.tvm import is_host_target

    target = json.loads(artifact.meta.get("tvm_target") or "{}")
    return bool(target) and not is_host_target(target)

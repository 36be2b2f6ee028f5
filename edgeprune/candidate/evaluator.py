"""Compile a candidate for the target, validate the artifact and measure it on the device.

The one place the search loop and deploy go through to learn what a candidate costs, so every
latency edgeprune prints comes from a compiled artifact (or is an estimate labelled so), never
from a MAC count.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from edgeprune.artifact import Artifact
from edgeprune.backends import CompileOptions, get_backend
from edgeprune.backends.base import CallTimer, Calibration, ForeignArtifacts, OptionsCheck
from edgeprune.candidate.candidate import Candidate, Evaluated
from edgeprune.candidate.paired import Paired, measure_interleaved, measure_paired
from edgeprune.candidate.validate import ValidationResult, not_validated, tolerance_for, validate_artifact
from edgeprune.devices import Estimator, RemoteSession
from edgeprune.errors import ToolchainMissingError
from edgeprune.profilers.base import MeasureSettings, Measurement, Profiler
from edgeprune.targets import TargetSpec

EMULATED_VALIDATION_SAMPLES = 8  # emulated runs take ~1 s per inference: check correctness on a few
Session = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CompileConfig:
    """How candidates are compiled: ``tune_trials`` bounds auto-tuning for backends that tune
    (others ignore it); ``threads`` applies to every runtime."""

    tune_trials: int = 64
    threads: int | None = None


@dataclass(frozen=True)
class Evaluator:
    """Compiles into ``work_dir/<tag>/<runtime>`` and measures with the device's profiler for
    each runtime (``profilers``: the backend itself locally, a board's profiler with --device)."""

    target: TargetSpec
    work_dir: Path
    cache_dir: Path
    compile_config: CompileConfig
    settings: MeasureSettings
    profilers: dict[str, Profiler] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)
    max_accuracy_drop: float | None = None  # the user's bound for quantized artifacts (else the precision's default)

    def options(self, precision: str, layers: dict[str, str] | None = None) -> CompileOptions:
        return CompileOptions(self.target.name, dict(self.target.compiler_target), self.cache_dir,
                              self.compile_config.tune_trials, self.compile_config.threads, precision,
                              dict(layers or {}), self.calibration)

    def check(self, runtime: str, precision: str) -> None:
        """Fail before any long work when the runtime's toolchain (for these options) is missing."""
        backend = get_backend(runtime)
        options = self.options(precision)
        reason = backend.unavailable_reason_for(options) if isinstance(backend, OptionsCheck) else \
            backend.unavailable_reason()
        if reason:
            raise ToolchainMissingError(reason)

    def compile(self, candidate: Candidate, runtime: str) -> Artifact:
        backend = get_backend(runtime)
        candidate = self.quantized(candidate)
        folder = self.work_dir / candidate.tag / f"{runtime}-{candidate.precision}"
        layers = dict(candidate.plan.precision.get("layers", {}))
        return backend.compile(candidate.model.eval(), candidate.example, folder, self.options(candidate.precision, layers))

    def measure(self, artifact: Artifact, candidate: Candidate, settings: MeasureSettings | None = None) -> Measurement:
        """Time the artifact on the device, or estimate it (labelled) where no device can run it."""
        profiler = self.profilers[artifact.runtime]
        if isinstance(profiler, Estimator):
            return profiler.estimate_model(candidate.model, candidate.example, artifact.precision)
        return profiler.measure(artifact, settings or self.settings)

    def measure_against(self, artifact: Artifact, candidate: Candidate, reference: Artifact, reference_of: Candidate,
                        goal_ratio: float | None, rounds: int) -> Paired:
        """Candidate and reference timed in alternating rounds (see :mod:`edgeprune.candidate.paired`);
        sample by sample when the profiler can keep both loaded (a local backend with CallTimer)."""
        # ~half the single-artifact repeats spread over the rounds: the verdict rests on the spread of
        # round ratios, and more rounds are added while it is undecided
        per_round = replace(self.settings, repeats=max(5, self.settings.repeats // (2 * max(rounds, 1))))
        profiler = self.profilers[artifact.runtime]
        if isinstance(profiler, CallTimer):
            return measure_interleaved(lambda: profiler.timer(artifact, per_round),
                                       lambda: profiler.timer(reference, per_round),
                                       per_round, goal_ratio, rounds, max_rounds=rounds * 4)
        owner = {artifact.path: candidate, reference.path: reference_of}
        return measure_paired(lambda a: self.measure(a, owner[a.path], per_round), artifact, reference,
                              goal_ratio, rounds, max_rounds=rounds * 4)

    def session(self, artifact: Artifact) -> tuple[Session, str]:
        """Run the artifact where it is measured: on the board if its profiler can (the stronger
        check), under qemu when it is built for another architecture, else on this machine."""
        profiler = self.profilers.get(artifact.runtime)
        if isinstance(profiler, RemoteSession):
            return profiler.session(artifact), "board"
        backend = get_backend(artifact.runtime)
        if isinstance(backend, ForeignArtifacts) and not backend.runs_here(artifact):
            from edgeprune.emulation.qemu import run_under_qemu

            return (lambda x: run_under_qemu(artifact, x, self.cache_dir)), "qemu"
        return backend.load(artifact), "host"

    def validate(self, artifact: Artifact, candidate: Candidate, dataset: Dataset) -> ValidationResult:
        """Run the artifact on the validation set; an artifact nothing here can run (no board, no
        emulator installed) is reported as not validated, with the reason, never as passed."""
        from edgeprune.quantize.aware import is_quantized

        session, where = self.session(artifact)
        limit = EMULATED_VALIDATION_SAMPLES if where == "qemu" else None
        # An artifact exported from a quantized PyTorch model must reproduce that model (8-bit
        # rounding only); its distance from the float model is judged by deploy on the result.
        own = is_quantized(candidate.model)
        tolerance = tolerance_for("int8" if own else artifact.precision, None if own else self.max_accuracy_drop)
        try:
            result = validate_artifact(session, candidate.model, dataset, candidate.example.shape[0],
                                       precision=artifact.precision, runtime=f"{artifact.runtime} ({where})",
                                       limit=limit, tolerance=tolerance)
            return replace(result, accuracy_source="compiled artifact; checked against the quantized PyTorch "
                                                   "model it was exported from") if own and limit is None else result
        except ToolchainMissingError as exc:
            if where != "qemu":
                raise
            return not_validated(candidate.model, dataset, artifact.precision, str(exc))

    def quantized(self, candidate: Candidate) -> Candidate:
        """The candidate whose model the backend exports: for low-bit precisions a Brevitas copy
        calibrated on this evaluator's batches (unless it is quantized already, e.g. after QAT),
        so the artifact is validated against the very model it was exported from."""
        from edgeprune.quantize.aware import calibrated, is_lowbit

        if not is_lowbit(candidate.precision):
            return candidate
        return replace(candidate, model=calibrated(candidate.model, candidate.precision, self.calibration.batches))

    def evaluate(self, candidate: Candidate, runtime: str, dataset: Dataset | None = None) -> Evaluated:
        """Compile, validate (when ``dataset`` is given) and measure one candidate on one runtime."""
        candidate = self.quantized(candidate)
        artifact = self.compile(candidate, runtime)
        validation = self.validate(artifact, candidate, dataset) if dataset is not None else None
        return Evaluated(artifact, self.measure(artifact, candidate), validation)

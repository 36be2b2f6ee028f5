"""The deploy stages that compile and measure: the shared setup, evaluating one candidate on every
runtime, and the baseline stage (which also settles the shipping precision)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.candidate.candidate import Candidate, Evaluated
from edgeprune.candidate.evaluator import Evaluator
from edgeprune.deploy.config import DeployConfig
from edgeprune.deploy.precision import builds, float_layers, pick_auto, with_precision
from edgeprune.errors import ToolchainMissingError, ValidationError
from edgeprune.models.loading import Loaded
from edgeprune.plan import PruningPlan
from edgeprune.profilers.base import MeasureSettings
from edgeprune.progress import ProgressSink
from edgeprune.targets import TargetSpec


@dataclass(frozen=True)
class Setup:
    """What every stage after loading needs: the target, the runtimes, the evaluator."""

    target: TargetSpec
    runtimes: list[str]
    precisions: list[str]  # to try (several only for --precision auto)
    evaluator: Evaluator
    cache_dir: Path
    settings: MeasureSettings
    estimated: bool  # no board: every figure is an estimate


def evaluate_all(setup: Setup, candidate: Candidate, loaded: Loaded, progress: ProgressSink,
                 runtimes: list[str] | None = None) -> dict[str, Evaluated]:
    """Compile, validate and measure one candidate on each runtime (that builds its precision)."""
    out = {}
    for runtime in runtimes if runtimes is not None else setup.runtimes:
        done = setup.evaluator.evaluate(candidate, runtime, loaded.data.val)
        note = done.artifact.meta.get("note")
        err = done.validation.max_abs_error
        checked = f"max |err| {err:.1e}" if err is not None else "artifact NOT run here: PyTorch accuracy"
        progress.log(f"  {candidate.tag} {runtime}: {done.measurement.latency.short()}, top-1 "
                     f"{done.validation.accuracy:.4f} ({checked})" + (f"; {note}" if note else ""))
        out[runtime] = done
    return out


def _fixed_precision(cfg: DeployConfig, setup: Setup, loaded: Loaded, plan: PruningPlan,
                     progress: ProgressSink) -> tuple[Candidate, dict[str, Evaluated], dict[str, Any]]:
    precision = setup.precisions[0]
    layers: dict[str, str] = {}
    evidence = None
    if precision == "int8" and cfg.precision.max_accuracy_drop is not None and not cfg.precision.qat_epochs:
        # the per-layer fallback is post-training INT8's remedy; QAT and low-bit widths have their own
        layers, evidence = float_layers(cfg.precision, loaded, setup.evaluator.calibration, progress)
    candidate = with_precision(Candidate(loaded.model, plan, loaded.example, "baseline"), precision, layers)
    runtimes = [rt for rt in setup.runtimes if builds(rt, precision)]
    before = evaluate_all(setup, candidate, loaded, progress, runtimes)
    return candidate, before, {"requested": cfg.precision.precision, "precision": precision, "fallback": evidence}


def _try(setup: Setup, candidate: Candidate, runtime: str, loaded: Loaded,
         progress: ProgressSink) -> Evaluated | None:
    """One (runtime, precision) of ``--precision auto``; an artifact that fails validation is
    reported and left out, not fatal."""
    try:
        return evaluate_all(setup, candidate, loaded, progress, [runtime])[runtime]
    except (ValidationError, ToolchainMissingError) as exc:
        progress.log(f"  {runtime} {candidate.precision}: left out ({exc})")
        return None


def _auto_precision(cfg: DeployConfig, setup: Setup, loaded: Loaded, plan: PruningPlan,
                    progress: ProgressSink) -> tuple[Candidate, dict[str, Evaluated], dict[str, Any]]:
    """Every precision the target lists, on every runtime that builds it; the fastest artifact
    within ``--max-accuracy-drop`` (default 1 pt) of the float model decides the precision."""
    base = Candidate(loaded.model, plan, loaded.example, "baseline")
    tried: dict[tuple[str, str], Evaluated] = {}
    for precision in setup.precisions:
        candidate = with_precision(base, precision, {})
        for runtime in (rt for rt in setup.runtimes if builds(rt, precision)):
            done = _try(setup, candidate, runtime, loaded, progress)
            if done is not None:
                tried[(runtime, precision)] = done
    float_accuracy = next(e.validation.reference_accuracy for e in tried.values() if e.validation is not None)
    max_drop = cfg.precision.max_accuracy_drop if cfg.precision.max_accuracy_drop is not None else 0.01
    (runtime, precision), table = pick_auto(tried, float_accuracy, max_drop)
    progress.log(f"precision auto: {precision} on {runtime} is the fastest within {max_drop:.1%} of the float model")
    before = {rt: e for (rt, p), e in tried.items() if p == precision}
    return with_precision(base, precision, {}), before, {"requested": "auto", "precision": precision,
                                                         "max_accuracy_drop": max_drop, "tried": table}


def baseline_stage(cfg: DeployConfig, setup: Setup, loaded: Loaded, plan: PruningPlan,
                   progress: ProgressSink) -> tuple[Candidate, dict[str, Evaluated], dict[str, Any]]:
    """The unpruned network compiled, validated and measured at the shipping precision."""
    if len(setup.precisions) == 1:
        return _fixed_precision(cfg, setup, loaded, plan, progress)
    return _auto_precision(cfg, setup, loaded, plan, progress)

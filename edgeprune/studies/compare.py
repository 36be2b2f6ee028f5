"""The measurements of a study: the oracle once, then every criterion against it.

:func:`compare` is the one implementation: ΔL of every channel on the oracle batches, every
criterion scored once on a fresh copy of the model, pooled and per-group rank correlations with
|ΔL| (:mod:`edgeprune.studies.oracle`), and the accuracy at each ratio with and without
fine-tuning (:mod:`edgeprune.studies.accuracy`), for the criteria and for the oracle's own
rankings. :func:`edgeprune.studies.study.run_study` wraps it with loading, plots and the report.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.criteria import Criterion, ScoreContext, criteria, load_builtin
from edgeprune.errors import ConfigError
from edgeprune.graph import GroupedModel
from edgeprune.models.sources import parse_value
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.studies.accuracy import Finetune, accuracies_at, accuracy
from edgeprune.studies.oracle import Batch, mean_loss, measure_oracle, pooled_correlations, spearman_within_groups

PerGroup = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StudyData:
    """The uses of the data (see :mod:`edgeprune.studies.study`): criteria score ``score``, the
    oracle uses ``oracle``, accuracies are measured on ``evaluation``; ``calibration`` (training
    batches) only re-estimates BN statistics after training."""

    score: tuple[Batch, ...]
    oracle: tuple[Batch, ...]
    evaluation: tuple[Batch, ...]
    eval_overlaps_oracle: bool
    calibration: tuple[Batch, ...] = ()


def parse_criterion_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``taylor-so?hessian=fisher`` -> ("taylor-so", {"hessian": "fisher"}); options go to the
    criterion's constructor, the way ``torchvision:NAME?k=v`` passes model options."""
    name, _, query = spec.strip().partition("?")
    return name, {k: parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}


def build_criteria(specs: Sequence[str]) -> dict[str, Criterion]:
    """``{spec: criterion instance}`` (empty ``specs``: every registered criterion with its
    defaults); an unknown name or option is a one-line error, raised before any slow work."""
    load_builtin()
    built: dict[str, Criterion] = {}
    for spec in specs or criteria.names():
        if spec in built:
            raise ConfigError(f"criterion {spec!r} is listed twice")
        name, options = parse_criterion_spec(spec)
        factory = criteria.get(name)  # UnknownNameError (exit 2) lists the known names
        try:
            built[spec] = factory(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"criterion {spec!r}: {exc}") from None
    return built


def score_criterion(criterion: Criterion, model: nn.Module, example: torch.Tensor,
                    batches: Sequence[Batch]) -> PerGroup:
    """Scores on a fresh copy of ``model``, so no criterion sees another's side effects."""
    work = copy.deepcopy(model)
    scores = criterion(ScoreContext(work, GroupedModel(work, example), tuple(batches), F.cross_entropy))
    return {g: s.detach().float() for g, s in scores.items()}


def oracle_entry(model: nn.Module, example: torch.Tensor, oracle: PerGroup, seconds: float, data: StudyData,
                 ratios: Sequence[float], finetune: Finetune | None) -> dict:
    """The oracle's figures, and the accuracy of pruning by the oracle itself, two ways.

    ``accuracy_at`` ranks by signed ΔL (channels whose removal lowered the held-out loss go
    first); ``abs_ranking`` ranks by |ΔL|, the importance the correlations use (Molchanov's
    oracle). On the demo net the signed ranking removes channels whose measured benefit is mostly
    sampling noise, and removing many of them together is ruinous — hence both.
    """
    order = list(oracle)
    signed = {g: oracle[g].float() for g in order}
    by_sign = accuracies_at(model, example, signed, "global", ratios, data.evaluation, finetune, "oracle ΔL")
    by_size = accuracies_at(model, example, {g: v.abs() for g, v in signed.items()}, "global", ratios,
                            data.evaluation, finetune, "oracle |ΔL|")
    return {
        "loss": mean_loss(model, data.oracle), "accuracy": accuracy(model, data.evaluation),
        "channels": sum(len(oracle[g]) for g in order), "groups": {g: len(oracle[g]) for g in order},
        "seconds": round(seconds, 2), "accuracy_at": by_sign.pruned, "accuracy_at_finetuned": by_sign.finetuned,
        "abs_ranking": {"accuracy_at": by_size.pruned, "accuracy_at_finetuned": by_size.finetuned},
        "delta_loss": {g: [round(float(v), 8) for v in oracle[g]] for g in order},
    }


def criterion_entry(criterion: Criterion, scores: PerGroup, oracle: PerGroup, model: nn.Module,
                    example: torch.Tensor, data: StudyData, ratios: Sequence[float], finetune: Finetune | None,
                    label: str) -> dict:
    """One criterion's figures: pooled Spearman/Kendall against |ΔL|, the mean per-group
    Spearman, and the accuracy at each ratio without and with fine-tuning."""
    rho, tau = pooled_correlations(scores, oracle)
    at = accuracies_at(model, example, scores, criterion.scope, ratios, data.evaluation, finetune, label)
    return {"spearman": rho, "kendall": tau, "accuracy_at": at.pruned, "accuracy_at_finetuned": at.finetuned,
            "spearman_within_groups": spearman_within_groups(scores, oracle), "scope": criterion.scope}


def compare(model: nn.Module, example: torch.Tensor, built: dict[str, Criterion], data: StudyData,
            ratios: Sequence[float], finetune: Finetune | None = None,
            progress: ProgressSink = null_progress) -> tuple[dict, dict[str, PerGroup], PerGroup]:
    """The measurements: ``({"oracle": ..., "criteria": ...}, {spec: per-group scores}, oracle ΔL)``.

    ``model`` is copied first and left as it was; every criterion scores ``data.score``; the
    oracle uses ``data.oracle``; every accuracy is on ``data.evaluation``.
    """
    if any(not 0 <= r < 1 for r in ratios):
        raise ValueError("ratios must lie in [0, 1)")
    model = copy.deepcopy(model).eval()
    started = time.perf_counter()
    oracle = measure_oracle(model, GroupedModel(model, example), data.oracle, progress)
    report: dict = {"oracle": oracle_entry(model, example, oracle, time.perf_counter() - started, data, ratios,
                                           finetune), "criteria": {}}
    all_scores: dict[str, PerGroup] = {}
    task = progress.start("criteria", len(built))
    try:
        for spec, criterion in built.items():
            started = time.perf_counter()
            all_scores[spec] = score_criterion(criterion, model, example, data.score)
            seconds = time.perf_counter() - started
            entry = criterion_entry(criterion, all_scores[spec], oracle, model, example, data, ratios, finetune, spec)
            report["criteria"][spec] = {**entry, "score_seconds": round(seconds, 2)}
            progress.advance(task)
    finally:
        progress.finish(task)
    return report, all_scores, oracle

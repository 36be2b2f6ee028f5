"""Accuracy left after pruning to a ratio by some ranking, with and without a short fine-tune.

The one definition every study figure uses: a planner step of ``ratio`` from the unpruned model
(:func:`edgeprune.search.planner.next_plan`, the same planner ``deploy`` uses, with the ranking's
scope), physical removal by ``apply_plan``, top-1 on held-out batches in eval mode. Every group
keeps at least :data:`MIN_KEEP` of its channels, so a high ratio never empties a layer.

Fine-tuning (:class:`Finetuner`) is SGD with a cosine schedule on the training split, followed by
re-estimating the BN statistics on a few training batches (:func:`refresh_batchnorm`): a short
run's moving averages lag its weights. The accuracies "without fine-tuning" keep the unpruned
model's BN statistics, exactly the function the oracle and the criteria judged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from edgeprune.data import make_loader
from edgeprune.graph import GroupedModel
from edgeprune.plan import PruningPlan
from edgeprune.progress import ProgressSink
from edgeprune.prune import apply_plan
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.studies.oracle import Batch
from edgeprune.training.finetune import TrainConfig, train

MIN_KEEP = 0.1  # every group keeps at least 10 % of its channels


class Finetune(Protocol):
    """Fine-tune ``model`` in place; ``description`` labels its progress bar."""

    def __call__(self, model: nn.Module, description: str) -> None: ...


def ratio_key(ratio: float) -> str:
    """The JSON key of a ratio (``0.3`` -> ``"0.3"``, ``0.0`` -> ``"0"``)."""
    return f"{ratio:g}"


@torch.no_grad()
def accuracy(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Top-1 accuracy over ``batches`` in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def prune_to_ratio(model: nn.Module, example: torch.Tensor, scores: Mapping[str, torch.Tensor], scope: str,
                   ratio: float, min_keep: float = MIN_KEEP) -> nn.Module:
    """A pruned copy of ``model`` without the ``ratio`` share of channels ``scores`` rank lowest
    (``scope``: "global" ranks all groups together, "layer" prunes each group by the ratio)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio {ratio:g} is not in [0, 1)")
    if ratio == 0:
        return copy.deepcopy(model).eval()
    start = PruningPlan.identity("", tuple(example.shape), "oracle-study", {n: len(s) for n, s in scores.items()})
    grouped = GroupedModel(model, example)  # grouped convs and coupled groups constrain which channels go
    plan = next_plan(start, dict(scores), StepPolicy(ratio, scope, 1, min_keep), blocks=grouped.blocks(),
                     couplings=grouped.couplings())
    return apply_plan(model, plan, example)


@dataclass(frozen=True)
class RatioAccuracies:
    """Accuracy at each ratio (keyed by :func:`ratio_key`), straight after pruning and, when a
    fine-tune ran, after it (``None`` otherwise: "not measured", never a copy of the first)."""

    pruned: dict[str, float]
    finetuned: dict[str, float] | None


def accuracies_at(model: nn.Module, example: torch.Tensor, scores: Mapping[str, torch.Tensor], scope: str,
                  ratios: Sequence[float], batches: Sequence[Batch], finetune: Finetune | None = None,
                  label: str = "") -> RatioAccuracies:
    """Prune ``model`` (a copy each time) to each ratio by ``scores``; measure accuracy on
    ``batches``, then fine-tune that same pruned model and measure again (both figures from
    one pruning). The unpruned copy at ratio 0 is fine-tuned too, as the fair reference."""
    pruned: dict[str, float] = {}
    tuned: dict[str, float] = {}
    for ratio in ratios:
        candidate = prune_to_ratio(model, example, scores, scope, ratio)
        pruned[ratio_key(ratio)] = accuracy(candidate, batches)
        if finetune is not None:
            finetune(candidate, f"fine-tune {label} @{ratio:g}")
            tuned[ratio_key(ratio)] = accuracy(candidate, batches)
    return RatioAccuracies(pruned, tuned if finetune is not None else None)


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, batches: Sequence[Batch]) -> None:
    """Re-estimate every BN's running statistics as the plain average over ``batches``.

    After a short, high-learning-rate run the moving averages lag the weights (a tiny net
    trained for one epoch scored chance in eval mode and 50 % in train mode); one forward pass
    in train mode with a cumulative average fixes that without touching any weight.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


@dataclass(frozen=True)
class Finetuner:
    """A :class:`Finetune`: ``recipe`` on ``train_set``, then fresh BN statistics from
    ``calibration``. Every call sees the same batches in the same order (a fresh loader seeded
    with ``seed``), so criteria are compared on equal terms."""

    train_set: Dataset
    recipe: TrainConfig
    batch_size: int
    seed: int
    calibration: tuple[Batch, ...]
    progress: ProgressSink

    def __call__(self, model: nn.Module, description: str) -> None:
        torch.manual_seed(self.seed)
        loader = make_loader(self.train_set, self.batch_size, shuffle=True, seed=self.seed)
        train(model, loader, self.recipe, progress=self.progress, description=description)
        refresh_batchnorm(model, self.calibration)

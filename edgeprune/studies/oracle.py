"""The oracle study: how well does each criterion predict what removing a channel really costs?

Molchanov et al. (ICLR 2017, CVPR 2019) judge criteria against an oracle — the loss change when
one channel is removed, measured on held-out data — by rank correlation (Spearman), and by the
accuracy left after pruning. Their oracle code was never released; this is a re-implementation.

Oracle of channel c: ΔL_c = L(c removed) − L, where "removed" zeroes channel c in the output of
every out-member of its group (conv, its BN, coupled branches of a residual add): exactly what
physical removal computes, since the layers reading the channel then see zeros. Evaluated in
eval mode (BN running statistics) on the held-out batches, sample-weighted.

:func:`compare_criteria` correlates every criterion with |ΔL| (Molchanov's oracle is the absolute
change; Spearman and Kendall only see ranks, so |ΔL| and ΔL² agree), pooled over all channels of
all groups, and prunes with each criterion to each ratio (planner + prune, optional fine-tune
callback) to report held-out accuracy. The oracle's own ranking (signed ΔL: channels whose
removal lowers the loss go first) is reported as a reference.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, spearmanr
from torch import nn

from edgeprune.criteria import ScoreContext, get_criterion
from edgeprune.criteria.common import channel_view, output_hooks, scoring_mode
from edgeprune.graph import GroupedModel
from edgeprune.plan import PruningPlan
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.prune import apply_plan

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn = F.cross_entropy) -> float:
    """Sample-weighted mean of ``loss_fn`` (assumed mean-reduced per batch) over ``batches``."""
    total = count = 0.0
    for x, y in batches:
        total += float(loss_fn(model(x), y)) * len(x)
        count += len(x)
    if count == 0:
        raise ValueError("the oracle needs at least one held-out batch")
    return total / count


@torch.no_grad()
def accuracy(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Top-1 accuracy over ``batches`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def oracle_scores(model: nn.Module, grouped: GroupedModel, batches: Sequence[Batch],
                  loss_fn: LossFn = F.cross_entropy) -> dict[str, torch.Tensor]:
    """``{group: ΔL per channel}``: held-out loss with that one channel zeroed, minus the loss.

    One forward pass over ``batches`` per channel: the cost is what makes this an oracle.
    """
    scores: dict[str, torch.Tensor] = {}
    with scoring_mode(model), torch.no_grad():
        base = mean_loss(model, batches, loss_fn)
        for name, group in grouped.groups.items():
            mask = torch.ones(group.channels)
            zero = {m: (lambda out: out * channel_view(mask.to(out.dtype), out)) for m in group.out_members()}
            deltas = torch.zeros(group.channels, dtype=torch.float64)
            with output_hooks(model, zero):
                for c in range(group.channels):
                    mask.fill_(1.0)
                    mask[c] = 0.0
                    deltas[c] = mean_loss(model, batches, loss_fn) - base
            scores[name] = deltas
    return scores


def _rank_correlations(scores: torch.Tensor, oracle: torch.Tensor) -> tuple[float, float]:
    """(Spearman ρ, Kendall τ); NaN where either side is constant (no ranking to compare)."""
    a, b = scores.double().numpy(), oracle.double().numpy()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic), float(kendalltau(a, b).statistic)


def _within_groups(scores: dict[str, torch.Tensor], oracle: dict[str, torch.Tensor]) -> float:
    """Mean per-group Spearman ρ: the fair figure for "layer"-scope criteria, whose scores are
    not meant to compare across groups."""
    values = [_rank_correlations(scores[g], oracle[g].abs())[0] for g in oracle if len(oracle[g]) > 2]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _ratio_key(ratio: float) -> str:
    return f"{ratio:g}"


def _accuracy_at(model: nn.Module, example: torch.Tensor, scores: dict[str, torch.Tensor], scope: str,
                 ratios: Sequence[float], heldout: Sequence[Batch], finetune: Callable[[nn.Module], None] | None,
                 min_keep: float) -> dict[str, float]:
    """Prune ``model`` (a copy each time) to each ratio by ``scores`` and measure accuracy."""
    channels = {name: len(s) for name, s in scores.items()}
    start = PruningPlan.identity("", tuple(example.shape), "oracle-study", channels)
    result = {}
    for ratio in ratios:
        if ratio == 0:
            pruned = copy.deepcopy(model).eval()
        else:
            plan = next_plan(start, scores, StepPolicy(ratio, scope, 1, min_keep))
            pruned = apply_plan(model, plan, example)
        if finetune is not None:
            finetune(pruned)
        result[_ratio_key(ratio)] = accuracy(pruned, heldout)
    return result


def compare_criteria(model: nn.Module, example: torch.Tensor, score_batches: Sequence[Batch],
                     heldout_batches: Sequence[Batch], names: Sequence[str], ratios: Sequence[float],
                     finetune: Callable[[nn.Module], None] | None = None,
                     loss_fn: LossFn = F.cross_entropy, min_keep: float = 0.1) -> dict:
    """Correlate each criterion with the oracle and measure accuracy after pruning to each ratio.

    Returns ``{"oracle": {...}, "criteria": {name: {"spearman", "kendall",
    "spearman_within_groups", "scope", "accuracy_at": {"0.3": acc, ...}}}}``. Criteria score
    ``score_batches`` on a fresh copy of ``model`` each (so none sees another's side effects);
    the oracle and all accuracies use ``heldout_batches``. ``finetune(pruned)`` (in place), if
    given, runs after each pruning and on the unpruned copy for ratio 0.
    """
    if any(not 0 <= r < 1 for r in ratios):
        raise ValueError("ratios must lie in [0, 1)")
    model = copy.deepcopy(model).eval()
    grouped = GroupedModel(model, example)
    order = list(grouped.groups)
    oracle = oracle_scores(model, grouped, heldout_batches, loss_fn)
    pooled_oracle = torch.cat([oracle[g].abs() for g in order])
    report: dict = {
        "oracle": {
            "loss": mean_loss(model.eval(), heldout_batches, loss_fn),
            "accuracy": accuracy(model, heldout_batches),
            "channels": int(pooled_oracle.numel()),
            "accuracy_at": _accuracy_at(model, example, {g: oracle[g].float() for g in order}, "global",
                                        ratios, heldout_batches, finetune, min_keep),
        },
        "criteria": {},
    }
    for name in names:
        criterion = get_criterion(name)
        work = copy.deepcopy(model)
        scores = criterion(ScoreContext(work, GroupedModel(work, example), tuple(score_batches), loss_fn))
        pooled = torch.cat([scores[g].detach().double() for g in order])
        rho, tau = _rank_correlations(pooled, pooled_oracle)
        report["criteria"][name] = {
            "spearman": rho,
            "kendall": tau,
            "spearman_within_groups": _within_groups(scores, oracle),
            "scope": criterion.scope,
            "accuracy_at": _accuracy_at(model, example, {g: scores[g].detach().float() for g in order},
                                        criterion.scope, ratios, heldout_batches, finetune, min_keep),
        }
    return report

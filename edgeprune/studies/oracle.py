"""The oracle: what removing one channel really costs, and how well a criterion's ranking agrees.

Molchanov et al. (ICLR 2017, CVPR 2019) judge criteria against an oracle — the loss change when
one channel is removed, measured on held-out data — by rank correlation (Spearman), and by the
accuracy left after pruning. Their oracle code was never released; this is a re-implementation.

Oracle of channel c: ΔL_c = L(c removed) − L, where "removed" zeroes channel c in the output of
every out-member of its group (conv, its BN, coupled branches of a residual add): exactly what
physical removal computes, since the layers reading the channel then see zeros. Evaluated in
eval mode (BN running statistics) on the held-out batches, sample-weighted.

Criteria are correlated with |ΔL| (Molchanov's oracle is the absolute change; Spearman and
Kendall only see ranks, so |ΔL| and ΔL² agree): pooled over all channels of all groups
(:func:`pooled_correlations`), and per group (:func:`spearman_within_groups`), the fair figure
for "layer"-scope criteria whose scores are not meant to compare across groups.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, spearmanr
from torch import nn

from edgeprune.criteria.common import channel_axis, from_group, gate_view, output_hooks, scoring_mode
from edgeprune.graph import GroupedModel
from edgeprune.progress import ProgressSink, null_progress

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Scores = Mapping[str, torch.Tensor]  # group name -> one value per channel


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


def _gate(mask: torch.Tensor, group, member: str, grouped: GroupedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """Zero the member's output channels that the group's ``mask`` removes; slice-aware (a concat
    member covers part of the group) and layout-aware (token layouts keep channels last)."""
    axis = channel_axis(grouped.module(member))

    def hook(out: torch.Tensor) -> torch.Tensor:
        gate = from_group(mask, group.member(member), group.channels, out.shape[axis])
        return out * gate_view(gate.to(out.dtype), out, axis)

    return hook


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
            zero = {m: _gate(mask, group, m, grouped) for m in group.out_members()}
            deltas = torch.zeros(group.channels, dtype=torch.float64)
            with output_hooks(model, zero):
                for c in range(group.channels):
                    mask.fill_(1.0)
                    mask[c] = 0.0
                    deltas[c] = mean_loss(model, batches, loss_fn) - base
            scores[name] = deltas
    return scores


def measure_oracle(model: nn.Module, grouped: GroupedModel, batches: Sequence[Batch],
                   progress: ProgressSink = null_progress) -> dict[str, torch.Tensor]:
    """:func:`oracle_scores` with cross-entropy and a progress bar: the oracle is by far the
    slowest part of a study (one pass over ``batches`` per channel), so it shows its progress."""
    total = (1 + sum(g.channels for g in grouped.groups.values())) * len(batches)
    task = progress.start("oracle: remove each channel", total)

    def counted(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        progress.advance(task)  # called once per batch and channel
        return F.cross_entropy(output, target)

    try:
        return oracle_scores(model, grouped, batches, counted)
    finally:
        progress.finish(task)


def rank_correlations(scores: torch.Tensor, oracle: torch.Tensor) -> tuple[float, float]:
    """(Spearman ρ, Kendall τ); NaN where either side is constant or has fewer than three values
    (no ranking to compare: two points always correlate ±1)."""
    a, b = scores.double().numpy(), oracle.double().numpy()
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic), float(kendalltau(a, b).statistic)


def pooled_correlations(scores: Scores, oracle: Scores) -> tuple[float, float]:
    """(Spearman ρ, Kendall τ) of ``scores`` against |ΔL| over every channel of every group:
    the figure for "global"-scope criteria, which rank all channels together."""
    order = list(oracle)
    return rank_correlations(torch.cat([scores[g].double() for g in order]),
                             torch.cat([oracle[g].double().abs() for g in order]))


def spearman_within_groups(scores: Scores, oracle: Scores) -> float:
    """Mean per-group Spearman ρ against |ΔL| (groups without a ranking left out)."""
    values = [rank_correlations(scores[g], oracle[g].abs())[0] for g in oracle]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan

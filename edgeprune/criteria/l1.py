"""L1 filter norm — Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient
ConvNets", ICLR 2017.

score(filter j) = sum |F_j| over the filter's kernel weights. Li et al. prune each layer by its
own ratio (scope "layer"). Where a residual add couples several convs' outputs into one group, the
coupled filters are removed together, so their L1 norms are summed.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext, out_parameters


@criteria.register("l1")
class L1Norm:
    name = "l1"
    paper = "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017"
    scope = "layer"

    @torch.no_grad()
    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        scores: dict[str, torch.Tensor] = {}
        for group_name, group in ctx.grouped.groups.items():
            total = torch.zeros(group.channels)
            for _, module in out_parameters(ctx, group_name):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    total += module.weight.detach().abs().flatten(1).sum(1)
            scores[group_name] = total
        return scores

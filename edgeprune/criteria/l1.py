"""L1 filter norm — Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient
ConvNets", ICLR 2017.

score(filter j) = sum |F_j| over the filter's kernel weights. Li et al. prune each layer by its
own ratio (scope "layer"). Where a residual add couples several convs' outputs into one group, the
coupled filters are removed together, so their L1 norms are summed; a conv that covers only part
of the group (a branch of a concatenation) adds to the channels it covers.
"""

from __future__ import annotations

import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import filter_l1, finish


@criteria.register("l1")
class L1Norm:
    name = "l1"
    paper = "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017"
    scope = "layer"

    @torch.no_grad()
    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return finish(ctx, {name: filter_l1(ctx, name) for name in ctx.grouped.groups})

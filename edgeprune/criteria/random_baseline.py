"""Random scores — the baseline every criterion must beat (e.g. Molchanov et al. 2017/2019 and
"Rethinking the Value of Network Pruning", Liu et al. ICLR 2019, report it).

Uniform scores from a generator seeded with ``seed``; groups draw in sorted-name order, so the
same seed on the same architecture gives the same scores whatever the dict order. Scope "layer":
each group loses the same share, so a random global ranking cannot empty one layer by chance.
"""

from __future__ import annotations

import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import finish


@criteria.register("random")
class RandomScores:
    name = "random"
    paper = ("Random baseline (uniform scores, seeded); cf. Liu, Sun, Zhou, Huang, Darrell, Rethinking the "
             "Value of Network Pruning, ICLR 2019")
    scope = "layer"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        drawn = {name: torch.rand(ctx.grouped.groups[name].channels, generator=generator)
                 for name in sorted(ctx.grouped.groups)}
        return finish(ctx, {name: drawn[name] for name in ctx.grouped.groups})

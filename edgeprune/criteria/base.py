"""The criterion protocol: score every channel of every dependency group.

A criterion returns ``{group name: 1-D tensor of scores}`` in the model's current channel order;
higher means more important. ``scope`` tells the planner how to rank: ``"global"`` compares
scores across groups (Molchanov 2019), ``"layer"`` prunes each group by the same ratio
(Li et al. 2017 use per-layer ratios).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import torch
from torch import nn

from edgeprune.graph import GroupedModel

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may look at: the model, its groups, a few labelled batches, the loss."""

    model: nn.Module
    grouped: GroupedModel
    batches: tuple[Batch, ...]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy


class Criterion(Protocol):
    name: str
    paper: str
    scope: Literal["global", "layer"]

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]: ...


def out_parameters(ctx: ScoreContext, group_name: str) -> list[tuple[str, nn.Module]]:
    """The modules whose *output* channels a group removes (conv/linear filters, BN channels)."""
    group = ctx.grouped.groups[group_name]
    return [(name, ctx.grouped.module(name)) for name in group.out_members()]

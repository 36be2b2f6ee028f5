"""Gradient-matrix maximum redundancy — after Zhou et al. (2022): the rank deficiency of a layer's
gradient matrix bounds how much of the layer may be pruned; filters are then pruned within that
bound.

Our reading (the paper's text was not available to check; the construction below is ours):
- Gradient matrix of a group: one row per channel, holding the gradients of every weight that
  channel owns (its filters' rows in the out-member convs/linears, bias, BN scale and shift),
  with the gradients of each minibatch side by side, G = [G_1 | G_2 | ...] (C × B·d). A channel
  whose gradient rows are a linear combination of the others' across all minibatches moves only
  in directions the others already cover: it is redundant.
- Numerical rank r: the fewest singular values holding ``energy`` (default 0.99) of Σσ² (an
  energy cut rather than a bare tolerance, so float noise does not count as rank). The layer's
  maximum prunable fraction is (C − max(r, 1)) / C: :func:`redundancy_budget`.
- Scores within the bound: QR with column pivoting on Gᵀ picks channels in order of how much new
  gradient direction each adds (greedy most-independent first). A channel at pivot position p
  scores (C − p)/C, plus 1 if p < r. Every channel beyond a layer's bound thus scores below every
  channel inside any layer's bound, so a global ranking (scope "global") removes redundant
  channels everywhere before it touches a non-redundant one; the planner's own fraction still
  decides how many go.
The model runs in eval mode (BN running statistics).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import finish, require_batches, scoring_mode
from edgeprune.criteria.sosp import structure_parameters


def gradient_matrices(ctx: ScoreContext) -> dict[str, torch.Tensor]:
    """Per group, G (C × B·d): each channel's owned-weight gradients, minibatches side by side."""
    require_batches(ctx, "grad-redundancy")
    layout = {name: structure_parameters(ctx, name) for name in ctx.grouped.groups}
    params = dict(ctx.model.named_parameters())
    blocks: dict[str, list[torch.Tensor]] = {name: [] for name in ctx.grouped.groups}
    with scoring_mode(ctx.model):
        for x, y in ctx.batches:
            ctx.model.zero_grad(set_to_none=True)
            ctx.loss_fn(ctx.model(x), y).backward()
            for name, entries in layout.items():
                group = ctx.grouped.groups[name]
                for pname, axis, module in entries:
                    grad = params[pname].grad
                    if grad is None:
                        grad = torch.zeros_like(params[pname])
                    rows = grad.detach().double().transpose(0, axis)
                    rows = rows.reshape(rows.shape[0], -1)
                    # a member covering a slice of the group: its rows go where its channels sit
                    local, positions = group.member(module).index_map(group.channels)
                    placed = torch.zeros(group.channels, rows.shape[1], dtype=rows.dtype)
                    blocks[name].append(placed.index_add(0, positions, rows.index_select(0, local)))
    return {name: torch.cat(parts, 1) if parts else torch.zeros(ctx.grouped.groups[name].channels, 0,
                                                                 dtype=torch.float64)
            for name, parts in blocks.items()}


def numerical_rank(matrix: torch.Tensor, energy: float = 0.99) -> int:
    """Fewest singular values whose squares hold ``energy`` of the total (0 for a zero matrix)."""
    if matrix.numel() == 0:
        return 0
    m = matrix.double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m  # σ² = eigenvalues of the smaller Gram
    sq = torch.linalg.eigvalsh(gram).clamp(min=0).flip(0)
    total = float(sq.sum())
    if total == 0.0:
        return 0
    cumulative = torch.cumsum(sq, 0) / total
    return int(torch.searchsorted(cumulative, torch.tensor([energy], dtype=cumulative.dtype) - 1e-12)) + 1


def redundancy_fraction(matrix: torch.Tensor, energy: float = 0.99) -> float:
    """(C − max(r, 1)) / C: the share of the group's channels its gradient rank says are spare."""
    channels = matrix.shape[0]
    return (channels - max(numerical_rank(matrix, energy), 1)) / channels


def redundancy_budget(ctx: ScoreContext, energy: float = 0.99) -> dict[str, float]:
    """``{group: maximum prunable fraction}`` from the gradient matrices' rank deficiency."""
    return {name: redundancy_fraction(g, energy) for name, g in gradient_matrices(ctx).items()}


def independence_order(matrix: torch.Tensor) -> list[int]:
    """Channels in the order QR with column pivoting on Gᵀ picks them (most independent first)."""
    channels = matrix.shape[0]
    if matrix.shape[1] == 0 or not torch.any(matrix != 0):
        return list(range(channels))
    _, _, pivots = scipy.linalg.qr(matrix.double().T.numpy(), mode="economic", pivoting=True)
    return [int(p) for p in np.asarray(pivots)]


def scores_from_matrix(matrix: torch.Tensor, energy: float = 0.99) -> torch.Tensor:
    """(C − p)/C by pivot position p, plus 1 inside the rank bound (see module doc)."""
    channels = matrix.shape[0]
    rank = max(numerical_rank(matrix, energy), 1)
    scores = torch.empty(channels)
    for position, channel in enumerate(independence_order(matrix)):
        scores[channel] = (channels - position) / channels + (1.0 if position < rank else 0.0)
    return scores


@criteria.register("grad-redundancy")
class GradientRedundancy:
    name = "grad-redundancy"
    paper = ("Zhou et al., filter pruning by gradient-matrix maximum redundancy, 2022 (exact title and venue "
             "unverified; construction per our reading)")
    scope = "global"

    def __init__(self, energy: float = 0.99) -> None:
        if not 0 < energy <= 1:
            raise ValueError("energy must be in (0, 1]")
        self.energy = energy

    def budget(self, ctx: ScoreContext) -> dict[str, float]:
        """The per-group bound, for callers that plan with it (same as :func:`redundancy_budget`)."""
        return redundancy_budget(ctx, self.energy)

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return finish(ctx, {name: scores_from_matrix(g, self.energy) for name, g in gradient_matrices(ctx).items()})

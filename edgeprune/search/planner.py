"""Choose which channels a pruning step removes, from criterion scores.

Kept counts are rounded to the target's ``channel_multiple`` (vector widths, FINN PE/SIMD
divisors), every group keeps at least ``min_keep`` of its original channels, and the step never
removes more than it is asked to.

Grouped convolutions: a group with ``blocks = g > 1`` (it feeds or is produced by a conv with g
groups) keeps a multiple of g channels and the *same* positions in each of its g equal blocks
(the conv's weight is ``(out, in/g, k, k)``: every block must lose the same input columns). The
positions are chosen by the block-summed score of each position. ``blocks`` comes from
:meth:`edgeprune.graph.GroupedModel.blocks`, or from the scores when a criterion returned them
(every built-in criterion does).

Coupled groups (channels of several layers tied by a channel shuffle or a chunk, see
:mod:`edgeprune.graph.coupling`) lose whole units under balance constraints, chosen by a small
integer program (:mod:`edgeprune.graph.units`); their kept count is not rounded to
``channel_multiple`` (the model's shuffle fixes the units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import torch

from edgeprune.graph.coupling import Coupling
from edgeprune.graph.units import choose_removal
from edgeprune.plan import GroupPlan, PruningPlan


@dataclass(frozen=True)
class StepPolicy:
    fraction: float  # share of the currently kept channels to remove in this step
    scope: Literal["global", "layer"]
    channel_multiple: int = 1
    min_keep: float = 0.1  # of each group's original channels

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1 or self.channel_multiple < 1 or not 0 < self.min_keep <= 1:
            raise ValueError("0 < fraction < 1, channel_multiple >= 1 and 0 < min_keep <= 1 required")


def _floor_count(group: GroupPlan, target: float, policy: StepPolicy) -> int:
    """Largest allowed kept count <= target: a multiple of channel_multiple, >= the minimum."""
    m = policy.channel_multiple
    minimum = max(1, math.ceil(policy.min_keep * group.channels))
    minimum = min(group.channels, math.ceil(minimum / m) * m) if group.channels >= m else minimum
    count = int(math.floor(target / m) * m) if target >= m else int(math.floor(target))
    return max(minimum, min(len(group.kept), count))


def _block_count(group: GroupPlan, count: int, blocks: int) -> int:
    """Round a kept count down to a multiple of ``blocks`` (at least one per block)."""
    if blocks <= 1:
        return count
    return min(len(group.kept), max(blocks, count // blocks * blocks))


def _targets_layer(plan: PruningPlan, policy: StepPolicy) -> dict[str, int]:
    return {name: _floor_count(g, len(g.kept) * (1 - policy.fraction), policy) for name, g in plan.groups.items()}


def _targets_global(plan: PruningPlan, scores: dict[str, torch.Tensor], policy: StepPolicy) -> dict[str, int]:
    """Remove the globally lowest-scored channels, then round each group's count."""
    entries = sorted((float(s), name) for name, vec in scores.items() for s in vec)
    budget = int(policy.fraction * sum(len(g.kept) for g in plan.groups.values()))
    removed = {name: 0 for name in plan.groups}
    for _, name in entries:
        if budget <= 0:
            break
        g = plan.groups[name]
        if len(g.kept) - removed[name] - 1 >= _floor_count(g, 0, policy):
            removed[name] += 1
            budget -= 1
    counts = {name: _round_nearest(g, len(g.kept) - removed[name], policy) for name, g in plan.groups.items()}
    if any(removed.values()) and all(counts[n] == len(g.kept) for n, g in plan.groups.items()):
        counts = _force_progress(plan, removed, counts, policy)
    return counts


def _force_progress(plan: PruningPlan, removed: dict[str, int], counts: dict[str, int],
                    policy: StepPolicy) -> dict[str, int]:
    """Rounding to ``channel_multiple`` can cancel a small step everywhere; then shrink by one
    multiple the group the ranking wanted to prune most, so a step always makes progress."""
    for name in sorted(removed, key=removed.get, reverse=True):
        if removed[name] == 0:
            break
        g = plan.groups[name]
        smaller = _floor_count(g, len(g.kept) - 1, policy)
        if smaller < len(g.kept):
            return {**counts, name: smaller}
    return counts


def _round_nearest(group: GroupPlan, count: int, policy: StepPolicy) -> int:
    m = policy.channel_multiple
    nearest = int(round(count / m) * m) if count >= m else count
    return _floor_count(group, min(nearest, len(group.kept)), policy)


def _top_in_blocks(s: torch.Tensor, count: int, blocks: int) -> torch.Tensor:
    """Current positions to keep: the same top positions (by block-summed score) in every block."""
    size = len(s) // blocks
    per_block = count // blocks
    columns = torch.argsort(s.view(blocks, size).sum(0), descending=True, stable=True)[:per_block]
    return (torch.arange(blocks)[:, None] * size + columns[None, :]).flatten()


def next_plan(plan: PruningPlan, scores: dict[str, torch.Tensor], policy: StepPolicy,
              blocks: Mapping[str, int] | None = None, couplings: Mapping[str, Coupling] | None = None) -> PruningPlan:
    """Apply one step: keep, in each group, the top-scored channels up to its new count.

    ``scores`` are in the current (already pruned) model's channel order, i.e. aligned with
    ``plan.groups[name].kept``. ``blocks`` (default: ``scores.blocks`` when present) marks the
    groups tied to grouped convolutions, ``couplings`` (default: ``scores.couplings``) the coupled
    groups (see the module doc).
    """
    blocks = dict(blocks if blocks is not None else getattr(scores, "blocks", None) or {})
    couplings = dict(couplings if couplings is not None else getattr(scores, "couplings", None) or {})
    counts = _targets_layer(plan, policy) if policy.scope == "layer" else _targets_global(plan, scores, policy)
    groups = {}
    for name, g in plan.groups.items():
        s = scores[name]
        if len(s) != len(g.kept):
            raise ValueError(f"scores for {name} have {len(s)} entries, plan keeps {len(g.kept)}")
        b = blocks.get(name, 1)
        if name in couplings:
            share = policy.min_keep * g.channels / len(g.kept)  # of each part's current channels
            gone = set(choose_removal(couplings[name], s, len(g.kept) - counts[name], min(share, 1.0)))
            top = torch.tensor([i for i in range(len(g.kept)) if i not in gone], dtype=torch.long)
        elif b > 1 and len(g.kept) % b == 0:
            top = _top_in_blocks(s, _block_count(g, counts[name], b), b)
        else:
            top = torch.argsort(s, descending=True, stable=True)[: counts[name]]
        groups[name] = GroupPlan(g.channels, tuple(sorted(g.kept[int(i)] for i in top)))
    return plan.with_groups(groups)

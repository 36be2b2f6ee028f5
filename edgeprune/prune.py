"""Physical channel removal: make a plan real on a model (returns a new, smaller model)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.errors import ConfigError, TraceError
from edgeprune.graph import GroupedModel, check_block_pattern
from edgeprune.plan import PruningPlan


def group_channels(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Channel count of every prunable group of ``model`` (the classifier excluded)."""
    return {name: g.channels for name, g in GroupedModel(model, example).groups.items()}


def prune_between(model: nn.Module, example: torch.Tensor, current: PruningPlan, target: PruningPlan) -> nn.Module:
    """Prune a model that currently realises ``current`` down to ``target`` (in place, returned).

    Both plans index original channels; positions to remove are translated into the model's
    current layout, so iterative steps compose exactly.
    """
    grouped = GroupedModel(model, example)
    planned: list[tuple[str, list[int]]] = []
    for name, goal in target.groups.items():
        if name not in current.groups or name not in grouped.groups:
            raise ConfigError(f"plan group {name!r} does not exist in this model")
        now = current.groups[name].kept
        keep = set(goal.kept)
        if not keep <= set(now):
            raise ConfigError(f"plan keeps channels of {name} that were already removed")
        if grouped.groups[name].channels != len(now):
            raise ConfigError(f"{name} has {grouped.groups[name].channels} channels, plan expects {len(now)}")
        removed = [pos for pos, idx in enumerate(now) if idx not in keep]
        if removed and grouped.groups[name].blocks > 1:
            check_block_pattern(name, len(now), grouped.groups[name].blocks, removed)
        if removed and grouped.groups[name].coupling is not None:
            grouped.groups[name].coupling.check(name, removed)
        planned.append((name, removed))
    for name, removed in planned:
        grouped.remove(name, removed)
    _check_runs(model, example)
    return model


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """The pruned model must still run: a dependency no rule covered shows up here as one clear
    error instead of a shape error deep inside the user's forward."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"the pruned model no longer runs ({text}): a channel dependency edgeprune does "
                         f"not model; exclude the layers involved") from None
    finally:
        model.train(was_training)


def apply_plan(model: nn.Module, plan: PruningPlan, example: torch.Tensor) -> nn.Module:
    """A pruned copy of the *original* ``model``; the original is left untouched."""
    pruned = copy.deepcopy(model).eval()
    channels = group_channels(pruned, example)
    missing = set(plan.groups) - set(channels)
    if missing:
        raise ConfigError(f"plan names groups this model lacks: {', '.join(sorted(missing)[:3])}")
    for name, g in plan.groups.items():
        if channels[name] != g.channels:
            raise ConfigError(f"plan expects {g.channels} channels in {name}, the model has {channels[name]}")
    start = PruningPlan.identity(plan.model, plan.input_shape, plan.criterion, channels)
    return prune_between(pruned, example, start, plan)

"""The strongest check of a pruning rule: the pruned network equals the original network with
the removed channels switched off (every out-member's output gated to zero at those channels).

ONNX Runtime == PyTorch only says the pruned network runs consistently; a wrong index mapping (a
consumer losing the wrong input columns, a shuffle permuting the smaller tensor differently) still
runs. This catches it. Valid for ReLU-style networks (a zeroed channel stays zero downstream);
LayerNorm mixes channels, so nets with it are not compared this way.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.criteria.common import channel_axis, from_group, gate_view, output_hooks
from edgeprune.graph import GroupedModel
from edgeprune.plan import PruningPlan
from edgeprune.prune import apply_plan
from edgeprune.search.planner import StepPolicy, next_plan


def _width(module: nn.Module) -> int | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    return None


def zeroed_output(model: nn.Module, grouped: GroupedModel, plan: PruningPlan, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with every channel the plan removes gated to zero where it is produced."""
    gates: dict[str, torch.Tensor] = {}
    for name, group in grouped.groups.items():
        mask = torch.zeros(group.channels)
        mask[list(plan.groups[name].kept)] = 1
        for member in group.members:
            width = _width(model.get_submodule(member.module))
            if member.axis == "out" and width is not None:
                gate = from_group(mask, member, group.channels, width)
                gates[member.module] = gates.get(member.module, torch.ones(width)) * gate
    fns = {n: (lambda out, g=g, ax=channel_axis(model.get_submodule(n)): out * gate_view(g, out, ax))
           for n, g in gates.items()}
    with torch.no_grad(), output_hooks(model, fns):
        return model(x)


def pruning_error(model: nn.Module, plan: PruningPlan, x: torch.Tensor) -> float:
    """Largest |pruned(x) - zeroed(x)| for ``plan`` applied to ``model`` (eval mode)."""
    model.eval()
    grouped = GroupedModel(model, x[:1])
    pruned = apply_plan(model, plan, x[:1])
    with torch.no_grad():
        return float((pruned(x) - zeroed_output(model, grouped, plan, x)).abs().max())


def randomise_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BN statistics, so a wrong channel cannot hide behind identical ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


def identity(grouped: GroupedModel, x: torch.Tensor) -> PruningPlan:
    return PruningPlan.identity("m", tuple(x[:1].shape), "random", {n: g.channels for n, g in grouped.groups.items()})


def random_step(model: torch.nn.Module, x: torch.Tensor, fraction: float = 0.3, seed: int = 0) -> PruningPlan:
    """One planner step on random scores: whichever channels the rules allow."""
    grouped = GroupedModel(model, x[:1])
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(grp.channels, generator=g) for n, grp in grouped.groups.items()}
    return next_plan(identity(grouped, x), scores, StepPolicy(fraction, "layer"), blocks=grouped.blocks(),
                     couplings=grouped.couplings())

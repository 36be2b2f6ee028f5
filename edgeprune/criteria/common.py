"""Machinery several criteria share: scoring mode, the tensors a group's channels live in, and the
inputs of the layers that read a group.

Why one place: every data-driven criterion must (1) score the function that will be deployed, so
the model runs in eval mode (BN uses its running statistics, exactly what the oracle measures);
(2) know which module outputs *are* a group's feature maps (a conv followed by its BN: the BN
output; a conv with no BN: the conv output), so that zeroing those outputs equals removing the
channel; (3) see the input of every layer that consumes the group (ThiNet, CHIP). Getting these
subtly different in each criterion would make the criteria disagree for reasons that are not
the papers'.

This module registers no criterion.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from edgeprune.criteria.base import ScoreContext

BatchNorm = nn.modules.batchnorm._BatchNorm
Weighted = (nn.modules.conv._ConvNd, nn.Linear)


@contextmanager
def scoring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then restore the training flag and drop every gradient.

    Criteria must leave the model as they found it: the search loop fine-tunes right after.
    """
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def require_batches(ctx: ScoreContext, who: str) -> None:
    """Data-driven criteria cannot score without data: say so instead of returning zeros."""
    if not ctx.batches:
        raise ValueError(f"criterion {who!r} needs at least one batch of data")


def channel_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-channel ``(C,)`` or per-sample ``(N, C)`` values to broadcast over ``like``'s dim 1."""
    lead = values.shape[0] if values.dim() == 2 else 1
    channels = values.shape[-1]
    return values.reshape(lead, channels, *([1] * (like.dim() - 2)))


def group_batchnorms(ctx: ScoreContext, group_name: str) -> list[nn.Module]:
    """The affine BNs on a group's output axis (one per coupled branch of a residual add)."""
    modules = [ctx.grouped.module(n) for n in ctx.grouped.groups[group_name].out_members()]
    return [m for m in modules if isinstance(m, BatchNorm) and m.affine]


def feature_modules(ctx: ScoreContext) -> dict[str, tuple[str, ...]]:
    """Per group, the out-members whose outputs are the group's feature maps.

    A BN out-member always qualifies; a conv/linear out-member qualifies only when its output is
    not fed straight into a BN (then the BN's output is the map). Found by one forward pass of a
    single sample, matching tensors by identity: a BN whose input *is* a conv's output follows it.
    """
    x = ctx.batches[0][0][:1]
    names = {m for g in ctx.grouped.groups.values() for m in g.out_members()}
    produced: dict[int, str] = {}
    keep_alive: list[torch.Tensor] = []
    followed: set[str] = set()
    handles = []

    def after(name: str) -> Callable:
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                produced[id(output)] = name
                keep_alive.append(output)
        return hook

    def before(_module, inputs):
        source = produced.get(id(inputs[0])) if inputs and isinstance(inputs[0], torch.Tensor) else None
        if source is not None:
            followed.add(source)

    for name in names:
        module = ctx.grouped.module(name)
        if isinstance(module, Weighted):
            handles.append(module.register_forward_hook(after(name)))
        elif isinstance(module, BatchNorm):
            handles.append(module.register_forward_pre_hook(before))
    try:
        with scoring_mode(ctx.model), torch.no_grad():
            ctx.model(x)
    finally:
        for h in handles:
            h.remove()
    result = {}
    for group_name, group in ctx.grouped.groups.items():
        chosen = []
        for name in group.out_members():
            module = ctx.grouped.module(name)
            if isinstance(module, BatchNorm) or (isinstance(module, Weighted) and name not in followed):
                chosen.append(name)
        result[group_name] = tuple(chosen)
    return result


@contextmanager
def output_hooks(model: nn.Module, fns: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace each named module's output by ``fn(output)`` while the context is open."""
    handles = []
    for name, fn in fns.items():
        def hook(_module, _inputs, output, fn=fn):
            return fn(output)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def consumers(ctx: ScoreContext, group_name: str) -> tuple[str, ...]:
    """The layers that read the group: conv/linear in-members whose input is exactly the group.

    A Conv2d must have ``in_channels == channels``; a Linear may read ``channels * k`` features
    (a flatten of k positions per channel). Consumers that also sit on the group's output axis
    (depthwise convs) and consumers of a concatenation (more input channels than the group, so
    the group's offset is unknown here) are left out.
    """
    group = ctx.grouped.groups[group_name]
    outs = set(group.out_members())
    found = []
    for member in group.members:
        if member.axis != "in" or member.module in outs:
            continue
        module = ctx.grouped.module(member.module)
        if isinstance(module, nn.Conv2d) and module.in_channels == group.channels:
            found.append(member.module)
        elif isinstance(module, nn.Linear) and module.in_features % group.channels == 0:
            found.append(member.module)
    return tuple(dict.fromkeys(found))


def run_capturing_inputs(ctx: ScoreContext, names: set[str], on_input: Callable[[str, torch.Tensor], None],
                         on_batch_end: Callable[[], None] | None = None) -> None:
    """Run every batch through the model (eval, no grad); hand each named module's input over.

    A callback rather than a returned list: the inputs of all layers over all batches may not fit
    in memory, while every user here reduces each batch on the fly. ``on_batch_end`` lets a user
    forget per-batch state (e.g. which tensors it has already seen).
    """
    handles = []
    for name in names:
        def hook(_module, inputs, name=name):
            on_input(name, inputs[0].detach())
        handles.append(ctx.grouped.module(name).register_forward_pre_hook(hook))
    try:
        with scoring_mode(ctx.model), torch.no_grad():
            for x, _ in ctx.batches:
                ctx.model(x)
                if on_batch_end is not None:
                    on_batch_end()
    finally:
        for h in handles:
            h.remove()


def filter_l1(ctx: ScoreContext, group_name: str) -> torch.Tensor:
    """Summed L1 norm of the group's conv/linear filters: the fallback where a method's own
    statistic does not exist for a group (no BN, no usable consumer)."""
    total = torch.zeros(ctx.grouped.groups[group_name].channels)
    for name in ctx.grouped.groups[group_name].out_members():
        module = ctx.grouped.module(name)
        if isinstance(module, Weighted):
            weight = module.weight.detach()
            if getattr(module, "transposed", False):
                weight = weight.transpose(0, 1)
            total += weight.abs().flatten(1).sum(1).float()
    return total


def l2_normalise(scores: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Θ / sqrt(ΣΘ²) (Molchanov 2017's per-layer rescaling, so layers compare globally)."""
    return scores / (scores.norm() + eps)

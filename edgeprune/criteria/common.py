"""Machinery several criteria share: scoring mode, the tensors a group's channels live in, and the
inputs of the layers that read a group.

Why one place: every data-driven criterion must (1) score the function that will be deployed, so
the model runs in eval mode (BN uses its running statistics, exactly what the oracle measures);
(2) know which module outputs *are* a group's feature maps (a conv followed by its BN: the BN
output; a conv with no BN: the conv output), so that zeroing those outputs equals removing the
channel; (3) see the input of every layer that consumes the group (ThiNet, CHIP). Getting these
subtly different in each criterion would make the criteria disagree for reasons that are not
the papers'.

(4) map every member's per-channel statistic into the group's channel space: through a
concatenation or a flatten a member covers only part of the group, or several of its channels
belong to one group channel (:func:`to_group`, :func:`from_group`; the mapping is torch-pruning's
index mapping, recorded on :class:`edgeprune.graph.Member`).

This module registers no criterion.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from edgeprune.criteria.base import ScoreContext
from edgeprune.graph import Member
from edgeprune.graph.coupling import Coupling

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


@contextmanager
def twice_differentiable() -> Iterator[None]:
    """Attention through the math kernel: the fused CPU/flash attention kernels have no second
    derivative, which exact Hessian terms (taylor-so, sosp-h) need; the math kernel computes the
    same function with differentiable ops."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def require_batches(ctx: ScoreContext, who: str) -> None:
    """Data-driven criteria cannot score without data: say so instead of returning zeros."""
    if not ctx.batches:
        raise ValueError(f"criterion {who!r} needs at least one batch of data")


def channel_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-channel ``(C,)`` or per-sample ``(N, C)`` values to broadcast over ``like``'s dim 1."""
    lead = values.shape[0] if values.dim() == 2 else 1
    channels = values.shape[-1]
    return values.reshape(lead, channels, *([1] * (like.dim() - 2)))


class GroupScores(dict):
    """``{group: scores}`` that also carries each group's ``blocks`` (grouped convs) and the
    couplings of coupled groups (channel shuffles, chunks), so that
    :func:`edgeprune.search.planner.next_plan` keeps identical patterns without being told."""

    blocks: dict[str, int]
    couplings: dict[str, Coupling]


def finish(ctx: ScoreContext, scores: dict[str, torch.Tensor]) -> GroupScores:
    """Every criterion's return value: checks one score per group channel, attaches ``blocks``."""
    result = GroupScores(scores)
    for name, group in ctx.grouped.groups.items():
        if name in result and result[name].shape != (group.channels,):
            raise ValueError(f"scores for {name} have shape {tuple(result[name].shape)}, "
                             f"the group has {group.channels} channels")
    result.blocks = {name: g.blocks for name, g in ctx.grouped.groups.items()}
    result.couplings = ctx.grouped.couplings()
    return result


def member(ctx: ScoreContext, group_name: str, module_name: str, axis: str = "out") -> Member:
    return ctx.grouped.groups[group_name].member(module_name, axis)


def to_group(values: torch.Tensor, member_: Member, channels: int) -> torch.Tensor:
    """Map a member's per-channel ``values`` (last dim = the member's channels along its axis)
    into the group's ``channels``: member channel ``channels[k]`` adds to group position
    ``positions[k]``; group channels the member does not cover get 0; several member channels of
    one group channel (a flatten) are summed."""
    local, positions = member_.index_map(channels)
    if member_.is_full() and values.shape[-1] == channels:
        return values
    out = torch.zeros(*values.shape[:-1], channels, dtype=values.dtype)
    return out.index_add(values.dim() - 1, positions, values.index_select(values.dim() - 1, local))


def from_group(values: torch.Tensor, member_: Member, channels: int, width: int, fill: float = 1.0) -> torch.Tensor:
    """The inverse direction for gates: group-space ``values`` (last dim ``channels``) laid onto a
    member of ``width`` channels; member channels outside the group keep ``fill``. Differentiable."""
    local, positions = member_.index_map(channels)
    if member_.is_full() and width == channels:
        return values
    base = torch.full((*values.shape[:-1], width), fill, dtype=values.dtype)
    return base.index_copy(values.dim() - 1, local, values.index_select(values.dim() - 1, positions))


def channel_axis(module: nn.Module) -> int:
    """The axis of a module's output that holds its channels: last for Linear/LayerNorm (token
    layouts ``(N, L, C)``), 1 for conv and batch norm (``(N, C, ...)``)."""
    return -1 if isinstance(module, (nn.Linear, nn.LayerNorm)) else 1


def gate_view(values: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-sample ``(N, C)`` or per-channel ``(C,)`` values shaped to broadcast over ``like``
    along ``axis``."""
    if axis == 1 or like.dim() <= 2:
        return channel_view(values, like)
    lead = values.shape[0] if values.dim() == 2 else 1
    return values.reshape(lead, *([1] * (like.dim() - 2)), values.shape[-1])


def per_channel(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """Sum over every dim but ``axis``: one value per channel."""
    axis = axis % tensor.dim()
    return tensor.sum(dim=[d for d in range(tensor.dim()) if d != axis])


def filter_rows(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A weight-shaped ``tensor`` of a conv/linear as ``(out channels, rest)``."""
    if getattr(module, "transposed", False):
        tensor = tensor.transpose(0, 1)
    return tensor.flatten(1)


def bn_sum(ctx: ScoreContext, group_name: str, fn: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor | None:
    """Σ over the group's affine BNs of ``fn(bn)`` mapped into the group; None without BNs."""
    group = ctx.grouped.groups[group_name]
    bns = [n for n in group.out_members() if isinstance(ctx.grouped.module(n), BatchNorm)
           and ctx.grouped.module(n).affine]
    if not bns:
        return None
    return sum(to_group(fn(ctx.grouped.module(n)).float(), group.member(n), group.channels) for n in bns)


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
    """The layers that read the group: conv/linear in-members that are not also out-members.

    Each consumer's input channels map into the group through its :class:`Member` (a conv that
    reads a concatenation sees the group at an offset). A Linear must read the group whole
    (``in_features`` a multiple of the group's channels: a flatten of k positions per channel).
    Consumers on the group's output axis (depthwise convs) are left out.
    """
    group = ctx.grouped.groups[group_name]
    outs = set(group.out_members())
    found = []
    for member_ in group.members:
        if member_.axis != "in" or member_.module in outs:
            continue
        module = ctx.grouped.module(member_.module)
        if isinstance(module, nn.Conv2d):
            found.append(member_.module)
        elif isinstance(module, nn.Linear) and module.in_features % group.channels == 0 and (
                member_.is_full() or len(member_.channels) == module.in_features):
            found.append(member_.module)
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
    group = ctx.grouped.groups[group_name]
    total = torch.zeros(group.channels)
    for name in group.out_members():
        module = ctx.grouped.module(name)
        if isinstance(module, Weighted):
            l1 = filter_rows(module, module.weight.detach()).abs().sum(1).float()
            total += to_group(l1, group.member(name), group.channels)
    return total


def l2_normalise(scores: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Θ / sqrt(ΣΘ²) (Molchanov 2017's per-layer rescaling, so layers compare globally)."""
    return scores / (scores.norm() + eps)

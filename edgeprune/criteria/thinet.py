"""ThiNet — Luo, Wu, Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network
Compression", ICCV 2017.

Channels of layer i are judged by what layer i+1 (the layer consuming them) computes. For a
sampled output entry of layer i+1 (image n, output channel k, position p), its value without the
bias splits into per-input-channel contributions

    ŷ = Σ_c x̂_c,   x̂_c = Σ_{kernel taps} W_{k,c} · x_c (the patch of input channel c).

Removing the set T of channels leaves an error Σ_samples (Σ_{c∈T} x̂_c)². ThiNet grows T
greedily, each time adding the channel that keeps this sum smallest. Running the greedy step to
the end orders every channel; the score is the position in that order (first removed = 0), so
pruning the r lowest-scored channels removes exactly ThiNet's greedy set of size r, for any r.
Scope "layer": ThiNet prunes each layer by a fixed ratio.

After pruning, ThiNet rescales the kept input channels of layer i+1 by least squares,
ŵ = argmin_w Σ (ŷ − Σ_{c∉T} w_c x̂_c)²: :func:`thinet_rescale` does this in place (deploy may
call it between planning and physical removal).

Choices and deviations:
- Sampling: ``samples_per_image`` random (output channel, position) pairs per image and
  consumer, as in the paper (10), from a seeded generator.
- A group read by several layers (a residual stream) stacks the samples of all its consumers into
  one objective. Consumers reading a concatenation (more inputs than the group) are skipped; a
  group with no usable consumer falls back to its filters' L1 norm.
- Conv2d consumers of any stride/dilation/groups/padding mode, and Linear consumers reading C·k
  features (a flatten of k positions per channel), are supported.
- The model runs in eval mode (BN running statistics); x is the consumer's actual input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import consumers, filter_l1, finish, require_batches, run_capturing_inputs, to_group


def _patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``(N, C·kh·kw, L)``: the input patch each output position of ``conv`` reads."""
    padding = conv.padding
    if isinstance(padding, str) or conv.padding_mode != "zeros":
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            pads = []
            for k, d in reversed(list(zip(conv.kernel_size, conv.dilation))):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            pads = tuple(pads)
        else:
            pads = tuple(conv._reversed_padding_repeated_twice)
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, pads, mode=mode)
        padding = 0
    return F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)


def entry_contributions(consumer: nn.Module, inputs: torch.Tensor, channels: int, rows: torch.Tensor,
                        outs: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """``(m, channels)``: x̂_c at the output entries (sample ``rows``, output channel ``outs``,
    position ``where``) of ``consumer``; each row sums to the entry's value minus the bias.

    For a Linear consumer ``rows`` index the flattened leading dimensions and ``where`` is unused.
    """
    m = rows.numel()
    weight = consumer.weight.detach().double()
    if isinstance(consumer, nn.Linear):
        flat = inputs.reshape(-1, inputs.shape[-1]).double()
        return (flat[rows] * weight[outs]).view(m, channels, -1).sum(-1)
    patches = _patches(consumer, inputs.double())
    taps = weight[0, 0].numel()
    sampled = patches[rows, :, where].view(m, channels, taps)
    per_group = weight.shape[1]
    group = outs // (weight.shape[0] // consumer.groups)
    index = group[:, None] * per_group + torch.arange(per_group)  # (m, C/groups) input channels
    picked = sampled.gather(1, index[..., None].expand(-1, -1, taps))
    values = (picked * weight[outs].view(m, per_group, taps)).sum(-1)
    return torch.zeros(m, channels, dtype=values.dtype).scatter_(1, index, values)


def consumer_contributions(consumer: nn.Module, inputs: torch.Tensor, channels: int,
                           samples_per_image: int, generator: torch.Generator) -> torch.Tensor:
    """:func:`entry_contributions` at ``samples_per_image`` random entries per image."""
    n = inputs.shape[0]
    rows = torch.arange(n).repeat_interleave(samples_per_image)
    m = rows.numel()
    if isinstance(consumer, nn.Linear):
        leading = inputs.reshape(-1, inputs.shape[-1]).shape[0]
        if leading != n:  # (N, *, F) inputs: sample among all leading positions
            rows = torch.randint(leading, (m,), generator=generator)
        outs = torch.randint(consumer.out_features, (m,), generator=generator)
        return entry_contributions(consumer, inputs, channels, rows, outs, rows)
    positions = _patches(consumer, inputs[:1]).shape[-1]
    outs = torch.randint(consumer.out_channels, (m,), generator=generator)
    where = torch.randint(positions, (m,), generator=generator)
    return entry_contributions(consumer, inputs, channels, rows, outs, where)


def thinet_contributions(ctx: ScoreContext, group_name: str | None = None, samples_per_image: int = 10,
                         seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``{group: {consumer: (m, C) contributions}}`` for one group or all, from ``ctx.batches``."""
    names = [group_name] if group_name is not None else list(ctx.grouped.groups)
    owners: dict[str, list[str]] = {}
    for g in names:
        for c in consumers(ctx, g):
            owners.setdefault(c, []).append(g)
    generator = torch.Generator().manual_seed(seed)
    collected: dict[str, list[torch.Tensor]] = {c: [] for c in owners}

    def width(consumer: str) -> int:
        module = ctx.grouped.module(consumer)
        # a conv is sampled over all its input channels (it may read a concatenation of several
        # groups) and mapped into each group; a Linear reads one group whole
        return module.in_channels if isinstance(module, nn.Conv2d) else ctx.grouped.groups[owners[consumer][0]].channels

    def take(consumer: str, x: torch.Tensor) -> None:
        collected[consumer].append(consumer_contributions(ctx.grouped.module(consumer), x, width(consumer),
                                                          samples_per_image, generator))

    run_capturing_inputs(ctx, set(owners), take)
    result: dict[str, dict[str, torch.Tensor]] = {g: {} for g in names}
    for consumer, parts in collected.items():
        if not parts:
            continue
        stacked = torch.cat(parts)
        for g in owners[consumer]:
            group = ctx.grouped.groups[g]
            if isinstance(ctx.grouped.module(consumer), nn.Conv2d):
                result[g][consumer] = to_group(stacked, group.member(consumer, "in"), group.channels)
            else:
                result[g][consumer] = stacked
    return result


def greedy_removal_order(contributions: torch.Tensor) -> list[int]:
    """ThiNet's greedy step run to the end: each time remove the channel that keeps
    Σ_samples (Σ_removed x̂)² smallest. ``||s + x_c||² = ||s||² + 2 s·x_c + ||x_c||²``."""
    x = contributions.double()
    norms = x.pow(2).sum(0)
    running = torch.zeros(x.shape[0], dtype=x.dtype)
    available = torch.ones(x.shape[1], dtype=torch.bool)
    order = []
    for _ in range(x.shape[1]):
        cost = norms + 2 * (x.T @ running)
        cost[~available] = float("inf")
        c = int(torch.argmin(cost))
        order.append(c)
        available[c] = False
        running += x[:, c]
    return order


def least_squares_scales(contributions: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """ŵ = argmin Σ (ŷ − Σ_{c∈kept} w_c x̂_c)², with ŷ the unpruned output Σ_c x̂_c."""
    x = contributions.double()
    target = x.sum(1, keepdim=True)
    return torch.linalg.lstsq(x[:, kept], target, driver="gelsd").solution.squeeze(1)


def reconstruction_error(contributions: torch.Tensor, kept: list[int], scales: torch.Tensor | None = None) -> float:
    """Σ_samples (ŷ − Σ_{c∈kept} w_c x̂_c)²: ThiNet's objective (w = 1 without ``scales``)."""
    x = contributions.double()
    w = torch.ones(len(kept), dtype=x.dtype) if scales is None else scales.double()
    return float((x.sum(1) - x[:, kept] @ w).pow(2).sum())


def _scale_inputs(consumer: nn.Module, channels: int, kept: list[int], scales: torch.Tensor) -> None:
    """Multiply the consumer's weights reading input channel ``kept[i]`` by ``scales[i]``."""
    weight = consumer.weight
    with torch.no_grad():
        if isinstance(consumer, nn.Linear):
            block = weight.shape[1] // channels
            for c, s in zip(kept, scales.tolist()):
                weight[:, c * block:(c + 1) * block] *= s
            return
        per_group = weight.shape[1]
        outs_per_group = weight.shape[0] // consumer.groups
        for c, s in zip(kept, scales.tolist()):
            g, local = divmod(c, per_group)
            weight[g * outs_per_group:(g + 1) * outs_per_group, local] *= s


def thinet_rescale(ctx: ScoreContext, group_name: str, kept: list[int], samples_per_image: int = 10,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Least-squares rescale, in place, of every consumer's weights on the ``kept`` channels of
    ``group_name`` (positions in the current layout); returns ``{consumer: scales}``.

    Call it on the unpruned model, then remove the other channels: the consumers then reproduce
    their unpruned outputs as well as a per-channel rescale allows (on the sampled entries the
    error never exceeds that of plain removal, since scales of 1 are one candidate).
    """
    kept = sorted(int(k) for k in kept)
    group = ctx.grouped.groups[group_name]
    found = thinet_contributions(ctx, group_name, samples_per_image, seed)[group_name]
    result = {}
    for consumer, contributions in found.items():
        scales = least_squares_scales(contributions, kept)
        module = ctx.grouped.module(consumer)
        if isinstance(module, nn.Conv2d):  # group positions -> this conv's own input channels
            local, positions = group.member(consumer, "in").index_map(group.channels)
            where = dict(zip(positions.tolist(), local.tolist()))
            _scale_inputs(module, module.in_channels, [where[k] for k in kept], scales)
        else:
            _scale_inputs(module, group.channels, kept, scales)
        result[consumer] = scales
    return result


@criteria.register("thinet")
class ThiNet:
    name = "thinet"
    paper = ("Luo, Wu, Lin, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression, "
             "ICCV 2017")
    scope = "layer"

    def __init__(self, samples_per_image: int = 10, seed: int = 0) -> None:
        if samples_per_image < 1:
            raise ValueError("samples_per_image must be >= 1")
        self.samples_per_image = samples_per_image
        self.seed = seed

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        require_batches(ctx, self.name)
        found = thinet_contributions(ctx, None, self.samples_per_image, self.seed)
        scores = {}
        for name, group in ctx.grouped.groups.items():
            if not found[name]:
                scores[name] = filter_l1(ctx, name)
                continue
            stacked = torch.cat(list(found[name].values()))
            order = greedy_removal_order(stacked)
            score = torch.empty(group.channels)
            score[torch.tensor(order)] = torch.arange(group.channels, dtype=torch.float32)
            scores[name] = score
        return finish(ctx, scores)

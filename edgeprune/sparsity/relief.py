"""NN Relief — Dekhovich, Tax, Sluiter, Bessa, "Neural network relief: a pruning algorithm based on
neural activity", Machine Learning 2024 (arXiv:2109.10795, 2021).

Scores come from the signal each connection carries on a pruning set of N inputs x_n:

- linear neuron j:  ``a_ij = mean_n |w_ij x_ni|`` for each input i, and ``a_bj = |b_j|``;
- conv filter j:    a *connection* is a kernel K_ij (input channel i → output channel j),
  ``a_ij = mean_n ‖ |K_ij| ∗ |x_ni| ‖_F`` (the convolution with the layer's stride, padding and
  dilation), and ``a_bj = |b_j| · √(H_out W_out)``;
- normalised per neuron: ``s_ij = a_ij / S_j`` with ``S_j = Σ_i a_ij + a_bj`` (so Σ s = 1).

Each neuron keeps the fewest connections (the bias counts as one) whose scores sum to at least α:
sort descending and keep the shortest prefix reaching α (α_conv = 0.9, α_fc = 0.95 in the paper).
Then dead neurons are dropped and the network retrained; the paper runs ~20 such rounds.

Dead neurons (:func:`drop_dead_neurons`, using the dependency groups of :mod:`edgeprune.graph`):
a channel no conv/linear reads any more (every consumer's input column is pruned) has its own
incoming connections and bias pruned too; a channel whose producers have no incoming connection,
no bias and no BatchNorm outputs exactly 0, so its outgoing connections are pruned. (A channel
followed by BN outputs the constant ``β`` even with no inputs, which feeds the next layer: it is
kept, since removing it would change the function; channels read by depthwise/grouped convs or
by a Linear after a flatten of several positions are left alone.)

Choices: scores are computed in eval mode (BN running statistics, the deployed function) with the
current masks applied to the weights; grouped/depthwise convs are not scored (left dense).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from edgeprune.training.finetune import TrainCallback, TrainConfig, train
from edgeprune.graph import GroupedModel
from edgeprune.sparsity import SparsityMethod, register_method
from edgeprune.sparsity.masks import WEIGHTED, MaskedTraining, Masks, qualified

PAPER = ("Dekhovich, Tax, Sluiter, Bessa, Neural network relief: a pruning algorithm based on neural "
         "activity, Machine Learning 2024 (arXiv:2109.10795)")

BatchNorm = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class NeuronScores:
    """One layer's normalised scores: ``connections`` (out, in) and ``bias`` (out,), rows sum to 1."""

    connections: torch.Tensor
    bias: torch.Tensor


def _scorable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _effective(module: nn.Module, name: str, masks: Masks | None, leaf: str) -> torch.Tensor | None:
    param = getattr(module, leaf)
    if param is None:
        return None
    key = qualified(name, leaf)
    return param.detach() * masks[key] if masks is not None and key in masks else param.detach()


def _conv_contributions(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Σ_n ‖ |K_ij| ∗ |x_ni| ‖_F as (out, in), and H_out·W_out. One grouped conv does all (i, j)."""
    cout, cin, kh, kw = weight.shape
    kernels = weight.abs().transpose(0, 1).reshape(cin * cout, 1, kh, kw)
    maps = F.conv2d(x.abs(), kernels, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=cin)
    norms = maps.flatten(2).norm(dim=2).view(x.shape[0], cin, cout)
    return norms.sum(0).t(), maps.shape[2] * maps.shape[3]


def _linear_contributions(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_n |w_ji x_ni| as (out, in)."""
    return x.reshape(-1, x.shape[-1]).abs().sum(0).unsqueeze(0) * weight.abs()


@torch.no_grad()
def relief_scores(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  masks: Masks | None = None, skip: Iterable[str] = ()) -> dict[str, NeuronScores]:
    """Normalised NN-Relief scores of every linear and (ungrouped) conv layer, keyed by module name."""
    skipped = set(skip)
    layers = {n: m for n, m in model.named_modules() if _scorable(m) and n not in skipped}
    sums: dict[str, torch.Tensor] = {}
    meta: dict[str, tuple[int, int]] = {}  # samples seen, output positions

    def hook_for(name: str, module: nn.Module):
        def hook(mod: nn.Module, args: tuple) -> None:
            weight = _effective(mod, name, masks, "weight")
            x = args[0].detach()
            if isinstance(mod, nn.Conv2d):
                contrib, positions = _conv_contributions(x, mod, weight)
                samples = x.shape[0]
            else:
                contrib, positions = _linear_contributions(x, weight), 1
                samples = x.reshape(-1, x.shape[-1]).shape[0]
            sums[name] = sums.get(name, 0) + contrib
            seen = meta.get(name, (0, positions))[0]
            meta[name] = (seen + samples, positions)

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n, m)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for x, _ in batches:
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    out = {}
    for name, module in layers.items():
        if name not in sums:
            continue
        samples, positions = meta[name]
        mean = sums[name] / samples
        bias = _effective(module, name, masks, "bias")
        bias_term = bias.abs() * math.sqrt(positions) if bias is not None else torch.zeros(mean.shape[0])
        total = (mean.sum(1) + bias_term).clamp_min(torch.finfo(mean.dtype).tiny)
        out[name] = NeuronScores(mean / total.unsqueeze(1), bias_term / total)
    return out


def minimal_cover(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per row, the fewest entries whose sum reaches ``alpha`` (largest first); rows of all 0 keep none."""
    if not 0 < alpha <= 1:
        raise ValueError("alpha must be in (0, 1]")
    ordered, order = torch.sort(scores.double(), dim=1, descending=True)
    before = ordered.cumsum(1) - ordered  # mass of the entries ranked above each one
    keep_sorted = (before < alpha - 1e-12) & (ordered > 0)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep


def relief_masks(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 alpha_conv: float = 0.9, alpha_fc: float = 0.95, masks: Masks | None = None,
                 drop_dead: bool = True, skip: Iterable[str] = ()) -> Masks:
    """One NN-Relief round: per neuron the fewest connections covering α of its score, within ``masks``.

    The result holds a mask for every scored weight (kernel-wise for convs) and for every bias.
    """
    result = cover_masks(model, relief_scores(model, batches, masks, skip), alpha_conv, alpha_fc, masks)
    if drop_dead:
        result = drop_dead_neurons(model, result, batches[0][0][:1])
    return result


def cover_masks(model: nn.Module, scores: dict[str, NeuronScores], alpha_conv: float, alpha_fc: float,
                masks: Masks | None = None) -> Masks:
    """The keep-masks of :func:`relief_masks` from precomputed scores (no dead-neuron pass).

    Separate so a caller searching for α (e.g. to meet a target density) scores the network once.
    """
    out = {}
    for name, sc in scores.items():
        module = model.get_submodule(name)
        alpha = alpha_conv if isinstance(module, nn.Conv2d) else alpha_fc
        keep = minimal_cover(torch.cat([sc.connections, sc.bias.unsqueeze(1)], 1), alpha)
        weight_keep = keep[:, :-1]
        if isinstance(module, nn.Conv2d):
            weight_keep = weight_keep[:, :, None, None].expand_as(module.weight)
        out[qualified(name, "weight")] = weight_keep.contiguous().to(module.weight.device)
        if module.bias is not None:
            out[qualified(name, "bias")] = keep[:, -1].contiguous().to(module.bias.device)
    if masks is not None:
        out = {n: m & masks[n] if n in masks else m for n, m in out.items()}
        out.update({n: m for n, m in masks.items() if n not in out})
    return Masks(out)


def _channel_axis_ok(module: nn.Module, channels: int) -> bool:
    if isinstance(module, nn.Linear):
        return module.in_features == channels
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1 and module.in_channels == channels


def drop_dead_neurons(model: nn.Module, masks: Masks, example: torch.Tensor) -> Masks:
    """Prune the connections of channels that nothing reads, and the readers of channels that are 0."""
    grouped = GroupedModel(model, example)
    out = masks.copy()
    for group in grouped.groups.values():
        if any(not m.is_full() for m in group.members):
            continue  # a concat/split member covers a slice: producer channels are not group positions
        outs = [m.module for m in group.members if m.axis == "out"]
        producers = [n for n in outs if isinstance(grouped.module(n), WEIGHTED)]
        has_bn = any(isinstance(grouped.module(n), BatchNorm) for n in outs)
        consumers = [m.module for m in group.members if m.axis == "in"]
        if any(not isinstance(grouped.module(n), (*WEIGHTED, BatchNorm)) for n in outs):
            continue  # another parameterised op (PReLU, LayerNorm, ...) touches the channel: unknown effect
        if not consumers or not all(_channel_axis_ok(grouped.module(c), group.channels) for c in consumers):
            continue
        for channel in range(group.channels):
            unread = all(not _column(out, c, channel, model).any() for c in consumers)
            silent = not has_bn and all(_produces_zero(out, p, channel, model) for p in producers)
            if unread or silent:
                _kill_channel(out, model, producers, consumers, channel)
    return out


def _mask_or_dense(masks: Masks, name: str, model: nn.Module) -> torch.Tensor:
    return masks[name] if name in masks else torch.ones_like(model.get_parameter(name), dtype=torch.bool)


def _column(masks: Masks, module: str, channel: int, model: nn.Module) -> torch.Tensor:
    return _mask_or_dense(masks, qualified(module, "weight"), model)[:, channel]


def _produces_zero(masks: Masks, module: str, channel: int, model: nn.Module) -> bool:
    layer = model.get_submodule(module)
    if _mask_or_dense(masks, qualified(module, "weight"), model)[channel].any():
        return False
    return layer.bias is None or not bool(_mask_or_dense(masks, qualified(module, "bias"), model)[channel]) \
        or float(layer.bias[channel]) == 0.0


def _kill_channel(masks: Masks, model: nn.Module, producers: list[str], consumers: list[str], channel: int) -> None:
    for module in producers:
        for leaf in ("weight", "bias"):
            key = qualified(module, leaf)
            if key in masks:
                masks[key][channel] = False
    for module in consumers:
        key = qualified(module, "weight")
        if key in masks:
            masks[key][:, channel] = False


def relief_prune(model: nn.Module, loader: DataLoader, config: TrainConfig,
                 batches: Sequence[tuple[torch.Tensor, torch.Tensor]], rounds: int = 20,
                 alpha_conv: float = 0.9, alpha_fc: float = 0.95,
                 callbacks: tuple[TrainCallback, ...] = ()) -> list[Masks]:
    """``rounds`` × (score on ``batches`` → prune → retrain with masks held); one Masks per round."""
    history: list[Masks] = []
    masks: Masks | None = None
    for _ in range(rounds):
        masks = relief_masks(model, batches, alpha_conv, alpha_fc, masks)
        masks.apply(model)
        train(model, loader, config, callbacks=(*callbacks, MaskedTraining(masks)), description="relief retrain")
        history.append(masks.copy())
    return history


register_method(SparsityMethod("relief", PAPER, "iterative", relief_masks))

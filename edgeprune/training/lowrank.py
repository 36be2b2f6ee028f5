"""Low-rank projection with energy transfer (LRPET) — Guo et al., "Compact Model Training by Low-Rank
Projection with Energy Transfer", IEEE TNNLS 2024 (arXiv:2204.05566; reference code:
github.com/canyyang/LRPET).

Each conv weight W (out, in, k, k) is viewed as the matrix W₂ (out, in·k·k). Training alternates
ordinary SGD epochs with a projection after each epoch:

1. BN rectification: when a BatchNorm follows the conv, project the weight the network effectively
   uses, ``M = diag(a) W₂`` with ``a = γ / √(σ² + ε_bn)`` (a small output channel barely matters).
2. SVD ``M = U diag(s) Vᵀ``; keep the top r singular values and transfer the energy of the
   dropped ones to them: ``s'_i = √α · s_i`` (i ≤ r), ``s'_i = 0`` (i > r) with
   ``α = ‖s‖² / ‖s_{1:r}‖²``.
   What is preserved: the total squared singular-value energy, ``Σ s'² = Σ s²``, i.e.
   ``‖M'‖_F² = ‖M‖_F²`` for the rectified matrix (= ‖W₂‖_F² itself when no BN follows).
3. Undo the rectification with the regularised inverse ``a / (a² + ε)`` (the reference code's,
   ε = 1e-5: a channel with γ ≈ 0 does not blow up), and write W back.

Finally :func:`factorize` replaces each projected conv by two convs: a k×k conv with r outputs
(``√S Vᵀ``) followed by a 1×1 conv to ``out`` (``U √S``, carrying the bias). Both are ordinary
``nn.Conv2d`` layers, so ``torch.export`` and ONNX export them like any conv. Since the projected
W₂ has rank ≤ r (row scaling keeps rank), the truncation in :func:`factorize` is exact.

Deviations from the paper: ranks are given (:func:`ranks_by_ratio` offers a uniform ratio) where
the paper searches them with Bayesian optimisation; :func:`train_lrpet` calls ``finetune.train``
once per epoch (it has no epoch hook), so the cosine learning-rate schedule and momentum restart
every epoch (warm restarts) instead of the paper's step schedule. Grouped/depthwise convs are not
projected.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.training.finetune import TrainCallback, TrainConfig, train

PAPER = ("Guo et al., Compact Model Training by Low-Rank Projection with Energy Transfer, IEEE TNNLS 2024 "
         "(arXiv:2204.05566)")

BatchNorm = nn.modules.batchnorm._BatchNorm
INVERSE_EPS = 1e-5  # the reference code's regulariser of 1/a


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """Conv name → the BatchNorm that directly consumes its output (and nothing else does).

    Found with ``torch.fx``; a model fx cannot trace gets no pairs (plain SVD, no rectification).
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - fx raises many types on untraceable code
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), nn.Conv2d) and len(source.users) == 1):
            pairs[str(source.target)] = str(node.target)
    return pairs


def bn_scale(bn: nn.Module) -> torch.Tensor:
    """``a = γ / √(σ² + ε)``: how much each output channel of the conv is amplified by its BN."""
    gamma = bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def energy_transfer(s: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """Singular values after projection: ``√α · s_{1:r}`` then zeros; and ``α = ‖s‖²/‖s_{1:r}‖²``."""
    if rank < 1:
        raise ValueError("rank must be >= 1")
    head = float(s[:rank].pow(2).sum())
    alpha = float(s.pow(2).sum()) / head if head > 0 else 1.0
    out = torch.zeros_like(s)
    out[:rank] = s[:rank] * math.sqrt(alpha)
    return out, alpha


@dataclass(frozen=True)
class Projection:
    """One conv's projection: rank kept, α, and the rectified energy before and after (equal)."""

    rank: int
    alpha: float
    energy_before: float
    energy_after: float


def project_weight(weight: torch.Tensor, rank: int, scale: torch.Tensor | None = None,
                   eps: float = INVERSE_EPS) -> tuple[torch.Tensor, Projection]:
    """The LRPET projection of one conv weight (see the module docstring), and its statistics."""
    matrix = weight.detach().reshape(weight.shape[0], -1).double()
    a = scale.detach().double().unsqueeze(1) if scale is not None else None
    rectified = matrix * a if a is not None else matrix
    u, s, vh = torch.linalg.svd(rectified, full_matrices=False)
    s_new, alpha = energy_transfer(s, min(rank, s.numel()))
    projected = (u * s_new) @ vh
    if a is not None:
        projected = projected * (a / (a * a + eps))
    stats = Projection(min(rank, s.numel()), alpha, float(s.pow(2).sum()), float(s_new.pow(2).sum()))
    return projected.reshape(weight.shape).to(weight.dtype), stats


def _projectable(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1


@torch.no_grad()
def lrpet_project(model: nn.Module, ranks: Mapping[str, int], eps: float = INVERSE_EPS,
                  pairs: Mapping[str, str] | None = None) -> dict[str, Projection]:
    """Project every conv named in ``ranks`` in place (BN-rectified, energy-transferring).

    ``pairs`` (conv → BN, from :func:`conv_bn_pairs`) may be passed by a caller that projects
    repeatedly, so the model is traced once rather than at every projection.
    """
    pairs = conv_bn_pairs(model) if pairs is None else pairs
    out = {}
    for name, rank in ranks.items():
        conv = model.get_submodule(name)
        if not _projectable(conv):
            raise ValueError(f"{name!r} is not an ungrouped Conv2d")
        scale = bn_scale(model.get_submodule(pairs[name])) if name in pairs else None
        projected, stats = project_weight(conv.weight, rank, scale, eps)
        conv.weight.copy_(projected)
        out[name] = stats
    return out


def ranks_by_ratio(model: nn.Module, ratio: float, skip: Iterable[str] = ()) -> dict[str, int]:
    """``r = max(1, ceil(ratio · min(out, in·k·k)))`` for every ungrouped conv not in ``skip``."""
    if not 0 < ratio <= 1:
        raise ValueError("ratio must be in (0, 1]")
    skipped = set(skip)
    return {name: max(1, math.ceil(ratio * min(m.out_channels, m.weight[0].numel())))
            for name, m in model.named_modules() if _projectable(m) and name not in skipped}


def train_lrpet(model: nn.Module, loader: DataLoader, config: TrainConfig, ranks: Mapping[str, int],
                epochs: int, callbacks: tuple[TrainCallback, ...] = ()) -> list[dict[str, Projection]]:
    """``epochs`` × (one epoch of ``finetune.train`` → :func:`lrpet_project`); stats per epoch.

    ``config.epochs`` is ignored: each call trains exactly one epoch (see the module docstring).
    """
    one_epoch = TrainConfig(epochs=1.0, lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay, kd_alpha=config.kd_alpha,
                            kd_temperature=config.kd_temperature)
    history = []
    for epoch in range(epochs):
        train(model, loader, one_epoch, callbacks=callbacks, description=f"LRPET epoch {epoch + 1}")
        history.append(lrpet_project(model, ranks))
    return history


def factor_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """Two convs equal to ``conv`` with its weight truncated to rank ``rank`` (exact if rank(W) ≤ r)."""
    if not _projectable(conv):
        raise ValueError("only ungrouped Conv2d layers can be factorised")
    out_c, in_c, kh, kw = conv.weight.shape
    u, s, vh = torch.linalg.svd(conv.weight.detach().reshape(out_c, -1).double(), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    spatial = nn.Conv2d(in_c, r, (kh, kw), stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                        bias=False, padding_mode=conv.padding_mode)
    pointwise = nn.Conv2d(r, out_c, 1, bias=conv.bias is not None)
    with torch.no_grad():
        spatial.weight.copy_((root.unsqueeze(1) * vh[:r]).reshape(r, in_c, kh, kw))
        pointwise.weight.copy_((u[:, :r] * root).reshape(out_c, r, 1, 1))
        if conv.bias is not None:
            pointwise.bias.copy_(conv.bias.detach())
    layer = nn.Sequential(OrderedDict(spatial=spatial, pointwise=pointwise))
    return layer.to(device=conv.weight.device, dtype=conv.weight.dtype)


def factorize(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Replace each conv named in ``ranks`` by :func:`factor_conv` (in place); returns ``model``.

    Worth it only when ``r·(in·k·k + out) < out·in·k·k``; the caller picks ranks with that in mind.
    """
    for name, rank in ranks.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, factor_conv(model.get_submodule(name), rank))
    return model

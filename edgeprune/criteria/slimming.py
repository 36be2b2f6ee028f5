"""Network Slimming — Liu, Li, Shen, Huang, Yan, Zhang, "Learning Efficient Convolutional Networks
through Network Slimming", ICCV 2017.

Training adds λ Σ|γ| over every BN scale γ to the loss; its subgradient λ·sign(γ) is added to
γ's gradient after the backward pass (:class:`SlimmingRegularizer`, a fine-tune callback;
λ = 1e-4 for VGG, 1e-5 for ResNet/DenseNet in the paper). Channels are then ranked by |γ| with
one percentile threshold over the whole network (scope "global"), and the pruned net is
fine-tuned; the paper repeats this (multi-pass).

Choices: a group coupled through a residual add has several BNs (one per branch); its score is
the sum of their |γ| (the channel leaves all of them). A group without any BN falls back to its
filters' L1 norm (documented deviation: the paper assumes a BN after every conv).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import BatchNorm, bn_sum, filter_l1, finish


@criteria.register("slimming")
class NetworkSlimming:
    name = "slimming"
    paper = ("Liu, Li, Shen, Huang, Yan, Zhang, Learning Efficient Convolutional Networks through "
             "Network Slimming, ICCV 2017")
    scope = "global"

    @torch.no_grad()
    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        scores = {}
        for name in ctx.grouped.groups:
            summed = bn_sum(ctx, name, lambda bn: bn.weight.detach().abs())
            scores[name] = summed if summed is not None else filter_l1(ctx, name)
        return finish(ctx, scores)


@dataclass(frozen=True)
class SlimmingRegularizer:
    """Fine-tune callback for sparsity training: γ.grad += λ·sign(γ) on every affine BN.

    Applied after backward (not as a loss term) exactly as the paper's code does, so the
    subgradient at γ = 0 is 0 and no autograd graph is built for the penalty.
    """

    lam: float = 1e-4

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError("the sparsity weight lam must be >= 0")

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_backward(self, model: nn.Module, step: int) -> None:
        for module in model.modules():
            if isinstance(module, BatchNorm) and module.affine and module.weight.grad is not None:
                module.weight.grad.add_(self.lam * torch.sign(module.weight.detach()))

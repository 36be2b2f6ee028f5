"""Taylor FO on BN gates — Molchanov, Mallya, Tyree, Frosio, Kautz, "Importance Estimation for
Neural Network Pruning", CVPR 2019 (variant "Taylor-FO-BN").

A gate g fixed at 1 multiplies each BN output y = gamma*x_hat + beta. Its first-order Taylor
importance is (g * dL/dg)^2, and since dL/dg = sum_pos dL/dy * y = gamma*dL/dgamma + beta*dL/dbeta,
no hook is needed. For a group, I = (sum over the group's coupled gates of g*dL/dg)^2, computed per
minibatch and averaged over the minibatches. Ranking is global across layers (scope "global").
Groups without a BN use the same FO term on their filters: (sum_s w_s dL/dw_s)^2.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext, out_parameters
from edgeprune.criteria.common import finish, to_group


def _gate_contribution(module: nn.Module) -> torch.Tensor | None:
    """g * dL/dg per output channel for a BN (the gate term) or a conv/linear (w * dL/dw)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        if module.weight.grad is None:
            return None
        return module.weight * module.weight.grad + module.bias * module.bias.grad
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.weight.grad is not None:
        product = module.weight * module.weight.grad
        if getattr(module, "transposed", False):
            product = product.transpose(0, 1)
        term = product.flatten(1).sum(1)
        if module.bias is not None and module.bias.grad is not None:
            term = term + module.bias * module.bias.grad
        return term
    return None


def _group_term(ctx: ScoreContext, group_name: str) -> torch.Tensor:
    """Σ of the coupled gate terms, each member's channels added where they sit in the group."""
    group = ctx.grouped.groups[group_name]
    modules = out_parameters(ctx, group_name)
    bns = [(n, m) for n, m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    chosen = bns or modules
    total = torch.zeros(group.channels)
    for name, module in chosen:
        contribution = _gate_contribution(module)
        if contribution is not None:
            total += to_group(contribution.detach().float(), group.member(name), group.channels)
    return total


@criteria.register("taylor")
class TaylorFOBN:
    name = "taylor"
    paper = "Molchanov et al., Importance Estimation for Neural Network Pruning, CVPR 2019 (Taylor-FO-BN)"
    scope = "global"

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        model = ctx.model
        was_training = model.training
        model.eval()  # BN uses running stats: y = gamma*x_hat + beta holds exactly
        sums = {name: torch.zeros(g.channels) for name, g in ctx.grouped.groups.items()}
        try:
            for x, y in ctx.batches:
                model.zero_grad(set_to_none=True)
                ctx.loss_fn(model(x), y).backward()
                for name in sums:
                    sums[name] += _group_term(ctx, name) ** 2
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        n = max(len(ctx.batches), 1)
        return finish(ctx, {name: s / n for name, s in sums.items()})

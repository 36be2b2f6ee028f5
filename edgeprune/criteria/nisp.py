"""NISP — Yu, Li, Chen, Lai, Morariu, Han, Gao, Lin, Davis, "NISP: Pruning Networks using Neuron
Importance Score Propagation", CVPR 2018.

1. Rank the neurons of the final response layer (FRL: here the classifier's input features) with a
   feature ranker. We use Inf-FS (Roffo, Melzi, Cristani, "Infinite Feature Selection", ICCV
   2015), the ranker the paper uses, in its unsupervised form:
       σ_ij = max(std_i, std_j), min-max scaled to [0, 1];  c_ij = 1 − |Spearman(x_i, x_j)|;
       A = α σ + (1 − α) c (α = 0.5);  r = 0.9 / ρ(A);  s = row sums of (I − rA)⁻¹ − I.
   (The σ scaling and α follow our reading of the authors' reference code: unverified.)
2. Propagate backward, ignoring nonlinearities (the paper's bound treats them as 1-Lipschitz):
       s_k = |W_{k+1}|ᵀ s_{k+1},  for a conv |W| summed over the kernel's spatial taps.

How the propagation runs on any topology: a surrogate forward pass in which every conv/linear is
replaced by its channel-level map with |W| (bias dropped, kernel taps summed), every norm layer by
the identity, on an all-ones input. All activations are then positive (each layer adds a constant
1, which leaves the Jacobian unchanged), so ReLUs pass gradients unchanged; the backward pass of
this linear surrogate from the FRL, seeded with the Inf-FS scores, is exactly s_k = |W|ᵀ s_{k+1}
through every path — residual adds sum the importances of both branches, concatenations route
them. Summed over positions, a tensor's gradient is its channels' importance; average pooling
spreads and sums back losslessly (pooling with padding loses a little at the borders).

A group whose channels appear in several tensors (a residual stream) takes the largest of its
out-layers' importances: the earliest occurrence, which already includes every path downstream.

Scope: "layer" by default — the paper prunes each layer by a given ratio, and the propagated
scores grow by orders of magnitude toward the input (sums of |W| products: ~10² at the last
stage, ~10⁶ at the stem of the width-8 demo net), so one global threshold would strip the last
layers only. ``NISP(scope="global")`` gives the global ranking anyway. Non-ReLU nonlinearities (sigmoid gates, ...) are
differentiated where the surrogate puts them, not treated as identity: a deviation for such nets.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import (Weighted, channel_axis, finish, per_channel, require_batches,
                                       run_capturing_inputs, scoring_mode, to_group)
from edgeprune.graph import output_layer_name

Norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def inf_fs(features: torch.Tensor, alpha: float = 0.5, factor: float = 0.9) -> torch.Tensor:
    """Inf-FS energy of each column of ``features`` (samples x features); higher = more relevant."""
    x = features.detach().double().cpu().numpy()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError("Inf-FS needs a (samples >= 2, features) matrix")
    std = x.std(axis=0, ddof=1)
    sigma = np.maximum(std[:, None], std[None, :])
    sigma = sigma - sigma.min()
    sigma = sigma / sigma.max() if sigma.max() > 0 else np.zeros_like(sigma)
    ranks = rankdata(x, axis=0)  # Spearman = Pearson on ranks; constant columns give NaN -> 0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(np.atleast_2d(np.corrcoef(ranks, rowvar=False)))
    corr = np.nan_to_num(corr, nan=0.0)
    a = alpha * sigma + (1 - alpha) * (1 - corr)
    rho = float(np.max(np.abs(np.linalg.eigvals(a))))
    if rho <= 0:
        return torch.ones(x.shape[1])
    eye = np.eye(a.shape[0])
    energy = np.linalg.inv(eye - (factor / rho) * a) - eye
    return torch.from_numpy(energy.sum(axis=1)).float()


def channel_matrix(module: nn.Module) -> torch.Tensor:
    """``(out, in)``: |W| summed over kernel taps, block-diagonal for grouped convs."""
    weight = module.weight.abs()
    if isinstance(module, nn.Linear):
        return weight
    summed = weight.flatten(2).sum(2)
    groups = module.groups
    if module.transposed:  # weight is (in, out/groups, ...)
        in_g, out_g = summed.shape[0] // groups, summed.shape[1]
        blocks = [summed[g * in_g:(g + 1) * in_g].T for g in range(groups)]
    else:
        out_g = summed.shape[0] // groups
        blocks = [summed[g * out_g:(g + 1) * out_g] for g in range(groups)]
    return torch.block_diag(*blocks)


def _surrogate_output(module: nn.Module, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The channel-level |W| map of ``module`` applied to ``x``, broadcast to ``like``'s shape."""
    if isinstance(module, nn.Linear):
        return F.linear(x, module.weight.abs()) + 1.0
    per_channel = x.mean(dim=tuple(range(2, x.dim())))  # the surrogate is spatially constant
    out = per_channel @ channel_matrix(module).T + 1.0
    return out.view(*out.shape, *([1] * (like.dim() - 2))) * torch.ones_like(like)


def frl_features(ctx: ScoreContext, classifier: str) -> torch.Tensor:
    """The classifier's inputs over all batches, flattened per sample: the final responses."""
    parts: list[torch.Tensor] = []
    run_capturing_inputs(ctx, {classifier}, lambda _n, x: parts.append(x.flatten(1)))
    return torch.cat(parts)


def propagate(ctx: ScoreContext, classifier: str, frl_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """s_k = |W_{k+1}|ᵀ s_{k+1} from the classifier input back to every group (see module doc)."""
    captured: dict[str, torch.Tensor] = {}
    seed: list[torch.Tensor] = []
    handles = []
    wanted = {m for g in ctx.grouped.groups.values() for m in g.out_members()}
    for name, module in ctx.model.named_modules():
        if isinstance(module, Weighted):
            def hook(mod, inputs, output, name=name):
                out = _surrogate_output(mod, inputs[0], output)
                if name in wanted:
                    captured[name] = out
                return out
            handles.append(module.register_forward_hook(hook))
        elif isinstance(module, Norms):
            handles.append(module.register_forward_hook(lambda _m, inputs, _out: inputs[0]))
    handles.append(ctx.grouped.module(classifier).register_forward_pre_hook(
        lambda _m, inputs: seed.append(inputs[0])))
    x = torch.ones_like(ctx.batches[0][0][:1]).requires_grad_(True)
    try:
        with scoring_mode(ctx.model), torch.enable_grad():
            ctx.model(x)
            names = list(captured)
            grads = torch.autograd.grad(seed[0], [captured[n] for n in names],
                                        grad_outputs=frl_scores.to(seed[0].dtype).view_as(seed[0]),
                                        allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    per_module = {n: per_channel(g.detach(), channel_axis(ctx.grouped.module(n))) for n, g in zip(names, grads)
                  if g is not None}
    scores = {}
    for group_name, group in ctx.grouped.groups.items():
        found = [to_group(per_module[m], group.member(m), group.channels) for m in group.out_members()
                 if m in per_module]
        scores[group_name] = (torch.stack(found).amax(0) if found else torch.zeros(group.channels)).float()
    return scores


@criteria.register("nisp")
class NISP:
    name = "nisp"
    paper = ("Yu et al., NISP: Pruning Networks using Neuron Importance Score Propagation, CVPR 2018 "
             "(FRL ranker: Inf-FS, Roffo et al. ICCV 2015)")
    scope = "layer"

    def __init__(self, alpha: float = 0.5, scope: Literal["global", "layer"] = "layer") -> None:
        if scope not in ("global", "layer"):
            raise ValueError("scope must be 'global' or 'layer'")
        self.alpha = alpha
        self.scope = scope

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        require_batches(ctx, self.name)
        classifier = output_layer_name(ctx.model)
        if classifier is None:
            raise ValueError("NISP needs a final classifier layer (Linear or Conv2d)")
        frl = inf_fs(frl_features(ctx, classifier), alpha=self.alpha)
        return finish(ctx, propagate(ctx, classifier, frl))

"""SOSP-H — Nonnenmacher, Pfeil, Steinwart, Reeb, "SOSP: Efficiently Capturing Global
Correlations by Second-Order Structured Pruning", ICLR 2022.

A structure s (one channel of a group) owns the weights θ_s: its filters' rows in every
out-member conv/linear (weights and bias) and its BN scale and shift — zeroing them all removes
the channel exactly. Removing a set M of structures changes the loss, to second order, by

    δL(M) ≈ −Σ_{s∈M} θ_sᵀ∇L + ½ Σ_{s,s'∈M} θ_sᵀ H θ_{s'} .

SOSP-H does not know M in advance and replaces the partner structures s' by the full weight
vector θ, which turns the second-order term into one Hessian-vector product for all structures:

    λ_s = | −θ_sᵀ∇L + ½ θ_sᵀ (H θ) | ,

ranked globally across layers (scope "global"). Gradients and the product are averaged over the
minibatches (the model runs in eval mode: BN uses running statistics).

The Hessian-vector product H θ:
- ``hessian="exact"`` (default): the exact Hessian of the loss, by double backward
  (Pearlmutter's trick: ∂/∂θ (∇L · θ̄) with θ̄ held constant).
- ``hessian="gauss-newton"``: the Gauss-Newton matrix Jᵀ ∇²_f ℓ J (what the paper uses), by a
  Jacobian-vector product (double-backward trick), the loss Hessian w.r.t. the outputs, and a
  vector-Jacobian product.
Where the paper places the absolute value and signs exactly is from our reading (unverified).
"""

from __future__ import annotations

from typing import Literal

import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import finish, require_batches, scoring_mode, to_group, twice_differentiable


def structure_parameters(ctx: ScoreContext, group_name: str) -> list[tuple[str, int, str]]:
    """``(parameter name, channel axis, module name)`` of every weight a channel of the group owns
    (map the module's channels into the group with its member: ``to_group``)."""
    params = dict(ctx.model.named_parameters())
    found = []
    for module_name in ctx.grouped.groups[group_name].out_members():
        module = ctx.grouped.module(module_name)
        axis = 1 if getattr(module, "transposed", False) else 0
        for kind in ("weight", "bias"):
            full = f"{module_name}.{kind}" if module_name else kind
            if full in params:
                found.append((full, 0 if kind == "bias" else axis, module_name))
    return found


def per_channel_dot(ctx: ScoreContext, group_name: str, left: dict[str, torch.Tensor],
                    right: dict[str, torch.Tensor]) -> torch.Tensor:
    """θ_sᵀ v for every channel s of the group: Σ over the structure's weights of left ⊙ right."""
    group = ctx.grouped.groups[group_name]
    total = torch.zeros(group.channels, dtype=torch.float64)
    for name, axis, module in structure_parameters(ctx, group_name):
        if name in left and name in right:
            product = (left[name] * right[name]).double()
            rows = product.transpose(0, axis).reshape(product.shape[axis], -1).sum(1)
            total += to_group(rows, group.member(module), group.channels)
    return total


def _exact_hvp(loss: torch.Tensor, params: list[torch.Tensor], vector: list[torch.Tensor]):
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, v) for g, v in zip(grads, vector) if g is not None and g.requires_grad]
    hv = torch.autograd.grad([g for g, _ in pairs], params, grad_outputs=[v for _, v in pairs],
                             allow_unused=True) if pairs else [None] * len(params)
    return [g.detach() if g is not None else None for g in grads], hv


def _gauss_newton_hvp(output: torch.Tensor, loss: torch.Tensor, params: list[torch.Tensor],
                      vector: list[torch.Tensor]):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    probe = torch.zeros_like(output, requires_grad=True)
    vjp = torch.autograd.grad(output, params, grad_outputs=probe, create_graph=True, allow_unused=True)
    pairs = [(g, v) for g, v in zip(vjp, vector) if g is not None]
    jv = torch.autograd.grad([g for g, _ in pairs], probe, grad_outputs=[v for _, v in pairs],
                             retain_graph=True)[0]  # J θ (the VJP is linear in the probe)
    dl_dout = torch.autograd.grad(loss, output, create_graph=True)[0]
    h_jv = torch.autograd.grad(dl_dout, output, grad_outputs=jv, retain_graph=True)[0]
    hv = torch.autograd.grad(output, params, grad_outputs=h_jv, allow_unused=True)
    return grads, hv


def gradient_and_hvp(ctx: ScoreContext, hessian: Literal["exact", "gauss-newton"] = "exact"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(∇L, H θ) keyed by parameter name, averaged over ``ctx.batches``, at the current θ."""
    named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    theta = [p.detach() for p in params]
    grad_sum = {n: torch.zeros_like(p) for n, p in named}
    hv_sum = {n: torch.zeros_like(p) for n, p in named}
    with scoring_mode(ctx.model):
        for x, y in ctx.batches:
            with twice_differentiable():
                output = ctx.model(x)
            loss = ctx.loss_fn(output, y)
            if hessian == "exact":
                grads, hv = _exact_hvp(loss, params, theta)
            else:
                grads, hv = _gauss_newton_hvp(output, loss, params, theta)
            for (n, _), g, h in zip(named, grads, hv):
                if g is not None:
                    grad_sum[n] += g.detach()
                if h is not None:
                    hv_sum[n] += h.detach()
    count = len(ctx.batches)
    return {n: g / count for n, g in grad_sum.items()}, {n: h / count for n, h in hv_sum.items()}


@criteria.register("sosp-h")
class SOSPH:
    name = "sosp-h"
    paper = ("Nonnenmacher, Pfeil, Steinwart, Reeb, SOSP: Efficiently Capturing Global Correlations by "
             "Second-Order Structured Pruning, ICLR 2022 (SOSP-H)")
    scope = "global"

    def __init__(self, hessian: Literal["exact", "gauss-newton"] = "exact") -> None:
        if hessian not in ("exact", "gauss-newton"):
            raise ValueError("hessian must be 'exact' or 'gauss-newton'")
        self.hessian = hessian

    def terms(self, ctx: ScoreContext) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per group: (θ_sᵀ∇L, ½ θ_sᵀ H θ) for each channel s, in float64."""
        require_batches(ctx, self.name)
        grads, hv = gradient_and_hvp(ctx, self.hessian)
        theta = {n: p.detach() for n, p in ctx.model.named_parameters()}
        return {name: (per_channel_dot(ctx, name, theta, grads), 0.5 * per_channel_dot(ctx, name, theta, hv))
                for name in ctx.grouped.groups}

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        return finish(ctx, {name: (-first + second).abs().float() for name, (first, second) in self.terms(ctx).items()})


__all__ = ["SOSPH", "gradient_and_hvp", "per_channel_dot", "structure_parameters"]

"""Taylor FO + SO on gates — Molchanov, Mallya, Tyree, Frosio, Kautz, "Importance Estimation for
Neural Network Pruning", CVPR 2019 (variant "Taylor SO"; NVlabs/Taylor_pruning method 11).

A gate m fixed at w_m = 1 multiplies each channel's feature map (after its BN). Removing the
channel sets the gate to 0, and the second-order Taylor expansion of the loss change is

    ΔL_m ≈ −g_m w_m + ½ w_m² H_mm,   g = ∂L/∂w,  H_mm = ∂²L/∂w_m²,

and the importance is I_m = (ΔL_m)² (the square, as for Taylor FO), computed per minibatch and
averaged over the minibatches; ranking is global across layers (scope "global").

The Hessian diagonal:
- ``hessian="exact"`` (default, as NVlabs' code does it): the exact diagonal by double backward,
  one Hessian row per gate. Cost: about one backward pass per channel and minibatch (fine for
  small nets; use "fisher" for big ones).
- ``hessian="fisher"``: the empirical-Fisher approximation H_mm ≈ mean_n (∂ℓ_n/∂w_m)² from
  per-example gate gradients (one backward pass). It is only an approximation of the Hessian
  (exact for neither the loss nor the paper); it assumes ``loss_fn`` is a mean over examples.

Where a residual add couples several maps into one group, one gate multiplies all of them (the
channel leaves every coupled map at once). The model runs in eval mode, so BN uses running
statistics and examples do not interact (needed for per-example gradients).
"""

from __future__ import annotations

from typing import Literal

import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import (channel_axis, feature_modules, finish, from_group, gate_view, output_hooks,
                                       require_batches, scoring_mode, twice_differentiable)


def _hessian_diagonal(grad: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Exact diag of ∂²L/∂gate² given ``grad = ∂L/∂gate`` built with ``create_graph=True``.

    One double-backward per gate. (``is_grads_batched`` computes all rows in one call but was
    ~20x slower here: vmap falls back to a loop on the conv/BN backward ops.)
    """
    diag = torch.zeros_like(gate)
    if not grad.requires_grad:  # the loss is linear in these gates: no curvature
        return diag
    for i in range(gate.numel()):
        row = torch.autograd.grad(grad[i], gate, retain_graph=True, allow_unused=True)[0]
        if row is not None:
            diag[i] = row[i]
    return diag


@criteria.register("taylor-so")
class TaylorSecondOrder:
    name = "taylor-so"
    paper = ("Molchanov, Mallya, Tyree, Frosio, Kautz, Importance Estimation for Neural Network "
             "Pruning, CVPR 2019 (Taylor FO+SO on gates)")
    scope = "global"

    def __init__(self, hessian: Literal["exact", "fisher"] = "exact") -> None:
        if hessian not in ("exact", "fisher"):
            raise ValueError("hessian must be 'exact' or 'fisher'")
        self.hessian = hessian

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        require_batches(ctx, self.name)
        maps = feature_modules(ctx)
        sums = {name: torch.zeros(g.channels) for name, g in ctx.grouped.groups.items()}
        with scoring_mode(ctx.model):
            for x, y in ctx.batches:
                for name, change in self.loss_changes(ctx, maps, x, y).items():
                    sums[name] += change ** 2
        return finish(ctx, {name: s / len(ctx.batches) for name, s in sums.items()})

    def loss_changes(self, ctx: ScoreContext, maps: dict[str, tuple[str, ...]], x: torch.Tensor,
                     y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per group, the predicted ΔL of closing each gate: −g + ½ H_diag (gates at 1)."""
        dtype = next(ctx.model.parameters()).dtype
        gates = {name: torch.ones(g.channels, dtype=dtype, requires_grad=True)
                 for name, g in ctx.grouped.groups.items()}
        expanded = {name: gate * torch.ones(x.shape[0], 1, dtype=dtype) for name, gate in gates.items()}
        owners: dict[str, list[str]] = {}
        for name, members in maps.items():
            for m in members:
                owners.setdefault(m, []).append(name)

        def gated(m: str):
            axis = channel_axis(ctx.grouped.module(m))

            def fn(out: torch.Tensor) -> torch.Tensor:
                # a map covering slices of several groups (a concat branch) gets each group's gates
                for g in owners[m]:
                    group = ctx.grouped.groups[g]
                    gate = from_group(expanded[g], group.member(m), group.channels, out.shape[axis])
                    out = out * gate_view(gate, out, axis)
                return out
            return fn
        fns = {m: gated(m) for m in owners}
        with output_hooks(ctx.model, fns), twice_differentiable():
            loss = ctx.loss_fn(ctx.model(x), y)
        names = list(gates)
        if self.hessian == "exact":
            grads = torch.autograd.grad(loss, [gates[n] for n in names], create_graph=True, allow_unused=True)
            result = {}
            for name, grad in zip(names, grads):
                if grad is None:
                    result[name] = torch.zeros(gates[name].numel())
                    continue
                diag = _hessian_diagonal(grad, gates[name])
                result[name] = (-grad + 0.5 * diag).detach().float()
            return result
        per_example = torch.autograd.grad(loss, [expanded[n] for n in names], allow_unused=True)
        result = {}
        for name, grad in zip(names, per_example):
            if grad is None:
                result[name] = torch.zeros(gates[name].numel())
                continue
            fisher = (grad * x.shape[0]).pow(2).mean(0)  # grad[n] = (1/N) dℓ_n/dgate
            result[name] = (-grad.sum(0) + 0.5 * fisher).detach().float()
        return result

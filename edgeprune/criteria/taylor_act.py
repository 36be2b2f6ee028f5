"""Taylor FO on activations — Molchanov, Tyree, Karras, Aila, Kautz, "Pruning Convolutional
Neural Networks for Resource Efficient Inference", ICLR 2017.

Removing feature map z_k changes the cost by |ΔC| ≈ |∂C/∂z_k · z_k| (first-order Taylor, the
remainder dropped). The criterion is

    Θ(z_k) = | mean over batch and positions of (∂C/∂z_k · z_k) |,

then rescaled per layer, Θ / sqrt(Σ_layer Θ²), so that layers compare in one global ranking
(scope "global"). Minibatches are averaged before the normalisation.

How it is measured: a gate of ones multiplies each feature map (the BN output where a BN follows
the conv, else the conv output); ∂C/∂gate[n, c] = Σ_positions ∂C/∂z · z exactly, and the gate
leaves the forward pass unchanged. Gating (instead of storing z) stays correct when an in-place
ReLU later overwrites z.

Deviations and choices:
- Where a residual add couples several layers into one group, removing channel k zeroes it in
  every coupled map, so the products are summed over the coupled maps before the absolute value
  (first-order change of zeroing them all).
- C is the minibatch-mean loss, so ∂C/∂z carries a 1/N; this scales every channel alike.
- ``reduction="example"`` takes |·| per example and then averages over the minibatch, which is
  how we read the paper's remark for minibatches of T > 1 examples (unverified against the PDF);
  the default ``"batch"`` is the formula above.
"""

from __future__ import annotations

from typing import Literal

import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import (channel_axis, feature_modules, finish, gate_view, l2_normalise,
                                       output_hooks, require_batches, scoring_mode, to_group)


def _gated_products(ctx: ScoreContext, maps: dict[str, tuple[str, ...]], x: torch.Tensor,
                    y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per group, ``(N, C)``: mean over positions of ∂C/∂z·z, summed over the group's maps."""
    gates: dict[str, torch.Tensor] = {}
    positions: dict[str, int] = {}

    def gate_for(name: str):
        axis = channel_axis(ctx.grouped.module(name))

        def fn(output: torch.Tensor) -> torch.Tensor:
            gate = torch.ones(output.shape[0], output.shape[axis], dtype=output.dtype, requires_grad=True)
            gates[name] = gate
            positions[name] = output[0].numel() // output.shape[axis]
            return output * gate_view(gate, output, axis)
        return fn

    names = {n for members in maps.values() for n in members}
    with output_hooks(ctx.model, {n: gate_for(n) for n in names}):
        loss = ctx.loss_fn(ctx.model(x), y)
    used = [n for n in names if n in gates]
    grads = torch.autograd.grad(loss, [gates[n] for n in used], allow_unused=True)
    per_map = {n: (g if g is not None else torch.zeros_like(gates[n])) / positions[n]
               for n, g in zip(used, grads)}
    result = {}
    for group_name, members in maps.items():
        group = ctx.grouped.groups[group_name]
        total = torch.zeros(x.shape[0], group.channels)
        for n in members:
            if n in per_map:  # a member covering part of the group adds to its own channels
                total += to_group(per_map[n].detach().float(), group.member(n), group.channels)
        result[group_name] = total
    return result


@criteria.register("taylor-act")
class TaylorActivation:
    name = "taylor-act"
    paper = ("Molchanov, Tyree, Karras, Aila, Kautz, Pruning Convolutional Neural Networks for "
             "Resource Efficient Inference, ICLR 2017")
    scope = "global"

    def __init__(self, reduction: Literal["batch", "example"] = "batch", normalise: bool = True) -> None:
        if reduction not in ("batch", "example"):
            raise ValueError("reduction must be 'batch' or 'example'")
        self.reduction = reduction
        self.normalise = normalise

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        require_batches(ctx, self.name)
        maps = feature_modules(ctx)
        sums = {name: torch.zeros(g.channels) for name, g in ctx.grouped.groups.items()}
        with scoring_mode(ctx.model):
            for x, y in ctx.batches:
                for name, products in _gated_products(ctx, maps, x, y).items():
                    sums[name] += self._reduce(products)
        n = len(ctx.batches)
        return finish(ctx, {name: (l2_normalise(s / n) if self.normalise else s / n) for name, s in sums.items()})

    def _reduce(self, products: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` per-example position means -> one value per channel."""
        if self.reduction == "example":
            return products.abs().mean(0)
        return products.mean(0).abs()

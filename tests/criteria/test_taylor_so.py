"""Taylor FO+SO on gates (Molchanov 2019): (−g + ½H_mm)² is the exact squared loss change when the
loss is quadratic in each gate; the Fisher variant uses mean squared per-example gradients."""

from __future__ import annotations

import copy

import torch

from edgeprune.criteria.taylor_so import TaylorSecondOrder
from tests.criteria.toys import GateLinear, context, randomise_bn


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Quadratic in the output, which is linear in each gate: the 2nd-order expansion is exact."""
    return (output - target).pow(2).sum(1).mean()


def setup():
    torch.manual_seed(0)
    model = randomise_bn(GateLinear().double())
    g = torch.Generator().manual_seed(2)
    batches = ((torch.rand(8, 2, 6, 6, generator=g).double(), torch.randn(8, 3, generator=g).double()),)
    return model, context(model, batches, squared_error)


def test_exact_second_order_equals_removal_loss_change_squared():
    model, ctx = setup()
    x, y = ctx.batches[0]
    exact = []
    for c in range(4):
        pruned = copy.deepcopy(model)
        context(pruned, ctx.batches, squared_error).grouped.remove("conv", [c])
        with torch.no_grad():
            exact.append(float(squared_error(pruned(x), y) - squared_error(model(x), y)) ** 2)
    scores = TaylorSecondOrder("exact")(ctx)["conv"].double()
    assert torch.allclose(scores, torch.tensor(exact, dtype=torch.float64), rtol=1e-4)
    # the first-order term alone is not enough here: SO matters
    fo_only = TaylorSecondOrder("exact")
    changes = fo_only.loss_changes(ctx, {"conv": ("bn",)}, x, y)["conv"].double()
    assert torch.allclose(changes ** 2, scores, rtol=1e-5)


def test_fisher_variant_uses_mean_squared_per_example_gradient():
    model, ctx = setup()
    x, y = ctx.batches[0]
    per_example = []
    for n in range(len(x)):
        gate = torch.ones(4, dtype=torch.float64, requires_grad=True)
        handle = model.bn.register_forward_hook(lambda _m, _i, out: out * gate.view(1, -1, 1, 1))
        loss = squared_error(model(x[n:n + 1]), y[n:n + 1])
        handle.remove()
        per_example.append(torch.autograd.grad(loss, gate)[0])
    grads = torch.stack(per_example)
    expected = (-grads.mean(0) + 0.5 * grads.pow(2).mean(0)) ** 2
    scores = TaylorSecondOrder("fisher")(ctx)["conv"].double()
    assert torch.allclose(scores, expected, rtol=1e-4)

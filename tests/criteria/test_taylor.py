"""Taylor FO on BN gates (Molchanov 2019, the existing ``taylor``): for a model whose loss is
linear in a channel's gate, the first-order term is the exact loss change of removing it."""

from __future__ import annotations

import copy

import torch

from edgeprune.criteria import get_criterion
from tests.criteria.toys import GateLinear, context, randomise_bn


def linear_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Linear in the output, hence in every gate of GateLinear: Taylor FO is exact."""
    return (output * target).sum(1).mean()


def removed_loss_change(model, ctx, channel: int) -> float:
    """Physically remove the channel from a copy and measure the loss change."""
    x, y = ctx.batches[0]
    pruned = copy.deepcopy(model)
    grouped = context(pruned, ctx.batches, ctx.loss_fn).grouped
    grouped.remove("conv", [channel])
    with torch.no_grad():
        return float(linear_loss(pruned(x), y) - linear_loss(model(x), y))


def test_taylor_fo_equals_exact_loss_change_when_loss_is_linear_in_the_gate():
    torch.manual_seed(0)
    model = randomise_bn(GateLinear().double())
    g = torch.Generator().manual_seed(1)
    batches = ((torch.rand(8, 2, 6, 6, generator=g).double(), torch.randn(8, 3, generator=g).double()),)
    ctx = context(model, batches, linear_loss)
    scores = get_criterion("taylor")(ctx)["conv"]
    exact = torch.tensor([removed_loss_change(model, ctx, c) ** 2 for c in range(4)], dtype=torch.float64)
    assert torch.allclose(scores.double(), exact, rtol=1e-4, atol=1e-10)
    assert exact.min() > 0  # the check is not vacuous

"""Gradient-matrix redundancy: the rank deficiency of a group's gradient matrix bounds its
prunable share, and the channels beyond the bound (duplicates, dead ones) score lowest."""

from __future__ import annotations

import torch

from edgeprune.criteria.grad_redundancy import (GradientRedundancy, gradient_matrices, numerical_rank,
                                                redundancy_budget, redundancy_fraction)
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def test_numerical_rank_of_a_low_rank_matrix():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 10, generator=g, dtype=torch.float64)
    assert numerical_rank(low, energy=1.0) == 2
    assert redundancy_fraction(low, energy=1.0) == 4 / 6
    full = torch.randn(6, 10, generator=g, dtype=torch.float64)
    assert numerical_rank(full, energy=1.0) == 6
    assert numerical_rank(torch.zeros(3, 4)) == 0 and redundancy_fraction(torch.zeros(3, 4)) == 2 / 3


def duplicated_model() -> TwoConv:
    """conv2 channel 2 copies channel 0 (filter, BN, classifier column); channel 3 is dead."""
    torch.manual_seed(0)
    model = randomise_bn(TwoConv(c1=3, c2=4)).double()
    with torch.no_grad():
        model.conv2.weight[2] = model.conv2.weight[0]
        for tensor in (model.bn2.weight, model.bn2.bias, model.bn2.running_mean, model.bn2.running_var):
            tensor[2] = tensor[0]
        model.fc.weight[:, 2] = model.fc.weight[:, 0]
        model.fc.weight[:, 3] = 0.0  # nothing downstream reads channel 3: zero gradient
    return model


def test_duplicate_and_dead_channels_are_the_redundant_ones():
    model = duplicated_model()
    batches = tuple((x.double(), y) for x, y in image_batches(2, 6, (1, 6, 6), 3))
    ctx = context(model, batches)
    matrix = gradient_matrices(ctx)["conv2"]
    assert torch.allclose(matrix[0], matrix[2]) and torch.count_nonzero(matrix[3]) == 0
    assert redundancy_budget(ctx, energy=1.0)["conv2"] == 0.5
    scores = GradientRedundancy(energy=1.0)(ctx)["conv2"]
    assert int(torch.argmin(scores)) == 3  # the dead channel goes first
    beyond = {c for c in range(4) if scores[c] < 1}
    assert len(beyond) == 2 and 3 in beyond and len(beyond & {0, 2}) == 1
    assert scores[1] > 1  # the unique channel is inside the bound
    assert all(p.grad is None for p in model.parameters())

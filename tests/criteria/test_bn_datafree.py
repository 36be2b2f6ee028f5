"""BN data-free score (Oh et al. 2022): E[max(0, X)], X ~ N(β, γ²)."""

from __future__ import annotations

import torch

from edgeprune.criteria import get_criterion
from edgeprune.criteria.bn_datafree import expected_relu
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def test_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    beta = torch.tensor([0.0, 1.0, -1.0, 0.3, -2.0], dtype=torch.float64)
    gamma = torch.tensor([1.0, 0.5, 2.0, -0.7, 0.3], dtype=torch.float64)  # sign of γ is irrelevant
    samples = beta + gamma.abs() * torch.randn(400_000, 5, generator=g, dtype=torch.float64)
    monte_carlo = samples.clamp(min=0).mean(0)
    assert torch.allclose(expected_relu(beta, gamma), monte_carlo, atol=4e-3)


def test_zero_scale_is_relu_of_shift():
    value = expected_relu(torch.tensor([0.5, -0.5]), torch.tensor([0.0, 0.0]))
    assert torch.allclose(value, torch.tensor([0.5, 0.0], dtype=torch.float64))


def test_criterion_uses_the_group_bn():
    model = randomise_bn(TwoConv())
    scores = get_criterion("bn-datafree")(context(model, image_batches(1, 2, (1, 8, 8), 3)))
    expected = expected_relu(model.bn2.bias.detach(), model.bn2.weight.detach()).float()
    assert torch.allclose(scores["conv2"], expected)

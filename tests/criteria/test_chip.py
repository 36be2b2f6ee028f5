"""CHIP (Sui et al. 2021): CI_i = ‖A‖_* − ‖A with row i zeroed‖_*, averaged over images."""

from __future__ import annotations

import pytest
import torch

from edgeprune.criteria import get_criterion
from edgeprune.criteria.chip import channel_independence
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def direct(maps: torch.Tensor) -> torch.Tensor:
    """The definition, by SVD, summed over samples."""
    total = torch.zeros(maps.shape[1], dtype=torch.float64)
    for a in maps.double():
        full = torch.linalg.matrix_norm(a, ord="nuc")
        for i in range(a.shape[0]):
            zeroed = a.clone()
            zeroed[i] = 0
            total[i] += full - torch.linalg.matrix_norm(zeroed, ord="nuc")
    return total


@pytest.mark.parametrize("shape", [(3, 4, 9), (2, 6, 4)])  # c <= hw and c > hw
def test_channel_independence_equals_nuclear_norm_difference(shape):
    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(channel_independence(maps), direct(maps), rtol=1e-7, atol=1e-9)


def test_criterion_on_post_relu_maps():
    torch.manual_seed(0)
    model = randomise_bn(TwoConv(c1=4, c2=5))
    batches = image_batches(2, 3, (1, 5, 5), 3)
    scores = get_criterion("chip")(context(model, batches))
    total = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for x, _ in batches:
            maps = model.relu(model.bn1(model.conv1(x)))  # what conv2 reads
            total += direct(maps.flatten(2))
    assert torch.allclose(scores["conv1"].double(), total / 6, rtol=1e-5)

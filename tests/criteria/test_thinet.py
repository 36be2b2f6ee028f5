"""ThiNet (Luo et al. 2017): greedy channel selection by the next layer's reconstruction error,
and the least-squares rescale of the kept weights."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from edgeprune.criteria.thinet import (ThiNet, entry_contributions, greedy_removal_order, reconstruction_error,
                                       thinet_contributions, thinet_rescale)
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
    nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect", dilation=1),
    nn.Conv2d(4, 5, 3, padding="same", dilation=2),
    nn.Conv2d(4, 3, 2, stride=1, padding=0),
])
def test_contributions_sum_to_the_layer_output(conv):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        out = (conv(x) - conv.bias.view(1, -1, 1, 1)).double()
    n, k, h, w = out.shape
    rows, outs, where = (t.flatten() for t in torch.meshgrid(torch.arange(n), torch.arange(k),
                                                              torch.arange(h * w), indexing="ij"))
    parts = entry_contributions(conv, x, 4, rows, outs, where)
    assert torch.allclose(parts.sum(1), out.flatten(), atol=1e-6)


def test_linear_contributions_sum_to_the_layer_output():
    torch.manual_seed(0)
    fc = nn.Linear(8, 3)  # reads 4 channels x 2 positions
    x = torch.randn(5, 8)
    rows, outs = (t.flatten() for t in torch.meshgrid(torch.arange(5), torch.arange(3), indexing="ij"))
    parts = entry_contributions(fc, x, 4, rows, outs, rows)
    with torch.no_grad():
        assert torch.allclose(parts.sum(1), (fc(x) - fc.bias).double().flatten(), atol=1e-6)


def next_layer_error(model: TwoConv, batches, kept: list[int]) -> float:
    """Squared error of conv2's (bias-free) output when conv1's other channels are removed."""
    total = 0.0
    with torch.no_grad():
        for x, _ in batches:
            inputs = model.relu(model.bn1(model.conv1(x)))
            mask = torch.zeros(inputs.shape[1])
            mask[kept] = 1
            total += float((model.conv2(inputs * mask.view(1, -1, 1, 1)) - model.conv2(inputs)).pow(2).sum())
    return total


def setup():
    torch.manual_seed(0)
    model = randomise_bn(TwoConv(c1=6, c2=8))
    batches = image_batches(2, 8, (1, 10, 10), 3)
    return model, batches, context(model, batches)


def test_greedy_set_reconstructs_better_than_random_sets():
    model, batches, ctx = setup()
    scores = ThiNet(samples_per_image=10)(ctx)["conv1"]
    keep = 3
    chosen = torch.argsort(scores, descending=True)[:keep].tolist()
    errors = sorted(next_layer_error(model, batches, list(s)) for s in itertools.combinations(range(6), keep))
    mine = next_layer_error(model, batches, chosen)
    assert mine <= errors[len(errors) // 4]  # within the best quarter of all 20 subsets
    assert mine < sum(errors) / len(errors)  # and better than a random subset on average


def test_greedy_order_first_step_is_the_smallest_contribution():
    torch.manual_seed(0)
    x = torch.randn(50, 5).double()
    order = greedy_removal_order(x)
    assert order[0] == int(torch.argmin(x.pow(2).sum(0)))
    running = x[:, order[0]]
    second = min((c for c in range(5) if c != order[0]), key=lambda c: float((running + x[:, c]).pow(2).sum()))
    assert order[1] == second
    assert sorted(order) == list(range(5))


def test_rescale_never_increases_the_error():
    model, batches, ctx = setup()
    kept = [0, 2, 5]
    samples = thinet_contributions(ctx, "conv1", samples_per_image=40, seed=3)["conv1"]["conv2"]
    before_full = next_layer_error(model, batches, kept)
    rescaled = copy.deepcopy(model)
    rctx = context(rescaled, batches)
    scales = thinet_rescale(rctx, "conv1", kept, samples_per_image=40, seed=3)["conv2"]
    # on the sampled entries least squares is optimal, so never worse than plain removal
    assert reconstruction_error(samples, kept, scales) <= reconstruction_error(samples, kept) + 1e-9
    # the rescaled weights carry over to the full output of the next layer
    after_full = 0.0
    with torch.no_grad():
        for x, _ in batches:
            inputs = model.relu(model.bn1(model.conv1(x)))
            mask = torch.zeros(6)
            mask[kept] = 1
            after_full += float((rescaled.conv2(inputs * mask.view(1, -1, 1, 1)) - model.conv2(inputs)).pow(2).sum())
    assert after_full <= before_full
    untouched = [c for c in range(6) if c not in kept]
    assert torch.equal(rescaled.conv2.weight[:, untouched], model.conv2.weight[:, untouched])
    assert torch.allclose(rescaled.conv2.weight[:, kept],
                          model.conv2.weight[:, kept] * scales.float().view(1, -1, 1, 1))

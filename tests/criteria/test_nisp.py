"""NISP (Yu et al. 2018): Inf-FS scores on the classifier input propagated back by s_k = |W|ᵀ s_{k+1}."""

from __future__ import annotations

import numpy as np
import torch

from edgeprune.criteria.nisp import NISP, frl_features, inf_fs
from edgeprune.models.demo_net import build_demo_net
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def summed_abs(conv: torch.nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().sum((2, 3))  # (out, in)


def test_two_layer_closed_form():
    torch.manual_seed(0)
    model = randomise_bn(TwoConv(c1=4, c2=6))
    ctx = context(model, image_batches(2, 8, (1, 8, 8), 3))
    frl = inf_fs(frl_features(ctx, "fc"))
    scores = NISP()(ctx)
    assert torch.allclose(scores["conv2"], frl, rtol=1e-5)
    assert torch.allclose(scores["conv1"], summed_abs(model.conv2).T @ frl, rtol=1e-5)


def test_residual_stream_sums_both_paths():
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4))
    ctx = context(net, image_batches(2, 8, (1, 32, 32), 10))
    frl = inf_fs(frl_features(ctx, "fc"))
    scores = NISP()(ctx)
    block = net.stage2[1]
    inner = summed_abs(block.conv2).T @ frl  # importance of the block's inner channels
    assert torch.allclose(scores["stage2.1.conv1"], inner, rtol=1e-4)
    # the stream feeds the classifier directly (skip path) and through the block
    assert torch.allclose(scores["stage2.0.0"], frl + summed_abs(block.conv1).T @ inner, rtol=1e-4)


def test_inf_fs_prefers_varying_uncorrelated_features():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 1, generator=g)
    features = torch.cat([base, base * 1.01, 0.01 * torch.randn(200, 1, generator=g),
                          torch.randn(200, 1, generator=g)], 1)
    scores = inf_fs(features)
    # the independent high-variance feature beats the two near-duplicates, the tiny one ranks last
    assert int(torch.argmax(scores)) == 3 and int(torch.argmin(scores)) == 2
    assert np.isfinite(scores.numpy()).all()

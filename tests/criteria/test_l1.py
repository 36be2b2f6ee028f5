"""L1 filter norm (Li et al. 2017): the score is the filter's summed |weight|."""

from __future__ import annotations

import torch

from edgeprune.criteria import get_criterion
from edgeprune.models.demo_net import build_demo_net
from tests.criteria.toys import context, image_batches


def test_zeroed_filter_ranks_last_and_scores_are_filter_sums():
    torch.manual_seed(0)
    net = build_demo_net(width=8).eval()
    with torch.no_grad():
        net.stage1[1].conv1.weight[3].zero_()
    ctx = context(net, image_batches(1, 2, (1, 32, 32), 10))
    scores = get_criterion("l1")(ctx)
    group = scores["stage1.1.conv1"]
    assert int(torch.argmin(group)) == 3 and float(group[3]) == 0.0
    expected = net.stage1[1].conv1.weight.detach().abs().sum((1, 2, 3))
    assert torch.allclose(group, expected)

"""The random baseline: reproducible for a seed, different across seeds."""

from __future__ import annotations

import torch

from edgeprune.criteria.random_baseline import RandomScores
from edgeprune.models.demo_net import build_demo_net
from tests.criteria.toys import context, image_batches


def test_seeded_and_reproducible():
    ctx = context(build_demo_net(width=4).eval(), image_batches(1, 2, (1, 32, 32), 10))
    a, b, c = RandomScores(7)(ctx), RandomScores(7)(ctx), RandomScores(8)(ctx)
    assert all(torch.equal(a[g], b[g]) for g in a)
    assert any(not torch.equal(a[g], c[g]) for g in a)
    assert all(len(a[g]) == ctx.grouped.groups[g].channels for g in a)

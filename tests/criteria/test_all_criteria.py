"""Every registered criterion: one finite score per channel for every group of the demo net, a
plan the planner accepts, and the model left exactly as it was."""

from __future__ import annotations

import pytest
import torch

from edgeprune.criteria import criteria, get_criterion, load_builtin
from edgeprune.criteria.base import ScoreContext
from edgeprune.graph import GroupedModel
from edgeprune.models.demo_net import build_demo_net
from edgeprune.plan import PruningPlan
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.prune import apply_plan

load_builtin()

EXPECTED = {"l1", "taylor", "taylor-act", "taylor-so", "thinet", "nisp", "sosp-h", "slimming", "bn-datafree",
            "chip", "grad-redundancy", "random"}


def test_all_seed_methods_are_registered():
    assert EXPECTED <= set(criteria.names())


@pytest.fixture(scope="module")
def digit_batches(digits):
    xs, ys = zip(*(digits.val[i] for i in range(12)))
    return ((torch.stack(xs), torch.tensor(ys)),)  # one batch: taylor-so does a backward per channel


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scores_plan_and_leave_model_untouched(name, digit_batches):
    torch.manual_seed(0)
    net = build_demo_net(width=8).eval()
    example = digit_batches[0][0][:1]
    grouped = GroupedModel(net, example)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    criterion = get_criterion(name)
    assert criterion.name == name and criterion.paper and criterion.scope in ("global", "layer")
    scores = criterion(ScoreContext(net, grouped, digit_batches))
    assert set(scores) == set(grouped.groups)
    for group_name, group in grouped.groups.items():
        s = scores[group_name]
        assert s.shape == (group.channels,) and torch.isfinite(s).all(), group_name
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    channels = {n: g.channels for n, g in grouped.groups.items()}
    plan = next_plan(PruningPlan.identity("demo", tuple(example.shape), name, channels), scores,
                     StepPolicy(0.3, criterion.scope))
    assert plan.kept_fraction() < 1
    pruned = apply_plan(net.eval(), plan, example)
    assert pruned(example).shape == (1, 10)

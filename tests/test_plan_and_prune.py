"""Plans: JSON round trip, bit-identical replay, and the MACs they promise."""

import copy

import pytest
import torch

from edgeprune.criteria import ScoreContext, get_criterion
from edgeprune.errors import ConfigError
from edgeprune.graph import GroupedModel, count_macs
from edgeprune.plan import GroupPlan, PruningPlan
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.prune import apply_plan, group_channels, prune_between


def _batches(n=2):
    g = torch.Generator().manual_seed(1)
    return tuple((torch.rand(8, 1, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n))


def _step(model, example, plan, fraction, criterion="l1", multiple=1):
    crit = get_criterion(criterion)
    scores = crit(ScoreContext(model, GroupedModel(model, example), _batches()))
    new = next_plan(plan, scores, StepPolicy(fraction, crit.scope, multiple))
    return prune_between(model, example, plan, new), new


def test_groups_couple_residual_channels(tiny_net, example):
    groups = GroupedModel(tiny_net, example).groups
    residual = groups["stage1.0.0"]  # the stride-2 conv feeding the block's identity add
    outs = set(residual.out_members())
    assert {"stage1.0.0", "stage1.0.1", "stage1.1.conv2", "stage1.1.bn2"} <= outs
    assert "fc" not in groups  # the classifier is never pruned


def test_iterative_steps_replay_bit_identically_on_the_original(tiny_net, example):
    plan = PruningPlan.identity("tiny", tuple(example.shape), "taylor", group_channels(tiny_net, example))
    model = copy.deepcopy(tiny_net)
    model, plan = _step(model, example, plan, 0.3, "taylor")
    model, plan = _step(model, example, plan, 0.3, "taylor")
    replayed = apply_plan(tiny_net, PruningPlan.from_json(plan.to_json()), example)
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), replayed(x))
    assert [p.shape for p in model.parameters()] == [p.shape for p in replayed.parameters()]


def test_pruning_removes_the_planned_macs(tiny_net, example):
    """Halving every group's channels must cut MACs as the layer arithmetic says."""
    channels = group_channels(tiny_net, example)
    plan = PruningPlan("tiny", tuple(example.shape), "manual",
                       {n: GroupPlan(c, tuple(range(0, c, 2))) for n, c in channels.items()})
    pruned = apply_plan(tiny_net, plan, example)
    # demo net at width 8 with every width halved (4/8/16), computed by hand per conv:
    expected = (32 * 32 * 4 * 1 * 9 + 16 * 16 * 8 * 4 * 9 + 2 * 16 * 16 * 8 * 8 * 9
                + 8 * 8 * 16 * 8 * 9 + 2 * 8 * 8 * 16 * 16 * 9)
    assert _conv_macs(pruned, example) == expected
    assert count_macs(pruned, example)[0] < count_macs(tiny_net, example)[0] / 3.5
    assert pruned.fc.in_features == 16


def test_channel_multiple_and_minimum_are_respected(tiny_net, example):
    plan = PruningPlan.identity("tiny", tuple(example.shape), "l1", group_channels(tiny_net, example))
    model = copy.deepcopy(tiny_net)
    for _ in range(6):
        model, plan = _step(model, example, plan, 0.45, "l1", multiple=4)
    for g in plan.groups.values():
        assert len(g.kept) % 4 == 0 or len(g.kept) == g.channels
        assert len(g.kept) >= 0.1 * g.channels


def test_plan_rejects_bad_indices_and_foreign_models(tiny_net, example):
    with pytest.raises(ConfigError):
        GroupPlan(4, (0, 7))
    plan = PruningPlan("x", (1, 1, 32, 32), "l1", {"no.such.layer": GroupPlan(4, (0, 1))})
    with pytest.raises(ConfigError, match="lacks"):
        apply_plan(tiny_net, plan, example)


def _conv_macs(model, example) -> int:
    """Multiply-accumulates of every conv, counted from the shapes seen in a real forward pass."""
    total = 0

    def hook(module, _inp, out):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += out.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(example)
    for h in handles:
        h.remove()
    return total


def test_a_small_global_step_still_prunes_when_rounding_would_cancel_it(tiny_net, example):
    """5% of 104 channels spread over five groups rounds back to multiples of 4 everywhere;
    the planner must still shrink the group the ranking wanted to prune most."""
    plan = PruningPlan.identity("tiny", tuple(example.shape), "taylor", group_channels(tiny_net, example))
    scores = {n: torch.arange(g.channels, dtype=torch.float32) + (100.0 if n != "stage2.1.conv1" else 0.0)
              for n, g in plan.groups.items()}
    new = next_plan(plan, scores, StepPolicy(0.05, "global", channel_multiple=4))
    changed = {n: len(g.kept) for n, g in new.groups.items() if len(g.kept) != plan.groups[n].channels}
    assert changed == {"stage2.1.conv1": 28}

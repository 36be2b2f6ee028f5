"""The specific rules: slice-aware scores, grouped-conv patterns, the graph-building guard."""

from __future__ import annotations

import time

import pytest
import torch

from edgeprune.criteria import get_criterion
from edgeprune.criteria.base import ScoreContext
from edgeprune.errors import ConfigError, TraceError
from edgeprune.graph import GraphBudget, GroupedModel
from edgeprune.graph.guard import run_guarded
from edgeprune.plan import GroupPlan, PruningPlan
from edgeprune.prune import apply_plan
from edgeprune.search.planner import StepPolicy, next_plan
from tests.graph.exactness import pruning_error, random_step, randomise_bn
from tests.graph.nets import ConcatAdd, GroupedConv, MaxViTBlock, Split

X = torch.rand(1, 3, 16, 16)


def test_concat_branches_score_their_own_slice():
    torch.manual_seed(0)
    net = ConcatAdd().eval()
    grouped = GroupedModel(net, X)
    group = grouped.groups["res.0"]  # 12 channels: residual conv + the two 6-channel branches
    assert group.member("branch_b.0").positions == tuple(range(6, 12))
    scores = get_criterion("l1")(ScoreContext(net, grouped, ()))["res.0"]
    l1 = lambda conv: conv.weight.detach().abs().flatten(1).sum(1)  # noqa: E731
    expected = l1(net.res[0]) + torch.cat([l1(net.branch_a[0]), l1(net.branch_b[0])])
    assert torch.allclose(scores, expected)


def test_grouped_conv_keeps_identical_patterns_and_refuses_others():
    torch.manual_seed(0)
    net = GroupedConv().eval()
    grouped = GroupedModel(net, X)
    assert grouped.groups["reduce.0"].blocks == 4 and grouped.groups["grouped.0"].blocks == 4
    channels = {n: g.channels for n, g in grouped.groups.items()}
    plan = PruningPlan.identity("g", tuple(X.shape), "l1", channels)
    scores = get_criterion("l1")(ScoreContext(net, grouped, ()))
    new = next_plan(plan, scores, StepPolicy(0.3, "layer"))
    kept = new.groups["reduce.0"].kept
    assert len(kept) == 8 and {k % 4 for k in kept[:2]} == {k % 4 for k in kept[2:4]}
    pruned = apply_plan(net, new, X)
    assert pruned.grouped[0].weight.shape == (8, 2, 3, 3) and pruned(X).shape == (1, 5)
    bad = new.with_groups({**new.groups, "reduce.0": GroupPlan(16, tuple(range(12)))})  # block 3 emptied
    with pytest.raises(ConfigError, match="same positions"):
        apply_plan(net, bad, X)


def test_chunk_is_pruned_evenly():
    torch.manual_seed(0)
    grouped = GroupedModel(Split().eval(), X)
    assert grouped.groups["stem.0"].blocks == 2
    assert "torch.split" in grouped.excluded["mid.0"]


def test_guard_stops_a_slow_build_and_caps_nodes():
    def slow():
        while True:
            time.sleep(0.001)
    start = time.monotonic()
    with pytest.raises(TraceError, match="took more than"):
        run_guarded(slow, GraphBudget(seconds=0.3, max_memory_mb=1e9, max_nodes=10**6), "test")
    assert time.monotonic() - start < 5
    with pytest.raises(TraceError, match="nodes"):
        GroupedModel(ConcatAdd().eval(), X, budget=GraphBudget(seconds=60, max_memory_mb=1e9, max_nodes=5))


def test_pruned_concat_add_equals_zeroing_the_removed_channels():
    """Removing channels of the concat->add group is exactly zeroing them in every member map."""
    from edgeprune.criteria.common import from_group, output_hooks

    torch.manual_seed(0)
    net = ConcatAdd().eval()
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.bias.uniform_(-0.2, 0.2)
    grouped = GroupedModel(net, X)
    group = grouped.groups["res.0"]
    kept = (0, 2, 3, 5, 7, 8, 11)  # both branches and the residual lose channels
    plan = PruningPlan.identity("c", tuple(X.shape), "manual", {n: g.channels for n, g in grouped.groups.items()})
    plan = plan.with_groups({**plan.groups, "res.0": GroupPlan(12, kept)})
    pruned = apply_plan(net, plan, X)
    mask = torch.zeros(12)
    mask[list(kept)] = 1
    fns = {}
    for name in ("res.1", "branch_a.1", "branch_b.1"):  # the BN outputs are the group's maps
        gate = from_group(mask, group.member(name), 12, net.get_submodule(name).num_features)
        fns[name] = lambda out, gate=gate: out * gate.view(1, -1, 1, 1)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad(), output_hooks(net, fns):
        zeroed = net(x)
    with torch.no_grad():
        assert torch.allclose(pruned(x), zeroed, atol=1e-5)


@pytest.mark.parametrize("net_cls, group_name, kept, maps", [
    (GroupedConv, "reduce.0", (1, 2, 5, 6, 9, 10, 13, 14), ("reduce.1",)),  # same 2 of 4 in each block
    (GroupedConv, "grouped.0", (0, 3, 4, 7, 8, 11, 12, 15), ("grouped.1",)),
    (Split, "stem.0", (0, 2, 3, 4, 6, 7), ("stem.1",)),  # one channel from each chunk
])
def test_pruning_equals_zeroing(net_cls, group_name, kept, maps):
    from edgeprune.criteria.common import from_group, output_hooks

    torch.manual_seed(0)
    net = net_cls().eval()
    grouped = GroupedModel(net, X)
    group = grouped.groups[group_name]
    plan = PruningPlan.identity("c", tuple(X.shape), "manual", {n: g.channels for n, g in grouped.groups.items()})
    pruned = apply_plan(net, plan.with_groups({**plan.groups, group_name: GroupPlan(group.channels, kept)}), X)
    mask = torch.zeros(group.channels)
    mask[list(kept)] = 1
    fns = {n: (lambda out, g=from_group(mask, group.member(n), group.channels,
                                        net.get_submodule(n).num_features): out * g.view(1, -1, 1, 1))
           for n in maps}
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad(), output_hooks(net, fns):
        zeroed = net(x)
    with torch.no_grad():
        assert torch.allclose(pruned(x), zeroed, atol=1e-5)


def test_maxvit_partitions_group_in_seconds_and_prune_exactly():
    """torch-pruning's own walk re-walks MaxViT's window/grid partitions without end (this layer:
    still running after 30 s; maxvit_t: stopped by the guard at 300 s); edgeprune's walk revisits a node only
    for new channels. The MLP widths, the MBConv expansion and the SE bottleneck are pruned, the
    16-channel trunk the partitions reshape is kept with its reason, and pruning is exact."""
    torch.manual_seed(0)
    model = randomise_bn(MaxViTBlock())
    x = torch.rand(2, 3, 16, 16)
    start = time.monotonic()
    grouped = GroupedModel(model, x[:1], budget=GraphBudget(seconds=30, max_memory_mb=4096, max_nodes=10**5))
    assert time.monotonic() - start < 30
    layers = "block.layers."
    assert {f"{layers}window_attention.mlp_layer.1", f"{layers}grid_attention.mlp_layer.1",
            f"{layers}MBconv.layers.conv_b.0", f"{layers}MBconv.layers.squeeze_excitation.fc1"} <= set(grouped.groups)
    assert "stem.0" in grouped.excluded and "channel axis" in grouped.excluded["stem.0"]
    plan = random_step(model, x, fraction=0.4)
    assert sum(len(g.kept) for g in plan.groups.values()) < sum(g.channels for g in plan.groups.values())
    assert pruning_error(model, plan, x) < 1e-5


@pytest.mark.parametrize("wrong", ["shift", "root"])
def test_the_group_walk_stops_where_a_mapping_does_not_add_up(wrong):
    """A mapping that moves channels on every trip round a loop (``shift``) or hands a channel on
    with another root (``root``) ends the walk with the group marked, instead of walking forever."""
    from torch_pruning._helpers import _HybridIndex as Hybrid

    from edgeprune.graph import traverse

    net = ConcatAdd().eval()
    graph = GroupedModel(net, X).graph
    conv, bn = net.res[0], net.res[1]
    prune_out = graph.get_pruner_of_module(conv).prune_out_channels
    assert getattr(graph.get_pruning_group(conv, prune_out, list(range(12))), traverse.CONFLICT) is None
    edge = next(d for d in graph.module2node[conv].dependencies if d.target.module is bn)
    edge.index_mapping = [(lambda idxs: [Hybrid(i.idx + 1, i.root_idx) for i in idxs]) if wrong == "shift" else
                          (lambda idxs: [Hybrid(i.idx, (i.root_idx + 1) % 12) for i in idxs]), None]
    start = time.monotonic()
    group = graph.get_pruning_group(conv, prune_out, list(range(12)))
    assert time.monotonic() - start < 5
    assert getattr(group, traverse.CONFLICT) == traverse.INCONSISTENT

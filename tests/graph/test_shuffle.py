"""Channel shuffle and chunk: exact permutations, ties and balanced chunks (graph.shuffle,
graph.coupling, graph.units), checked by the strongest property: pruned == zeroed."""

from __future__ import annotations

import pytest
import torch
import torchvision

from edgeprune.errors import ConfigError
from edgeprune.graph import GroupedModel
from edgeprune.graph.coupling import Coupling
from edgeprune.graph.units import choose_removal
from edgeprune.plan import GroupPlan
from edgeprune.prune import apply_plan
from tests.graph.exactness import identity, pruning_error, random_step, randomise_bn
from tests.graph.nets import Shuffle, ShuffleV1, ShuffleV2

X = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_shuffle_ties_one_channel_of_each_branch():
    torch.manual_seed(0)
    grouped = GroupedModel(Shuffle().eval(), X[:1])
    assert not grouped.excluded
    (name, group), = [(n, g) for n, g in grouped.groups.items() if g.coupling is not None]
    assert [root for root, _ in group.coupling.parts] == ["right.1.0", "left.0"]
    # cat([left, right]) -> shuffle(2): left channel i and right channel i become neighbours 2i, 2i+1
    assert group.coupling.units == tuple((i, 6 + i) for i in range(6))
    reader = group.member("post.0", "in")
    assert dict(zip(reader.positions, reader.channels))[6 + 2] == 4  # left channel 2 is post's input 4


@pytest.mark.parametrize("net_cls", [Shuffle, ShuffleV2, ShuffleV1])
@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_through_shuffles_equals_zeroing(net_cls, seed):
    torch.manual_seed(seed)
    model = randomise_bn(net_cls())
    plan = random_step(model, X, seed=seed)
    grouped = GroupedModel(model, X[:1])
    coupled = [n for n, g in grouped.groups.items() if g.coupling is not None]
    assert coupled and any(len(plan.groups[n].kept) < plan.groups[n].channels for n in coupled)
    assert pruning_error(model, plan, X) < 1e-5


def test_a_broken_tie_is_refused_and_would_have_changed_the_outputs(monkeypatch):
    torch.manual_seed(0)
    model = randomise_bn(Shuffle())
    grouped = GroupedModel(model, X[:1])
    name = next(n for n, g in grouped.groups.items() if g.coupling is not None)
    plan = identity(grouped, X)
    # right channel 0 and left channel 5: the shuffled pairs of the smaller tensor slide by one
    plan = plan.with_groups({**plan.groups, name: GroupPlan(12, tuple(p for p in range(12) if p not in (0, 11)))})
    with pytest.raises(ConfigError, match="tied"):
        apply_plan(model, plan, X[:1])
    monkeypatch.setattr(Coupling, "check", lambda self, name, removed: None)  # what the rule prevents:
    assert pruning_error(model, plan, X) > 1e-3  # it runs, and computes something else


def test_shufflenet_v2_prunes_its_trunk_exactly_where_an_exact_removal_exists():
    torch.manual_seed(0)
    model = randomise_bn(torchvision.models.shufflenet_v2_x0_5())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    grouped = GroupedModel(model, x[:1])
    stages = {n: g for n, g in grouped.groups.items() if g.coupling is not None}
    assert sorted(stages) == ["stage2.3.branch2.5", "stage4.3.branch2.5"]  # one coupled group per stage trunk
    # the 8-unit stage's chunks can only be balanced by removing whole layers: kept, and said why
    assert sorted(grouped.excluded) == sorted([f"stage3.{i}.branch2.5" for i in range(8)] + ["stage3.0.branch1.2"])
    assert all("no exact removal" in why for why in grouped.excluded.values())
    plan = random_step(model, x, fraction=0.45)  # stage 2's smallest balanced removal is 52 of 120 channels
    for name, group in stages.items():
        removed = group.channels - len(plan.groups[name].kept)
        assert 0.25 * group.channels < removed <= 0.45 * group.channels, name
    assert pruning_error(model, plan, x) < 1e-4


def test_choose_removal_takes_whole_units_keeps_balance_and_parts():
    coupling = Coupling(parts=(("a", 4), ("b", 4)), units=((0, 4), (1, 5), (2, 6), (3, 7)), frozen=(),
                        balance=(((0, 1), (2, 3)),))
    scores = torch.tensor([0.0, 0.1, 5.0, 5.0, 0.0, 0.1, 5.0, 5.0])
    gone = choose_removal(coupling, scores, remove=4)
    assert gone in ([0, 2, 4, 6], [0, 3, 4, 7], [1, 2, 5, 6], [1, 3, 5, 7])  # one unit from each side
    assert gone in ([0, 2, 4, 6], [0, 3, 4, 7])  # and the cheapest of those
    assert choose_removal(coupling, scores, remove=3) == [] or len(choose_removal(coupling, scores, 3)) == 2
    assert len(choose_removal(coupling, scores, remove=8)) == 4  # every part keeps a channel
    assert choose_removal(coupling, scores, remove=8, min_keep=0.75) == []  # 3 of 4 must stay: no unit fits

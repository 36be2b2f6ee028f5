"""The oracle study: the oracle is the measured loss change of removing one channel, and
compare_criteria correlates criteria with it."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import spearmanr

from edgeprune.criteria import ScoreContext, get_criterion
from edgeprune.graph import GroupedModel
from edgeprune.models.demo_net import build_demo_net
from edgeprune.studies.oracle import accuracy, compare_criteria, mean_loss, oracle_scores
from tests.criteria.toys import image_batches, randomise_bn


@pytest.fixture()
def net_and_data():
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4))
    return net, image_batches(2, 6, (1, 32, 32), 10, seed=1)


def test_oracle_equals_loss_change_of_physical_removal(net_and_data):
    net, batches = net_and_data
    example = batches[0][0][:1]
    grouped = GroupedModel(net, example)
    oracle = oracle_scores(net, grouped, batches)
    base = mean_loss(net, batches)
    # a plain group, the stem, and a residual group (coupled across an add)
    for group, channel in [("stage1.1.conv1", 2), ("stem.0", 1), ("stage1.0.0", 5), ("stage2.0.0", 0)]:
        pruned = copy.deepcopy(net)
        GroupedModel(pruned, example).remove(group, [channel])
        measured = mean_loss(pruned.eval(), batches) - base
        assert float(oracle[group][channel]) == pytest.approx(measured, abs=1e-5)
    assert set(oracle) == set(grouped.groups)
    assert all(len(oracle[g]) == grouped.groups[g].channels for g in oracle)
    assert torch.count_nonzero(torch.cat(list(oracle.values()))) > 0


def test_compare_criteria_reports_correlations_and_accuracies(net_and_data):
    net, batches = net_and_data
    example = batches[0][0][:1]
    score_batches = image_batches(1, 6, (1, 32, 32), 10, seed=2)
    report = compare_criteria(net, example, score_batches, batches, ["l1", "random"], [0.0, 0.3])
    assert set(report["criteria"]) == {"l1", "random"}
    for entry in report["criteria"].values():
        assert -1 <= entry["spearman"] <= 1 and -1 <= entry["kendall"] <= 1
        assert set(entry["accuracy_at"]) == {"0", "0.3"}
        assert all(0 <= a <= 1 for a in entry["accuracy_at"].values())
        assert entry["accuracy_at"]["0"] == pytest.approx(accuracy(net, batches))
    # the pooled Spearman is the correlation of the criterion with |ΔL| over every channel
    grouped = GroupedModel(net, example)
    oracle = oracle_scores(net, grouped, batches)
    l1 = get_criterion("l1")(ScoreContext(net, grouped, score_batches))
    order = list(grouped.groups)
    expected = spearmanr(torch.cat([l1[g] for g in order]).numpy(),
                         torch.cat([oracle[g].abs() for g in order]).numpy()).statistic
    assert report["criteria"]["l1"]["spearman"] == pytest.approx(expected)
    assert report["oracle"]["loss"] == pytest.approx(mean_loss(net, batches))


def test_ratios_outside_range_are_refused(net_and_data):
    net, batches = net_and_data
    with pytest.raises(ValueError):
        compare_criteria(net, batches[0][0][:1], batches, batches, ["l1"], [1.0])

"""The oracle is the measured loss change of removing one channel; criteria are judged by their
rank correlation with its magnitude."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from edgeprune.criteria import ScoreContext, get_criterion
from edgeprune.graph import GroupedModel
from edgeprune.models.demo_net import build_demo_net
from edgeprune.studies.oracle import (mean_loss, measure_oracle, oracle_scores, pooled_correlations,
                                      rank_correlations, spearman_within_groups)
from tests.criteria.toys import TwoConv, image_batches, randomise_bn


@pytest.fixture()
def net_and_data():
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4))
    return net, image_batches(2, 6, (1, 32, 32), 10, seed=1)


class CountingProgress:
    """A progress sink that records what it was told (the oracle's bar must add up)."""

    def __init__(self) -> None:
        self.totals: dict[int, int] = {}
        self.advanced: dict[int, int] = {}
        self.finished: list[int] = []

    def start(self, description: str, total: int) -> object:
        task = len(self.totals)
        self.totals[task], self.advanced[task] = total, 0
        return task

    def advance(self, task: object, loss: float | None = None) -> None:
        self.advanced[task] += 1

    def finish(self, task: object) -> None:
        self.finished.append(task)

    def log(self, message: str) -> None:
        pass


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


def test_measured_oracle_is_the_oracle_and_its_bar_adds_up():
    torch.manual_seed(0)
    net = randomise_bn(TwoConv()).eval()
    batches = image_batches(2, 4, (1, 8, 8), 3, seed=1)
    grouped = GroupedModel(net, batches[0][0][:1])
    progress = CountingProgress()
    measured = measure_oracle(net, grouped, batches, progress)
    reference = oracle_scores(net, grouped, batches)
    assert all(torch.equal(measured[g], reference[g]) for g in reference)
    assert progress.advanced == progress.totals and progress.finished == [0]


def test_pooled_correlation_is_over_every_channel_against_abs_delta_loss(net_and_data):
    net, batches = net_and_data
    example = batches[0][0][:1]
    grouped = GroupedModel(net, example)
    oracle = oracle_scores(net, grouped, batches)
    l1 = get_criterion("l1")(ScoreContext(net, grouped, batches))
    order = list(grouped.groups)
    a = torch.cat([l1[g] for g in order]).numpy()
    b = torch.cat([oracle[g].abs() for g in order]).numpy()
    rho, tau = pooled_correlations(l1, oracle)
    assert rho == pytest.approx(spearmanr(a, b).statistic) and tau == pytest.approx(kendalltau(a, b).statistic)
    # a ranking that is the oracle's magnitude itself agrees perfectly, pooled and per layer
    exact = {g: v.abs().float() for g, v in oracle.items()}
    assert pooled_correlations(exact, oracle)[0] == pytest.approx(1.0)
    assert spearman_within_groups(exact, oracle) == pytest.approx(1.0)


def test_rank_correlations_are_undefined_without_a_ranking():
    assert all(math.isnan(v) for v in rank_correlations(torch.ones(5), torch.arange(5.0)))
    assert all(math.isnan(v) for v in rank_correlations(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])))
    assert rank_correlations(torch.arange(5.0), -torch.arange(5.0)) == pytest.approx((-1.0, -1.0))
    # groups without a ranking are left out of the mean, not counted as zero
    scores = {"a": torch.arange(4.0), "b": torch.ones(4)}
    oracle = {"a": torch.arange(4.0), "b": torch.arange(4.0)}
    assert spearman_within_groups(scores, oracle) == pytest.approx(1.0)

"""Accuracy at a pruning ratio: one definition (planner step + physical removal + top-1), with and
without a fine-tune of the same pruned model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgeprune.graph import GroupedModel
from edgeprune.models.demo_net import build_demo_net
from edgeprune.progress import null_progress
from edgeprune.studies.accuracy import (MIN_KEEP, Finetuner, accuracies_at, accuracy, prune_to_ratio, ratio_key,
                                        refresh_batchnorm)
from edgeprune.training.finetune import TrainConfig
from tests.criteria.toys import image_batches, randomise_bn


@pytest.fixture()
def net_and_data():
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4)).eval()
    return net, image_batches(2, 6, (1, 32, 32), 10, seed=1)


def _channels(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    return {name: g.channels for name, g in GroupedModel(model, example).groups.items()}


def test_pruning_removes_the_ratio_of_channels_by_the_ranking(net_and_data):
    net, batches = net_and_data
    example = batches[0][0][:1]
    full = _channels(net, example)
    scores = {g: torch.arange(c, dtype=torch.float32) for g, c in full.items()}
    layer = _channels(prune_to_ratio(net, example, scores, "layer", 0.5), example)
    assert all(layer[g] == pytest.approx(c / 2, abs=1) for g, c in full.items())  # every layer by the ratio
    glob = _channels(prune_to_ratio(net, example, scores, "global", 0.5), example)
    assert sum(glob.values()) == pytest.approx(sum(full.values()) / 2, abs=len(full))
    assert all(glob[g] >= MIN_KEEP * c for g, c in full.items())
    assert _channels(prune_to_ratio(net, example, scores, "global", 0.0), example) == full
    with pytest.raises(ValueError, match="ratio"):
        prune_to_ratio(net, example, scores, "global", 1.0)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_study_pruning_respects_grouped_convs_and_coupled_groups(scope):
    """The study's plain ``{group: scores}`` carries no constraints: they come from the model, so
    a shuffle's tied channels and a grouped conv's blocks still go together."""
    from tests.graph.nets import GroupedConv, ShuffleV2

    for net_cls in (ShuffleV2, GroupedConv):
        torch.manual_seed(0)
        net = net_cls().eval()
        example = torch.rand(1, 3, 16, 16)
        full = _channels(net, example)
        scores = {g: torch.rand(c) for g, c in full.items()}
        pruned = _channels(prune_to_ratio(net, example, scores, scope, 0.45), example)
        assert sum(pruned.values()) < sum(full.values()), net_cls.__name__


def test_accuracies_at_each_ratio_without_and_with_finetune(net_and_data):
    net, batches = net_and_data
    example = batches[0][0][:1]
    scores = {g: torch.rand(c) for g, c in _channels(net, example).items()}
    plain = accuracies_at(net, example, scores, "global", [0.0, 0.3], batches)
    assert plain.finetuned is None and list(plain.pruned) == ["0", "0.3"]
    assert plain.pruned["0"] == pytest.approx(accuracy(net, batches))
    assert plain.pruned["0.3"] == accuracy(prune_to_ratio(net, example, scores, "global", 0.3), batches)
    seen: list[tuple[int, str]] = []

    def finetune(model: nn.Module, description: str) -> None:
        """Re-initialise the classifier to predict class 0 only: a fine-tune with a known result."""
        seen.append((sum(p.numel() for p in model.parameters()), description))
        with torch.no_grad():
            model.fc.weight.zero_()
            model.fc.bias.copy_(torch.arange(10, 0, -1, dtype=torch.float32))

    tuned = accuracies_at(net, example, scores, "global", [0.0, 0.3], batches, finetune, "l1")
    assert tuned.pruned == plain.pruned  # the same pruning, measured before the fine-tune
    share = sum(int((y == 0).sum()) for _, y in batches) / sum(len(y) for _, y in batches)
    assert tuned.finetuned == {"0": pytest.approx(share), "0.3": pytest.approx(share)}
    assert [d for _, d in seen] == ["fine-tune l1 @0", "fine-tune l1 @0.3"]
    assert seen[1][0] < seen[0][0]  # the pruned model was fine-tuned, not the unpruned one
    assert ratio_key(0.30000000001) == "0.3"


def test_finetuner_trains_then_refreshes_batchnorm():
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 3, (32,))
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 3))
    calibration = ((x[:16], y[:16]),)
    before = [p.detach().clone() for p in net.parameters()]
    Finetuner(TensorDataset(x, y), TrainConfig(epochs=1.0, lr=0.1), 8, 0, calibration, null_progress)(net, "t")
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with torch.no_grad():
        features = net[0](x[:16])
    assert torch.allclose(net[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)


def test_refresh_batchnorm_sets_statistics_of_the_batches_and_keeps_momentum():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3)).eval()
    batches = image_batches(2, 8, (1, 4, 4), 10, seed=3)
    refresh_batchnorm(net, batches)
    with torch.no_grad():
        features = torch.cat([net[0](x) for x, _ in batches])
    # the cumulative average of the two batches' means is the mean over both (equal sizes)
    assert torch.allclose(net[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert net[1].momentum == 0.1 and not net.training

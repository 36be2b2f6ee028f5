"""Magnitude pruning (Han et al. 2015): per-layer threshold q·std, iterative prune → retrain."""

from __future__ import annotations

import torch

from edgeprune.training.finetune import TrainConfig
from edgeprune.sparsity.magnitude import iterative_magnitude_pruning, magnitude_masks
from edgeprune.sparsity.masks import prunable_weights
from tests.sparsity.toys import SmallConvNet, loader


def test_removes_exactly_the_weights_below_q_std_of_each_layer():
    torch.manual_seed(0)
    model = SmallConvNet()
    q = 0.7
    masks = magnitude_masks(model, q)
    for name, w in prunable_weights(model).items():
        w = w.detach()
        threshold = q * float(torch.sqrt(((w - w.mean()) ** 2).mean()))  # population std, by hand
        assert torch.equal(masks[name], w.abs() >= threshold)
        assert int((~masks[name]).sum()) == int((w.abs() < threshold).sum()) > 0


def test_a_later_round_uses_the_survivors_std_and_never_revives_a_weight():
    torch.manual_seed(0)
    model = SmallConvNet()
    first = magnitude_masks(model, 0.5)
    second = magnitude_masks(model, 0.5, first)
    for name, w in prunable_weights(model).items():
        kept = w.detach()[first[name]]
        threshold = 0.5 * float(kept.std(correction=0))
        assert torch.equal(second[name], first[name] & (w.detach().abs() >= threshold))
    assert second.kept() < first.kept()


def test_iterative_rounds_prune_more_each_round_and_keep_pruned_weights_at_zero():
    torch.manual_seed(0)
    model = SmallConvNet()
    config = TrainConfig(epochs=1, lr=0.05, momentum=0.9, weight_decay=1e-4)
    history = iterative_magnitude_pruning(model, loader(16, (1, 6, 6), 8), config, q=[0.5, 0.8], rounds=2)
    assert len(history) == 2 and history[1].sparsity() > history[0].sparsity() > 0
    for name, mask in history[-1].items():
        assert torch.all(history[0][name] | ~mask)  # round 2 ⊆ round 1
        assert int(torch.count_nonzero(model.get_parameter(name).detach()[~mask])) == 0

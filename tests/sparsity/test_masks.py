"""Masks: apply / density / sparsity, exact global top-k, zeros held through training, registry."""

from __future__ import annotations

import pytest
import torch

from edgeprune.errors import UnknownNameError
from edgeprune.training.finetune import TrainConfig, train
from edgeprune.sparsity import get_sparsity_method, load_builtin, sparsity_methods
from edgeprune.sparsity.masks import MaskedTraining, Masks, global_topk, prunable_weights
from tests.sparsity.toys import SmallConvNet, loader


def half_masks(model) -> Masks:
    """Keep every other entry of each weight (a known pattern)."""
    return Masks({n: (torch.arange(p.numel()) % 2 == 0).view(p.shape) for n, p in prunable_weights(model).items()})


def test_apply_zeroes_exactly_the_masked_entries_and_reports_density():
    torch.manual_seed(0)
    model = SmallConvNet()
    before = {n: p.detach().clone() for n, p in prunable_weights(model).items()}
    masks = half_masks(model)
    masks.apply(model)
    for name, mask in masks.items():
        w = model.get_parameter(name).detach()
        assert torch.equal(w[~mask], torch.zeros(int((~mask).sum())))
        assert torch.equal(w[mask], before[name][mask])
    sizes = {n: m.numel() for n, m in masks.items()}
    assert masks.density() == {n: ((s + 1) // 2) / s for n, s in sizes.items()}
    assert masks.sparsity() == pytest.approx(1 - sum((s + 1) // 2 for s in sizes.values()) / sum(sizes.values()))


def test_global_topk_keeps_exactly_k_even_when_all_scores_tie():
    scores = {"a": torch.ones(3, 4), "b": torch.ones(7)}
    for k in (0, 1, 5, 19):
        assert global_topk(scores, k).kept() == k
    ranked = global_topk({"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0, 0.5])}, 2)
    assert ranked["a"].tolist() == [True, False] and ranked["b"].tolist() == [True, False]


def test_masked_training_keeps_pruned_weights_at_exact_zero_under_momentum_and_decay():
    torch.manual_seed(0)
    model = SmallConvNet()
    masks = half_masks(model)
    masks.apply(model)
    kept_before = {n: model.get_parameter(n).detach()[m].clone() for n, m in masks.items()}
    config = TrainConfig(epochs=3, lr=0.1, momentum=0.9, weight_decay=1e-2)
    train(model, loader(16, (1, 6, 6), 8), config, callbacks=(MaskedTraining(masks),))
    for name, mask in masks.items():
        w = model.get_parameter(name).detach()
        assert int(torch.count_nonzero(w[~mask])) == 0
        assert not torch.equal(w[mask], kept_before[name])  # the kept weights did train


def test_hold_zeroes_masked_weights_before_each_forward():
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    masks = half_masks(model)
    x = torch.rand(2, 1, 6, 6)
    with MaskedTraining(masks).hold(model):
        expected = model(x)
        with torch.no_grad():
            model.conv2.weight.add_(1.0)  # a stray update (as momentum would make) off the mask
        masked_ref = model.conv2.weight.detach().clone().masked_fill_(~masks["conv2.weight"], 0)
        got = model(x)
        assert torch.equal(model.conv2.weight.detach(), masked_ref)
    assert not torch.allclose(got, expected)  # the kept weights changed, the masked ones did not count
    assert int(torch.count_nonzero(model.conv2.weight.detach()[~masks["conv2.weight"]])) == 0


def test_masks_refuse_wrong_shapes_and_non_bool():
    model = SmallConvNet()
    with pytest.raises(TypeError):
        Masks({"conv1.weight": torch.ones(4, 1, 3, 3)})
    with pytest.raises(ValueError, match="shape"):
        Masks({"conv1.weight": torch.ones(2, dtype=torch.bool)}).apply(model)


def test_registry_lists_every_method_with_its_paper():
    load_builtin()
    assert {"magnitude", "snip", "scl", "rigl", "relief", "hessian-spectral"} <= set(sparsity_methods.names())
    snip = get_sparsity_method("snip")
    assert snip.kind == "one-shot" and "ICLR 2019" in snip.paper and callable(snip.entry)
    with pytest.raises(UnknownNameError, match="known: "):
        get_sparsity_method("nope")

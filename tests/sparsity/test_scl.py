"""SCL (Tang et al. 2022): w ⊙ step(m), identity STE, per-feature normalised mask grads, λ·#active."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.training.finetune import TrainConfig, train
from edgeprune.sparsity import scl
from tests.sparsity.toys import MLP, loader


def test_identity_ste_passes_the_gradient_through_the_step_even_where_the_mask_is_zero():
    weight = torch.randn(3, 4, requires_grad=True)
    mask = scl.StepMask(weight.shape, 1.0)
    with torch.no_grad():
        mask.score[0, :2] = -0.5  # pruned connections
    upstream = torch.randn(3, 4)
    (mask(weight) * upstream).sum().backward()
    step = (mask.score.detach() > 0).float()
    assert torch.equal(mask.score.grad, upstream * weight.detach())  # ∂L/∂m = ∂L/∂w_eff ⊙ w, step or not
    assert float(mask.score.grad[0, 0]) != 0.0
    assert torch.equal(weight.grad, upstream * step)  # pruned weights receive no gradient


def test_penalty_counts_active_connections_and_pulls_every_score_by_lambda():
    torch.manual_seed(0)
    model = MLP()
    scl.attach(model)
    with torch.no_grad():
        model.fc1.parametrizations.weight[0].score[:2] = -1.0
    loss = scl.SCL(lam=0.25).extra_loss(model)
    assert float(loss.detach()) == pytest.approx(0.25 * (30 - 12 + 15))
    loss.backward()
    for p in scl._step_masks(model).values():
        assert torch.allclose(p.score.grad, torch.full_like(p.score, 0.25))


def test_mask_gradients_are_normalised_per_feature_with_the_lambda_pull_kept():
    torch.manual_seed(0)
    model = MLP()
    scl.attach(model)
    score = model.fc1.parametrizations.weight[0].score
    task = torch.randn(5, 6) * torch.tensor([1e-2, 1.0, 10.0, 1e3, 1.0]).unsqueeze(1)  # unbalanced rows
    score.grad = task + 0.1
    scl.SCL(lam=0.1).after_backward(model, 0)
    normalised = score.grad - 0.1
    assert torch.allclose(normalised.pow(2).mean(1), torch.ones(5), rtol=1e-4)
    assert torch.allclose(normalised, task / task.pow(2).mean(1, keepdim=True).sqrt(), rtol=1e-3, atol=1e-5)


def test_training_with_a_strong_penalty_prunes_and_detach_bakes_the_masks():
    torch.manual_seed(0)
    model = MLP()
    names = scl.attach(model, init_score=0.05)
    train(model, loader(16, (6,), 8), TrainConfig(epochs=4, lr=0.05, weight_decay=0.0), callbacks=(scl.SCL(lam=1.0),))
    masks = scl.current_masks(model)
    assert masks.sparsity() > 0.5
    effective = model.fc1.weight.detach().clone()
    final = scl.detach(model)
    assert sorted(final) == sorted(names) and not isinstance(model.fc1.weight, nn.Module)
    assert "fc1.weight" in dict(model.named_parameters())  # plain parameter again
    assert torch.equal(model.fc1.weight.detach(), effective)
    assert int(torch.count_nonzero(model.fc1.weight.detach()[~final["fc1.weight"]])) == 0

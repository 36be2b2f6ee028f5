"""Hessian spectral-radius regulariser: power iteration with HVPs, and the penalty's gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgeprune.sparsity.spectral import (HessianSpectralRegularizer, curvature_along, spectral_radius,
                                         top_hessian_eigenvector)


def test_power_iteration_finds_the_largest_magnitude_eigenvalue_of_a_quadratic():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    eigen = torch.tensor([4.0, -7.0, 1.0, 0.5, 2.0, -1.0], dtype=torch.float64)
    a = q @ torch.diag(eigen) @ q.T
    b = torch.randn(6, generator=g, dtype=torch.float64)
    theta = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)

    def loss():
        return 0.5 * theta @ a @ theta + b @ theta  # Hessian = A everywhere

    rayleigh, vec = top_hessian_eigenvector(loss, [theta], iters=500, tol=1e-12)
    assert rayleigh == pytest.approx(-7.0, rel=1e-6)  # the dominant eigenvalue is the negative one
    assert spectral_radius(loss, [theta], iters=500, tol=1e-12) == pytest.approx(7.0, rel=1e-6)
    assert abs(float(vec[0] @ q[:, 1])) == pytest.approx(1.0, abs=1e-5)  # and its eigenvector


def test_callback_estimate_matches_the_exact_hessian_of_a_small_model():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    reg = HessianSpectralRegularizer((x, y), mu=0.1, every=2, iters=300, tol=1e-12, loss_fn=F.mse_loss)
    penalty = reg.extra_loss(model)
    sizes = [p.numel() for p in model.parameters()]

    def flat_loss(flat):
        w, b = flat[:sizes[0]].view(2, 3), flat[sizes[0]:]
        return F.mse_loss(x @ w.T + b, y)

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    exact = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, flat)).abs().max())
    assert reg.history[0][1] == pytest.approx(exact, rel=1e-6)
    assert float(penalty.detach()) == pytest.approx(0.1 * exact, rel=1e-6)
    reg.after_backward(model, 0)
    assert reg.extra_loss(model) is None  # only every K = 2 steps


def test_penalty_gradient_is_the_derivative_of_the_rayleigh_quotient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    reg = HessianSpectralRegularizer((x, y), mu=1.0, iters=200, tol=1e-10, fd_eps=1e-4)
    params, loss_at = reg._probe(model)
    _, vec = top_hessian_eigenvector(lambda: loss_at(params), params, iters=200, tol=1e-10)
    grads = torch.autograd.grad(loss_at(params), params, create_graph=True)
    hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params, create_graph=True)
    exact = torch.autograd.grad(sum((h * v).sum() for h, v in zip(hv, vec)), params)  # third order
    approx = torch.autograd.grad(curvature_along(loss_at, params, vec, 1e-4), params)
    for e, a in zip(exact, approx):
        assert torch.allclose(a, e, rtol=1e-3, atol=1e-6)


def test_probe_leaves_batchnorm_statistics_alone_and_training_runs_through_batchnorm():
    from edgeprune.training.finetune import TrainConfig, train
    from tests.sparsity.toys import SmallConvNet, batch, loader

    torch.manual_seed(0)
    model = SmallConvNet().train()
    reg = HessianSpectralRegularizer(batch(4, (1, 4, 4)), mu=1e-3, every=2, iters=3)
    stats = model.bn1.running_mean.clone()
    penalty = reg.extra_loss(model)
    assert penalty.requires_grad and float(penalty.detach()) > 0
    assert torch.equal(model.bn1.running_mean, stats)  # train-mode probes ran on copied buffers
    reg = HessianSpectralRegularizer(batch(4, (1, 4, 4)), mu=1e-3, every=2, iters=3)
    losses = train(model, loader(8, (1, 4, 4), 4), TrainConfig(epochs=1, lr=0.01), callbacks=(reg,))
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert [s for s, _ in reg.history] == [0] and reg.steps_done == 2

"""Hessian spectral-radius regulariser — after Ebrahimi, Klabjan, "Neuron-based Pruning of Deep Neural
Networks with Better Generalization using Kronecker Factored Curvature Approximation",
arXiv:2111.08577, 2021.

The paper trains and prunes neurons together while steering toward flat minima, i.e. a small
spectral radius ρ(H) = max_i |λ_i(H)| of the loss Hessian, which it estimates with K-FAC. This
module provides the regulariser: every K steps the callback adds ``μ · ρ(H)`` to the loss.

How ρ is estimated here (not K-FAC — an exact-Hessian estimate on a probe minibatch):
- power iteration ``v ← Hv / ‖Hv‖`` with Hessian-vector products (double backward, Pearlmutter's
  trick) converges to the eigenvector of the eigenvalue of largest *magnitude*, which is exactly
  ρ(H); ``ρ ≈ |vᵀHv|`` (Rayleigh quotient, ‖v‖ = 1). It stops when the estimate changes by less
  than ``tol`` (relative) or after ``iters`` products.
- the gradient of the penalty treats v as fixed: ``∂ρ/∂θ = sign · ∂(vᵀ H(θ) v)/∂θ``. For a simple
  top eigenvalue with its exact eigenvector this *is* the derivative (eigenvalue perturbation
  theory); with an approximate v it is the derivative of the Rayleigh quotient at that v.
  That derivative is a third derivative of the loss, which PyTorch's train-mode BatchNorm does not
  provide, so it is taken by a central difference of first-order gradients along v:
  ``vᵀH(θ)v ≈ (L(θ+εv) − 2L(θ) + L(θ−εv)) / ε²`` (error O(ε²)), differentiated exactly. The
  penalty's *value* is the power-iteration estimate μ·ρ; only its gradient uses the difference.
- H is the Hessian of the loss on a fixed probe batch given at construction (the callback API
  does not see the training batch), over all trainable parameters (or the ones named).
Probe passes run through ``torch.func.functional_call`` with copied buffers, so BatchNorm running
statistics are not moved by the extra forward passes. Neuron pruning itself is left to the
channel-pruning pipeline (``edgeprune.criteria``) run on the regularised model.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from edgeprune.sparsity import SparsityMethod, register_method

PAPER = ("Ebrahimi, Klabjan, Neuron-based Pruning of Deep Neural Networks with Better Generalization "
         "using Kronecker Factored Curvature Approximation, arXiv:2111.08577, 2021")

LossClosure = Callable[[], torch.Tensor]
ParamLoss = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def hessian_vector_product(loss: torch.Tensor, params: Sequence[torch.Tensor], vec: Sequence[torch.Tensor],
                           create_graph: bool = False) -> list[torch.Tensor]:
    """``H v`` for the Hessian of ``loss`` w.r.t. ``params`` (double backward)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vec))
    return list(torch.autograd.grad(dot, params, create_graph=create_graph))


def _normalised(vec: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(sum((v * v).sum() for v in vec))
    return [v / norm.clamp_min(1e-30) for v in vec]


def top_hessian_eigenvector(loss_fn: LossClosure, params: Sequence[torch.Tensor], iters: int = 50,
                            tol: float = 1e-6, seed: int = 0) -> tuple[float, list[torch.Tensor]]:
    """Power iteration: (Rayleigh quotient vᵀHv, unit v) for the largest-|λ| eigenpair of the Hessian."""
    generator = torch.Generator().manual_seed(seed)
    vec = _normalised([torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params])
    estimate = 0.0
    for _ in range(iters):
        hv = [h.detach() for h in hessian_vector_product(loss_fn(), params, vec)]
        rayleigh = float(sum((h * v).sum() for h, v in zip(hv, vec)))
        vec = _normalised(hv)
        converged = abs(rayleigh - estimate) <= tol * max(abs(rayleigh), 1e-12)
        estimate = rayleigh
        if converged:
            break
    return estimate, vec


def spectral_radius(loss_fn: LossClosure, params: Sequence[torch.Tensor], iters: int = 50,
                    tol: float = 1e-6, seed: int = 0) -> float:
    """ρ(H) = max |λ| of the Hessian of ``loss_fn()`` w.r.t. ``params``, by power iteration."""
    return abs(top_hessian_eigenvector(loss_fn, params, iters, tol, seed)[0])


def curvature_along(loss_at: ParamLoss, params: Sequence[torch.Tensor], vec: Sequence[torch.Tensor],
                    eps: float) -> torch.Tensor:
    """``(L(θ+εv) − 2L(θ) + L(θ−εv)) / ε²`` ≈ vᵀH(θ)v; its θ-gradient needs first derivatives only."""
    plus = loss_at([p + eps * v for p, v in zip(params, vec)])
    minus = loss_at([p - eps * v for p, v in zip(params, vec)])
    return (plus - 2 * loss_at(list(params)) + minus) / (eps * eps)


class HessianSpectralRegularizer:
    """TrainCallback adding ``μ · ρ(H)`` (probe-batch Hessian) to the loss every ``every`` steps."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], mu: float = 1e-3, every: int = 10,
                 iters: int = 10, tol: float = 1e-3,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                 params: Iterable[str] | None = None, fd_eps: float = 1e-2) -> None:
        if mu < 0 or every < 1 or iters < 1 or fd_eps <= 0:
            raise ValueError("need mu >= 0, every >= 1, iters >= 1, fd_eps > 0")
        self.batch = batch
        self.mu = mu
        self.every = every
        self.iters = iters
        self.tol = tol
        self.loss_fn = loss_fn
        self.fd_eps = fd_eps
        self.param_names = tuple(params) if params is not None else None
        self.steps_done = 0
        self.history: list[tuple[int, float]] = []  # (step, ρ estimate)

    def _probe(self, model: nn.Module) -> tuple[list[torch.Tensor], ParamLoss]:
        """The parameters the Hessian is taken over, and the probe loss as a function of their values."""
        named = dict(model.named_parameters())
        names = list(self.param_names) if self.param_names is not None else \
            [n for n, p in named.items() if p.requires_grad]
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        x, y = self.batch

        def loss_at(values: Sequence[torch.Tensor]) -> torch.Tensor:
            return self.loss_fn(functional_call(model, {**named, **dict(zip(names, values)), **buffers}, (x,)), y)

        return [named[n] for n in names], loss_at

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``μ · ρ`` in value; gradient ``μ · sign · ∂(vᵀHv)/∂θ`` by central differences (see above)."""
        params, loss_at = self._probe(model)
        rayleigh, vec = top_hessian_eigenvector(lambda: loss_at(params), params, self.iters, self.tol,
                                                seed=self.steps_done)
        curvature = curvature_along(loss_at, params, vec, self.fd_eps)
        rho = abs(rayleigh)
        self.history.append((self.steps_done, rho))
        sign = 1.0 if rayleigh >= 0 else -1.0
        return self.mu * (sign * (curvature - curvature.detach()) + rho)

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if self.mu == 0 or self.steps_done % self.every != 0:
            return None
        return self.penalty(model)

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.steps_done += 1


register_method(SparsityMethod("hessian-spectral", PAPER, "training", HessianSpectralRegularizer))

"""Sparse Connectivity Learning (SCL) — Tang, Luo, Xie, Zhu, Zhao, Bi, Lu, "Automatic Sparse
Connectivity Learning for Neural Networks", IEEE TNNLS 2022.

Every connection weight is re-parameterised as ``w_eff = w ⊙ step(m)`` with a trainable mask score
``m`` (``step(m) = 1 if m > 0 else 0``). The step has zero derivative almost everywhere, so the
backward pass uses the *identity* straight-through estimator ``∂step/∂m := 1``:

    ∂L/∂m = ∂L/∂w_eff ⊙ w,       ∂L/∂w = ∂L/∂w_eff ⊙ step(m)

(pruned weights get no gradient, but their scores do, so a connection can come back). Mask
gradients differ by orders of magnitude between features, so the paper normalises them per
feature. The objective adds the number of active connections, ``λ · Σ step(m)``.

Implementation: :func:`attach` registers a ``torch.nn.utils.parametrize`` parametrisation
(:class:`StepMask`) on each conv/linear ``weight``; the optimiser built by ``finetune.train``
trains the scores with the weights. :class:`SCL` is the TrainCallback:

- ``extra_loss`` returns ``λ · Σ_l Σ step_STE(m_l)``. The *value* is exactly λ·(#active); the
  differentiable surrogate is the identity STE, whose gradient is ``λ`` for every score, i.e.
  the same gradient as the relaxation ``λ · Σ m`` (a constant downward pull on every score).
- ``after_backward`` normalises the task part of each score gradient per output feature (row of
  the (out, ·) weight) to unit RMS, then adds back the exact λ pull: ``g ← (g − λ)/rms_row(g − λ)
  + λ``. Our choice of normaliser (RMS per output feature); it keeps λ meaningful as "how hard
  to pull relative to a unit-scale task gradient".

Choices: scores start at ``init_score`` (> 0: every connection active); they share ``TrainConfig``'s
learning rate and weight decay (decay gently pulls scores toward 0, the same direction as λ).
:func:`detach` bakes ``w ⊙ step(m)`` into the plain weight and returns the learned :class:`Masks`.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeprune.sparsity import SparsityMethod, register_method
from edgeprune.sparsity.masks import Masks, prunable_weights, qualified

PAPER = ("Tang, Luo, Xie, Zhu, Zhao, Bi, Lu, Automatic Sparse Connectivity Learning for Neural Networks, "
         "IEEE TNNLS 2022")


class _IdentitySTEStep(torch.autograd.Function):
    """Forward: unit step ``1[m > 0]``. Backward: identity (the gradient passes unchanged)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        return (scores > 0).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def ste_step(scores: torch.Tensor) -> torch.Tensor:
    """``step(m)`` with the identity straight-through gradient."""
    return _IdentitySTEStep.apply(scores)


class StepMask(nn.Module):
    """Parametrisation ``w ↦ w ⊙ step(score)``; ``score`` is the trainable mask variable."""

    def __init__(self, shape: torch.Size, init_score: float) -> None:
        super().__init__()
        self.score = nn.Parameter(torch.full(shape, float(init_score)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * ste_step(self.score)

    def mask(self) -> torch.Tensor:
        return self.score.detach() > 0


def _step_masks(model: nn.Module) -> dict[str, StepMask]:
    """Weight name (plain spelling, e.g. ``fc.weight``) → its StepMask, for every attached layer."""
    found = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, StepMask):
                    found[qualified(name, "weight")] = p
    return found


def attach(model: nn.Module, init_score: float = 1.0, skip: Iterable[str] = ()) -> list[str]:
    """Parametrise every conv/linear weight as ``w ⊙ step(m)``; returns the weight names."""
    if init_score <= 0:
        raise ValueError("init_score must be > 0 so that training starts from the dense network")
    names = list(prunable_weights(model, skip))
    for name in names:
        module = model.get_submodule(name.rpartition(".")[0])
        parametrize.register_parametrization(module, "weight", StepMask(module.weight.shape, init_score))
    return names


def current_masks(model: nn.Module) -> Masks:
    """The connectivity SCL has learned so far (``m > 0``)."""
    return Masks({name: p.mask() for name, p in _step_masks(model).items()})


def detach(model: nn.Module) -> Masks:
    """Remove the parametrisations, leaving ``weight = w ⊙ step(m)``; returns the final masks."""
    masks = current_masks(model)
    for name in masks:
        module = model.get_submodule(name.rpartition(".")[0])
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return masks


def active_connections(model: nn.Module) -> torch.Tensor:
    """``Σ step(m)`` over all attached layers, differentiable through the identity STE."""
    return sum((ste_step(p.score).sum() for p in _step_masks(model).values()),
               torch.zeros((), requires_grad=False))


class SCL:
    """TrainCallback: λ·(#active connections) in the loss; per-feature mask-gradient normalisation.

    Usage: ``attach(model)``; ``train(model, loader, config, callbacks=(SCL(lam),))``;
    ``masks = detach(model)`` (the model then has plain weights with the pruned ones at 0).
    """

    def __init__(self, lam: float = 1e-4, eps: float = 1e-12) -> None:
        if lam < 0:
            raise ValueError("lam must be >= 0")
        self.lam = lam
        self.eps = eps

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if self.lam == 0:
            return None
        return self.lam * active_connections(model)

    @torch.no_grad()
    def after_backward(self, model: nn.Module, step: int) -> None:
        for p in _step_masks(model).values():
            if p.score.grad is not None:
                p.score.grad.copy_(normalise_per_feature(p.score.grad - self.lam, self.eps) + self.lam)


def normalise_per_feature(grad: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each output feature's (row's) gradient by its RMS, so every feature moves at unit scale."""
    rows = grad.reshape(grad.shape[0], -1)
    rms = rows.pow(2).mean(dim=1, keepdim=True).sqrt()
    return (rows / (rms + eps)).view_as(grad)


register_method(SparsityMethod("scl", PAPER, "training", SCL))

"""RigL — Evci, Gale, Menick, Castro, Elsen, "Rigging the Lottery: Making All Tickets Winners", ICML 2020.

Sparse-to-sparse training at a fixed per-layer density:

- initial masks: random, with Erdős–Rényi–Kernel (ERK) layer densities
  ``d_l = ε · (n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w)`` (linear layers: ``k = ()``),
  ε chosen so the kept weights total ``density · N``; a layer whose ``d_l`` would exceed 1 is made
  dense and ε re-solved (the rigl reference code's loop).
- every ΔT steps while ``t < T_end = 0.75 · T``: per layer drop the fraction
  ``f(t) = α/2 · (1 + cos(π t / T_end))`` (α = 0.3) of the active weights with the smallest
  ``|w|``, then grow the same number of inactive connections with the largest ``|∂L/∂w|`` of the
  dense gradient (just-dropped connections are candidates too, as in the reference code).
  Connections that were inactive before the update start at 0. Layer densities never change.

The dense gradient is free here: masked weights are held at zero, so ``∂L/∂w`` of a masked weight
is what autograd computes anyway; :class:`RigL` reads it in ``after_backward`` before masking it.

Choices: ``k = ⌊f(t) · n_active⌋`` per layer (the reference code truncates); the step counter is
the callback's own (one per ``after_backward``), so several ``train`` calls continue the schedule.
No optimiser access: the momentum of a dropped weight is not reset, so use :meth:`RigL.hold`
(forward pre-hooks re-zero masked weights before every forward pass); grown weights start at 0
with whatever (decayed) momentum they had, which ΔT steps of 0.9 decay make negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from edgeprune.sparsity import SparsityMethod, register_method
from edgeprune.sparsity.masks import MaskedTraining, Masks, prunable_weights

PAPER = "Evci, Gale, Menick, Castro, Elsen, Rigging the Lottery: Making All Tickets Winners, ICML 2020"


def erk_densities(shapes: Mapping[str, torch.Size], density: float) -> dict[str, float]:
    """ERK per-layer densities whose kept-weight total is ``density · Σ n_l`` (layers capped at 1)."""
    if not 0 < density <= 1:
        raise ValueError("density must be in (0, 1]")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        eps = budget / divisor if divisor else 0.0
        over = [n for n in shapes if n not in dense and eps * raw[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.add(max(over, key=lambda n: raw[n]))


def random_masks(shapes: Mapping[str, torch.Size], densities: Mapping[str, float],
                 generator: torch.Generator) -> Masks:
    """Uniformly random masks with exactly ``round(d_l · n_l)`` kept entries per layer."""
    out = {}
    for name, shape in shapes.items():
        n = math.prod(shape)
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=generator)[:int(round(densities[name] * n))]] = True
        out[name] = flat.view(shape)
    return Masks(out)


def drop_fraction(step: int, t_end: int, alpha: float) -> float:
    """RigL's cosine update schedule ``α/2 · (1 + cos(π t / T_end))``."""
    return alpha / 2 * (1 + math.cos(math.pi * step / t_end))


@dataclass(frozen=True)
class RigLUpdate:
    """One connectivity update: when, the scheduled fraction, and how many weights moved per layer."""

    step: int
    fraction: float
    swapped: dict[str, int]


class RigL(MaskedTraining):
    """TrainCallback: masks held at zero every step, rewired every ΔT steps until 75% of training.

    Use inside ``with rigl.hold(model): train(model, loader, config, callbacks=(rigl,))`` with
    ``total_steps`` = the number of optimiser steps that ``train`` will make.
    """

    def __init__(self, masks: Masks, total_steps: int, delta_t: int = 100, alpha: float = 0.3,
                 end_fraction: float = 0.75) -> None:
        if total_steps < 1 or delta_t < 1 or not 0 < alpha <= 1 or not 0 < end_fraction <= 1:
            raise ValueError("need total_steps >= 1, delta_t >= 1, 0 < alpha <= 1, 0 < end_fraction <= 1")
        super().__init__(masks)
        self.delta_t = delta_t
        self.alpha = alpha
        self.t_end = int(end_fraction * total_steps)
        self.steps_done = 0
        self.history: list[RigLUpdate] = []

    @classmethod
    def with_erk(cls, model: nn.Module, density: float, total_steps: int, seed: int = 0,
                 skip: Iterable[str] = (), **kwargs) -> "RigL":
        """Random ERK masks at overall ``density`` (applied to ``model``) and the callback on them."""
        shapes = {n: p.shape for n, p in prunable_weights(model, skip).items()}
        masks = random_masks(shapes, erk_densities(shapes, density), torch.Generator().manual_seed(seed))
        masks.apply(model)
        return cls(masks, total_steps, **kwargs)

    def is_update_step(self, step: int) -> bool:
        return 0 < step < self.t_end and step % self.delta_t == 0

    def after_backward(self, model: nn.Module, step: int) -> None:
        if self.is_update_step(self.steps_done):
            self.update(model, self.steps_done)
        super().after_backward(model, step)
        self.steps_done += 1

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> RigLUpdate:
        """Drop ``⌊f(t)·n_active⌋`` smallest-|w| and grow as many largest-|grad| connections per layer."""
        fraction = drop_fraction(step, self.t_end, self.alpha)
        swapped = {}
        for name, mask in self.masks.items():
            param = model.get_parameter(name)
            if param.grad is None:
                continue
            new_mask, k = rewire(param.detach(), param.grad, mask, fraction)
            param.masked_fill_(new_mask & ~mask, 0.0)
            self.masks[name] = new_mask
            swapped[name] = k
        record = RigLUpdate(step, fraction, swapped)
        self.history.append(record)
        return record


def rewire(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor,
           fraction: float) -> tuple[torch.Tensor, int]:
    """One layer's drop/grow: the new mask (same number of ones) and k, the number dropped."""
    flat_mask = mask.flatten()
    k = int(fraction * int(flat_mask.sum()))
    if k == 0:
        return mask.clone(), 0
    drop_score = torch.where(flat_mask, weight.abs().flatten(), torch.full_like(weight.flatten(), math.inf))
    new = flat_mask.clone()
    new[torch.topk(drop_score, k, largest=False).indices] = False
    grow_score = torch.where(new, torch.full_like(grad.flatten(), -math.inf), grad.abs().flatten())
    new[torch.topk(grow_score, k).indices] = True
    return new.view_as(mask), k


register_method(SparsityMethod("rigl", PAPER, "training", RigL))

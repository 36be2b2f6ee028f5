"""SNIP — Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
ICLR 2019.

Attach a multiplicative gate c_j to every connection (w_j → c_j w_j). On one minibatch at
initialisation the connection sensitivity is

    g_j = ∂L/∂c_j |_{c=1} = w_j · ∂L/∂w_j,      s_j = |g_j| / Σ_k |g_k|,

and the network keeps the top-κ connections by s_j over all layers together (a global ranking),
then trains normally with that fixed mask.

Choices: the batch runs in training mode (BN uses batch statistics, as at the start of training)
through ``torch.func.functional_call`` with *copies* of the buffers, so scoring does not move the
BN running statistics; gradients come from ``torch.autograd.grad``, so no ``.grad`` is left behind.
κ is exact: ties are broken by position (see :func:`~edgeprune.sparsity.masks.global_topk`).
SNIP's variance-scaling initialisation is the model's business and is not redone here.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from edgeprune.sparsity import SparsityMethod, register_method
from edgeprune.sparsity.masks import Masks, global_topk, prunable_weights

PAPER = ("Lee, Ajanthan, Torr, SNIP: Single-shot Network Pruning based on Connection Sensitivity, "
         "ICLR 2019")

Batch = tuple[torch.Tensor, torch.Tensor]


def connection_sensitivity(
    model: nn.Module,
    batch: Batch,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    skip: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Normalised ``|w ⊙ ∂L/∂w|`` per prunable weight; all entries together sum to 1."""
    weights = prunable_weights(model, skip)
    params = dict(model.named_parameters())
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    x, y = batch
    was_training = model.training
    model.train()
    try:
        loss = loss_fn(functional_call(model, {**params, **buffers}, (x,)), y)
        grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
    finally:
        model.train(was_training)
    raw = {name: (w.detach() * (g if g is not None else torch.zeros_like(w))).abs()
           for (name, w), g in zip(weights.items(), grads)}
    total = sum(float(r.sum()) for r in raw.values())
    if total == 0:
        raise ValueError("every connection sensitivity is zero: the loss does not depend on the weights")
    return {name: r / total for name, r in raw.items()}


def snip_masks(
    model: nn.Module,
    batch: Batch,
    density: float | None = None,
    keep: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    skip: Iterable[str] = (),
) -> Masks:
    """Keep exactly κ connections (``keep``, or ``round(density · #weights)``) with the top SNIP scores."""
    if (density is None) == (keep is None):
        raise ValueError("give exactly one of density and keep")
    scores = connection_sensitivity(model, batch, loss_fn, skip)
    if keep is None:
        if not 0 < density <= 1:
            raise ValueError("density must be in (0, 1]")
        keep = int(round(density * sum(s.numel() for s in scores.values())))
    return global_topk(scores, keep)


register_method(SparsityMethod("snip", PAPER, "one-shot", snip_masks))

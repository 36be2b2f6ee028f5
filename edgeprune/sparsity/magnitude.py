"""Magnitude pruning — Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient
Neural Networks", NIPS 2015.

Per layer l the threshold is ``t_l = q · std(W_l)`` ("a quality parameter multiplied by the
standard deviation of a layer's weights"); connections with ``|w| < t_l`` are removed. Pruning is
iterative: prune → retrain the remaining connections → prune again (Han et al. report AlexNet 9×
and VGG-16 13× fewer parameters at equal accuracy).

Choices (the paper leaves them open):
- ``std`` is the population standard deviation (ddof 0) of the weights the layer still has (its
  unmasked entries): once a weight is pruned it is no longer part of the layer's distribution.
  The first round, with nothing masked, is the paper's rule verbatim.
- masks only shrink: a weight pruned in an earlier round stays pruned (the paper retrains "the
  remaining connections").
- Han et al. also lower the dropout rate when retraining and use L2 regularisation; the dropout
  adjustment is the model's business and is not done here.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.training.finetune import TrainCallback, TrainConfig, train
from edgeprune.sparsity import SparsityMethod, register_method
from edgeprune.sparsity.masks import MaskedTraining, Masks

PAPER = ("Han, Pool, Tran, Dally, Learning both Weights and Connections for Efficient Neural Networks, "
         "NIPS 2015")


def layer_threshold(weight: torch.Tensor, mask: torch.Tensor, q: float) -> float:
    """``q · std`` of the layer's surviving weights (population std, ddof 0)."""
    kept = weight.detach()[mask].float()
    if kept.numel() == 0:
        return float("inf")
    return q * float(kept.std(correction=0))


@torch.no_grad()
def magnitude_masks(model: nn.Module, q: float, masks: Masks | None = None,
                    skip: Iterable[str] = ()) -> Masks:
    """One pruning round: keep ``|w| >= q·std`` per layer, within the previous ``masks`` if given."""
    if q < 0:
        raise ValueError("the quality parameter q must be >= 0")
    previous = masks if masks is not None else Masks.dense(model, skip)
    previous.check(model)
    out = {}
    for name, prev in previous.items():
        weight = model.get_parameter(name)
        out[name] = prev & (weight.detach().abs() >= layer_threshold(weight, prev, q))
    return Masks(out)


def iterative_magnitude_pruning(
    model: nn.Module,
    loader: DataLoader,
    config: TrainConfig,
    q: float | Sequence[float],
    rounds: int,
    callbacks: tuple[TrainCallback, ...] = (),
    skip: Iterable[str] = (),
) -> list[Masks]:
    """``rounds`` × (prune at ``q·std`` → apply → retrain with the mask held); one Masks per round.

    ``q`` may be a per-round schedule (Han et al. raise pruning aggressiveness over rounds). The
    last entry of the returned list is the final mask; ``model`` is left pruned and retrained.
    The mask callback runs after ``callbacks`` so nothing re-adds gradient to a pruned weight.
    """
    schedule = [q] * rounds if isinstance(q, (int, float)) else list(q)
    if len(schedule) != rounds or rounds < 1:
        raise ValueError(f"need rounds >= 1 and one q per round, got {rounds} rounds and {len(schedule)} q values")
    history: list[Masks] = []
    masks: Masks | None = None
    for q_round in schedule:
        masks = magnitude_masks(model, q_round, masks, skip)
        masks.apply(model)
        train(model, loader, config, callbacks=(*callbacks, MaskedTraining(masks)),
              description=f"magnitude retrain (q={q_round:g})")
        history.append(masks.copy())
    return history


register_method(SparsityMethod("magnitude", PAPER, "iterative", magnitude_masks))

"""Training and fine-tuning: one loop for demo training, per-step recovery and the final tune.

Optional knowledge distillation from the unpruned model (Hinton et al.: soft targets at
temperature T, loss (1-a)*CE + a*T^2*KL). Callbacks get each step's loss so that training-time
methods (regularisers, mask updates) plug in without a second training script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.progress import ProgressSink, null_progress


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 1.0  # fractional epochs allowed: per-step recovery is often < 1 epoch
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    kd_alpha: float = 0.0  # 0 disables distillation
    kd_temperature: float = 4.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or not 0 <= self.kd_alpha <= 1:
            raise ValueError("epochs >= 0, lr > 0 and 0 <= kd_alpha <= 1 are required")


class TrainCallback(Protocol):
    """Hook for training-time methods: may add to the loss, edit grads after backward."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None: ...

    def after_backward(self, model: nn.Module, step: int) -> None: ...


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t


def train(
    model: nn.Module,
    loader: DataLoader,
    config: TrainConfig,
    teacher: nn.Module | None = None,
    callbacks: tuple[TrainCallback, ...] = (),
    progress: ProgressSink = null_progress,
    description: str = "fine-tune",
) -> list[float]:
    """SGD with a cosine schedule over ``config.epochs``; returns the per-step losses.

    A ``KeyboardInterrupt`` propagates after the current step, leaving ``model`` consistent
    (weights are only ever updated by complete optimiser steps).
    """
    total = int(round(config.epochs * len(loader)))
    if total == 0:
        return []
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if teacher is not None:
        teacher.eval()
    model.train()
    losses: list[float] = []
    task = progress.start(description, total)
    try:
        while len(losses) < total:
            for x, y in loader:
                loss = _step(model, opt, x, y, config, teacher, callbacks, len(losses))
                sched.step()
                losses.append(loss)
                progress.advance(task, loss=loss)
                if len(losses) >= total:
                    break
    finally:
        progress.finish(task)
        model.eval()
    return losses


def _step(model, opt, x, y, config: TrainConfig, teacher, callbacks, step: int) -> float:
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out, y)
    if teacher is not None and config.kd_alpha > 0:
        with torch.no_grad():
            soft = teacher(x)
        loss = (1 - config.kd_alpha) * loss + config.kd_alpha * distillation_loss(
            out, soft, config.kd_temperature)
    for cb in callbacks:
        extra = cb.extra_loss(model)
        if extra is not None:
            loss = loss + extra
    loss.backward()
    for cb in callbacks:
        cb.after_backward(model, step)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def pytorch_accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of the PyTorch model (the compiled artifact is checked in validate.py)."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

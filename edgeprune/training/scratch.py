"""The "Rethinking the value of network pruning" protocol (Liu, Sun, Zhou, Huang, Darrell, ICLR 2019).

Liu et al. found that for many structured-pruning methods, the pruned *architecture* trained from
random initialisation matches or beats the fine-tuned pruned model — so every structured result
should be shown next to two from-scratch baselines:

- **Scratch-E**: the pruned architecture re-initialised and trained for the same number of epochs;
- **Scratch-B**: the same compute budget — epochs scaled by ``original MACs / pruned MACs`` (a
  smaller network does less work per epoch, so it may train for proportionally more epochs).

:func:`from_scratch` runs one of them on a deep copy (the caller's model is untouched).
Re-initialisation calls ``reset_parameters()`` on every module that has it (PyTorch's default
initialisers, and fresh BatchNorm running statistics), under ``torch.manual_seed(seed)``.

What "the same epochs" means is the caller's choice: Liu et al. use the large model's training
schedule. ``deploy`` does not know how the user's model was trained, so it uses the epochs the
fine-tuned result was trained for in the same run (recovery steps + final fine-tune) — the
question it answers is "were the inherited weights worth more than a fresh start, given the same
training". Training uses plain cross-entropy (no distillation), as in the paper's scratch runs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import Literal, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from edgeprune.progress import ProgressSink, null_progress

Mode = Literal["E", "B"]


@dataclass(frozen=True)
class ScratchResult:
    """PyTorch top-1 on the validation loader after training from scratch."""

    accuracy: float
    epochs_trained: float
    mode: Mode
    steps: int  # optimiser steps actually taken (epochs · len(train_loader), rounded)

    def to_json(self) -> dict:
        return asdict(self)


def scratch_epochs(epochs: float, original_macs: int, pruned_macs: int, mode: Mode) -> float:
    """Scratch-E: ``epochs``; Scratch-B: ``epochs · original_macs / pruned_macs`` (same compute)."""
    if mode == "E":
        return epochs
    if mode == "B":
        if pruned_macs <= 0 or original_macs <= 0:
            raise ValueError("Scratch-B needs positive MAC counts")
        return epochs * original_macs / pruned_macs
    raise ValueError(f"mode must be 'E' or 'B', got {mode!r}")


def fine_tune_epochs(final_epochs: float, step_epochs: float, steps: Sequence[dict]) -> float:
    """Epochs the fine-tuned result trained for in a deploy run: one recovery per pruning step + final.

    ``steps`` are the search records; the first is the unpruned start, every later one followed a
    pruning step and its recovery fine-tune.
    """
    return final_epochs + step_epochs * max(0, len(steps) - 1)


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with ``reset_parameters()`` called on every module that has it."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


def from_scratch(pruned_model: nn.Module, original_macs: int, pruned_macs: int, train_loader: DataLoader,
                 val_loader: DataLoader, epochs: float, mode: Mode, seed: int,
                 config: TrainConfig = TrainConfig(), progress: ProgressSink = null_progress) -> ScratchResult:
    """Re-initialise the pruned architecture and train it as Scratch-E or Scratch-B.

    ``config`` gives the optimiser settings (its ``epochs`` is replaced; distillation is off).
    """
    trained_epochs = scratch_epochs(epochs, original_macs, pruned_macs, mode)
    model = reinitialise(pruned_model, seed)
    losses = train(model, train_loader, replace(config, epochs=trained_epochs, kd_alpha=0.0),
                   progress=progress, description=f"Scratch-{mode}")
    return ScratchResult(pytorch_accuracy(model, val_loader), trained_epochs, mode, len(losses))


def scratch_comparison(pruned_model: nn.Module, macs: dict, train_loader: DataLoader, val_loader: DataLoader,
                       epochs: float, seed: int, config: TrainConfig,
                       progress: ProgressSink = null_progress) -> dict:
    """Scratch-E and Scratch-B next to the fine-tuned model's PyTorch top-1 (the manifest's ``from_scratch``).

    ``macs`` is the plan's ``{"original": ..., "pruned": ...}``.
    """
    original, pruned = int(macs["original"]), int(macs["pruned"])
    runs = {mode: from_scratch(pruned_model, original, pruned, train_loader, val_loader, epochs, mode, seed,
                               config, progress).to_json() for mode in ("E", "B")}
    return {
        **runs,
        "fine_tuned_accuracy": pytorch_accuracy(pruned_model, val_loader),
        "epochs_basis": "epochs the fine-tuned result was trained for in this run (recovery + final)",
        "macs_ratio": original / pruned,
        "accuracy": "PyTorch top-1 on the validation set",
        "paper": "Liu, Sun, Zhou, Huang, Darrell, Rethinking the Value of Network Pruning, ICLR 2019",
    }

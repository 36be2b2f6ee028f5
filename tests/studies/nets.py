"""Factories the study tests pass as ``--model tests.studies.nets:NAME`` (module:factory specs)."""

from __future__ import annotations

import torch
from torch import nn


class SmallRGB(nn.Module):
    """conv-BN-ReLU twice, global average pool, linear: two prunable groups (6 and 8 channels),
    any input size, three input channels (an ImageFolder of colour images)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def small_rgb() -> nn.Module:
    """Seeded, so ``--weights`` saved from one call load into the next."""
    torch.manual_seed(0)
    return SmallRGB()

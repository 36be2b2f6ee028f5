"""Factories the end-to-end tests pass as ``--model tests.nets:NAME`` (module:factory specs)."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.models.demo_net import build_demo_net


def tiny_demo() -> nn.Module:
    """The demo architecture at width 8 (~3 MMACs): compiles and tunes in seconds."""
    torch.manual_seed(0)
    return build_demo_net(width=8)


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            y = y * 2
        return self.fc(y.mean((2, 3)))


def untraceable() -> nn.Module:
    return DataDependent()

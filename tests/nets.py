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


class ConcatResidual(nn.Module):
    """The shape users bring that broke every criterion: two 48-channel branches concatenated to
    96, then a residual block on the 96 (Inception-with-residual, CSP/ELAN blocks)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()

        def cbr(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(cbr(1, 32), nn.MaxPool2d(2))
        self.branch_a, self.branch_b = cbr(32, 48), cbr(32, 48)
        self.res = nn.Sequential(nn.Conv2d(96, 96, 3, padding=1, bias=False), nn.BatchNorm2d(96))
        self.post = nn.Sequential(cbr(96, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.branch_a(x), self.branch_b(x)], 1)
        y = torch.relu(y + self.res(y))
        return self.fc(self.post(y))


def concat_residual() -> nn.Module:
    torch.manual_seed(0)
    return ConcatResidual()


class ShuffleStage(nn.Module):
    """A ShuffleNetV2 stage from torchvision's own block (chunk, branch, concat, channel shuffle)
    on 1-channel inputs: the trunk's channels are tied across the three units."""

    def __init__(self, classes: int = 10) -> None:
        from torchvision.models.shufflenetv2 import InvertedResidual

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.stage = nn.Sequential(InvertedResidual(24, 64, 2), InvertedResidual(64, 64, 1), InvertedResidual(64, 64, 1))
        self.head = nn.Sequential(nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)))


def shuffle_stage() -> nn.Module:
    torch.manual_seed(0)
    return ShuffleStage()

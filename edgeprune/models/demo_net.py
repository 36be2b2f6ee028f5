"""The bundled demo network: a small residual CNN for 1x32x32 digit images.

Sized so that compute, not per-call overhead, dominates its latency (~107 MMACs at width 48): at that size
halving the channels roughly halves the measured time on a CPU, which is what the demo shows.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut: the residual add couples channels across layers."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class DemoNet(nn.Module):
    """stem w @32x32 -> 2w @16x16 + block -> 4w @8x8 + block -> GAP -> fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 48) -> None:
        super().__init__()
        w = width
        self.stem = _conv_bn(in_channels, w)
        self.stage1 = nn.Sequential(_conv_bn(w, 2 * w, stride=2), BasicBlock(2 * w))
        self.stage2 = nn.Sequential(_conv_bn(2 * w, 4 * w, stride=2), BasicBlock(4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_demo_net(in_channels: int = 1, num_classes: int = 10, width: int = 48) -> DemoNet:
    return DemoNet(in_channels=in_channels, num_classes=num_classes, width=width)

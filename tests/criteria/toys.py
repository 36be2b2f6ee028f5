"""Tiny models and data for the criterion tests (each test file builds what it needs, seeded)."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.criteria.base import ScoreContext
from edgeprune.graph import GroupedModel


class TwoConv(nn.Module):
    """conv1 -> BN -> ReLU -> conv2 -> BN -> ReLU -> GAP -> fc: two plain groups, no coupling."""

    def __init__(self, c1: int = 4, c2: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class GateLinear(nn.Module):
    """conv -> BN -> GAP -> fc with no nonlinearity: the output is linear in every channel's gate."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN scales, shifts and running statistics, so eval-mode BN is not an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def image_batches(count: int, size: int, shape: tuple[int, ...], classes: int, seed: int = 0):
    """``count`` labelled batches of uniform random images."""
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.rand(size, *shape, generator=g), torch.randint(0, classes, (size,), generator=g))
                 for _ in range(count))


def context(model: nn.Module, batches, loss_fn=nn.functional.cross_entropy) -> ScoreContext:
    example = batches[0][0][:1]
    return ScoreContext(model, GroupedModel(model, example), tuple(batches), loss_fn)

"""Tiny models and data for the sparsity tests (seeded, CPU-cheap)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class MLP(nn.Module):
    """Linear(6→5, bias) → ReLU → Linear(5→3, bias): every score is easy to recompute by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class SmallConvNet(nn.Module):
    """conv(1→4) → BN → ReLU → conv(4→8) → BN → ReLU → GAP → fc(8→3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def batch(n: int, shape: tuple[int, ...], classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def loader(n: int, shape: tuple[int, ...], batch_size: int, classes: int = 3, seed: int = 0) -> DataLoader:
    x, y = batch(n, shape, classes, seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)

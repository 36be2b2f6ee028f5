"""Fixtures for the quantization tests: digits at 16x16, a tiny CNN trained once per session.

Why train in the fixture: INT8 accuracy claims are only meaningful on a model that has learnt
something; ~2 s of training on 2 cores gives a net well above 90 % on held-out digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

SIZE = 16
SEED = 0


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def build_net() -> torch.nn.Module:
    """Two conv blocks + a classifier: small, but with BN folding, pooling and a Gemm."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * (SIZE // 4) ** 2, 10),
    )


def train(net: torch.nn.Module, data: Digits, epochs: int = 3) -> torch.nn.Module:
    torch.manual_seed(SEED)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def digits16() -> Digits:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    order = np.random.default_rng(SEED).permutation(len(x))
    val, tr = order[:360], order[360:]
    xs, ys = x.numpy(), raw.target.astype(np.int64)
    return Digits(xs[tr], ys[tr], xs[val], ys[val])


@pytest.fixture(scope="session")
def trained_net(digits16: Digits) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return train(build_net(), digits16)


@pytest.fixture(scope="session")
def fp32_onnx(trained_net: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained net through the project's one exporter (batch fixed at 8)."""
    from edgeprune.backends.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("quant") / "fp32.onnx"
    export_onnx(trained_net, torch.zeros(8, 1, SIZE, SIZE), path)
    return path


@pytest.fixture(scope="session")
def calibration(digits16: Digits) -> list[np.ndarray]:
    """128 training images in batches of 32 (never the validation images)."""
    return [digits16.x_train[i:i + 32] for i in range(0, 128, 32)]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())

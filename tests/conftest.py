"""Shared fixtures: tiny models, the digits data, and a per-session cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.data import Preprocessing, load_digits_data
from edgeprune.models.demo_net import build_demo_net


@pytest.fixture(scope="session")
def digits():
    return load_digits_data(Preprocessing())


@pytest.fixture()
def tiny_net():
    torch.manual_seed(0)
    return build_demo_net(width=8).eval()


@pytest.fixture()
def example():
    return torch.rand(1, 1, 32, 32)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A cache shared by the whole session (demo weights, tuning records), never ~/.cache."""
    return tmp_path_factory.mktemp("edgeprune-cache")

"""The built-in default: the demo net trained on digits once, then cached.

The cache key includes the net's width, the training recipe and the torch version, so a change
to any of them retrains instead of silently loading stale weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from edgeprune.data import DataBundle, make_loader
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from edgeprune.models.demo_net import DemoNet, build_demo_net
from edgeprune.io import default_cache_dir, torch_save_atomic  # noqa: F401 - default_cache_dir re-exported
from edgeprune.progress import ProgressSink, null_progress

DEMO_RECIPE = TrainConfig(epochs=4, lr=0.05, weight_decay=5e-4)
DEMO_SEED = 0


def _cache_file(cache_dir: Path, data: DataBundle) -> Path:
    key = f"{DEMO_RECIPE}|{data.sample_shape}|{torch.__version__}|{DemoNet.__doc__}"
    return cache_dir / "demo" / f"demo-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


def load_demo(data: DataBundle, cache_dir: Path, progress: ProgressSink = null_progress) -> DemoNet:
    """Return the trained demo net, training it (about 20 s on 2 cores) on first use."""
    path = _cache_file(cache_dir, data)
    model = build_demo_net(in_channels=data.sample_shape[0], num_classes=data.num_classes)
    if path.is_file():
        model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
        return model.eval()
    torch.manual_seed(DEMO_SEED)
    progress.log("training the demo net on digits (first run only; cached afterwards)")
    train(model, make_loader(data.train, 64, shuffle=True, seed=DEMO_SEED), DEMO_RECIPE,
          progress=progress, description="train demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(model.state_dict(), path)
    progress.log(f"demo net: top-1 {pytorch_accuracy(model, make_loader(data.val, 256, False)):.3f} on digits val")
    return model.eval()

"""Data sets: scikit-learn's bundled digits, or an ImageFolder, with recorded preprocessing.

Preprocessing defaults to ToTensor only (pixels in [0, 1]); ``mean``/``std``/``resize`` change it.
The chosen :class:`Preprocessing` goes into the manifest so the artifact is fed the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from edgeprune.errors import ConfigError, DataError

VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become the model's input tensor (recorded in the manifest)."""

    resize: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grayscale: bool = False
    rgb: bool = False  # single-channel data (digits) fed as 3 identical channels, for RGB models

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ConfigError("--mean and --std go together")
        if self.rgb and self.grayscale:
            raise ConfigError("--rgb and --grayscale contradict each other")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError("--std values must be > 0")

    def describe(self) -> dict:
        return {"to_tensor": "pixels scaled to [0, 1]", **asdict(self)}


@dataclass(frozen=True)
class DataBundle:
    """Train/validation splits plus what the model needs to know about them."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    sample_shape: tuple[int, ...]
    preprocessing: Preprocessing


def _split_indices(n: int, val_fraction: float = VAL_FRACTION) -> tuple[list[int], list[int]]:
    """Deterministic shuffle-split so reruns and resumes see the same validation set."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def load_digits_data(prep: Preprocessing) -> DataBundle:
    """scikit-learn's 1,797 8x8 digits (shipped with the package: no download), upsampled.

    Pixels 0..16 become [0, 1] (the ToTensor convention); the default resize is 32x32 so the
    demo net does enough compute for latency to track channel counts.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    size = prep.resize or (32, 32)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if prep.rgb:
        x = x.expand(-1, 3, -1, -1).contiguous()
    if prep.mean is not None:
        x = (x - torch.tensor(prep.mean).view(-1, 1, 1)) / torch.tensor(prep.std).view(-1, 1, 1)
    y = torch.tensor(digits.target, dtype=torch.long)
    full = TensorDataset(x, y)
    train_idx, val_idx = _split_indices(len(full))
    recorded = Preprocessing(resize=size, mean=prep.mean, std=prep.std, grayscale=not prep.rgb, rgb=prep.rgb)
    return DataBundle("digits", Subset(full, train_idx), Subset(full, val_idx), 10,
                      tuple(x.shape[1:]), recorded)


def _image_folder(path: Path, prep: Preprocessing):
    from torchvision import datasets, transforms

    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist")
    steps = []
    if prep.grayscale:
        steps.append(transforms.Grayscale())
    if prep.resize:
        steps.append(transforms.Resize(prep.resize))
    steps.append(transforms.ToTensor())
    if prep.mean is not None:
        steps.append(transforms.Normalize(prep.mean, prep.std))
    try:
        return datasets.ImageFolder(str(path), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"no images under {path}: {str(exc).splitlines()[0]}") from None


def load_image_folder(path: Path, prep: Preprocessing, val_path: Path | None) -> DataBundle:
    """ImageFolder layout (one sub-folder per class); a separate val folder or an 80/20 split."""
    full = _image_folder(path, prep)
    if val_path is not None:
        val = _image_folder(val_path, prep)
        if val.classes != full.classes:
            raise DataError(f"class folders differ between {path} and {val_path}")
        train: Dataset = full
    else:
        if len(full) < 2:
            raise DataError(f"{path} holds {len(full)} image(s); need at least 2 to split")
        train_idx, val_idx = _split_indices(len(full))
        train, val = Subset(full, train_idx), Subset(full, val_idx)
    sample_shape = tuple(full[0][0].shape)
    return DataBundle(f"imagefolder:{path}", train, val, len(full.classes), sample_shape, prep)


def load_data(spec: str, prep: Preprocessing, val_spec: str | None = None) -> DataBundle:
    """``digits`` or ``imagefolder:PATH``; ``val_spec`` is ``imagefolder:PATH`` or ``None``."""
    if spec == "digits":
        if val_spec is not None:
            raise ConfigError("--val-data is only for imagefolder data (digits has its own split)")
        return load_digits_data(prep)
    if spec.startswith("imagefolder:"):
        val_path = None
        if val_spec is not None:
            if not val_spec.startswith("imagefolder:"):
                raise ConfigError(f"--val-data must be imagefolder:PATH, got {val_spec!r}")
            val_path = Path(val_spec.split(":", 1)[1]).expanduser()
        return load_image_folder(Path(spec.split(":", 1)[1]).expanduser(), prep, val_path)
    raise ConfigError(f"unknown data spec {spec!r}; use 'digits' or 'imagefolder:PATH'")


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


def take_batches(loader: DataLoader, count: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The first ``count`` minibatches of a loader, materialised (criteria and calibration score
    the same batches several times)."""
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    for x, y in loader:
        if len(batches) >= count:
            break
        batches.append((x, y))
    return tuple(batches)

"""The one way every command turns ``--model``/``--data`` options into a model, its data and an
example input.

``deploy``, ``prune``, ``profile``, ``criteria compare`` and ``sparsify`` all take the same model
and data options (defined once in :mod:`edgeprune.cli.options`) and load through
:func:`load_inputs`, so a spec that works for one command works for all of them, with the same
errors and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeprune.data import DataBundle, Preprocessing, load_data
from edgeprune.errors import ConfigError, TraceError
from edgeprune.progress import ProgressSink, null_progress


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x32x32`` -> (1, 3, 32, 32)."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"input shape {text!r} is not like 1x3x32x32") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError(f"input shape {text!r} must be NxCxHxW with positive sizes")
    return shape


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """``0.5,0.25`` -> (0.5, 0.25); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a comma-separated list of numbers") from None


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``--resize 224x224`` (or ``224``) -> (224, 224)."""
    if not text:
        return None
    h, _, w = text.lower().partition("x")
    try:
        size = (int(h), int(w or h))
    except ValueError:
        raise ConfigError(f"--resize {text!r} is not like 224x224") from None
    if min(size) < 1:
        raise ConfigError(f"--resize {text!r} must be positive")
    return size


@dataclass(frozen=True)
class ModelOptions:
    """Which network: a spec (``demo``, ``torchvision:NAME?k=v``, ``FILE.pt2``, ``module:factory``),
    its weights (loaded ``weights_only`` unless trusted) and the input shape (default: one
    sample of the data)."""

    model: str = "demo"
    weights: Path | None = None
    trust_checkpoint: bool = False
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.model == "demo" and self.weights is not None:
            raise ConfigError("--weights is for your own model; the demo brings its own")


@dataclass(frozen=True)
class DataOptions:
    """Which data: ``digits`` or ``imagefolder:PATH``, an optional validation folder, and the
    preprocessing that the shipped artifact's inputs must get too (recorded in the manifest)."""

    data: str = "digits"
    val_data: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


@dataclass(frozen=True)
class Loaded:
    """A model with its data and an example input of the shape it will be compiled for."""

    model: nn.Module
    data: DataBundle
    example: torch.Tensor
    origin: str  # how the weights came to be (for reports)
    trained: bool  # False for a factory's untrained weights


def input_shape(options: ModelOptions, data: DataBundle) -> tuple[int, ...]:
    """``--input-shape`` or one sample of the data; they must agree (or the user resizes)."""
    shape = options.input_shape or (1, *data.sample_shape)
    if tuple(shape[1:]) != tuple(data.sample_shape):
        raise ConfigError(f"--input-shape {'x'.join(map(str, shape))} does not match the data's "
                          f"samples ({'x'.join(map(str, data.sample_shape))}); use --resize")
    return tuple(shape)


def check_traceable(model: nn.Module, example: torch.Tensor) -> None:
    """Fail early, naming the op, if torch.export cannot follow the model."""
    try:
        torch.export.export(model.eval(), (example,))
    except Exception as exc:  # noqa: BLE001 - export raises many error types
        text = str(exc).strip().splitlines()
        raise TraceError(f"torch.export cannot trace the model: {text[0] if text else type(exc).__name__}") from None


def load_model_only(options: ModelOptions, data: DataBundle | None, cache_dir: Path,
                    progress: ProgressSink = null_progress) -> tuple[nn.Module, str, bool]:
    """(model, origin, trained). The demo needs its data (it trains on first use, then is cached)."""
    if options.model == "demo":
        from edgeprune.data import load_digits_data
        from edgeprune.models.demo import load_demo

        bundle = data if data is not None else load_digits_data(Preprocessing())
        return load_demo(bundle, cache_dir, progress), f"demo net trained on {bundle.name} (cached recipe)", True
    from edgeprune.models.sources import load_model

    model = load_model(options.model, options.weights, options.trust_checkpoint)
    if options.weights is not None:
        return model, f"weights from {options.weights}", True
    return model, "as built by its factory (no --weights)", False


def load_inputs(model_options: ModelOptions, data_options: DataOptions, cache_dir: Path,
                progress: ProgressSink = null_progress, trace: bool = True) -> Loaded:
    """Data first (the demo trains on it and the input shape defaults to its samples), then the
    model, then a ``torch.export`` check so an untraceable model fails before any long work."""
    data = load_data(data_options.data, data_options.preprocessing, data_options.val_data)
    model, origin, trained = load_model_only(model_options, data, cache_dir, progress)
    example = torch.rand(input_shape(model_options, data))
    if trace:
        check_traceable(model, example)
    return Loaded(model.eval(), data, example, origin, trained)

"""Resolve a ``--model`` spec to an ``nn.Module``; load checkpoints safely.

Specs: ``demo`` (bundled, trained on digits and cached), ``torchvision:NAME?key=value&...``,
``path/to/model.pt2`` (a ``torch.export`` archive), ``package.module:factory``. State dicts are
loaded with ``weights_only=True`` unless the user passes ``--trust-checkpoint``.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from urllib.parse import parse_qsl

import torch
from torch import nn

from edgeprune.errors import ModelLoadError, UntrustedCheckpointError


def parse_value(text: str) -> object:
    """``10`` -> 10, ``0.5`` -> 0.5, ``true`` -> True; anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _torchvision(spec: str) -> nn.Module:
    from torchvision import models

    name, _, query = spec.partition("?")
    kwargs = {k: parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    kwargs.setdefault("weights", None)  # weights from the hub need internet; use --weights
    try:
        return models.get_model(name, **kwargs)
    except ValueError as exc:
        raise ModelLoadError(f"torchvision has no model {name!r}: {exc}") from None
    except TypeError as exc:
        raise ModelLoadError(f"torchvision:{spec}: {exc}") from None


class ExportedModel(nn.Module):
    """A ``torch.export`` archive's graph as an ordinary module.

    The graph module refuses ``train()``/``eval()`` (its mode was fixed at export), so this wrapper
    keeps its own flag. An exported graph calls aten ops, not ``nn.Conv2d`` modules, so it can be
    compiled and measured but has no channel groups to prune (graph.py says so clearly).
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def _exported(path: Path) -> nn.Module:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    try:
        return ExportedModel(torch.export.load(str(path)).module())
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise ModelLoadError(f"cannot load torch.export archive {path}: {str(exc).splitlines()[0]}") from None


def _factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"{module_name!r} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model


def resolve_model(spec: str) -> nn.Module:
    """Build the (untrained unless ``demo``) model named by ``spec``; see module docstring."""
    if spec.startswith("torchvision:"):
        return _torchvision(spec.split(":", 1)[1])
    if spec.endswith(".pt2"):
        return _exported(Path(spec).expanduser())
    if ":" in spec and not spec.startswith(("/", ".")):
        return _factory(spec)
    raise ModelLoadError(
        f"model spec {spec!r} does not resolve; use demo, torchvision:NAME, FILE.pt2 or module:factory"
    )


def load_state_dict(path: Path, trust: bool) -> dict[str, torch.Tensor]:
    """Load a state dict; refuse pickled objects unless ``trust`` (``--trust-checkpoint``)."""
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights_only" in str(exc):
            raise UntrustedCheckpointError(
                f"checkpoint {path} needs pickle to load; pass --trust-checkpoint only if you trust its source"
            ) from None
        raise ModelLoadError(f"checkpoint {path} is corrupt: {str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelLoadError(f"checkpoint {path} is corrupt or not a torch file: {str(exc).splitlines()[0]}") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"checkpoint {path} holds no state dict of tensors")
    return obj


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with a one-line error naming the first mismatches."""
    result = model.load_state_dict(state, strict=False)
    problems = [f"missing {k}" for k in result.missing_keys[:2]] + [
        f"unexpected {k}" for k in result.unexpected_keys[:2]]
    if problems:
        raise ModelLoadError(f"checkpoint {source} does not fit the model: {', '.join(problems)}")


def load_model(spec: str, weights: Path | None = None, trust_checkpoint: bool = False) -> nn.Module:
    model = resolve_model(spec)
    if weights is not None:
        try:
            apply_weights(model, load_state_dict(weights, trust_checkpoint), weights)
        except RuntimeError as exc:  # shape mismatch inside load_state_dict
            raise ModelLoadError(f"checkpoint {weights} does not fit the model: {str(exc).splitlines()[1:2] or exc}") from None
    return model.eval()
